//! Idle and absolute expiry, as pure arithmetic on Unix milliseconds so it is testable without
//! clocks and identical for every store.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Sliding: every request that finds the session may extend it by this much.
    pub idle: Duration,
    /// Hard cap from creation; never extended.
    pub absolute: Duration,
}

impl Lifetime {
    pub fn new(idle: Duration, absolute: Duration) -> Lifetime {
        Lifetime { idle, absolute }
    }

    /// The TTL a session created at `created` should have if touched at `now`: the idle
    /// timeout, capped by what is left of the absolute one. `None` once the absolute deadline
    /// has passed.
    pub fn ttl(&self, created: u64, now: u64) -> Option<Duration> {
        let deadline = created.saturating_add(millis(self.absolute));
        let left = deadline.checked_sub(now).filter(|left| *left > 0)?;
        Some(self.idle.min(Duration::from_millis(left)))
    }

    /// Whether a read that found `remaining` TTL should extend it, and to what.
    ///
    /// Extending on every request would cost a store write per request. We extend only once a
    /// quarter of the idle timeout has been used, so after any request the session still has
    /// at least three quarters of the idle timeout left: more than the contract's "used more
    /// often than every half idle timeout never expires".
    pub fn extension(&self, created: u64, now: u64, remaining: Duration) -> Option<Duration> {
        let target = self.ttl(created, now)?;
        // Near the absolute deadline the target itself shrinks below a quarter idle; half of
        // it still spares most writes and keeps a TTL-less key from staying without one.
        let slack = (self.idle / 4).min(target / 2);
        (target > remaining + slack).then_some(target)
    }
}

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn lifetime() -> Lifetime {
        Lifetime::new(Duration::from_secs(30 * 60), Duration::from_secs(12 * 3600))
    }

    #[test]
    fn ttl_is_idle_capped_by_absolute() {
        let l = lifetime();
        assert_eq!(l.ttl(0, 0), Some(l.idle));
        let near_end = 12 * 60 * MIN - 5 * MIN;
        assert_eq!(l.ttl(0, near_end), Some(Duration::from_millis(5 * MIN)));
        assert_eq!(l.ttl(0, 12 * 60 * MIN), None);
        assert_eq!(l.ttl(0, 13 * 60 * MIN), None);
    }

    #[test]
    fn extension_is_coalesced_but_never_too_coarse() {
        let l = lifetime();
        // Just extended: nothing to do.
        assert_eq!(l.extension(0, MIN, l.idle - Duration::from_secs(1)), None);
        // A quarter used: extend back to the full idle timeout.
        assert_eq!(
            l.extension(0, 10 * MIN, Duration::from_millis(20 * MIN)),
            Some(l.idle)
        );
        // Never extended past the absolute deadline.
        let near_end = 12 * 60 * MIN - 5 * MIN;
        assert_eq!(
            l.extension(0, near_end, Duration::from_millis(5 * MIN - 1000)),
            None
        );
        assert_eq!(
            l.extension(0, near_end, Duration::ZERO),
            Some(Duration::from_millis(5 * MIN))
        );
    }

    /// Simulates a user who comes back every half idle timeout for a day: after every request
    /// the session must still outlive the next one.
    #[test]
    fn regular_use_every_half_idle_never_expires() {
        let l = Lifetime::new(Duration::from_secs(60), Duration::from_secs(24 * 3600));
        let idle = 60_000u64;
        let mut expires_at = idle;
        let mut now = 0;
        while now + idle / 2 < 20 * 3600 * 1000 {
            now += idle / 2;
            assert!(expires_at > now, "expired at {now}");
            let remaining = Duration::from_millis(expires_at - now);
            if let Some(ttl) = l.extension(0, now, remaining) {
                expires_at = now + ttl.as_millis() as u64;
            }
        }
    }
}
