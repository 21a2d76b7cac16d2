//! systemd's notification protocol (`Type=notify`): ready once the listeners are bound,
//! reloading around a reload, stopping when the drain starts, and the watchdog. Outside
//! systemd (`NOTIFY_SOCKET` unset) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{debug, warn};

fn send(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(states) {
        warn!(error = %err, "cannot notify systemd");
    }
}

pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// `RELOADING=1` with `MONOTONIC_USEC`, as systemd ≥ 253 asks (older ones ignore it); the
/// reload ends with `ready`.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(err) => {
            debug!(error = %err, "no monotonic clock reading");
            send(&[NotifyState::Reloading]);
        }
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// With `WatchdogSec=` set, pings systemd at half the interval from the runtime itself, so a
/// wedged runtime is restarted. Returns at once without a watchdog.
pub fn spawn_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}
