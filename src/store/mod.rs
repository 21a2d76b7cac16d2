//! Session stores: one trait, two implementations (embedded memory, Redis), and the `Store`
//! the proxy holds, which picks one from the URL and bounds every call by `store.timeout`.
//!
//! Every implementation passes the same contract suite (`tests/store_contract.rs`).

pub mod memory;
pub mod principal;
pub mod redis;
pub mod url;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;

use crate::config::StoreSettings;
use crate::session::id::SessionId;
use crate::session::record::Record;
pub use principal::{Owners, Principal};
pub use url::StoreUrl;

/// A session as a read found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub record: Record,
    /// Time left before the store expires it on its own.
    pub ttl: Duration,
    /// The tag of the principal index that lists it (`Principal::tag`), so an extension can
    /// refresh the index without opening a sealed record.
    pub principal: Option<String>,
}

/// Only what one response changed: written as a delta so concurrent requests that change
/// different attributes of one session both persist.
#[derive(Debug, Clone, Copy)]
pub struct Delta<'a> {
    pub remove: &'a [String],
    pub set: &'a [(String, Bytes)],
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the session store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the session store is full")]
    Full,
    #[error("the session store is unavailable")]
    Unavailable(#[source] ::redis::RedisError),
    #[error("only {acked} of {wanted} replicas acknowledged the write in time")]
    NotDurable { acked: i64, wanted: u32 },
    #[error("{node} answers plain Redis, not TLS: use a redis:// URL, or the server's TLS port")]
    PlainPort { node: String },
}

impl StoreError {
    /// Whether waiting will not help: wrong credentials, missing ACL permissions, a TLS
    /// mismatch. `stickless run` refuses to start on these.
    pub fn is_misconfiguration(&self) -> bool {
        match self {
            StoreError::Unavailable(err) => redis::is_misconfiguration(err),
            StoreError::PlainPort { .. } => true,
            _ => false,
        }
    }
}

/// The store contract. Each operation on one session is atomic; none may resurrect a session
/// that has expired or been deleted.
pub trait SessionStore: Send + Sync {
    /// The session and its remaining TTL, or `None` when it does not exist or has expired.
    fn load(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Option<Loaded>, StoreError>> + Send;
    /// Sets the TTL of an existing session; a missing session stays missing. `principal` is
    /// `Loaded::principal`: its index entry is extended first, so the index never expires a
    /// live member.
    fn touch(
        &self,
        id: &SessionId,
        ttl: Duration,
        principal: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Stores a new session with the given TTL, listed under `principal`; a `created` event.
    fn create(
        &self,
        id: &SessionId,
        record: &Record,
        ttl: Duration,
        principal: Option<&Principal>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Applies a delta and resets the TTL. `Ok(false)` when the session no longer exists, in
    /// which case nothing was written. The session moves from `owners.old`'s index to
    /// `owners.new`'s (or is refreshed in it).
    fn update(
        &self,
        id: &SessionId,
        delta: Delta<'_>,
        ttl: Duration,
        owners: Owners<'_>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Stores `record` under `new` and removes `old`: the old id stops working at once.
    /// `Ok(false)` when `old` no longer exists (expired, or invalidated by a concurrent
    /// request), in which case no session is left under `new` either. Never a `RENAME`, which
    /// cannot cross cluster slots.
    /// `owners.old` lists `old`, `owners.new` lists `new`; a `rotated` event.
    fn rotate(
        &self,
        old: &SessionId,
        new: &SessionId,
        record: &Record,
        ttl: Duration,
        owners: Owners<'_>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Ends the session; `Ok(true)` when it existed (and an `invalidated` event was written).
    fn delete(
        &self,
        id: &SessionId,
        principal: Option<&Principal>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// The live sessions of `principal`, each checked to exist.
    fn sessions_of(
        &self,
        principal: &Principal,
    ) -> impl Future<Output = Result<Vec<SessionId>, StoreError>> + Send;
    /// Ends every live session of `principal` (one `invalidated` event each); how many
    /// ended.
    fn end_all(
        &self,
        principal: &Principal,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
}

// Built once and held behind an `Arc`; the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Memory(memory::MemoryStore),
    Redis(redis::RedisStore),
}

/// The configured store, cheap to clone, every call bounded by the configured timeout so a
/// frozen server costs a request at most `store.timeout`.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
    timeout: Duration,
    /// Every failed or timed-out operation, whoever asked for it: `store_errors_total`.
    errors: Counter,
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {{
        let work = async {
            match &*$self.backend {
                Backend::Memory($store) => $call.await,
                Backend::Redis($store) => $call.await,
            }
        };
        let result = match tokio::time::timeout($self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout($self.timeout)),
        };
        if result.is_err() {
            $self.errors.inc();
        }
        result
    }};
}

impl Store {
    /// Builds the store without waiting for the network: a Redis that is down at start-up is
    /// reconnected to later, as after any restart. Use `ping` to check it now.
    pub fn open(settings: &StoreSettings) -> Result<Store, StoreError> {
        Store::open_counting(settings, Counter::default())
    }

    /// The same store over a connection of its own, for a worker (see `worker`): its Redis
    /// connection's task then runs on the worker's runtime. Failures count in this store's
    /// `store_errors_total`. The embedded store has no connection: it is this very store.
    pub fn sibling(&self, settings: &StoreSettings) -> Result<Store, StoreError> {
        match &*self.backend {
            Backend::Memory(_) => Ok(self.clone()),
            Backend::Redis(_) => Store::open_counting(settings, self.errors.clone()),
        }
    }

    fn open_counting(settings: &StoreSettings, errors: Counter) -> Result<Store, StoreError> {
        let backend = match &settings.url {
            StoreUrl::Memory { max_sessions } => {
                Backend::Memory(memory::MemoryStore::new(*max_sessions))
            }
            StoreUrl::Redis(target) => Backend::Redis(redis::RedisStore::open(
                target,
                &settings.tls,
                &settings.key_prefix,
                settings.timeout,
                settings.durability,
                settings.events,
                settings.near_cache,
            )?),
        };
        Ok(Store {
            backend: Arc::new(backend),
            timeout: settings.timeout,
            errors,
        })
    }

    /// Round trip to the store, for start-up checks. Allowed a few store timeouts, since
    /// after a failed connect it may also diagnose why (TLS against a plain port).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let limit = self.timeout * 4;
        let work = async {
            match &*self.backend {
                Backend::Memory(s) => s.ping().await,
                Backend::Redis(s) => s.ping().await,
            }
        };
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or(Err(StoreError::Timeout(limit)))
    }

    /// The counter of failed operations, for the metrics registry.
    pub fn error_counter(&self) -> Counter {
        self.errors.clone()
    }

    pub fn is_embedded(&self) -> bool {
        matches!(&*self.backend, Backend::Memory(_))
    }
}

impl SessionStore for Store {
    async fn load(&self, id: &SessionId) -> Result<Option<Loaded>, StoreError> {
        dispatch!(self, s => s.load(id))
    }
    async fn touch(
        &self,
        id: &SessionId,
        ttl: Duration,
        principal: Option<&str>,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.touch(id, ttl, principal))
    }
    async fn create(
        &self,
        id: &SessionId,
        record: &Record,
        ttl: Duration,
        principal: Option<&Principal>,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.create(id, record, ttl, principal))
    }
    async fn update(
        &self,
        id: &SessionId,
        delta: Delta<'_>,
        ttl: Duration,
        owners: Owners<'_>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.update(id, delta, ttl, owners))
    }
    async fn rotate(
        &self,
        old: &SessionId,
        new: &SessionId,
        record: &Record,
        ttl: Duration,
        owners: Owners<'_>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.rotate(old, new, record, ttl, owners))
    }
    async fn delete(
        &self,
        id: &SessionId,
        principal: Option<&Principal>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.delete(id, principal))
    }
    async fn sessions_of(&self, principal: &Principal) -> Result<Vec<SessionId>, StoreError> {
        dispatch!(self, s => s.sessions_of(principal))
    }
    async fn end_all(&self, principal: &Principal) -> Result<usize, StoreError> {
        dispatch!(self, s => s.end_all(principal))
    }
}
