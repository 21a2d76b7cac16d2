//! The Redis store.
//!
//! Layout: one hash per session at `<key_prefix>:session:<id>`. Its fields are the attributes
//! (names `[a-z0-9][a-z0-9-]*`) plus `_created` (Unix milliseconds), which cannot clash with an
//! attribute because attribute names never start with `_`. The key's TTL is the time left
//! before the session expires, so Redis removes expired sessions by itself.
//!
//! Round trips: a read is one pipelined `HGETALL` + `PTTL`; a write is one script (atomic per
//! session, single key, so it stays on one cluster slot).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script};

use super::{Delta, Loaded, SessionStore, StoreError};
use crate::session::id::SessionId;
use crate::session::record::{attribute_name, Record};

/// The metadata field; see the module comment.
const CREATED: &str = "_created";

/// `KEYS[1]` session; `ARGV[1]` TTL in ms; then field/value pairs. Replaces whatever was there.
const CREATE: &str = r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

/// `KEYS[1]` session; `ARGV[1]` TTL in ms; `ARGV[2]` how many names to remove; those names;
/// then field/value pairs to set. Returns 0 without writing if the session is gone, so a late
/// write can never resurrect an expired or invalidated session.
const UPDATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[2])
if n > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, 3, 2 + n)) end
if #ARGV > 2 + n then redis.call('HSET', KEYS[1], unpack(ARGV, 3 + n)) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

pub struct RedisStore {
    /// Multiplexed and cheap to clone: one connection per proxy whatever the load. It
    /// reconnects in the background after a failure; the failed call still gets its error.
    conn: ConnectionManager,
    key_prefix: String,
    update: Script,
    create: Script,
}

impl RedisStore {
    pub fn open(url: &str, key_prefix: &str, timeout: Duration) -> Result<RedisStore, StoreError> {
        let client = Client::open(url).map_err(StoreError::Unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Retry reconnecting quickly and keep trying: Redis coming back must be noticed
            // within about a second, without a restart of the proxy.
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(StoreError::Unavailable)?;
        Ok(RedisStore {
            conn,
            key_prefix: key_prefix.to_owned(),
            update: Script::new(UPDATE),
            create: Script::new(CREATE),
        })
    }

    pub fn key(&self, id: &SessionId) -> String {
        format!("{}:session:{}", self.key_prefix, id.as_str())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(classify)?;
        Ok(())
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn classify(err: RedisError) -> StoreError {
    if err.code() == Some("OOM") {
        StoreError::Full
    } else {
        StoreError::Unavailable(err)
    }
}

fn parse_record(fields: HashMap<Vec<u8>, Vec<u8>>) -> Option<Record> {
    let created = fields
        .get(CREATED.as_bytes())
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(created) = created else {
        tracing::warn!("a session hash without a valid `{CREATED}` field is ignored");
        return None;
    };
    let mut record = Record::new(created);
    for (field, value) in fields {
        // Fields written by other programs that are not attribute names are not ours to inject.
        if let Some(name) = std::str::from_utf8(&field)
            .ok()
            .filter(|f| attribute_name(f).as_deref() == Some(*f))
        {
            record
                .attributes
                .insert(name.to_owned(), Bytes::from(value));
        }
    }
    Some(record)
}

fn record_args(invocation: &mut redis::ScriptInvocation<'_>, record: &Record) {
    invocation.arg(CREATED).arg(record.created);
    for (name, value) in &record.attributes {
        invocation.arg(name.as_str()).arg(value.as_ref());
    }
}

impl SessionStore for RedisStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Loaded>, StoreError> {
        let key = self.key(id);
        let mut conn = self.conn.clone();
        let (fields, pttl): (HashMap<Vec<u8>, Vec<u8>>, i64) = redis::pipe()
            .cmd("HGETALL")
            .arg(&key)
            .cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(classify)?;
        if fields.is_empty() {
            return Ok(None);
        }
        // -1 (no TTL) can only come from someone else's write; report it as expiring now so
        // the read path sets a proper TTL.
        let ttl = Duration::from_millis(u64::try_from(pttl).unwrap_or(0));
        Ok(parse_record(fields).map(|record| Loaded { record, ttl }))
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PEXPIRE")
            .arg(self.key(id))
            .arg(ttl_ms(ttl))
            .query_async::<i64>(&mut conn)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn create(
        &self,
        id: &SessionId,
        record: &Record,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut invocation = self.create.prepare_invoke();
        invocation.key(self.key(id)).arg(ttl_ms(ttl));
        record_args(&mut invocation, record);
        let mut conn = self.conn.clone();
        invocation
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn update(
        &self,
        id: &SessionId,
        delta: Delta<'_>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.update.prepare_invoke();
        invocation
            .key(self.key(id))
            .arg(ttl_ms(ttl))
            .arg(delta.remove.len());
        for name in delta.remove {
            invocation.arg(name.as_str());
        }
        for (name, value) in delta.set {
            invocation.arg(name.as_str()).arg(value.as_ref());
        }
        let mut conn = self.conn.clone();
        let applied: i64 = invocation.invoke_async(&mut conn).await.map_err(classify)?;
        Ok(applied == 1)
    }

    async fn rotate(
        &self,
        old: &SessionId,
        new: &SessionId,
        record: &Record,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        // The new key is written before the old one is removed, in one ordered pipeline: if
        // the pipeline breaks half-way, the client keeps a working old id (and gets a 503);
        // an orphaned new key expires by its TTL. Plain EVAL keeps this to one round trip
        // without a NOSCRIPT retry; rotation is rare (log-in), so the script text is cheap.
        let mut pipe = redis::pipe();
        let eval = pipe
            .cmd("EVAL")
            .arg(CREATE)
            .arg(1)
            .arg(self.key(new))
            .arg(ttl_ms(ttl));
        eval.arg(CREATED).arg(record.created);
        for (name, value) in &record.attributes {
            eval.arg(name.as_str()).arg(value.as_ref());
        }
        pipe.cmd("DEL").arg(self.key(old));
        let mut conn = self.conn.clone();
        let (_, removed): (i64, i64) = pipe.query_async(&mut conn).await.map_err(classify)?;
        if removed == 0 {
            // The old session ended while this request ran (a logout in another tab): it
            // must not live on under the new id.
            self.delete(new).await?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(self.key(id))
            .query_async::<i64>(&mut conn)
            .await
            .map_err(classify)?;
        Ok(())
    }
}
