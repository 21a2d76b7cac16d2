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
//!   which it lacks by default.
//!
//! Connections are made lazily, so a store that is down at start-up is simply connected to
//! later.

use std::future::Future;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    Pipeline, RedisConnectionInfo, RedisError, RedisFuture, RedisResult, TlsCertificates, TlsMode,
    Value,
};

use crate::config::TlsFiles;
use crate::store::url::{RedisTarget, Topology};
use crate::sync::lock;

/// A live connection of either kind.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
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
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
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
}

impl Link {
    pub fn new(target: &RedisTarget, tls: &TlsFiles, timeout: Duration) -> RedisResult<Link> {
        install_crypto_provider();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
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
                let info = node_info(target, host, port)?;
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
                        .set_client_to_redis_db(target.db);
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
                    .map(|(host, port)| node_info(target, host.clone(), *port))
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
            Source::Cluster(client) => Conn::Cluster(client.get_async_connection().await?),
        };
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
        }
    }

    // Every lock in this module guards a clone or a swap.
    fn slot(&self) -> MutexGuard<'_, Option<(u64, Conn)>> {
        lock(&self.current)
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

fn node_info(target: &RedisTarget, host: String, port: u16) -> RedisResult<ConnectionInfo> {
    let mut redis = RedisConnectionInfo::default().set_db(target.db);
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
