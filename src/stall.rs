//! A deadline on a peer's silence, the one shape of every idle timeout the proxy keeps: the
//! client's body (`body_idle`), the backend's body (`upstream_read_idle`), the client's
//! reading (`client_write_idle`). It runs from the first poll that finds nothing ready until
//! the peer moves again, and allocates its timer once however many pauses a flow has.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pub struct StallTimer {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// A pause is being timed.
    running: bool,
}

impl StallTimer {
    pub fn new(limit: Duration) -> StallTimer {
        StallTimer {
            limit,
            sleep: None,
            running: false,
        }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The peer moved: the next pause is timed afresh.
    pub fn progressed(&mut self) {
        self.running = false;
    }

    /// Nothing was ready: starts timing the pause unless it already is; `Ready` once the peer
    /// has been silent for the whole limit. Registers `cx` to be woken then.
    pub fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let now = Instant::now();
        // A limit too far away to add (`Duration::MAX`: no limit) waits "forever", as
        // tokio's own `sleep` does.
        let deadline = now
            .checked_add(self.limit)
            .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400));
        let sleep = match &mut self.sleep {
            Some(sleep) if self.running => sleep,
            Some(sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.running = true;
        sleep.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test(start_paused = true)]
    async fn a_pause_ends_after_the_limit_and_progress_restarts_it() {
        let mut timer = StallTimer::new(Duration::from_secs(10));
        let started = Instant::now();
        poll_fn(|cx| timer.stalled(cx)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));

        timer.progressed();
        let restarted = Instant::now();
        assert!(poll_fn(|cx| Poll::Ready(timer.stalled(cx).is_pending())).await);
        tokio::time::advance(Duration::from_secs(9)).await;
        timer.progressed();
        // A new pause: the nine seconds before the progress do not count.
        poll_fn(|cx| timer.stalled(cx)).await;
        assert_eq!(restarted.elapsed(), Duration::from_secs(19));
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_never_ends() {
        let mut timer = StallTimer::new(Duration::MAX);
        assert!(poll_fn(|cx| Poll::Ready(timer.stalled(cx).is_pending())).await);
    }
}
