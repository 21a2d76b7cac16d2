//! The configuration file exactly as written: serde types with defaults and
//! `deny_unknown_fields`, so that a misspelt key is an error rather than a silently ignored
//! setting. Nothing here is validated beyond its shape; see `settings` for that.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    pub store: StoreFile,
    #[serde(default)]
    pub session: SessionFile,
    pub routes: Vec<RouteFile>,
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    /// Address ranges (CIDR, or single addresses) of the load balancers allowed to set
    /// `X-Forwarded-*`; from anyone else those headers are replaced.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub limits: LimitsFile,
    /// A second listener for operators (health, readiness, metrics); absent = none.
    #[serde(default)]
    pub admin: Option<AdminFile>,
    #[serde(default)]
    pub log: LogFile,
    /// HTTPS on `listen`; absent = plain HTTP/1.1 and h2c.
    #[serde(default)]
    pub tls: Option<ListenerTlsFile>,
    /// Lifecycle events appended to the Redis Stream `<key_prefix>:events`; absent = none.
    #[serde(default)]
    pub events: Option<EventsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsFile {
    /// The approximate cap on the stream's length (`XADD … MAXLEN ~`).
    #[serde(default = "default_events_max_len")]
    pub max_len: u64,
}

fn default_events_max_len() -> u64 {
    100_000
}

/// The listener's certificate chain and private key, in PEM files (re-read on reload).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsFile {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub listen: String,
    /// Bearer token for the admin session API; absent = that API answers 404.
    #[serde(default)]
    pub token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    #[serde(default)]
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal or journald.
    #[default]
    Text,
    /// One flat JSON object per line, for CloudWatch and other log stores.
    Json,
}

/// Limits with defined answers, so a hostile or broken client costs a bounded amount.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Most header lines in a request head; more gets 431.
    #[serde(default = "default_max_request_headers")]
    pub max_request_headers: usize,
    /// Most bytes of a request head (request line and headers); more gets 431.
    #[serde(default = "default_max_request_head_bytes")]
    pub max_request_head_bytes: usize,
    /// Most client connections served at once; further ones wait in the listen backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections the kernel queues for us before we accept them (`listen(2)`'s backlog,
    /// capped by `net.core.somaxconn`): room for a burst of connects to a fresh instance.
    #[serde(default = "default_listen_backlog")]
    pub listen_backlog: u32,
}

impl Default for LimitsFile {
    fn default() -> Self {
        LimitsFile {
            max_request_headers: default_max_request_headers(),
            max_request_head_bytes: default_max_request_head_bytes(),
            max_connections: default_max_connections(),
            listen_backlog: default_listen_backlog(),
        }
    }
}

fn default_max_request_headers() -> usize {
    100
}
/// nginx's default `large_client_header_buffers` allows 4 × 8 KiB; 32 KiB covers that.
fn default_max_request_head_bytes() -> usize {
    32 * 1024
}
/// Well under the unit file's `LimitNOFILE=65536`, leaving room for upstream connections.
/// nginx's default on Linux.
fn default_listen_backlog() -> u32 {
    511
}
fn default_max_connections() -> usize {
    10_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    pub url: String,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
    #[serde(default = "default_store_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub tls: Option<TlsFile>,
    /// ACL user name; overrides the one in the URL.
    #[serde(default)]
    pub username: Option<String>,
    /// Name of an environment variable holding the password (keeps it out of the YAML).
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the password, e.g. a systemd credential under
    /// `/run/credentials/stickless.service/`.
    #[serde(default)]
    pub password_file: Option<String>,
    /// Wait for replicas to acknowledge the writes that end a session id (invalidate, rotate).
    #[serde(default)]
    pub durability: Option<DurabilityFile>,
    /// Serve recently read sessions from memory, kept exact by Redis' client tracking.
    #[serde(default)]
    pub near_cache: Option<NearCacheFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NearCacheFile {
    pub max_sessions: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurabilityFile {
    pub replicas: u32,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnavailable {
    /// Answer 503: nobody is served as someone they are not, nor as anonymous.
    #[default]
    FailClosed,
    /// Reads go on as anonymous; writes still answer 503 so nothing is silently dropped.
    FailOpen,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    #[serde(default)]
    pub cookie: CookieFile,
    #[serde(default = "default_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(default = "default_absolute", with = "humantime_serde")]
    pub absolute_timeout: Duration,
    #[serde(default = "default_header_prefix")]
    pub header_prefix: String,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    #[serde(default = "default_max_attributes")]
    pub max_attributes: usize,
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: usize,
    /// A file of encryption keys (one per line, newest first) that seal attribute values at
    /// rest. Off by default: values are stored as sent.
    #[serde(default)]
    pub encryption_keys_file: Option<String>,
    /// The same, from an environment variable (keys separated by commas, newest first).
    #[serde(default)]
    pub encryption_keys_env: Option<String>,
    /// Sessions are indexed by this attribute's value (logout everywhere, the admin API).
    #[serde(default)]
    pub principal_attribute: Option<String>,
    /// A request header that may name the session instead of the cookie (API clients).
    #[serde(default)]
    pub id_header: Option<String>,
}

impl Default for SessionFile {
    fn default() -> Self {
        SessionFile {
            cookie: CookieFile::default(),
            idle_timeout: default_idle(),
            absolute_timeout: default_absolute(),
            header_prefix: default_header_prefix(),
            max_bytes: default_max_bytes(),
            max_attributes: default_max_attributes(),
            max_value_bytes: default_max_value_bytes(),
            encryption_keys_file: None,
            encryption_keys_env: None,
            principal_attribute: None,
            id_header: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieFile {
    #[serde(default = "default_cookie_name")]
    pub name: String,
    #[serde(default = "yes")]
    pub secure: bool,
    #[serde(default = "yes")]
    pub http_only: bool,
    #[serde(default)]
    pub same_site: SameSite,
    /// A file of HMAC keys (one per line, newest first) that sign the cookie; keeps the
    /// secrets out of the YAML. Off by default: ids are then unsigned.
    #[serde(default)]
    pub signing_keys_file: Option<String>,
    /// The same, from an environment variable (keys separated by commas, newest first).
    #[serde(default)]
    pub signing_keys_env: Option<String>,
}

impl Default for CookieFile {
    fn default() -> Self {
        CookieFile {
            name: default_cookie_name(),
            secure: true,
            http_only: true,
            same_site: SameSite::default(),
            signing_keys_file: None,
            signing_keys_env: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SameSite {
    Strict,
    #[default]
    Lax,
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// The `route` label in metrics and logs.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: MatchFile,
    pub upstreams: Vec<String>,
    #[serde(default)]
    pub session: SessionMode,
    #[serde(default)]
    pub login_url: Option<String>,
    /// Most bytes a request body may have on this route; more gets 413.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    #[serde(default)]
    pub health: HealthFile,
    /// Read the whole request body before contacting an upstream, as nginx's
    /// `proxy_request_buffering on`, so that a slow client holds no backend worker while it
    /// uploads. Absent: bodies stream to the backend as they arrive.
    #[serde(default)]
    pub request_buffering: Option<RequestBufferingFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestBufferingFile {
    /// Bytes held in memory per request; the rest of the body goes to a temporary file.
    #[serde(default = "default_buffer_memory_bytes")]
    pub memory_bytes: u64,
    /// Most bytes a buffered body may have; more gets 413 and no upstream is contacted.
    #[serde(default = "default_buffer_max_bytes")]
    pub max_bytes: u64,
    /// Where spilled bodies go; absent: the process's temporary directory.
    #[serde(default)]
    pub temp_dir: Option<String>,
}

/// nginx's `client_body_buffer_size` is 8 or 16 KiB; a little more keeps the common form
/// posts off the disk.
fn default_buffer_memory_bytes() -> u64 {
    64 * 1024
}
/// Ten times nginx's `client_max_body_size` default (1 MiB): room for ordinary uploads, while
/// a request can never take more disk than this.
fn default_buffer_max_bytes() -> u64 {
    10 * 1024 * 1024
}

/// When an upstream is skipped, like nginx's `max_fails`/`fail_timeout`, and an optional
/// active check that takes it back (or out) without waiting for a request to try it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    /// Consecutive connect failures or timeouts after which an upstream is skipped; 0 never
    /// skips. One by default: a host that hangs costs one request its connect timeout, not
    /// every other request.
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    /// How long a failed upstream is skipped before one request tries it again.
    #[serde(default = "default_fail_timeout", with = "humantime_serde")]
    pub fail_timeout: Duration,
    #[serde(default)]
    pub check: Option<CheckFile>,
}

impl Default for HealthFile {
    fn default() -> Self {
        HealthFile {
            max_fails: default_max_fails(),
            fail_timeout: default_fail_timeout(),
            check: None,
        }
    }
}

/// An active health check: `GET <path>` on every upstream of the route each `interval`;
/// a 2xx or 3xx answer within `timeout` is healthy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckFile {
    pub path: String,
    #[serde(default = "default_check_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_check_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_max_fails() -> u32 {
    1
}
fn default_fail_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_check_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_check_timeout() -> Duration {
    Duration::from_secs(2)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    pub path_prefix: String,
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    #[default]
    On,
    Off,
    Required,
}

/// Timeouts the contract leaves to us; every one has a default a careful operator would pick.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    /// How long a client may take to send a request head, from its first byte (slowloris).
    #[serde(default = "default_header_read", with = "humantime_serde")]
    pub header_read: Duration,
    /// How long a connection with no request in flight stays open. Must exceed the idle
    /// timeout of the load balancer in front (60 s on an AWS ALB), so that it, not we,
    /// closes idle connections.
    #[serde(default = "default_keepalive_idle", with = "humantime_serde")]
    pub keepalive_idle: Duration,
    /// How long a client may pause while sending a request body (slow POST); then 408.
    #[serde(default = "default_body_idle", with = "humantime_serde")]
    pub body_idle: Duration,
    /// How long opening a TCP connection to one upstream may take before the next is tried.
    #[serde(default = "default_upstream_connect", with = "humantime_serde")]
    pub upstream_connect: Duration,
    /// How long an upstream may take to send its response head.
    #[serde(default = "default_upstream_response", with = "humantime_serde")]
    pub upstream_response: Duration,
    /// After the response head: how long an upstream may pause while sending the body
    /// before the response is cut short.
    #[serde(default = "default_upstream_read_idle", with = "humantime_serde")]
    pub upstream_read_idle: Duration,
    /// How long a client may leave us unable to write more of its response (a full socket
    /// buffer, or an HTTP/2 flow-control window it does not open) before it is disconnected.
    #[serde(default = "default_client_write_idle", with = "humantime_serde")]
    pub client_write_idle: Duration,
    /// How long in-flight requests may run after SIGTERM before they are cut.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How long an upgraded connection (WebSocket) may carry no byte either way before it is
    /// closed.
    #[serde(default = "default_tunnel_idle", with = "humantime_serde")]
    pub tunnel_idle: Duration,
    /// With `tls`: how long a client may take to complete its TLS handshake (it holds a
    /// connection slot meanwhile).
    #[serde(default = "default_tls_handshake", with = "humantime_serde")]
    pub tls_handshake: Duration,
}

impl Default for TimeoutsFile {
    fn default() -> Self {
        TimeoutsFile {
            header_read: default_header_read(),
            keepalive_idle: default_keepalive_idle(),
            body_idle: default_body_idle(),
            upstream_connect: default_upstream_connect(),
            upstream_response: default_upstream_response(),
            upstream_read_idle: default_upstream_read_idle(),
            client_write_idle: default_client_write_idle(),
            shutdown_grace: default_shutdown_grace(),
            tunnel_idle: default_tunnel_idle(),
            tls_handshake: default_tls_handshake(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_key_prefix() -> String {
    "stickless".into()
}
fn default_store_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_idle() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_absolute() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn default_header_prefix() -> String {
    "X-Session-".into()
}
/// Counted as the injected header lines (prefix, name, `: `, value, CRLF). Node's default
/// total header limit is 16 KiB; half of it leaves room for the client's own headers.
fn default_max_bytes() -> usize {
    8 * 1024
}
fn default_max_attributes() -> usize {
    64
}
/// Apache and gunicorn refuse a header line over 8190 bytes; half of it, per value.
fn default_max_value_bytes() -> usize {
    4096
}
fn default_cookie_name() -> String {
    "SESSION".into()
}
fn yes() -> bool {
    true
}
fn default_header_read() -> Duration {
    Duration::from_secs(10)
}
fn default_keepalive_idle() -> Duration {
    Duration::from_secs(75)
}
fn default_body_idle() -> Duration {
    Duration::from_secs(30)
}
fn default_upstream_connect() -> Duration {
    Duration::from_secs(2)
}
fn default_upstream_response() -> Duration {
    Duration::from_secs(60)
}
/// nginx's `proxy_read_timeout` and `send_timeout`.
fn default_upstream_read_idle() -> Duration {
    Duration::from_secs(60)
}
fn default_client_write_idle() -> Duration {
    Duration::from_secs(60)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}
/// Well above the heartbeats WebSocket libraries send on their own (socket.io 25 s, SignalR
/// 15 s, Phoenix 30 s), so a live socket never meets it, yet a peer that vanished without a
/// FIN gives its connection slot back within minutes, not HAProxy's usual hour.
fn default_tunnel_idle() -> Duration {
    Duration::from_secs(10 * 60)
}
/// As `header_read`: a handshake is a few round trips, so a client still at it after this
/// long is stalling on purpose or on a dead network.
fn default_tls_handshake() -> Duration {
    Duration::from_secs(10)
}

/// The names as written in the file, for summaries and messages.
macro_rules! file_names {
    ($($ty:ident { $($variant:ident => $name:literal),+ })+) => {$(
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }
    )+};
}

file_names! {
    OnUnavailable { FailClosed => "fail_closed", FailOpen => "fail_open" }
    SameSite { Strict => "strict", Lax => "lax", None => "none" }
    SessionMode { On => "on", Off => "off", Required => "required" }
    LogFormat { Text => "text", Json => "json" }
}
