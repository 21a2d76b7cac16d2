//! Round-robin over a route's upstreams, skipping the ones out of rotation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::health::Health;
use crate::config::HealthSettings;

#[derive(Debug)]
pub struct UpstreamSet {
    members: Vec<Arc<Health>>,
    pub policy: HealthSettings,
    next: AtomicUsize,
}

impl UpstreamSet {
    pub fn new(members: Vec<Arc<Health>>, policy: HealthSettings) -> UpstreamSet {
        UpstreamSet {
            members,
            policy,
            next: AtomicUsize::new(0),
        }
    }

    pub fn members(&self) -> &[Arc<Health>] {
        &self.members
    }

    /// Every upstream once: first those in rotation, starting at the next round-robin choice
    /// (the rest are where a failed connect falls over to); then, as a last resort, the ones
    /// being skipped, so that a route whose upstreams are all out still tries them rather
    /// than failing outright.
    pub fn order(&self) -> Order<'_> {
        let len = self.members.len();
        Order {
            set: self,
            start: self.next.fetch_add(1, Ordering::Relaxed) % len.max(1),
            i: 0,
            skipped: Vec::new(),
            last_resort: 0,
        }
    }
}

/// The upstreams one request tries, decided lazily: a skipped upstream's single trial is
/// claimed only by a request that actually gets to it.
pub struct Order<'a> {
    set: &'a UpstreamSet,
    start: usize,
    i: usize,
    skipped: Vec<usize>,
    last_resort: usize,
}

impl<'a> Iterator for Order<'a> {
    type Item = &'a Arc<Health>;

    fn next(&mut self) -> Option<&'a Arc<Health>> {
        let members = &self.set.members;
        while self.i < members.len() {
            let index = (self.start + self.i) % members.len();
            self.i += 1;
            let member = &members[index];
            if member.claim(&self.set.policy) {
                return Some(member);
            }
            self.skipped.push(index);
        }
        let index = *self.skipped.get(self.last_resort)?;
        self.last_resort += 1;
        members.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::upstream::health::{Failure, HealthRegistry};
    use http::uri::Authority;
    use prometheus_client::metrics::counter::Counter;
    use std::time::Duration;

    #[test]
    fn rotates_covers_all_and_tries_skipped_ones_last() {
        let metrics = Metrics::new(Counter::default());
        let registry = HealthRegistry::new();
        let policy = HealthSettings {
            max_fails: 1,
            fail_timeout: Duration::from_secs(60),
            check: None,
        };
        let members = ["a:1", "b:2", "c:3"]
            .map(|a| registry.of(&Authority::from_static(a), &metrics))
            .to_vec();
        let set = UpstreamSet::new(members, policy.clone());
        let names = |set: &UpstreamSet| -> Vec<String> {
            set.order().map(|h| h.authority().to_string()).collect()
        };
        assert_eq!(names(&set), ["a:1", "b:2", "c:3"]);
        assert_eq!(names(&set), ["b:2", "c:3", "a:1"]);
        set.members()[1].failed(Failure::Refused, &policy);
        assert_eq!(names(&set), ["c:3", "a:1", "b:2"]);
        assert_eq!(names(&set), ["a:1", "c:3", "b:2"]);
        for member in set.members() {
            member.failed(Failure::ConnectTimeout, &policy);
        }
        assert_eq!(names(&set).len(), 3, "all out: still tried");
    }
}
