//! Response phase: applying the backend's update to the store before the client sees the
//! response ("a response reaches the client only after its session changes are durable").

use super::id::SessionId;
use super::lifetime::now_millis;
use super::record::{Record, Session, MAX_ATTRIBUTES};
use super::update::{MalformedUpdate, Update};
use crate::config::SessionSettings;
use crate::store::{Delta, SessionStore, Store, StoreError};

/// What the response must tell the browser about its cookie.
#[derive(Debug, PartialEq, Eq)]
pub enum CookieChange {
    Keep,
    Issue(SessionId),
    Clear,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Malformed(#[from] MalformedUpdate),
    #[error("the operating system's random source failed")]
    Random(#[source] getrandom::Error),
}

/// Applies `update` to `current` (the session the request resolved, if any).
///
/// Invalidate wins; otherwise rotate, remove, set, as one change. Only the named attributes
/// are written (delta). No session is created for a response that sets nothing.
pub async fn persist(
    store: &Store,
    settings: &SessionSettings,
    current: Option<Session>,
    update: &Update,
) -> Result<CookieChange, PersistError> {
    if update.invalidate {
        if let Some(session) = current {
            store.delete(&session.id).await?;
        }
        return Ok(CookieChange::Clear);
    }
    if update.is_empty() {
        return Ok(CookieChange::Keep);
    }
    let now = now_millis();
    let Some(session) = current else {
        return create(store, settings, update, now).await;
    };
    let next = session.record.updated(update);
    check_size(&next, settings.max_bytes)?;
    let Some(ttl) = settings.lifetime.ttl(next.created, now) else {
        // Reached its absolute deadline during this request: it is over, start afresh.
        return create(store, settings, update, now).await;
    };
    if update.rotate {
        let new = SessionId::generate().map_err(PersistError::Random)?;
        if store.rotate(&session.id, &new, &next, ttl).await? {
            return Ok(CookieChange::Issue(new));
        }
        // Gone since this request read it: as with an update, start afresh.
        return create(store, settings, update, now).await;
    }
    let delta = Delta {
        remove: &update.remove,
        set: &update.set,
    };
    if store.update(&session.id, delta, ttl).await? {
        Ok(CookieChange::Keep)
    } else {
        // Expired or invalidated (another tab logged out) since this request read it. The old
        // id must stay dead, so the update starts a new session, as it would with no session.
        create(store, settings, update, now).await
    }
}

async fn create(
    store: &Store,
    settings: &SessionSettings,
    update: &Update,
    now: u64,
) -> Result<CookieChange, PersistError> {
    if update.set.is_empty() {
        return Ok(CookieChange::Keep);
    }
    let record = Record::new(now).updated(update);
    check_size(&record, settings.max_bytes)?;
    let ttl = settings
        .lifetime
        .ttl(now, now)
        .unwrap_or(settings.lifetime.idle);
    let id = SessionId::generate().map_err(PersistError::Random)?;
    store.create(&id, &record, ttl).await?;
    Ok(CookieChange::Issue(id))
}

fn check_size(record: &Record, limit: usize) -> Result<(), MalformedUpdate> {
    let (size, count) = (record.size(), record.attributes.len());
    if size > limit || count > MAX_ATTRIBUTES {
        return Err(MalformedUpdate::TooLarge {
            size,
            count,
            limit,
            max_count: MAX_ATTRIBUTES,
        });
    }
    Ok(())
}
