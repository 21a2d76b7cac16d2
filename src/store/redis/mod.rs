//! The Redis store, for every topology (standalone or primary endpoint, Sentinel, Cluster;
//! plain or TLS).
//!
//! Layout: one hash per session at `<key_prefix>:session:<id>`. Its fields are the attributes
//! (names `[a-z0-9][a-z0-9-]*`) plus `_created` (Unix milliseconds), which cannot clash with an
//! attribute because attribute names never start with `_`. The key's TTL is the time left
//! before the session expires, so Redis removes expired sessions by itself.
//!
//! Round trips: a read is one pipelined `HGETALL` + `PTTL` (in cluster mode the two are sent
//! at once as single commands, so that each can follow `ASK`); a write is one script on one key
//! (atomic per session, and on one cluster slot). Only commands ElastiCache allows are sent:
//! no `CONFIG`, `KEYS`, `SCAN`, `FLUSH*`, `DEBUG` or `RENAME`.

mod link;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{RedisError, Script};

use super::{Delta, Loaded, SessionStore, StoreError};
use crate::config::{Durability, TlsFiles};
use crate::session::id::SessionId;
use crate::session::record::{attribute_name, Record};
use crate::store::url::RedisTarget;
pub use link::is_misconfiguration;
use link::{Conn, Link};

/// The metadata field; see the module comment.
const CREATED: &str = "_created";

/// `KEYS[1]` session; `ARGV[1]` TTL in ms; then field/value pairs. Replaces whatever was there.
/// `HSET` comes first: it is the only command here Redis refuses when out of memory
/// (`maxmemory` with `noeviction`), and a script that fails at its first command has changed
/// nothing.
const CREATE: &str = r"
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

/// `KEYS[1]` session; `ARGV[1]` TTL in ms; `ARGV[2]` how many names to remove; those names;
/// then field/value pairs to set (the caller never removes a name it also sets, so the order
/// of the two does not matter, and `HSET` can go first for the reason above). Returns 0
/// without writing if the session is gone, so a late write never resurrects an expired or
/// invalidated session.
const UPDATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[2])
if #ARGV > 2 + n then redis.call('HSET', KEYS[1], unpack(ARGV, 3 + n)) end
if n > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, 3, 2 + n)) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

pub struct RedisStore {
    link: Link,
    /// For diagnosing start-up failures (TLS against a plain port).
    target: RedisTarget,
    timeout: Duration,
    key_prefix: String,
    durability: Option<Durability>,
    update: Script,
    create: Script,
}

impl RedisStore {
    pub fn open(
        target: &RedisTarget,
        tls: &TlsFiles,
        key_prefix: &str,
        timeout: Duration,
        durability: Option<Durability>,
    ) -> Result<RedisStore, StoreError> {
        let link = Link::new(target, tls, timeout).map_err(StoreError::Unavailable)?;
        Ok(RedisStore {
            update: link.script(UPDATE),
            create: link.script(CREATE),
            link,
            target: target.clone(),
            timeout,
            key_prefix: key_prefix.to_owned(),
            durability,
        })
    }

    pub fn key(&self, id: &SessionId) -> String {
        format!("{}:session:{}", self.key_prefix, id.as_str())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let result = self
            .link
            .run(
                |mut conn| async move { redis::cmd("PING").query_async::<String>(&mut conn).await },
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if err.is_timeout() && self.target.tls => {
                // A TLS handshake with a plain Redis hangs rather than failing: ask it in
                // plain text to tell the mistake from a slow server.
                for (host, port) in &self.target.nodes {
                    if link::speaks_plain_redis(host, *port, self.timeout).await {
                        return Err(StoreError::PlainPort {
                            node: format!("{host}:{port}"),
                        });
                    }
                }
                Err(classify(err))
            }
            Err(err) => Err(classify(err)),
        }
    }

    fn invocation_for<'s>(
        &self,
        script: &'s Script,
        key: String,
        ttl: Duration,
    ) -> redis::ScriptInvocation<'s> {
        let mut invocation = script.prepare_invoke();
        invocation.key(key).arg(ttl_ms(ttl));
        invocation
    }

    /// Runs `pipe` (whose commands all touch `key`'s slot) followed by `WAIT`, when writes
    /// that end a session id must reach replicas. Fails closed when fewer replicas than asked
    /// acknowledged within the timeout.
    async fn durable(
        &self,
        key: &str,
        mut pipe: redis::Pipeline,
        replies: usize,
    ) -> Result<Vec<redis::Value>, StoreError> {
        let Some(durability) = self.durability else {
            return self
                .link
                .run(|mut conn| async move { pipe.query_async::<Vec<redis::Value>>(&mut conn).await })
                .await
                .map_err(classify);
        };
        pipe.cmd("WAIT")
            .arg(durability.replicas)
            .arg(ttl_ms(durability.timeout));
        let route =
            SingleNodeRoutingInfo::SpecificNode(Route::with_key(key.as_bytes(), SlotAddr::Master));
        let mut values = self
            .link
            .run(|conn| async move {
                match conn {
                    // WAIT counts the acknowledgements of this connection's writes, so it
                    // must go to the node that took them: the key's primary.
                    Conn::Cluster(mut cluster) => {
                        cluster.route_pipeline(pipe, 0, replies + 1, route).await
                    }
                    mut single => pipe.query_async::<Vec<redis::Value>>(&mut single).await,
                }
            })
            .await
            .map_err(classify)?;
        let acked = int(values.pop().as_ref());
        if acked < i64::from(durability.replicas) {
            return Err(StoreError::NotDurable {
                acked,
                wanted: durability.replicas,
            });
        }
        Ok(values)
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

fn int(value: Option<&redis::Value>) -> i64 {
    match value {
        Some(redis::Value::Int(n)) => *n,
        _ => 0,
    }
}

impl SessionStore for RedisStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Loaded>, StoreError> {
        let key = self.key(id);
        let cluster = self.link.is_cluster();
        let (fields, pttl): (HashMap<Vec<u8>, Vec<u8>>, i64) = self
            .link
            .run(|mut conn| async move {
                if cluster {
                    // Two commands sent at once (one round trip on the node's connection),
                    // not a pipeline: while the slot migrates, each follows `ASK` on its own
                    // (see `link::Clustered`).
                    let mut other = conn.clone();
                    let (mut hgetall, mut pttl) = (redis::cmd("HGETALL"), redis::cmd("PTTL"));
                    hgetall.arg(&key);
                    pttl.arg(&key);
                    return tokio::try_join!(
                        hgetall.query_async(&mut conn),
                        pttl.query_async(&mut other)
                    );
                }
                redis::pipe()
                    .cmd("HGETALL")
                    .arg(&key)
                    .cmd("PTTL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
            })
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
        let key = self.key(id);
        self.link
            .run(|mut conn| async move {
                redis::cmd("PEXPIRE")
                    .arg(key)
                    .arg(ttl_ms(ttl))
                    .query_async::<i64>(&mut conn)
                    .await
            })
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
        let mut invocation = self.invocation_for(&self.create, self.key(id), ttl);
        record_args(&mut invocation, record);
        self.link
            .run(|mut conn| async move { invocation.invoke_async::<i64>(&mut conn).await })
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
        // A name both removed and set ends up set (remove, then set): leave it out of the
        // removals so the script may apply them in either order.
        let removed: Vec<&String> = delta
            .remove
            .iter()
            .filter(|name| !delta.set.iter().any(|(set, _)| set == *name))
            .collect();
        let mut invocation = self.invocation_for(&self.update, self.key(id), ttl);
        invocation.arg(removed.len());
        for name in removed {
            invocation.arg(name.as_str());
        }
        for (name, value) in delta.set {
            invocation.arg(name.as_str()).arg(value.as_ref());
        }
        let applied: i64 = self
            .link
            .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
            .map_err(classify)?;
        Ok(applied == 1)
    }

    async fn rotate(
        &self,
        old: &SessionId,
        new: &SessionId,
        record: &Record,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        // The new key is written before the old one is removed: if anything breaks half-way,
        // the client keeps a working old id (and gets a 503), and an orphaned new key expires
        // by its TTL. In a cluster the two keys live on different slots, so these are two
        // calls; elsewhere one ordered pipeline. Plain EVAL avoids a NOSCRIPT retry; rotation
        // is rare (log-in), so sending the script text is cheap.
        let (old_key, new_key) = (self.key(old), self.key(new));
        let mut create = redis::pipe();
        let eval = create
            .cmd("EVAL")
            .arg(CREATE)
            .arg(1)
            .arg(&new_key)
            .arg(ttl_ms(ttl));
        eval.arg(CREATED).arg(record.created);
        for (name, value) in &record.attributes {
            eval.arg(name.as_str()).arg(value.as_ref());
        }
        let removed = if self.link.is_cluster() {
            self.link
                .run(|mut conn| async move { create.query_async::<Vec<redis::Value>>(&mut conn).await })
                .await
                .map_err(classify)?;
            let mut delete = redis::pipe();
            delete.cmd("DEL").arg(&old_key);
            int(self.durable(&old_key, delete, 1).await?.first())
        } else {
            create.cmd("DEL").arg(&old_key);
            int(self.durable(&old_key, create, 2).await?.get(1))
        };
        if removed == 0 {
            // The old session ended while this request ran (a logout in another tab): it
            // must not live on under the new id.
            self.delete(new).await?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let key = self.key(id);
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(&key);
        self.durable(&key, pipe, 1).await?;
        Ok(())
    }
}
