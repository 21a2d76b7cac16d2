//! The embedded store (`memory://`): sessions in this process, for a single instance or the
//! demo. Expiry is honoured on every access, and memory is bounded by a session count.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Delta, Loaded, SessionStore, StoreError};
use crate::session::id::SessionId;
use crate::session::record::Record;

struct Entry {
    record: Record,
    expires: Instant,
}

pub struct MemoryStore {
    sessions: Mutex<HashMap<SessionId, Entry>>,
    /// Beyond this many live sessions, creation fails (503) rather than evicting someone's
    /// session: the same choice as Redis with `noeviction`, so nobody is logged out silently.
    max_sessions: usize,
}

impl MemoryStore {
    pub fn new(max_sessions: usize) -> MemoryStore {
        MemoryStore {
            sessions: Mutex::new(HashMap::new()),
            max_sessions,
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// A panic while holding the lock cannot leave an entry half-written (every mutation is a
    /// single map operation), so a poisoned lock is safe to keep using.
    fn sessions(&self) -> MutexGuard<'_, HashMap<SessionId, Entry>> {
        crate::sync::lock(&self.sessions)
    }

    fn live<'m>(
        map: &'m mut HashMap<SessionId, Entry>,
        id: &SessionId,
        now: Instant,
    ) -> Option<&'m mut Entry> {
        if map.get(id).is_some_and(|e| e.expires <= now) {
            map.remove(id);
        }
        map.get_mut(id)
    }

    fn insert(
        &self,
        map: &mut HashMap<SessionId, Entry>,
        id: &SessionId,
        record: &Record,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        if map.len() >= self.max_sessions && !map.contains_key(id) {
            map.retain(|_, e| e.expires > now);
            if map.len() >= self.max_sessions {
                return Err(StoreError::Full);
            }
        }
        map.insert(
            id.clone(),
            Entry {
                record: record.clone(),
                expires: now + ttl,
            },
        );
        Ok(())
    }
}

impl SessionStore for MemoryStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Loaded>, StoreError> {
        let now = Instant::now();
        let mut map = self.sessions();
        Ok(Self::live(&mut map, id, now).map(|e| Loaded {
            record: e.record.clone(),
            ttl: e.expires - now,
        }))
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        if let Some(e) = Self::live(&mut self.sessions(), id, now) {
            e.expires = now + ttl;
        }
        Ok(())
    }

    async fn create(
        &self,
        id: &SessionId,
        record: &Record,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.insert(&mut self.sessions(), id, record, ttl)
    }

    async fn update(
        &self,
        id: &SessionId,
        delta: Delta<'_>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut map = self.sessions();
        let Some(e) = Self::live(&mut map, id, now) else {
            return Ok(false);
        };
        for name in delta.remove {
            e.record.attributes.remove(name);
        }
        for (name, value) in delta.set {
            e.record.attributes.insert(name.clone(), value.clone());
        }
        e.expires = now + ttl;
        Ok(true)
    }

    async fn rotate(
        &self,
        old: &SessionId,
        new: &SessionId,
        record: &Record,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut map = self.sessions();
        if Self::live(&mut map, old, Instant::now()).is_none() {
            return Ok(false);
        }
        map.remove(old);
        self.insert(&mut map, new, record, ttl)?;
        Ok(true)
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.sessions().remove(id);
        Ok(())
    }
}
