//! Upstream health: passive ejection like nginx's `max_fails`/`fail_timeout`, and optional
//! active checks.
//!
//! An upstream that fails to connect (refused, or hanging past the connect timeout) or to
//! answer in time `max_fails` times in a row is skipped for `fail_timeout`. Then exactly one
//! request tries it again (the others keep skipping it): success puts it back in rotation,
//! failure skips it for another `fail_timeout`. So a terminated host costs one request its
//! connect timeout per `fail_timeout`, not every other request. An active check, when
//! configured, takes an upstream out on a failed check and back on a passed one, without
//! waiting for a request.
//!
//! State is per address and outlives reloads: a host that is down stays known to be down when
//! the configuration changes, whichever routes name it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::uri::Authority;
use tracing::{info, warn};

use crate::config::HealthSettings;
use crate::metrics::{Metrics, UpstreamMetrics};

/// Why an upstream counts as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Refused,
    ConnectTimeout,
    ResponseTimeout,
    CheckFailed,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::ConnectTimeout => "connect timeout",
            Failure::ResponseTimeout => "response timeout",
            Failure::CheckFailed => "health check failed",
        }
    }
}

/// The health of one upstream address.
#[derive(Debug)]
pub struct Health {
    authority: Authority,
    /// Consecutive failures since the last success.
    fails: AtomicU32,
    /// Until when (ms on `clock`) the upstream is skipped; `IN_ROTATION` when it is not.
    skipped_until: AtomicU64,
    metrics: UpstreamMetrics,
}

const IN_ROTATION: u64 = 0;

/// Milliseconds since the first call: a monotonic clock that fits an atomic.
fn clock() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let ms = EPOCH.get_or_init(Instant::now).elapsed().as_millis();
    // Never `IN_ROTATION`, so a deadline computed at start-up still reads as one.
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Health {
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Whether this request may use the upstream. When its skip time is over, the first
    /// caller claims the one trial request (by pushing the deadline on) and the rest keep
    /// skipping it until that trial has answered.
    pub fn claim(&self, policy: &HealthSettings) -> bool {
        let until = self.skipped_until.load(Ordering::Acquire);
        if until == IN_ROTATION {
            return true;
        }
        let now = clock();
        if until > now {
            return false;
        }
        let retry = now.saturating_add(millis(policy.fail_timeout));
        self.skipped_until
            .compare_exchange(until, retry, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// An exchange got a response head, or a check passed.
    pub fn succeeded(&self) {
        // Loads first: the common case, a healthy upstream, writes nothing.
        if self.fails.load(Ordering::Relaxed) == 0
            && self.skipped_until.load(Ordering::Relaxed) == IN_ROTATION
        {
            return;
        }
        self.fails.store(0, Ordering::Relaxed);
        if self.skipped_until.swap(IN_ROTATION, Ordering::AcqRel) != IN_ROTATION {
            self.metrics.up.set(1);
            info!(upstream = %self.authority, "upstream answers again: back in rotation");
        }
    }

    /// Counts a failure; at `max_fails` in a row (or any failed check) the upstream is skipped
    /// for `fail_timeout`.
    pub fn failed(&self, failure: Failure, policy: &HealthSettings) {
        let counter = match failure {
            Failure::Refused => &self.metrics.refused,
            Failure::ConnectTimeout => &self.metrics.connect_timeout,
            Failure::ResponseTimeout => &self.metrics.response_timeout,
            Failure::CheckFailed => &self.metrics.check_failed,
        };
        counter.inc();
        let fails = self.fails.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        let eject =
            failure == Failure::CheckFailed || (policy.max_fails > 0 && fails >= policy.max_fails);
        if !eject {
            warn!(upstream = %self.authority, reason = failure.as_str(), fails, "upstream failed");
            return;
        }
        let until = clock().saturating_add(millis(policy.fail_timeout));
        if self.skipped_until.swap(until, Ordering::AcqRel) == IN_ROTATION {
            self.metrics.up.set(0);
            self.metrics.ejections.inc();
            warn!(upstream = %self.authority, reason = failure.as_str(), fails, skipped_for = ?policy.fail_timeout, "upstream failed: out of rotation");
        } else {
            warn!(upstream = %self.authority, reason = failure.as_str(), "upstream failed again: still out of rotation");
        }
    }
}

/// Every upstream address the proxy has been configured with, shared across reloads.
pub struct HealthRegistry {
    known: Mutex<HashMap<Authority, Arc<Health>>>,
}

impl HealthRegistry {
    pub fn new() -> HealthRegistry {
        HealthRegistry {
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The health of `authority`, the same object for every route and configuration that
    /// names it. Called when a configuration is loaded, never per request.
    pub fn of(&self, authority: &Authority, metrics: &Metrics) -> Arc<Health> {
        // Critical section: one map lookup or insert.
        let mut known = crate::sync::lock(&self.known);
        known
            .entry(authority.clone())
            .or_insert_with(|| {
                Arc::new(Health {
                    authority: authority.clone(),
                    fails: AtomicU32::new(0),
                    skipped_until: AtomicU64::new(IN_ROTATION),
                    metrics: metrics.upstream(authority.as_str()),
                })
            })
            .clone()
    }
}

impl Default for HealthRegistry {
    fn default() -> Self {
        HealthRegistry::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    fn policy(max_fails: u32, fail_timeout: Duration) -> HealthSettings {
        HealthSettings {
            max_fails,
            fail_timeout,
            check: None,
        }
    }

    #[test]
    fn skipped_after_max_fails_then_one_trial() {
        let metrics = Metrics::new(Counter::default());
        let registry = HealthRegistry::new();
        let a = Authority::from_static("a:1");
        let health = registry.of(&a, &metrics);
        assert!(Arc::ptr_eq(&health, &registry.of(&a, &metrics)));

        let two = policy(2, Duration::from_millis(30));
        assert!(health.claim(&two));
        health.failed(Failure::Refused, &two);
        assert!(health.claim(&two), "one failure of two allowed");
        health.failed(Failure::ConnectTimeout, &two);
        assert!(!health.claim(&two), "skipped after the second");
        std::thread::sleep(Duration::from_millis(40));
        assert!(health.claim(&two), "one trial after fail_timeout");
        assert!(!health.claim(&two), "only one");
        health.succeeded();
        assert!(health.claim(&two) && health.claim(&two), "back in rotation");

        let never = policy(0, Duration::from_secs(10));
        for _ in 0..5 {
            health.failed(Failure::Refused, &never);
        }
        assert!(health.claim(&never), "max_fails 0 never skips");
        health.succeeded();
        health.failed(Failure::CheckFailed, &never);
        assert!(!health.claim(&never), "a failed check always skips");
        let text = metrics.encode();
        assert!(
            text.contains("stickless_upstream_ejections_total{upstream=\"a:1\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("stickless_upstream_up{upstream=\"a:1\"} 0"),
            "{text}"
        );
    }
}
