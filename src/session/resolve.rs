//! Request phase: from the session cookie to a live session (or none).

use tracing::warn;

use super::id::SessionId;
use super::lifetime::now_millis;
use super::record::Session;
use super::sealing::open_record;
use crate::config::SessionSettings;
use crate::store::{SessionStore, Store, StoreError};

/// Loads the session the cookie names. Costs one store round trip when there is a well-formed
/// id, none otherwise. A sliding extension, when due, is written off the critical path: it
/// only ever lengthens a TTL that is already at least three quarters of the idle timeout, so
/// losing it cannot expire anyone early.
pub async fn resolve(
    store: &Store,
    settings: &SessionSettings,
    id: Option<SessionId>,
) -> Result<Option<Session>, StoreError> {
    let lifetime = &settings.lifetime;
    let Some(id) = id else {
        return Ok(None);
    };
    let Some(loaded) = store.load(&id).await? else {
        return Ok(None);
    };
    let now = now_millis();
    let created = loaded.record.created;
    // The key's TTL already stops at the absolute deadline; this catches clock skew between
    // instances and sessions written by other tools.
    if lifetime.ttl(created, now).is_none() {
        return Ok(None);
    }
    let record = match open_record(settings.sealer.as_ref(), &id, loaded.record) {
        Ok(record) => record,
        Err(why) => {
            let session = settings.fingerprints.show(Some(&id));
            warn!(%session, reason = %why, "session cannot be read; served as no session");
            return Ok(None);
        }
    };
    if let Some(ttl) = lifetime.extension(created, now, loaded.ttl) {
        let store = store.clone();
        let id = id.clone();
        let principal = loaded.principal;
        tokio::spawn(async move {
            if let Err(err) = store.touch(&id, ttl, principal.as_deref()).await {
                warn!(error = %err, "extending a session's idle timeout failed; the next request retries");
            }
        });
    }
    Ok(Some(Session { id, record }))
}
