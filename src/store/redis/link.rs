//! The connection to Redis, for every topology, and what to do when it breaks.
//!
//! - Standalone and Sentinel: one multiplexed connection (cheap to clone, so the number of
//!   connections stays constant whatever the load). When a call fails in a way that says the
//!   connection or the server's role is wrong (I/O error, timeout, `READONLY` after a failover
//!   demoted our server, `LOADING`, `MASTERDOWN`), the connection is dropped and the next call
//!   connects afresh: resolving the host name again (ElastiCache moves the primary endpoint's
//!   DNS on failover) or asking the sentinels for the current primary. The failed call still
//!   gets its error; nothing is retried behind the caller's back.
//! - Cluster: the redis crate's cluster connection, which follows `MOVED`/`ASK`, refreshes
//!   its slot map and reconnects to nodes by itself; we add an explicit response timeout,
//!   which it lacks by default, and finish what it leaves undone during a slot migration
//!   (`Clustered`, below).
//!
//! Connections are made lazily, so a store that is down at start-up is simply connected to
//! later.

use std::collections::HashMap;
use std::future::Future;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::SingleNodeRoutingInfo;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    Pipeline, ProtocolVersion, RedisConnectionInfo, RedisError, RedisFuture, RedisResult, Script,
    TlsCertificates, TlsMode, Value,
};

use super::near::{Invalidations, NearCache};
use crate::config::TlsFiles;
use crate::store::url::{RedisTarget, Topology};
use crate::sync::lock;

/// A live connection of either kind.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(Clustered),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => Box::pin(c.command(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => Box::pin(c.pipelined(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.conn.get_db(),
        }
    }
}

/// Where new connections come from.
enum Source {
    Direct(Client),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    Cluster(ClusterClient),
}

/// The link to Redis; cheap to share. For Sentinel it also runs a watcher task (see
/// `watch_sentinel`) that ends when the link is dropped.
pub struct Link(Arc<Shared>);

impl Deref for Link {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// How often the sentinels are asked which server is the primary. Sentinel promotes a replica
/// well before it demotes the old primary (seconds later, or never if it is cut off): writes
/// to the old one in between are lost when it is demoted. Asking often keeps that window to
/// about this long after the sentinels announce the switch.
const SENTINEL_POLL: Duration = Duration::from_millis(250);

pub struct Shared {
    source: Source,
    timeout: Duration,
    /// With Sentinel: the primary the current connection goes to.
    primary: Mutex<Option<ConnectionAddr>>,
    config: AsyncConnectionConfig,
    /// The connection in use and its generation, so a failure reported late by a call on an
    /// older connection cannot drop a newer one.
    current: Mutex<Option<(u64, Conn)>>,
    /// Held while connecting, so a burst of requests after a failure opens one connection,
    /// not one each. Counts generations.
    connecting: tokio::sync::Mutex<u64>,
    /// The text of every script the store runs, by SHA-1, so that a cluster node that answers
    /// `EVALSHA` with `NOSCRIPT` can be sent the script itself (see `Clustered`).
    scripts: Scripts,
    /// `store.near_cache`: every new connection turns tracking on and starts it empty.
    near: Option<Arc<NearCache>>,
}

/// Script texts by SHA-1 (lower-case hex, as `Script::get_hash`).
type Scripts = Arc<Mutex<HashMap<String, Arc<str>>>>;

impl Link {
    /// With `near`, connections speak RESP3 with client tracking and feed the cache's
    /// invalidations (standalone and Sentinel; the settings refuse it with a cluster).
    pub fn new(
        target: &RedisTarget,
        tls: &TlsFiles,
        timeout: Duration,
        near: Option<Arc<NearCache>>,
    ) -> RedisResult<Link> {
        install_crypto_provider();
        let mut config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        if let Some(cache) = &near {
            config = config.set_push_sender(Invalidations(cache.clone()));
        }
        let protocol = if near.is_some() {
            ProtocolVersion::RESP3
        } else {
            ProtocolVersion::RESP2
        };
        let certificates = || TlsCertificates {
            client_tls: tls
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: tls.ca.clone(),
        };
        let source = match &target.topology {
            Topology::Standalone => {
                let (host, port) = target.nodes.first().cloned().unwrap_or_default();
                let info = node_info(target, host, port, protocol)?;
                Source::Direct(if target.tls {
                    Client::build_with_tls(info, certificates())?
                } else {
                    Client::open(info)?
                })
            }
            Topology::Sentinel { master } => {
                let sentinels = target
                    .nodes
                    .iter()
                    .map(|(host, port)| node_addr(target.tls, host.clone(), *port));
                let mut builder =
                    SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)?
                        .set_client_to_redis_db(target.db)
                        .set_client_to_redis_protocol(protocol);
                if target.tls {
                    builder = builder
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_redis_certificates(certificates())
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                }
                if let Some(user) = &target.username {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(password) = &target.password {
                    builder = builder.set_client_to_redis_password(password);
                }
                Source::Sentinel(tokio::sync::Mutex::new(builder.build()?))
            }
            Topology::Cluster => {
                let seeds = target
                    .nodes
                    .iter()
                    .map(|(host, port)| node_info(target, host.clone(), *port, protocol))
                    .collect::<RedisResult<Vec<_>>>()?;
                let mut builder = ClusterClientBuilder::new(seeds)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // Resharding and failover answers (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) are
                    // retried inside the store timeout; beyond it the caller gets 503.
                    .retries(3)
                    .min_retry_wait(20)
                    .max_retry_wait(200);
                if target.tls {
                    builder = builder.tls(TlsMode::Secure).certs(certificates());
                }
                if let Some(user) = &target.username {
                    builder = builder.username(user);
                }
                if let Some(password) = &target.password {
                    builder = builder.password(password);
                }
                Source::Cluster(builder.build()?)
            }
        };
        let shared = Arc::new(Shared {
            source,
            timeout,
            primary: Mutex::new(None),
            config,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(0),
            scripts: Scripts::default(),
            near,
        });
        if matches!(shared.source, Source::Sentinel(_)) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(watch_sentinel(Arc::downgrade(&shared)));
            }
        }
        Ok(Link(shared))
    }
}

/// Drops the connection as soon as the sentinels name another primary, so writes stop going
/// to a demoted (or about to be demoted) server. Ends when the link is dropped.
async fn watch_sentinel(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(SENTINEL_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Source::Sentinel(sentinel) = &shared.source else {
            return;
        };
        let asked = tokio::time::timeout(shared.timeout, async {
            sentinel.lock().await.async_get_client().await
        })
        .await;
        if let Ok(Ok(client)) = asked {
            let named = client.get_connection_info().addr().clone();
            let moved = lock(&shared.primary)
                .as_ref()
                .is_some_and(|known| *known != named);
            if moved {
                tracing::info!("Sentinel names a new primary; reconnecting to it");
                *lock(&shared.primary) = None;
                *shared.slot() = None;
            }
        }
    }
}

impl Shared {
    pub fn is_cluster(&self) -> bool {
        matches!(self.source, Source::Cluster(_))
    }

    /// A script the store runs, remembered so that a node that does not have it cached can
    /// be sent its text.
    pub fn script(&self, text: &str) -> Script {
        let script = Script::new(text);
        // A map insert: nothing half-done if another thread panicked.
        lock(&self.scripts).insert(script.get_hash().to_owned(), Arc::from(text));
        script
    }

    /// Runs `op` on the current connection (connecting first if there is none), and drops
    /// the connection if the failure says it is broken or points at the wrong server.
    pub async fn run<T, F, Fut>(&self, op: F) -> RedisResult<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (generation, conn) = self.connection().await?;
        let result = op(conn).await;
        if let Err(err) = &result {
            if breaks_connection(err) {
                self.drop_connection(generation);
            }
        }
        result
    }

    async fn connection(&self) -> RedisResult<(u64, Conn)> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let mut generation = self.connecting.lock().await;
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let conn = match &self.source {
            Source::Direct(client) => Conn::Single(
                client
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await?,
            ),
            Source::Sentinel(sentinel) => {
                let client = sentinel.lock().await.async_get_client().await?;
                *lock(&self.primary) = Some(client.get_connection_info().addr().clone());
                Conn::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&self.config)
                        .await?,
                )
            }
            Source::Cluster(client) => Conn::Cluster(Clustered {
                conn: client.get_async_connection().await?,
                scripts: self.scripts.clone(),
                timeout: self.timeout,
            }),
        };
        if let Some(cache) = &self.near {
            let mut tracked = conn.clone();
            redis::cmd("CLIENT")
                .arg("TRACKING")
                .arg("ON")
                .exec_async(&mut tracked)
                .await?;
            // What the last connection tracked is no longer watched.
            cache.clear();
        }
        *generation += 1;
        let current = (*generation, conn);
        *self.slot() = Some(current.clone());
        Ok(current)
    }

    fn current(&self) -> Option<(u64, Conn)> {
        self.slot().clone()
    }

    fn drop_connection(&self, generation: u64) {
        // The cluster connection repairs itself; replacing it would only lose its slot map.
        if self.is_cluster() {
            return;
        }
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            tracing::info!("dropping the Redis connection; the next request reconnects");
            *slot = None;
            if let Some(cache) = &self.near {
                cache.clear();
            }
        }
    }

    // Every lock in this module guards a clone or a swap.
    fn slot(&self) -> MutexGuard<'_, Option<(u64, Conn)>> {
        lock(&self.current)
    }
}

/// A cluster connection that finishes what the redis crate leaves undone while a slot is
/// being migrated (`CLUSTER SETSLOT … MIGRATING/IMPORTING`, as in an ElastiCache online
/// resharding). The crate follows `ASK` by sending `ASKING` and then, once that is answered,
/// the command, on the node's multiplexed connection; but `ASKING` holds for exactly the next
/// command on that connection, so:
///
/// - a pipeline gets only its first command through; the next one is answered `MOVED` back
///   to the source, which answers `ASK` again, until the retries run out;
/// - another request's command sent in between takes the `ASKING`, and ours gets `MOVED`;
/// - a node that never ran the script (a new shard that owns no slot yet, so the crate's
///   `SCRIPT LOAD` to every primary missed it) answers `EVALSHA` with `NOSCRIPT`.
///
/// Here the crate's answer is looked at once it gives up: on `ASK` or `MOVED` the same
/// commands go to the named node as one pipeline with `ASKING` before each (written in one
/// piece, so nothing can come in between, and carried along by any further redirect the
/// crate follows). `ASKING` changes nothing on a node that is not importing the slot, and
/// `MOVED` never names an importing node (it names the owner, and a node stops importing
/// when it becomes the owner), so a key is never read or written on a node it has not
/// reached yet. On `TRYAGAIN` or `CLUSTERDOWN` they are sent again as usual after a short
/// pause; on `NOSCRIPT` each
/// `EVALSHA` of a known script becomes `EVAL` with its text (which also caches it on that
/// node). At most `REDIRECTS` times, within `store.timeout` of the first attempt. Nothing
/// changes when no slot is moving: the first attempt is the only one.
#[derive(Clone)]
pub struct Clustered {
    conn: ClusterConnection,
    scripts: Scripts,
    timeout: Duration,
}

/// Further attempts after the first, for one call.
const REDIRECTS: u32 = 5;

/// What to do after a failed attempt.
enum Next {
    /// Send to this node (`host`, `port`), each command after `ASKING`.
    Redirect(String, u16),
    /// Send as usual again, after a short wait.
    Again,
    /// Send again with scripts as `EVAL`.
    Eval,
}

/// Whether an attempt that ended in `result` is worth another, and how; `None` for a
/// success, and for failures another attempt cannot fix.
fn needs_more(result: Result<&[Value], &RedisError>) -> Option<Next> {
    match result {
        // Error replies in a pipeline are the caller's to read, except a missing script.
        Ok(values) => values
            .iter()
            .any(|v| matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT"))
            .then_some(Next::Eval),
        Err(err) => next_after(err),
    }
}

impl Clustered {
    /// One command; see the type's comment.
    async fn command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        let started = Instant::now();
        let first = self.conn.req_packed_command(cmd).await;
        let Some(next) = needs_more(first.as_ref().map(std::slice::from_ref)) else {
            return first;
        };
        let mut pipe = redis::pipe();
        pipe.add_command(cmd.clone());
        let first = first.map(|value| vec![value]);
        let values = self.recover(pipe, 0, 1, None, first, next, started).await?;
        Ok(values.into_iter().next().unwrap_or(Value::Nil))
    }

    /// `pipeline` (whose commands all touch one slot) by its keys' slot; the `count` replies
    /// after the first `offset`. See the type's comment.
    async fn pipelined(
        &mut self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let started = Instant::now();
        let first = self.conn.req_packed_commands(pipeline, offset, count).await;
        let Some(next) = needs_more(first.as_deref()) else {
            return first;
        };
        self.recover(pipeline.clone(), offset, count, None, first, next, started)
            .await
    }

    /// `pipeline` (whose commands all touch one slot) to the node `route` names; the `count`
    /// replies after the first `offset`. See the type's comment.
    pub async fn route_pipeline(
        &mut self,
        pipeline: Pipeline,
        offset: usize,
        count: usize,
        route: SingleNodeRoutingInfo,
    ) -> RedisResult<Vec<Value>> {
        let started = Instant::now();
        let first = self
            .conn
            .route_pipeline(pipeline.clone(), offset, count, route.clone())
            .await;
        let Some(next) = needs_more(first.as_deref()) else {
            return first;
        };
        self.recover(pipeline, offset, count, Some(route), first, next, started)
            .await
    }

    /// The attempts after a first one that ended in `result`, `next` saying how.
    #[allow(clippy::too_many_arguments)]
    async fn recover(
        &mut self,
        mut pipeline: Pipeline,
        offset: usize,
        count: usize,
        route: Option<SingleNodeRoutingInfo>,
        mut result: RedisResult<Vec<Value>>,
        mut next: Next,
        started: Instant,
    ) -> RedisResult<Vec<Value>> {
        let mut ask: Option<(String, u16)> = None;
        for attempt in 1..=REDIRECTS {
            let left = self.timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            match next {
                Next::Redirect(host, port) => ask = Some((host, port)),
                Next::Again => {
                    ask = None;
                    let pause = Duration::from_millis(10 * u64::from(attempt)).min(left / 2);
                    tokio::time::sleep(pause).await;
                }
                // A map lookup under the lock: nothing half-done if another thread panicked.
                Next::Eval => match with_eval(&lock(&self.scripts), &pipeline) {
                    Some(rewritten) => pipeline = rewritten,
                    None => break,
                },
            }
            let left = self.timeout.saturating_sub(started.elapsed());
            let attempted = async {
                match (&ask, &route) {
                    (Some((host, port)), _) => {
                        let values = self.asking(&pipeline, host, *port).await?;
                        Ok(values.into_iter().skip(offset).take(count).collect())
                    }
                    (None, Some(route)) => {
                        self.conn
                            .route_pipeline(pipeline.clone(), offset, count, route.clone())
                            .await
                    }
                    (None, None) => {
                        self.conn
                            .req_packed_commands(&pipeline, offset, count)
                            .await
                    }
                }
            };
            result = match tokio::time::timeout(left, attempted).await {
                Ok(result) => result,
                // The earlier failure says more than the timeout of a retry.
                Err(_) => break,
            };
            match needs_more(result.as_deref()) {
                Some(again) => next = again,
                None => return result,
            }
        }
        result
    }

    /// `pipeline` to `host:port`, each command after `ASKING`, in one write; the commands'
    /// own replies.
    async fn asking(
        &mut self,
        pipeline: &Pipeline,
        host: &str,
        port: u16,
    ) -> RedisResult<Vec<Value>> {
        let mut asking = redis::pipe();
        for cmd in pipeline.cmd_iter() {
            asking.cmd("ASKING");
            asking.add_command(cmd.clone());
        }
        let n = asking.len();
        let route = SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port,
        };
        let values = self.conn.route_pipeline(asking, 0, n, route).await?;
        Ok(values.into_iter().skip(1).step_by(2).collect())
    }
}

/// `pipeline` with every `EVALSHA` of a known script as `EVAL` with its text; `None` if
/// there is none to rewrite.
fn with_eval(scripts: &HashMap<String, Arc<str>>, pipeline: &Pipeline) -> Option<Pipeline> {
    let mut rewritten = redis::pipe();
    let mut any = false;
    for cmd in pipeline.cmd_iter() {
        let args: Vec<&[u8]> = cmd
            .args_iter()
            .filter_map(|arg| match arg {
                redis::Arg::Simple(bytes) => Some(bytes),
                // Cursors belong to `SCAN`-like commands, never to a script call.
                _ => None,
            })
            .collect();
        let text = match args.as_slice() {
            [name, sha, ..] if name.eq_ignore_ascii_case(b"EVALSHA") => std::str::from_utf8(sha)
                .ok()
                .and_then(|sha| scripts.get(sha)),
            _ => None,
        };
        match text {
            Some(text) => {
                any = true;
                let mut eval = redis::cmd("EVAL");
                eval.arg(text.as_bytes());
                for arg in &args[2..] {
                    eval.arg(*arg);
                }
                rewritten.add_command(eval);
            }
            None => {
                rewritten.add_command(cmd.clone());
            }
        }
    }
    any.then_some(rewritten)
}

fn next_after(err: &RedisError) -> Option<Next> {
    match err.code() {
        // After the crate's own redirects failed: an `ASK` whose `ASKING` another request
        // took, or the `MOVED` back to the source that the importing node then answers.
        Some("ASK" | "MOVED") => err.redirect_node().and_then(|(node, _slot)| {
            let (host, port) = node.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some(Next::Redirect(host.to_owned(), port.parse().ok()?))
        }),
        Some("TRYAGAIN" | "CLUSTERDOWN") => Some(Next::Again),
        Some("NOSCRIPT") => Some(Next::Eval),
        _ => None,
    }
}

/// Failures after which the connection must not be used again.
fn breaks_connection(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || matches!(
            err.code(),
            Some("READONLY" | "LOADING" | "MASTERDOWN" | "NOREPLICAS")
        )
}

/// Failures that retrying will not fix: wrong credentials, missing permissions, a TLS
/// mismatch. `run` refuses to start on these.
pub fn is_misconfiguration(err: &RedisError) -> bool {
    matches!(err.kind(), redis::ErrorKind::AuthenticationFailed)
        || matches!(err.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
        || err.to_string().to_ascii_lowercase().contains("tls")
        || err.to_string().to_ascii_lowercase().contains("certificate")
        || matches!(
            std::error::Error::source(err)
                .and_then(|e| e.downcast_ref::<std::io::Error>())
                .map(|e| e.kind()),
            Some(std::io::ErrorKind::InvalidData)
        )
}

/// Whether a plain (non-TLS) Redis answers at `host:port`: after a TLS handshake timed out,
/// this tells "TLS against a plain port" (a configuration mistake) from a slow server.
pub async fn speaks_plain_redis(host: &str, port: u16, timeout: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0u8; 16];
        let n = stream.read(&mut reply).await.ok()?;
        Some(reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH"))
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(true)))
}

fn node_addr(tls: bool, host: String, port: u16) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, port)
    }
}

fn node_info(
    target: &RedisTarget,
    host: String,
    port: u16,
    protocol: ProtocolVersion,
) -> RedisResult<ConnectionInfo> {
    let mut redis = RedisConnectionInfo::default()
        .set_db(target.db)
        .set_protocol(protocol);
    if let Some(user) = &target.username {
        redis = redis.set_username(user);
    }
    if let Some(password) = &target.password {
        redis = redis.set_password(password);
    }
    Ok(node_addr(target.tls, host, port)
        .into_connection_info()?
        .set_redis_settings(redis))
}

/// rustls needs one process-wide crypto provider; a second install is harmless.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(reply: &[u8]) -> RedisError {
        match redis::parse_redis_value(reply).and_then(Value::extract_error) {
            Err(err) => err,
            Ok(value) => panic!("not an error: {value:?}"),
        }
    }

    #[test]
    fn redirects_name_the_node() {
        for reply in [
            &b"-ASK 3999 127.0.0.1:6381\r\n"[..],
            b"-MOVED 3999 127.0.0.1:6381\r\n",
        ] {
            match next_after(&server_error(reply)) {
                Some(Next::Redirect(host, port)) => {
                    assert_eq!((host.as_str(), port), ("127.0.0.1", 6381))
                }
                _ => panic!("{reply:?}"),
            }
        }
        assert!(matches!(
            next_after(&server_error(b"-TRYAGAIN x\r\n")),
            Some(Next::Again)
        ));
        assert!(matches!(
            next_after(&server_error(b"-NOSCRIPT x\r\n")),
            Some(Next::Eval)
        ));
        assert!(next_after(&server_error(b"-OOM x\r\n")).is_none());
        assert!(next_after(&server_error(b"-ERR x\r\n")).is_none());
    }

    #[test]
    fn known_scripts_are_sent_as_eval() {
        let script = Script::new("return 1");
        let scripts = HashMap::from([(script.get_hash().to_owned(), Arc::from("return 1"))]);
        let mut pipe = redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(1)
            .arg("k")
            .arg("v");
        pipe.cmd("PTTL").arg("k");
        let rewritten = with_eval(&scripts, &pipe).expect("rewritten");
        let mut expected = redis::pipe();
        expected
            .cmd("EVAL")
            .arg("return 1")
            .arg(1)
            .arg("k")
            .arg("v");
        expected.cmd("PTTL").arg("k");
        assert_eq!(
            rewritten.get_packed_pipeline(),
            expected.get_packed_pipeline()
        );
        let mut unknown = redis::pipe();
        unknown.cmd("EVALSHA").arg("0123").arg(0);
        assert!(with_eval(&scripts, &unknown).is_none());
    }
}
