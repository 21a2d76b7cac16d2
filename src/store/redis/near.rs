//! The near cache (`store.near_cache`): sessions this worker read recently, served without a
//! round trip while Redis says they are unchanged.
//!
//! Exactness comes from Redis, not from a TTL: the worker's connection speaks RESP3 with
//! `CLIENT TRACKING ON`, so Redis remembers every key it read and pushes an invalidation on
//! that same connection when any client changes or deletes one (a write, an extension, an
//! expiry, an eviction, `FLUSHALL`). The push is handled inside the connection's reader
//! (`Invalidations::send`), before the replies that follow it are handed out.
//!
//! Three rules keep a stale entry from surviving:
//! - An entry is stored only if no invalidation arrived while it was being read (`epoch`):
//!   the push for a change made just after the read can be handled before the reader stores
//!   what it read.
//! - Our own writes forget the entry themselves, before and after, so this worker never reads
//!   its own writes late, whatever the order of the push and the write's reply.
//! - When the connection closes, Redis forgets what it tracked for us and invalidations are
//!   lost: the whole cache is dropped, and so on every new connection.
//!
//! The window: another instance's (or worker's) change is seen here once its invalidation
//! arrives, a network hop after the write. A read that starts in that window is served the
//! old value. See "Near cache" in the README for the figures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use redis::aio::{AsyncPushSender, SendError};
use redis::{PushInfo, PushKind, Value};

use crate::store::Loaded;
use crate::sync::lock;

/// The sessions one worker read, by Redis key. Shared between the worker's requests and its
/// connection's reader, which only ever removes.
pub struct NearCache {
    entries: Mutex<HashMap<Vec<u8>, Entry>>,
    /// Bumped by every invalidation (and every forget): a read that saw it change stores
    /// nothing.
    epoch: AtomicU64,
    max: usize,
}

struct Entry {
    loaded: Loaded,
    /// When the key's TTL, as read, runs out: the entry is no use after it.
    expires: Instant,
}

impl NearCache {
    pub fn new(max: usize) -> Arc<NearCache> {
        Arc::new(NearCache {
            entries: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            max,
        })
    }

    /// The session as last read, its TTL counted down since.
    pub fn get(&self, key: &str) -> Option<Loaded> {
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        let entry = entries.get(key.as_bytes())?;
        match entry.expires.checked_duration_since(now) {
            Some(ttl) if !ttl.is_zero() => Some(Loaded {
                ttl,
                ..entry.loaded.clone()
            }),
            _ => {
                entries.remove(key.as_bytes());
                None
            }
        }
    }

    /// Where a read starts: hand the value to `put`.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Keeps what a read that started at `epoch` found, unless something was invalidated
    /// since. When full, an arbitrary entry makes room: every entry is as good as any other
    /// to a cache that only saves a round trip.
    pub fn put(&self, key: &str, loaded: &Loaded, epoch: u64) {
        if loaded.ttl.is_zero() {
            return;
        }
        let expires = Instant::now() + loaded.ttl;
        let mut entries = lock(&self.entries);
        // Checked under the lock: an invalidation removes under it too.
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if entries.len() >= self.max && !entries.contains_key(key.as_bytes()) {
            if let Some(victim) = entries.keys().next().cloned() {
                entries.remove(&victim);
            }
        }
        entries.insert(
            key.as_bytes().to_vec(),
            Entry {
                loaded: loaded.clone(),
                expires,
            },
        );
    }

    /// Before and after one of our own writes to `key`.
    pub fn forget(&self, key: &str) {
        let mut entries = lock(&self.entries);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.remove(key.as_bytes());
    }

    /// Everything, when invalidations may have been lost (a new or closed connection).
    pub fn clear(&self) {
        let mut entries = lock(&self.entries);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    fn invalidate(&self, keys: &[Value]) {
        let mut entries = lock(&self.entries);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for key in keys {
            if let Value::BulkString(key) = key {
                entries.remove(key.as_slice());
            }
        }
    }
}

/// The connection's push handler: called by its reader, in order with the replies.
pub struct Invalidations(pub Arc<NearCache>);

impl AsyncPushSender for Invalidations {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        match info.kind {
            // `[keys]`, or null when the server flushed everything.
            PushKind::Invalidate => match info.data.first() {
                Some(Value::Array(keys)) => self.0.invalidate(keys),
                _ => self.0.clear(),
            },
            // Tracking ends with the connection.
            PushKind::Disconnection => self.0.clear(),
            _ => {}
        }
        Ok(())
    }
}
