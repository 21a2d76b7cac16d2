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
//!
//! With `session.principal_attribute`, each principal has a sorted set
//! `<key_prefix>:principal:{<tag>}` (see `Principal::tag`): member = session id, score = a
//! bound on that session's expiry (Unix ms, `INDEX_SLACK` past the key's own). Every write to
//! it first drops the members whose score has passed (`ZREMRANGEBYSCORE`) and then sets the
//! key's expiry to its highest score (`PEXPIREAT`), in one script, so the index never lives
//! without a TTL nor past its last member. The index is raised before a session key is
//! created or extended and lowered only after one is deleted, so a live session is always
//! listed; a listing then checks each member exists, so a dead one never is.
//!
//! With `events`, lifecycle changes are appended to the stream `<key_prefix>:events`
//! (`XADD … MAXLEN ~`). Outside a cluster the `XADD` runs inside the script that makes the
//! change (same round trip, and only if the change happened); in a cluster the stream is on
//! its own slot, so it is a second command sent after the change succeeded.
//!
//! Outside a cluster, all the keys of one operation go in one pipeline (one round trip); in a
//! cluster every key is on a slot of its own (a session id decides its slot) and each gets
//! its own command, in the order above. No command ever spans two keys of different slots.

mod link;
pub mod near;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{RedisError, Script};

use super::{Delta, Loaded, SessionStore, StoreError};
use crate::config::{Durability, NearCacheSettings, TlsFiles};
use crate::session::id::SessionId;
use crate::session::lifetime::now_millis;
use crate::session::record::{attribute_name, Record};
use crate::store::url::RedisTarget;
use crate::store::{Owners, Principal};
pub use link::is_misconfiguration;
use link::{Conn, Link};
use near::NearCache;

/// The metadata field; see the module comment.
const CREATED: &str = "_created";
/// The principal's tag, in sessions that have one (plain, never sealed: it is a hash).
const PRINCIPAL: &str = "_principal";

/// How far past a session key's expiry its index entry may live, beyond `store.timeout` (the
/// longest between computing a score here and Redis applying the key's TTL): clock skew
/// between instances, whose clocks decide what is pruned. Dead members within it are never
/// listed (each is checked to exist) and are pruned at the next write or read after it, or
/// go with the index key's own expiry.
const INDEX_SLACK: Duration = Duration::from_secs(2);

/// `KEYS[1]` an index; `ARGV[1]` now (Unix ms); `ARGV[2]` the member's score; `ARGV[3]` the
/// member. Adds it or raises its score (never lowers it: `GT`), prunes what has expired, and
/// expires the key with its last member.
const INDEX_ADD: &str = r"
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] then redis.call('PEXPIREAT', KEYS[1], top[2]) end
return 1
";

/// `KEYS[1]` an index; `ARGV[1]` now (Unix ms); then the members to remove.
const INDEX_REM: &str = r"
redis.call('ZREM', KEYS[1], unpack(ARGV, 2))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] then redis.call('PEXPIREAT', KEYS[1], top[2]) end
return 1
";

/// `KEYS[1]` an index; `ARGV[1]` now. Prunes, then lists the members not yet expired.
const INDEX_LIST: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
";

/// `KEYS[1]` session; `KEYS[2]` (optional) the events stream; `ARGV[1]` its `MAXLEN`, then
/// the event's field/value pairs. Deletes the session and, only if it existed, appends the
/// event. Returns whether it existed.
const END: &str = r"
local n = redis.call('DEL', KEYS[1])
if n == 1 and #KEYS > 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 2))
end
return n
";

/// `KEYS[1]` session, `KEYS[2]` (optional) the events stream; `ARGV[1]` TTL in ms; `ARGV[2]`
/// how many field/value arguments follow; those; then, with `KEYS[2]`, the stream's `MAXLEN`
/// and the event's field/value pairs. Replaces whatever was there.
/// `HSET` comes first: Redis refuses it when out of memory (`maxmemory` with `noeviction`),
/// and a script that fails at its first command has changed nothing.
const CREATE: &str = r"
local n = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3, 2 + n))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if #KEYS > 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3 + n], '*', unpack(ARGV, 4 + n))
end
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
    /// `events.max_len`; `None`: no events.
    events: Option<u64>,
    update: Script,
    /// `store.near_cache`.
    near: Option<Arc<NearCache>>,
}

/// One script call: sent alone as `EVALSHA` (falling back to `EVAL`), or as `EVAL` inside a
/// pipeline.
struct Call {
    script: &'static str,
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
}

impl Call {
    fn new(script: &'static str, key: String) -> Call {
        Call {
            script,
            keys: vec![key],
            args: Vec::new(),
        }
    }

    fn arg(mut self, arg: impl AsRef<[u8]>) -> Call {
        self.args.push(arg.as_ref().to_vec());
        self
    }

    fn cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(self.script).arg(self.keys.len());
        for key in &self.keys {
            cmd.arg(key.as_str());
        }
        for arg in &self.args {
            cmd.arg(arg.as_slice());
        }
        cmd
    }
}

impl RedisStore {
    pub fn open(
        target: &RedisTarget,
        tls: &TlsFiles,
        key_prefix: &str,
        timeout: Duration,
        durability: Option<Durability>,
        events: Option<u64>,
        near_cache: Option<NearCacheSettings>,
    ) -> Result<RedisStore, StoreError> {
        let near = near_cache.map(|settings| NearCache::new(settings.max_sessions));
        let link =
            Link::new(target, tls, timeout, near.clone()).map_err(StoreError::Unavailable)?;
        // Every script is registered with the link, so that a cluster node that never loaded
        // one (a new shard after a resharding) gets it as `EVAL` instead of failing.
        for text in [CREATE, END, INDEX_ADD, INDEX_REM, INDEX_LIST] {
            link.script(text);
        }
        Ok(RedisStore {
            update: link.script(UPDATE),
            link,
            target: target.clone(),
            timeout,
            key_prefix: key_prefix.to_owned(),
            durability,
            events,
            near,
        })
    }

    pub fn key(&self, id: &SessionId) -> String {
        format!("{}:session:{}", self.key_prefix, id.as_str())
    }

    /// The principal index: the tag is also the cluster hash tag, so the key's slot depends on
    /// the principal alone.
    pub fn index_key(&self, tag: &str) -> String {
        format!("{}:principal:{{{tag}}}", self.key_prefix)
    }

    pub fn stream_key(&self) -> String {
        format!("{}:events", self.key_prefix)
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
            return self.pipeline(pipe).await;
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

    /// One round trip for every command of `pipe` (never in a cluster, where they may be on
    /// several slots).
    async fn pipeline(&self, pipe: redis::Pipeline) -> Result<Vec<redis::Value>, StoreError> {
        self.link
            .run(|mut conn| async move { pipe.query_async::<Vec<redis::Value>>(&mut conn).await })
            .await
            .map_err(classify)
    }

    /// One script call on its own.
    async fn call(&self, call: Call) -> Result<redis::Value, StoreError> {
        let script = Script::new(call.script);
        let mut invocation = script.prepare_invoke();
        for key in &call.keys {
            invocation.key(key.as_str());
        }
        for arg in &call.args {
            invocation.arg(arg.as_slice());
        }
        self.link
            .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
            .map_err(classify)
    }

    /// Runs `calls` in order: one pipeline outside a cluster, one command each in it. The
    /// replies, in order.
    async fn in_order(&self, calls: Vec<Call>) -> Result<Vec<redis::Value>, StoreError> {
        if self.link.is_cluster() || calls.len() == 1 {
            let mut values = Vec::with_capacity(calls.len());
            for call in calls {
                values.push(self.call(call).await?);
            }
            return Ok(values);
        }
        let mut pipe = redis::pipe();
        for call in &calls {
            pipe.add_command(call.cmd());
        }
        self.pipeline(pipe).await
    }

    fn index_add(&self, tag: &str, id: &SessionId, ttl: Duration, now: u64) -> Call {
        let score = now + ttl_ms(ttl) + ttl_ms(INDEX_SLACK) + ttl_ms(self.timeout);
        Call::new(INDEX_ADD, self.index_key(tag))
            .arg(now.to_string())
            .arg(score.to_string())
            .arg(id.as_str())
    }

    fn index_rem(&self, tag: &str, ids: &[&SessionId], now: u64) -> Call {
        let mut call = Call::new(INDEX_REM, self.index_key(tag)).arg(now.to_string());
        for id in ids {
            call = call.arg(id.as_str());
        }
        call
    }

    /// The event's field/value pairs, when events are on.
    fn event(
        &self,
        kind: &str,
        id: &SessionId,
        old: Option<&SessionId>,
        principal: Option<&Principal>,
        now: u64,
    ) -> Option<Vec<Vec<u8>>> {
        self.events?;
        let mut pairs: Vec<Vec<u8>> = vec![
            b"type".to_vec(),
            kind.as_bytes().to_vec(),
            b"id".to_vec(),
            id.as_str().as_bytes().to_vec(),
        ];
        if let Some(old) = old {
            pairs.extend([b"old_id".to_vec(), old.as_str().as_bytes().to_vec()]);
        }
        if let Some(principal) = principal {
            pairs.extend([b"principal".to_vec(), principal.value.to_vec()]);
        }
        pairs.extend([b"at".to_vec(), now.to_string().into_bytes()]);
        Some(pairs)
    }

    /// Puts `event` inside `call` (whose script appends it when the change happened), when
    /// the topology allows: outside a cluster. Returns the event still to be sent otherwise.
    fn embed(&self, call: &mut Call, event: Option<Vec<Vec<u8>>>) -> Option<Vec<Vec<u8>>> {
        let (Some(event), Some(max_len)) = (event, self.events) else {
            return None;
        };
        if self.link.is_cluster() {
            return Some(event);
        }
        call.keys.push(self.stream_key());
        call.args.push(max_len.to_string().into_bytes());
        call.args.extend(event);
        None
    }

    /// `END` as sent: a plain `DEL` when it carries no event.
    fn end_cmd(end: &Call) -> redis::Cmd {
        if end.keys.len() > 1 {
            return end.cmd();
        }
        let mut del = redis::cmd("DEL");
        del.arg(end.keys[0].as_str());
        del
    }

    /// In a cluster, the event of a change that has happened, as a command of its own. It
    /// cannot be undone with the change, so a failure here is logged, not returned: in a
    /// cluster, events are at most once.
    async fn emit(&self, event: Option<Vec<Vec<u8>>>) {
        let (Some(event), Some(max_len)) = (event, self.events) else {
            return;
        };
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.stream_key())
            .arg("MAXLEN")
            .arg("~")
            .arg(max_len)
            .arg("*");
        for part in &event {
            cmd.arg(part.as_slice());
        }
        let sent = self
            .link
            .run(|mut conn| async move { cmd.query_async::<redis::Value>(&mut conn).await })
            .await;
        if let Err(err) = sent {
            tracing::warn!(error = %err, "appending a session event failed; the change itself was made");
        }
    }

    /// `CREATE` for `record` under `id`, listing its principal's tag.
    fn create_call(
        &self,
        id: &SessionId,
        record: &Record,
        ttl: Duration,
        principal: Option<&Principal>,
    ) -> Call {
        let mut pairs: Vec<Vec<u8>> = vec![
            CREATED.as_bytes().to_vec(),
            record.created.to_string().into_bytes(),
        ];
        if let Some(principal) = principal {
            pairs.extend([
                PRINCIPAL.as_bytes().to_vec(),
                principal.tag.as_bytes().to_vec(),
            ]);
        }
        for (name, value) in &record.attributes {
            pairs.extend([name.as_bytes().to_vec(), value.to_vec()]);
        }
        let mut call = Call::new(CREATE, self.key(id))
            .arg(ttl_ms(ttl).to_string())
            .arg(pairs.len().to_string());
        call.args.extend(pairs);
        call
    }

    /// Deletes `id`, leaves its index, and records `event` if it existed.
    async fn end(
        &self,
        id: &SessionId,
        principal: Option<&Principal>,
        event: Option<Vec<Vec<u8>>>,
    ) -> Result<bool, StoreError> {
        let now = now_millis();
        let key = self.key(id);
        let mut end = Call::new(END, key.clone());
        let later = self.embed(&mut end, event);
        let leave = principal.map(|p| self.index_rem(&p.tag, &[id], now));
        let mut pipe = redis::pipe();
        pipe.add_command(Self::end_cmd(&end));
        if self.link.is_cluster() {
            let existed = int(self.durable(&key, pipe, 1).await?.first()) == 1;
            if let Some(leave) = leave {
                self.call(leave).await?;
            }
            if existed {
                self.emit(later).await;
            }
            return Ok(existed);
        }
        let replies = 1 + usize::from(leave.is_some());
        if let Some(leave) = &leave {
            pipe.add_command(leave.cmd());
        }
        Ok(int(self.durable(&key, pipe, replies).await?.first()) == 1)
    }

    /// The index's members not yet expired (not checked to exist).
    async fn members(&self, principal: &Principal) -> Result<Vec<SessionId>, StoreError> {
        let list =
            Call::new(INDEX_LIST, self.index_key(&principal.tag)).arg(now_millis().to_string());
        let value = self.call(list).await?;
        let redis::Value::Array(members) = value else {
            return Ok(Vec::new());
        };
        // Members written by other programs that are not ids are skipped.
        Ok(members
            .iter()
            .filter_map(|m| match m {
                redis::Value::BulkString(bytes) => SessionId::parse(bytes),
                _ => None,
            })
            .collect())
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

fn int(value: Option<&redis::Value>) -> i64 {
    match value {
        Some(redis::Value::Int(n)) => *n,
        _ => 0,
    }
}

impl RedisStore {
    /// `HGETALL` and `PTTL` in one round trip.
    async fn read(&self, key: String) -> Result<Option<Loaded>, StoreError> {
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
        let principal = fields
            .get(PRINCIPAL.as_bytes())
            .and_then(|tag| String::from_utf8(tag.clone()).ok())
            .filter(|tag| tag.len() == 32 && tag.bytes().all(|b| b.is_ascii_hexdigit()));
        Ok(parse_record(fields).map(|record| Loaded {
            record,
            ttl,
            principal,
        }))
    }

    /// `PEXPIRE`, after refreshing the principal index entry.
    async fn extend(
        &self,
        id: &SessionId,
        ttl: Duration,
        principal: Option<&str>,
    ) -> Result<(), StoreError> {
        let key = self.key(id);
        let mut pexpire = redis::cmd("PEXPIRE");
        pexpire.arg(&key).arg(ttl_ms(ttl));
        let Some(tag) = principal else {
            self.link
                .run(|mut conn| async move { pexpire.query_async::<i64>(&mut conn).await })
                .await
                .map_err(classify)?;
            return Ok(());
        };
        // The index first: its entry must never expire before the key it lists.
        let index = self.index_add(tag, id, ttl, now_millis());
        if self.link.is_cluster() {
            self.call(index).await?;
            self.link
                .run(|mut conn| async move { pexpire.query_async::<i64>(&mut conn).await })
                .await
                .map_err(classify)?;
        } else {
            let mut pipe = redis::pipe();
            pipe.add_command(index.cmd()).add_command(pexpire);
            self.pipeline(pipe).await?;
        }
        Ok(())
    }

    /// Forgets the near cache's entries for `ids` now and again when dropped, whatever
    /// became of the write in between (see `near`).
    fn writing(&self, ids: &[&SessionId]) -> Forgetting<'_> {
        let keys = match &self.near {
            Some(near) => {
                let keys: Vec<String> = ids.iter().map(|id| self.key(id)).collect();
                for key in &keys {
                    near.forget(key);
                }
                keys
            }
            None => Vec::new(),
        };
        Forgetting {
            near: self.near.as_deref(),
            keys,
        }
    }
}

struct Forgetting<'a> {
    near: Option<&'a NearCache>,
    keys: Vec<String>,
}

impl Drop for Forgetting<'_> {
    fn drop(&mut self) {
        if let Some(near) = self.near {
            for key in &self.keys {
                near.forget(key);
            }
        }
    }
}

impl SessionStore for RedisStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Loaded>, StoreError> {
        let Some(near) = &self.near else {
            return self.read(self.key(id)).await;
        };
        let key = self.key(id);
        if let Some(loaded) = near.get(&key) {
            return Ok(Some(loaded));
        }
        let epoch = near.epoch();
        let loaded = self.read(key.clone()).await?;
        if let Some(loaded) = &loaded {
            near.put(&key, loaded, epoch);
        }
        Ok(loaded)
    }

    async fn touch(
        &self,
        id: &SessionId,
        ttl: Duration,
        principal: Option<&str>,
    ) -> Result<(), StoreError> {
        let _near = self.writing(&[id]);
        self.extend(id, ttl, principal).await
    }

    async fn create(
        &self,
        id: &SessionId,
        record: &Record,
        ttl: Duration,
        principal: Option<&Principal>,
    ) -> Result<(), StoreError> {
        let now = now_millis();
        let mut create = self.create_call(id, record, ttl, principal);
        let event = self.event("created", id, None, principal, now);
        let later = self.embed(&mut create, event);
        let mut calls = Vec::new();
        if let Some(principal) = principal {
            calls.push(self.index_add(&principal.tag, id, ttl, now));
        }
        calls.push(create);
        self.in_order(calls).await?;
        self.emit(later).await;
        Ok(())
    }

    async fn update(
        &self,
        id: &SessionId,
        delta: Delta<'_>,
        ttl: Duration,
        owners: Owners<'_>,
    ) -> Result<bool, StoreError> {
        let _near = self.writing(&[id]);
        // A name both removed and set ends up set (remove, then set): leave it out of the
        // removals so the script may apply them in either order.
        let mut removed: Vec<&str> = delta
            .remove
            .iter()
            .filter(|name| !delta.set.iter().any(|(set, _)| set == *name))
            .map(String::as_str)
            .collect();
        if owners.new.is_none() && owners.old.is_some() {
            removed.push(PRINCIPAL);
        }
        let now = now_millis();
        let mut update = Call::new(UPDATE, self.key(id))
            .arg(ttl_ms(ttl).to_string())
            .arg(removed.len().to_string());
        for name in removed {
            update = update.arg(name);
        }
        if let Some(new) = owners.new {
            update = update.arg(PRINCIPAL).arg(new.tag.as_str());
        }
        for (name, value) in delta.set {
            update = update.arg(name.as_str()).arg(value.as_ref());
        }
        let Some(_) = owners.new.or(owners.old) else {
            // No index involved: the one script, by its digest.
            let mut invocation = self.update.prepare_invoke();
            invocation.key(&update.keys[0]);
            for arg in &update.args {
                invocation.arg(arg.as_slice());
            }
            let applied: i64 = self
                .link
                .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
                .await
                .map_err(classify)?;
            return Ok(applied == 1);
        };
        // Joining an index before the key is extended; leaving it after.
        let mut calls = Vec::new();
        if let Some(new) = owners.new {
            calls.push(self.index_add(&new.tag, id, ttl, now));
        }
        let position = calls.len();
        calls.push(update);
        if let Some(old) = owners.leaving() {
            calls.push(self.index_rem(&old.tag, &[id], now));
        }
        let values = self.in_order(calls).await?;
        Ok(int(values.get(position)) == 1)
    }

    async fn rotate(
        &self,
        old: &SessionId,
        new: &SessionId,
        record: &Record,
        ttl: Duration,
        owners: Owners<'_>,
    ) -> Result<bool, StoreError> {
        let _near = self.writing(&[old, new]);
        // The new key is written before the old one is removed: if anything breaks half-way,
        // the client keeps a working old id (and gets a 503), and an orphaned new key expires
        // by its TTL. In a cluster the keys live on different slots, so these are separate
        // calls; elsewhere one ordered pipeline. Plain EVAL avoids a NOSCRIPT retry; rotation
        // is rare (log-in), so sending the script text is cheap.
        let now = now_millis();
        let old_key = self.key(old);
        let join = owners.new.map(|p| self.index_add(&p.tag, new, ttl, now));
        let create = self.create_call(new, record, ttl, owners.new);
        let mut end = Call::new(END, old_key.clone());
        let event = self.event("rotated", new, Some(old), owners.new, now);
        let later = self.embed(&mut end, event);
        let leave = owners.old.map(|p| self.index_rem(&p.tag, &[old], now));
        let removed = if self.link.is_cluster() {
            if let Some(join) = join {
                self.call(join).await?;
            }
            self.call(create).await?;
            let mut pipe = redis::pipe();
            pipe.add_command(Self::end_cmd(&end));
            let removed = int(self.durable(&old_key, pipe, 1).await?.first());
            if let Some(leave) = leave {
                self.call(leave).await?;
            }
            if removed == 1 {
                self.emit(later).await;
            }
            removed
        } else {
            let mut pipe = redis::pipe();
            let mut replies = 2;
            if let Some(join) = &join {
                pipe.add_command(join.cmd());
                replies += 1;
            }
            pipe.add_command(create.cmd())
                .add_command(Self::end_cmd(&end));
            let position = replies - 1;
            if let Some(leave) = &leave {
                pipe.add_command(leave.cmd());
                replies += 1;
            }
            int(self.durable(&old_key, pipe, replies).await?.get(position))
        };
        if removed == 0 {
            // The old session ended while this request ran (a logout in another tab): it
            // must not live on under the new id. It never existed for anyone: no event.
            self.end(new, owners.new, None).await?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn delete(
        &self,
        id: &SessionId,
        principal: Option<&Principal>,
    ) -> Result<bool, StoreError> {
        let _near = self.writing(&[id]);
        let event = self.event("invalidated", id, None, principal, now_millis());
        self.end(id, principal, event).await
    }

    async fn sessions_of(&self, principal: &Principal) -> Result<Vec<SessionId>, StoreError> {
        let members = self.members(principal).await?;
        if members.is_empty() {
            return Ok(members);
        }
        // Each checked to exist: a member may outlive its session by up to `INDEX_SLACK` plus
        // `store.timeout`.
        let exists: Vec<i64> = if self.link.is_cluster() {
            let mut exists = Vec::with_capacity(members.len());
            for id in &members {
                let key = self.key(id);
                let found: i64 = self
                    .link
                    .run(|mut conn| async move {
                        redis::cmd("EXISTS").arg(key).query_async(&mut conn).await
                    })
                    .await
                    .map_err(classify)?;
                exists.push(found);
            }
            exists
        } else {
            let mut pipe = redis::pipe();
            for id in &members {
                pipe.cmd("EXISTS").arg(self.key(id));
            }
            self.pipeline(pipe)
                .await?
                .iter()
                .map(|v| int(Some(v)))
                .collect()
        };
        Ok(members
            .into_iter()
            .zip(exists)
            .filter(|(_, found)| *found == 1)
            .map(|(id, _)| id)
            .collect())
    }

    async fn end_all(&self, principal: &Principal) -> Result<usize, StoreError> {
        let members = self.members(principal).await?;
        if members.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&SessionId> = members.iter().collect();
        let _near = self.writing(&ids);
        let now = now_millis();
        let leave = self.index_rem(&principal.tag, &ids, now);
        let mut ended = 0;
        if self.link.is_cluster() {
            for id in &members {
                let event = self.event("invalidated", id, None, Some(principal), now);
                let key = self.key(id);
                let mut pipe = redis::pipe();
                pipe.cmd("DEL").arg(&key);
                if int(self.durable(&key, pipe, 1).await?.first()) == 1 {
                    ended += 1;
                    self.emit(event).await;
                }
            }
            self.call(leave).await?;
        } else {
            let mut pipe = redis::pipe();
            for id in &members {
                let mut end = Call::new(END, self.key(id));
                let event = self.event("invalidated", id, None, Some(principal), now);
                self.embed(&mut end, event);
                pipe.add_command(Self::end_cmd(&end));
            }
            pipe.add_command(leave.cmd());
            let values = self
                .durable(&self.key(&members[0]), pipe, members.len() + 1)
                .await?;
            ended = values
                .iter()
                .take(members.len())
                .filter(|v| int(Some(v)) == 1)
                .count();
        }
        Ok(ended)
    }
}
