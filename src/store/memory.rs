//! The embedded store (`memory://`): sessions in this process, for a single instance or the
//! demo. Expiry is honoured on every access, and memory is bounded by a session count.
//!
//! The principal index is the sessions themselves: each entry remembers its principal, and a
//! principal's sessions are found by a scan (bounded by `max_sessions`), so nothing can leak.
//! No events: there is no stream to write them to (`events` needs a Redis store).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Delta, Loaded, Owners, Principal, SessionStore, StoreError};
use crate::session::id::SessionId;
use crate::session::record::Record;

struct Entry {
    record: Record,
    expires: Instant,
    /// `Principal::tag` of its principal.
    principal: Option<String>,
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
        principal: Option<&Principal>,
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
                principal: principal.map(|p| p.tag.clone()),
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
            principal: e.principal.clone(),
        }))
    }

    async fn touch(
        &self,
        id: &SessionId,
        ttl: Duration,
        _principal: Option<&str>,
    ) -> Result<(), StoreError> {
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
        principal: Option<&Principal>,
    ) -> Result<(), StoreError> {
        self.insert(&mut self.sessions(), id, record, ttl, principal)
    }

    async fn update(
        &self,
        id: &SessionId,
        delta: Delta<'_>,
        ttl: Duration,
        owners: Owners<'_>,
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
        e.principal = owners.new.map(|p| p.tag.clone());
        Ok(true)
    }

    async fn rotate(
        &self,
        old: &SessionId,
        new: &SessionId,
        record: &Record,
        ttl: Duration,
        owners: Owners<'_>,
    ) -> Result<bool, StoreError> {
        let mut map = self.sessions();
        if Self::live(&mut map, old, Instant::now()).is_none() {
            return Ok(false);
        }
        map.remove(old);
        self.insert(&mut map, new, record, ttl, owners.new)?;
        Ok(true)
    }

    async fn delete(
        &self,
        id: &SessionId,
        _principal: Option<&Principal>,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut map = self.sessions();
        let existed = Self::live(&mut map, id, now).is_some();
        map.remove(id);
        Ok(existed)
    }

    async fn sessions_of(&self, principal: &Principal) -> Result<Vec<SessionId>, StoreError> {
        let now = Instant::now();
        Ok(self
            .sessions()
            .iter()
            .filter(|(_, e)| e.expires > now && e.principal.as_deref() == Some(&principal.tag))
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn end_all(&self, principal: &Principal) -> Result<usize, StoreError> {
        let now = Instant::now();
        let mut map = self.sessions();
        let before = map.len();
        map.retain(|_, e| e.expires <= now || e.principal.as_deref() != Some(&principal.tag));
        let ended = before - map.len();
        // The expired ones go too, uncounted.
        map.retain(|_, e| e.expires > now);
        Ok(ended)
    }
}
