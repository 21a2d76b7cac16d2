//! Response phase: applying the backend's update to the store before the client sees the
//! response ("a response reaches the client only after its session changes are durable").

use std::borrow::Cow;

use super::id::SessionId;
use super::lifetime::now_millis;
use super::record::{Record, Session};
use super::sealing::SealError;
use super::update::{MalformedUpdate, Update};
use crate::config::{SessionLimits, SessionSettings};
use crate::store::{Delta, Owners, Principal, SessionStore, Store, StoreError};

/// What the response's update did to the store, and so what the response must tell the
/// browser about its cookie.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing written; the cookie stays as it is.
    None,
    /// Attributes of the live session written; the cookie stays.
    Updated,
    /// A new session (its cookie is issued).
    Created(SessionId),
    /// The session under a new id (its cookie is issued).
    Rotated(SessionId),
    /// The session destroyed; the cookie is cleared. `existed` is false when there was no
    /// live session to destroy (the cookie is cleared all the same).
    Invalidated { existed: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Malformed(#[from] MalformedUpdate),
    #[error("the operating system's random source failed")]
    Random(#[source] getrandom::Error),
    #[error("sealing the session's values failed")]
    Seal(#[from] SealError),
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
) -> Result<Change, PersistError> {
    if update.invalidate {
        let existed = current.is_some();
        if let Some(session) = current {
            let principal = principal_of(settings, &session.record);
            if let Some(principal) = principal.as_ref().filter(|_| update.invalidate_all) {
                store.end_all(principal).await?;
            }
            // Also when the index ended it: a session from before `principal_attribute` was
            // set is in no index. A second delete finds nothing and writes no event.
            store.delete(&session.id, principal.as_ref()).await?;
        }
        return Ok(Change::Invalidated { existed });
    }
    if update.is_empty() {
        return Ok(Change::None);
    }
    let now = now_millis();
    let Some(session) = current else {
        return create(store, settings, update, now).await;
    };
    let next = session.record.updated(update);
    check_limits(&next, update, settings)?;
    let (old_owner, new_owner) = (
        principal_of(settings, &session.record),
        principal_of(settings, &next),
    );
    let owners = Owners {
        old: old_owner.as_ref(),
        new: new_owner.as_ref(),
    };
    let Some(ttl) = settings.lifetime.ttl(next.created, now) else {
        // Reached its absolute deadline during this request: it is over, start afresh.
        return create(store, settings, update, now).await;
    };
    if update.rotate {
        let new = SessionId::generate().map_err(PersistError::Random)?;
        let stored = sealed(settings, &new, next)?;
        if store
            .rotate(&session.id, &new, &stored, ttl, owners)
            .await?
        {
            return Ok(Change::Rotated(new));
        }
        // Gone since this request read it: as with an update, start afresh.
        return create(store, settings, update, now).await;
    }
    let set = match &settings.sealer {
        Some(sealer) => Cow::Owned(sealer.seal_values(&session.id, &update.set)?),
        None => Cow::Borrowed(update.set.as_slice()),
    };
    let delta = Delta {
        remove: &update.remove,
        set: &set,
    };
    if store.update(&session.id, delta, ttl, owners).await? {
        Ok(Change::Updated)
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
) -> Result<Change, PersistError> {
    if update.set.is_empty() {
        return Ok(Change::None);
    }
    let record = Record::new(now).updated(update);
    check_limits(&record, update, settings)?;
    let ttl = settings
        .lifetime
        .ttl(now, now)
        .unwrap_or(settings.lifetime.idle);
    let id = SessionId::generate().map_err(PersistError::Random)?;
    let principal = principal_of(settings, &record);
    let stored = sealed(settings, &id, record)?;
    store.create(&id, &stored, ttl, principal.as_ref()).await?;
    Ok(Change::Created(id))
}

/// The principal of an (opened) record: the value of `session.principal_attribute`, when it
/// is set and not empty.
pub fn principal_of(settings: &SessionSettings, record: &Record) -> Option<Principal> {
    let name = settings.principal_attribute.as_ref()?;
    let value = record.attributes.get(name).filter(|v| !v.is_empty())?;
    Some(Principal::new(value.clone()))
}

/// The record as it goes to the store: sealed for session `id` when encryption is on.
fn sealed(settings: &SessionSettings, id: &SessionId, record: Record) -> Result<Record, SealError> {
    match &settings.sealer {
        Some(sealer) => sealer.seal_record(id, &record),
        None => Ok(record),
    }
}

/// `next` is the session as `update` would leave it. Only the values being set are held to
/// the value limit, so lowering it does not lock out sessions that already hold a larger one.
fn check_limits(
    next: &Record,
    update: &Update,
    settings: &SessionSettings,
) -> Result<(), MalformedUpdate> {
    let SessionLimits {
        max_bytes,
        max_attributes,
        max_value_bytes,
    } = settings.limits;
    if let Some((name, value)) = update
        .set
        .iter()
        .find(|(_, value)| value.len() > max_value_bytes)
    {
        return Err(MalformedUpdate::ValueTooLarge {
            name: name.clone(),
            size: value.len(),
            limit: max_value_bytes,
        });
    }
    let count = next.attributes.len();
    if count > max_attributes {
        return Err(MalformedUpdate::TooManyAttributes {
            count,
            limit: max_attributes,
        });
    }
    let size = next.injected_size(settings.prefix.as_str().len());
    if size > max_bytes {
        return Err(MalformedUpdate::TooLarge {
            size,
            limit: max_bytes,
        });
    }
    Ok(())
}
