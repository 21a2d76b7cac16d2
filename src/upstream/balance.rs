//! Round-robin over a route's upstreams.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::Authority;

#[derive(Debug)]
pub struct UpstreamSet {
    authorities: Vec<Authority>,
    next: AtomicUsize,
}

impl UpstreamSet {
    pub fn new(authorities: Vec<Authority>) -> UpstreamSet {
        UpstreamSet {
            authorities,
            next: AtomicUsize::new(0),
        }
    }

    /// Every upstream once, starting at the next one in the rotation: the first is the
    /// round-robin choice, the rest are where a refused connection falls over to.
    pub fn order(&self) -> impl ExactSizeIterator<Item = &Authority> {
        let len = self.authorities.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % len.max(1);
        (0..len).map(move |i| &self.authorities[(start + i) % len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_covers_all() {
        let set = UpstreamSet::new(vec![
            Authority::from_static("a:1"),
            Authority::from_static("b:2"),
        ]);
        let first: Vec<_> = set.order().map(|a| a.as_str().to_owned()).collect();
        let second: Vec<_> = set.order().map(|a| a.as_str().to_owned()).collect();
        assert_eq!(first, ["a:1", "b:2"]);
        assert_eq!(second, ["b:2", "a:1"]);
    }
}
