//! Sessions kept alive by their open tunnels, coalesced per session.
//!
//! A WebSocket sends no requests, so nothing on the request path extends its session, and
//! nothing notices when the session ends. For every session with at least one open tunnel on
//! this instance, one keeper task reads the session every half idle timeout:
//!
//! - found: its idle expiry is extended when due (`Lifetime::extension`, never past the
//!   absolute deadline), exactly as a request arriving then would have done;
//! - missing (invalidated on any instance, rotated away, expired, deleted in the store): every
//!   tunnel of the session is told to close. The check runs every half idle timeout, so they
//!   close within one.
//!
//! A thousand sockets of one session cost one read and at most one write per interval. A
//! store that cannot answer closes nothing: the next tick asks again, as a request would be
//! retried, and a Redis blip does not drop every WebSocket at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::report::chain;
use crate::session::id::SessionId;
use crate::session::lifetime::{now_millis, Lifetime};
use crate::store::{SessionStore, Store, StoreError};
use crate::sync::lock;

/// The sessions that have tunnels open here.
#[derive(Clone)]
pub struct Keeper {
    store: Store,
    sessions: Arc<Mutex<HashMap<SessionId, Kept>>>,
}

struct Kept {
    /// Tells the session's keeper and guards apart from a later entry for the same id.
    generation: u64,
    tunnels: usize,
    /// Cancelled when the session is found ended: every tunnel of it closes.
    ended: CancellationToken,
    /// Cancelled when the last tunnel closed: the keeper task stops.
    unused: CancellationToken,
}

/// One tunnel's hold on its session; dropping it lets the keeper stop with the last one.
pub struct Held {
    id: SessionId,
    generation: u64,
    ended: CancellationToken,
    sessions: Arc<Mutex<HashMap<SessionId, Kept>>>,
}

impl Held {
    /// Completes once the session has ended.
    pub async fn ended(&self) {
        self.ended.cancelled().await;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Each critical section here and below is one map lookup with an insert or remove.
        let mut sessions = lock(&self.sessions);
        let Some(kept) = sessions.get_mut(&self.id) else {
            return;
        };
        if kept.generation != self.generation {
            return;
        }
        kept.tunnels -= 1;
        if kept.tunnels == 0 {
            kept.unused.cancel();
            sessions.remove(&self.id);
        }
    }
}

impl Keeper {
    pub fn new(store: Store) -> Keeper {
        Keeper {
            store,
            sessions: Arc::default(),
        }
    }

    /// Sessions with a keeper running now.
    pub fn sessions(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Keeps `id` alive while the returned hold lives. The first tunnel of a session starts
    /// its keeper with `lifetime`; later ones join it.
    pub fn hold(&self, id: SessionId, lifetime: Lifetime) -> Held {
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut sessions = lock(&self.sessions);
        if let Some(kept) = sessions.get_mut(&id) {
            kept.tunnels += 1;
            return Held {
                id,
                generation: kept.generation,
                ended: kept.ended.clone(),
                sessions: self.sessions.clone(),
            };
        }
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let kept = Kept {
            generation,
            tunnels: 1,
            ended: CancellationToken::new(),
            unused: CancellationToken::new(),
        };
        let keeper = keep(
            self.store.clone(),
            id.clone(),
            lifetime,
            kept.ended.clone(),
            kept.unused.clone(),
            self.sessions.clone(),
            generation,
        );
        let ended = kept.ended.clone();
        sessions.insert(id.clone(), kept);
        drop(sessions);
        tokio::spawn(keeper);
        Held {
            id,
            generation,
            ended,
            sessions: self.sessions.clone(),
        }
    }
}

/// The keeper of one session: every half idle timeout, a read, and an extension when due.
async fn keep(
    store: Store,
    id: SessionId,
    lifetime: Lifetime,
    ended: CancellationToken,
    unused: CancellationToken,
    sessions: Arc<Mutex<HashMap<SessionId, Kept>>>,
    generation: u64,
) {
    let interval = lifetime.idle / 2;
    loop {
        tokio::select! {
            () = unused.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match check(&store, &id, &lifetime).await {
            Ok(true) => {}
            Ok(false) => {
                debug!("a tunnel's session has ended; closing its tunnels");
                let mut sessions = lock(&sessions);
                if sessions
                    .get(&id)
                    .is_some_and(|kept| kept.generation == generation)
                {
                    sessions.remove(&id);
                }
                drop(sessions);
                ended.cancel();
                return;
            }
            Err(err) => {
                warn!(error = %chain(&err), "keeping a tunnel's session alive failed; retrying at the next interval");
            }
        }
    }
}

/// Whether the session still lives; extends it when due.
async fn check(store: &Store, id: &SessionId, lifetime: &Lifetime) -> Result<bool, StoreError> {
    let Some(loaded) = store.load(id).await? else {
        return Ok(false);
    };
    let now = now_millis();
    let created = loaded.record.created;
    if lifetime.ttl(created, now).is_none() {
        return Ok(false);
    }
    if let Some(ttl) = lifetime.extension(created, now, loaded.ttl) {
        store.touch(id, ttl, loaded.principal.as_deref()).await?;
    }
    Ok(true)
}
