//! Validated settings: what the rest of the code uses. Every check that can be made without
//! touching the network happens here, so `stickless check` and `stickless run` agree on what a
//! valid file is, and each problem is reported with the key path it belongs to.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, Uri};

use super::file::{
    FileConfig, HealthFile, LogFormat, OnUnavailable, RequestBufferingFile, RouteFile, SameSite,
    SessionMode, StoreFile,
};
use super::Problem;
use crate::certificate::ServerCertificate;
use crate::routing::Destination;
use crate::session::fingerprint::Fingerprints;
use crate::session::id_header;
use crate::session::keys::MIN_KEY_BYTES;
use crate::session::lifetime::Lifetime;
use crate::session::prefix::HeaderPrefix;
use crate::session::record::MAX_ATTRIBUTES;
use crate::session::sealing::Sealer;
use crate::session::signing::Signer;
use crate::store::url::{StoreUrl, Topology};
use crate::upstream::forwarded::TrustedProxies;

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub store: StoreSettings,
    pub session: SessionSettings,
    pub routes: Vec<RouteSettings>,
    pub timeouts: Timeouts,
    pub trusted_proxies: TrustedProxies,
    pub limits: Limits,
    pub admin: Option<AdminSettings>,
    pub log: LogFormat,
    /// HTTPS on `listen`: the certificate and key, read and checked. `None`: plain HTTP.
    pub tls: Option<ServerCertificate>,
}

/// The operators' listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// Bearer token for the admin session API; `None`: that API answers 404.
    pub token: Option<AdminToken>,
}

/// A bearer credential: compared, never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_headers: usize,
    pub max_request_head_bytes: usize,
    pub max_connections: usize,
    pub listen_backlog: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    /// Where the store is, with the credentials from `username`/`password_env`/
    /// `password_file` already merged in.
    pub url: StoreUrl,
    /// Every key we write starts with `<key_prefix>:`, so one Redis can be shared and an ACL
    /// can confine us to `~<key_prefix>:*`.
    pub key_prefix: String,
    pub on_unavailable: OnUnavailable,
    /// The longest one store operation may take before it counts as unavailable.
    pub timeout: Duration,
    /// Certificates for `rediss://`, read at start so a missing file is a config error.
    pub tls: TlsFiles,
    pub durability: Option<Durability>,
    /// `events.max_len`: lifecycle events go to `<key_prefix>:events`, capped near this
    /// length. `None`: no events. Lives with the store because its connections write them.
    pub events: Option<u64>,
    /// `store.near_cache`: `None` reads every session from Redis.
    pub near_cache: Option<NearCacheSettings>,
}

/// `store.near_cache`: each worker keeps up to `max_sessions` sessions it read, served
/// without a round trip until Redis invalidates them (`store::redis::near`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NearCacheSettings {
    pub max_sessions: usize,
}

/// PEM contents of `store.tls`. Empty: the system's trusted roots, no client certificate.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key, when the server asks for one.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// Key material never reaches logs.
impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

/// `WAIT <replicas> <timeout>` after writes that end a session id; fewer acknowledgements
/// than asked is a failure (503), never silently accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    pub replicas: u32,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub cookie: CookieSettings,
    pub lifetime: Lifetime,
    pub prefix: HeaderPrefix,
    pub limits: SessionLimits,
    /// Seals attribute values at rest, when encryption keys are configured.
    pub sealer: Option<Sealer>,
    /// Keyed hashes of session ids, for logs.
    pub fingerprints: Fingerprints,
    /// Sessions are indexed by this attribute's value (lower-cased name); `None`: no index,
    /// and `X-Session-Invalidate-All` ends the current session only.
    pub principal_attribute: Option<String>,
    /// `session.id_header`: the header that may carry the id instead of the cookie.
    pub id_header: Option<HeaderName>,
}

/// What a backend may store in one session. The whole session is injected as request
/// headers, and backends cap those (per line and in total), so the limits are counted the
/// way the headers go out. A write over any of them is refused (502), the session unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// The injected attribute header lines together: prefix + name + `: ` + value + CRLF each.
    pub max_bytes: usize,
    pub max_attributes: usize,
    /// One attribute value, in bytes.
    pub max_value_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct CookieSettings {
    pub name: String,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: SameSite,
    /// Signs and verifies cookie values, when keys are configured.
    pub signer: Option<Signer>,
}

#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// The `route` label in metrics and logs: `name`, or host and path prefix when unnamed.
    pub name: String,
    /// Lower-case host without port; `None` matches every host.
    pub host: Option<String>,
    pub path_prefix: String,
    pub upstreams: Vec<Authority>,
    pub session: SessionMode,
    pub login_url: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub health: HealthSettings,
    /// `None`: request bodies stream to the backend as they arrive.
    pub request_buffering: Option<RequestBuffering>,
}

/// A route's request bodies are read whole before an upstream is contacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBuffering {
    /// Held in memory per request; bytes past it go to an unnamed temporary file.
    pub memory_bytes: u64,
    /// Most bytes a body may have (the route's `max_body_bytes` too, when smaller).
    pub max_bytes: u64,
    /// `None`: the process's temporary directory, looked up when a body spills (`$TMPDIR`,
    /// else `/tmp`).
    pub temp_dir: Option<PathBuf>,
}

/// Passive ejection (`max_fails` consecutive failures skip an upstream for `fail_timeout`)
/// and the optional active check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub check: Option<CheckSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSettings {
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub keepalive_idle: Duration,
    pub body_idle: Duration,
    pub upstream_connect: Duration,
    pub upstream_response: Duration,
    pub upstream_read_idle: Duration,
    pub client_write_idle: Duration,
    pub shutdown_grace: Duration,
    pub tunnel_idle: Duration,
    pub tls_handshake: Duration,
}

/// Collects every problem in the file rather than stopping at the first, so one run of
/// `stickless check` shows the whole list.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
            line: None,
        });
    }
}

pub(super) fn validate(file: FileConfig) -> Result<Settings, Vec<Problem>> {
    let mut problems = Problems::default();

    let listen = listen_address(&file.listen).unwrap_or_else(|message| {
        problems.add("listen", message);
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });

    let url = match StoreUrl::parse(&file.store.url) {
        Ok(url) => Some(url),
        Err(err) => {
            problems.add("store.url", err.to_string());
            None
        }
    };
    let url = url.map(|url| credentials(url, &file.store, &mut problems));
    let tls = match &file.store.tls {
        None => TlsFiles::default(),
        Some(tls) => {
            if !matches!(&url, Some(u) if u.uses_tls()) {
                problems.add("store.tls", "is only used with rediss:// store URLs");
            }
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                problems.add("store.tls", "cert_file and key_file go together");
            }
            let mut read = |key: &str, path: &Option<String>| {
                path.as_ref().and_then(|path| match std::fs::read(path) {
                    Ok(pem) => Some(pem),
                    Err(err) => {
                        problems.add(
                            format!("store.tls.{key}"),
                            format!("cannot read `{path}`: {err}"),
                        );
                        None
                    }
                })
            };
            let ca = read("ca_file", &tls.ca_file);
            let cert = read("cert_file", &tls.cert_file);
            let key = read("key_file", &tls.key_file);
            TlsFiles {
                ca,
                client: cert.zip(key),
            }
        }
    };
    let durability = file.store.durability.as_ref().map(|d| {
        if d.replicas == 0 {
            problems.add(
                "store.durability.replicas",
                "must be at least 1 (leave durability out to not wait)",
            );
        }
        if d.timeout.is_zero() {
            problems.add(
                "store.durability.timeout",
                "must be greater than zero (WAIT 0 would wait forever)",
            );
        }
        if matches!(&url, Some(StoreUrl::Memory { .. })) {
            problems.add("store.durability", "has no meaning for memory://");
        }
        Durability {
            replicas: d.replicas,
            timeout: d.timeout,
        }
    });
    let near_cache = file.store.near_cache.as_ref().map(|near| {
        if near.max_sessions == 0 {
            problems.add(
                "store.near_cache.max_sessions",
                "must be at least 1 (leave near_cache out to read every session from Redis)",
            );
        }
        match &url {
            Some(StoreUrl::Memory { .. }) => {
                problems.add("store.near_cache", "has no meaning for memory://")
            }
            Some(StoreUrl::Redis(target)) if matches!(target.topology, Topology::Cluster) => {
                problems.add(
                    "store.near_cache",
                    "is not available with redis+cluster:// (client tracking per node is not supported yet)",
                )
            }
            _ => {}
        }
        NearCacheSettings {
            max_sessions: near.max_sessions,
        }
    });
    let key_prefix = file.store.key_prefix;
    if key_prefix.is_empty()
        || key_prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        problems.add(
            "store.key_prefix",
            "must be non-empty, without spaces or control characters",
        );
    }
    if file.store.timeout.is_zero() {
        problems.add("store.timeout", "must be greater than zero");
    }

    let session = file.session;
    let cookie = session.cookie;
    if !is_cookie_name(&cookie.name) {
        problems.add(
            "session.cookie.name",
            format!(
                "`{}` is not a valid cookie name (RFC 6265 token)",
                cookie.name
            ),
        );
    }
    if cookie.same_site == SameSite::None && !cookie.secure {
        // Browsers reject `SameSite=None` without `Secure`; the session would never stick.
        problems.add("session.cookie.same_site", "`none` requires `secure: true`");
    }
    let signing_keys = read_keys(
        "session.cookie.signing_keys",
        &cookie.signing_keys_file,
        &cookie.signing_keys_env,
        &mut problems,
    );
    let signer = signing_keys
        .as_ref()
        .and_then(|keys| keys.make(Signer::new, &mut problems));
    let encryption_keys = read_keys(
        "session.encryption_keys",
        &session.encryption_keys_file,
        &session.encryption_keys_env,
        &mut problems,
    );
    let sealer = encryption_keys
        .as_ref()
        .and_then(|keys| keys.make(Sealer::new, &mut problems));
    if encryption_keys.is_some() && signing_keys.is_none() {
        // Each Redis key holds its session id; unsigned, an id read from a dump is a working
        // cookie, and sealing the values would protect nothing that matters.
        problems.add(
            "session",
            "encryption_keys need signed cookies too (session.cookie.signing_keys_file or _env): \
             otherwise the ids in the Redis keys are usable cookies",
        );
    }
    if session.idle_timeout < Duration::from_secs(1) {
        problems.add("session.idle_timeout", "must be at least 1s");
    }
    if session.absolute_timeout < Duration::from_secs(1) {
        problems.add("session.absolute_timeout", "must be at least 1s");
    }
    let prefix = HeaderPrefix::new(&session.header_prefix).unwrap_or_else(|message| {
        problems.add("session.header_prefix", message);
        HeaderPrefix::default()
    });
    let id_header = session.id_header.as_deref().and_then(|raw| {
        id_header::validate(raw, |name| prefix.matches(name))
            .map_err(|message| problems.add("session.id_header", message))
            .ok()
    });
    let session_limits = SessionLimits {
        max_bytes: session.max_bytes,
        max_attributes: session.max_attributes,
        max_value_bytes: session.max_value_bytes,
    };
    if session.max_bytes == 0 {
        problems.add("session.max_bytes", "must be greater than zero");
    }
    if !(1..=MAX_ATTRIBUTES).contains(&session.max_attributes) {
        problems.add(
            "session.max_attributes",
            format!("must be between 1 and {MAX_ATTRIBUTES}"),
        );
    }
    if session.max_value_bytes == 0 {
        problems.add("session.max_value_bytes", "must be greater than zero");
    }
    let principal_attribute = session.principal_attribute.as_ref().and_then(|raw| {
        let name = crate::session::record::attribute_name(raw);
        if name.is_none() {
            problems.add(
                "session.principal_attribute",
                format!("`{raw}` is not an attribute name ([a-z0-9][a-z0-9-]{{0,63}}, not `id`)"),
            );
        }
        name
    });
    let events = file.events.as_ref().map(|events| {
        if events.max_len == 0 {
            problems.add("events.max_len", "must be greater than zero");
        }
        if matches!(&url, Some(StoreUrl::Memory { .. })) {
            problems.add("events", "needs a Redis store (memory:// keeps no stream)");
        }
        events.max_len
    });

    if file.routes.is_empty() {
        problems.add("routes", "at least one route is needed");
    }
    let named: Vec<bool> = file.routes.iter().map(|r| r.name.is_some()).collect();
    let routes: Vec<RouteSettings> = file
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, route)| validate_route(&format!("routes[{i}]"), route, &mut problems))
        .collect();
    refuse_login_loops(&routes, &mut problems);

    let timeouts = Timeouts {
        header_read: file.timeouts.header_read,
        keepalive_idle: file.timeouts.keepalive_idle,
        body_idle: file.timeouts.body_idle,
        upstream_connect: file.timeouts.upstream_connect,
        upstream_response: file.timeouts.upstream_response,
        upstream_read_idle: file.timeouts.upstream_read_idle,
        client_write_idle: file.timeouts.client_write_idle,
        shutdown_grace: file.timeouts.shutdown_grace,
        tunnel_idle: file.timeouts.tunnel_idle,
        tls_handshake: file.timeouts.tls_handshake,
    };
    for (name, value) in [
        ("header_read", timeouts.header_read),
        ("keepalive_idle", timeouts.keepalive_idle),
        ("body_idle", timeouts.body_idle),
        ("upstream_connect", timeouts.upstream_connect),
        ("upstream_response", timeouts.upstream_response),
        ("upstream_read_idle", timeouts.upstream_read_idle),
        ("client_write_idle", timeouts.client_write_idle),
        ("tunnel_idle", timeouts.tunnel_idle),
        ("tls_handshake", timeouts.tls_handshake),
    ] {
        if value.is_zero() {
            problems.add(format!("timeouts.{name}"), "must be greater than zero");
        }
    }

    let trusted_proxies = TrustedProxies::new(
        file.trusted_proxies
            .iter()
            .enumerate()
            .filter_map(|(i, raw)| {
                let parsed = raw
                    .parse::<IpNet>()
                    .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from));
                parsed
                    .map_err(|_| {
                        problems.add(
                            format!("trusted_proxies[{i}]"),
                            format!("`{raw}` is not an address or CIDR range"),
                        )
                    })
                    .ok()
            })
            .collect(),
    );

    let limits = Limits {
        max_request_headers: file.limits.max_request_headers,
        max_request_head_bytes: file.limits.max_request_head_bytes,
        max_connections: file.limits.max_connections,
        listen_backlog: file.limits.listen_backlog,
    };
    if limits.max_request_headers == 0 {
        problems.add("limits.max_request_headers", "must be greater than zero");
    }
    if limits.max_request_head_bytes < 8192 {
        // hyper's read buffer cannot be smaller.
        problems.add("limits.max_request_head_bytes", "must be at least 8192");
    }
    if limits.max_connections == 0 {
        problems.add("limits.max_connections", "must be greater than zero");
    }
    if limits.listen_backlog == 0 {
        problems.add("limits.listen_backlog", "must be greater than zero");
    }

    let admin = file.admin.map(|admin| {
        let listen = listen_address(&admin.listen).unwrap_or_else(|message| {
            problems.add("admin.listen", message);
            SocketAddr::from(([127, 0, 0, 1], 9901))
        });
        // Port 0 (any free port) never clashes.
        if listen.port() != 0 && listen_address(&file.listen).ok() == Some(listen) {
            problems.add("admin.listen", "must differ from `listen`");
        }
        let token = admin.token_file.and_then(|path| {
            match std::fs::read_to_string(&path) {
                // One trailing newline is what `echo` and editors leave; it is not part of
                // the token.
                Ok(text) => {
                    let token = text.strip_suffix('\n').unwrap_or(&text);
                    let token = token.strip_suffix('\r').unwrap_or(token);
                    if token.len() < 16
                        || token.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        problems.add(
                            "admin.token_file",
                            format!(
                                "`{path}` must hold one token of at least 16 visible characters"
                            ),
                        );
                        None
                    } else {
                        Some(AdminToken(token.to_owned()))
                    }
                }
                Err(err) => {
                    problems.add("admin.token_file", format!("cannot read `{path}`: {err}"));
                    None
                }
            }
        });
        AdminSettings { listen, token }
    });

    let listener_tls = file.tls.and_then(|tls| {
        ServerCertificate::load(&tls.cert_file, &tls.key_file)
            .map_err(|err| problems.add(err.key_path(), err.to_string()))
            .ok()
    });

    // Names label metrics, so two routes may not share one. An unnamed route is named by its
    // host and prefix; a second route with the same ones can never match (the first wins).
    let mut names = std::collections::HashMap::new();
    for (i, route) in routes.iter().enumerate() {
        if let Some(first) = names.insert(route.name.as_str(), i) {
            let (key, message) = if named[i] {
                (
                    format!("routes[{i}].name"),
                    format!("`{}` is also the name of routes[{first}]", route.name),
                )
            } else {
                (
                    format!("routes[{i}].match"),
                    format!(
                        "the same host and path prefix as routes[{first}], which always matches first, so this route is never used; change its match or give both a `name`"
                    ),
                )
            };
            problems.add(key, message);
        }
    }

    match (problems.0.is_empty(), url) {
        (true, Some(url)) => Ok(Settings {
            listen,
            store: StoreSettings {
                url,
                key_prefix,
                on_unavailable: file.store.on_unavailable,
                timeout: file.store.timeout,
                tls,
                durability,
                events,
                near_cache,
            },
            session: SessionSettings {
                cookie: CookieSettings {
                    name: cookie.name,
                    secure: cookie.secure,
                    http_only: cookie.http_only,
                    same_site: cookie.same_site,
                    signer,
                },
                lifetime: Lifetime::new(session.idle_timeout, session.absolute_timeout),
                prefix,
                limits: session_limits,
                sealer,
                fingerprints: Fingerprints::new(),
                principal_attribute,
                id_header,
            },
            routes,
            timeouts,
            trusted_proxies,
            limits,
            admin,
            log: file.log.format,
            tls: listener_tls,
        }),
        _ => Err(problems.0),
    }
}

/// A key list as read, with the key path its problems are reported under.
struct KeyList {
    path: String,
    keys: Vec<Vec<u8>>,
}

impl KeyList {
    /// The signer or sealer these keys make, or a problem that says why not.
    fn make<T>(
        &self,
        make: impl FnOnce(&[Vec<u8>]) -> Result<T, String>,
        problems: &mut Problems,
    ) -> Option<T> {
        make(&self.keys)
            .map_err(|err| {
                problems.add(
                    &self.path,
                    format!("{err} (at least {MIN_KEY_BYTES} bytes each, newest first)"),
                )
            })
            .ok()
    }
}

/// Reads a key list from its file (`<what>_file`) or environment variable (`<what>_env`),
/// never from the YAML. One key per line (or comma-separated from the environment), newest
/// first; `#` starts a comment line.
fn read_keys(
    what: &str,
    file: &Option<String>,
    env: &Option<String>,
    problems: &mut Problems,
) -> Option<KeyList> {
    let (path, text) = match (file, env) {
        (None, None) => return None,
        (Some(_), Some(_)) => {
            let leaf = what.rsplit('.').next().unwrap_or(what);
            problems.add(what, format!("{leaf}_file and {leaf}_env: choose one"));
            return None;
        }
        (Some(file), None) => {
            let path = format!("{what}_file");
            match std::fs::read_to_string(file) {
                Ok(text) => (path, text),
                Err(err) => {
                    problems.add(path, format!("cannot read `{file}`: {err}"));
                    return None;
                }
            }
        }
        (None, Some(name)) => {
            let path = format!("{what}_env");
            match std::env::var(name) {
                Ok(text) => (path, text.replace(',', "\n")),
                Err(_) => {
                    problems.add(path, format!("environment variable `{name}` is not set"));
                    return None;
                }
            }
        }
    };
    let keys = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|key| key.as_bytes().to_vec())
        .collect();
    Some(KeyList { path, keys })
}

/// Merges `store.username`, `store.password_env` and `store.password_file` into the URL.
fn credentials(url: StoreUrl, store: &StoreFile, problems: &mut Problems) -> StoreUrl {
    let StoreUrl::Redis(mut target) = url else {
        for (key, set) in [
            ("username", store.username.is_some()),
            ("password_env", store.password_env.is_some()),
            ("password_file", store.password_file.is_some()),
        ] {
            if set {
                problems.add(format!("store.{key}"), "is only used with redis store URLs");
            }
        }
        return url;
    };
    if let Some(user) = &store.username {
        target.username = Some(user.clone());
    }
    let from_env = store
        .password_env
        .as_ref()
        .map(|name| match std::env::var(name) {
            Ok(password) => Some(password),
            Err(_) => {
                problems.add(
                    "store.password_env",
                    format!("environment variable `{name}` is not set"),
                );
                None
            }
        });
    let from_file = store
        .password_file
        .as_ref()
        .map(|path| match std::fs::read_to_string(path) {
            Ok(text) => Some(text.trim_end_matches(['\n', '\r']).to_owned()),
            Err(err) => {
                problems.add(
                    "store.password_file",
                    format!("cannot read `{path}`: {err}"),
                );
                None
            }
        });
    let given = [
        target.password.is_some(),
        from_env.is_some(),
        from_file.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        problems.add(
            "store",
            "the password is given more than once (URL, password_env, password_file): keep one",
        );
    }
    if let Some(password) = from_env.or(from_file) {
        target.password = password;
    }
    StoreUrl::Redis(target)
}

/// The listener's address. Host names are refused rather than resolved: a name can stand for
/// several addresses (`localhost` for 127.0.0.1 and ::1) while we would bind one of them,
/// picked by the resolver at start, and what it stands for may change under a running proxy.
fn listen_address(raw: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = raw.parse() {
        return Ok(address);
    }
    let named = raw.rsplit_once(':').is_some_and(|(host, port)| {
        port.parse::<u16>().is_ok()
            && host.bytes().any(|b| b.is_ascii_alphabetic())
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    });
    Err(if named {
        format!(
            "`{raw}` names a host: listen takes an IP address and port \
             (e.g. 127.0.0.1:8080 or [::]:8080), not a host name"
        )
    } else {
        format!("`{raw}` is not an address of the form host:port (e.g. 127.0.0.1:8080)")
    })
}

/// A `session: required` route sends a browser without a session to its `login_url`. If that
/// URL is itself routed to a route that requires a session, the browser is sent there again
/// and again, and nobody can ever log in.
fn refuse_login_loops(routes: &[RouteSettings], problems: &mut Problems) {
    for (i, route) in routes.iter().enumerate() {
        let (SessionMode::Required, Some(login)) = (route.session, route.login_url.as_deref())
        else {
            continue;
        };
        let Ok(url) = login.parse::<Uri>() else {
            continue;
        };
        let destination = match (url.scheme(), url.authority()) {
            // A path: the browser stays on the host it asked for. For a route without a host,
            // that is any host no route names (which only routes without a host take).
            // `//host/path` is another host, without a scheme.
            (None, None) if login.starts_with('/') && !login.starts_with("//") => {
                Destination::new(route.host.as_deref(), url.path())
            }
            (Some(_), Some(authority)) => {
                let destination = Destination::new(Some(authority.as_str()), url.path());
                // We only know that we serve the URL's host when a route names it (this one,
                // or another); any other host may well be someone else's login page, such as
                // an identity provider's, even in front of a route without a host.
                let ours = destination.host().is_some_and(|host| {
                    routes
                        .iter()
                        .filter_map(|r| r.host.as_deref())
                        .any(|named| named.eq_ignore_ascii_case(host))
                });
                if !ours {
                    continue;
                }
                destination
            }
            _ => continue,
        };
        let taken = routes
            .iter()
            .position(|r| destination.taken_by(r.host.as_deref(), &r.path_prefix));
        if let Some(j) = taken.filter(|&j| routes[j].session == SessionMode::Required) {
            let itself = if i == j { " (this route)" } else { "" };
            problems.add(
                format!("routes[{i}].login_url"),
                format!(
                    "`{login}` would redirect to routes[{j}]{itself}, which requires a session \
                     itself, so the redirect would loop; serve the login page from a route with \
                     `session: on` or `off`"
                ),
            );
        }
    }
}

fn validate_route(path: &str, route: RouteFile, problems: &mut Problems) -> RouteSettings {
    let prefix = route.matcher.path_prefix;
    let name = match route.name {
        Some(name) => {
            if !is_route_name(&name) {
                problems.add(
                    format!("{path}.name"),
                    format!("`{name}` is not a route name (1 to 64 of a-z A-Z 0-9 _ . - /, starting with a letter or digit)"),
                );
            }
            name
        }
        None => format!(
            "{}{}",
            route
                .matcher
                .host
                .as_deref()
                .unwrap_or_default()
                .to_ascii_lowercase(),
            prefix
        ),
    };
    let health = validate_health(&format!("{path}.health"), route.health, problems);
    let request_buffering = route.request_buffering.map(|buffering| {
        validate_buffering(&format!("{path}.request_buffering"), buffering, problems)
    });
    if !prefix.starts_with('/') {
        problems.add(
            format!("{path}.match.path_prefix"),
            format!("`{prefix}` must start with `/`"),
        );
    }
    let host = route.matcher.host.map(|host| {
        let host = host.to_ascii_lowercase();
        if host.is_empty()
            || host
                .parse::<Authority>()
                .map_or(true, |a| a.port().is_some() || a.as_str() != host)
        {
            problems.add(
                format!("{path}.match.host"),
                format!("`{host}` is not a host name (no scheme, port or path)"),
            );
        }
        host
    });
    if route.upstreams.is_empty() {
        problems.add(
            format!("{path}.upstreams"),
            "at least one upstream is needed",
        );
    }
    let upstreams = route
        .upstreams
        .iter()
        .enumerate()
        .filter_map(|(i, raw)| match parse_upstream(raw) {
            Ok(authority) => Some(authority),
            Err(message) => {
                problems.add(format!("{path}.upstreams[{i}]"), message);
                None
            }
        })
        .collect();
    match (&route.login_url, route.session) {
        (Some(_), SessionMode::On | SessionMode::Off) => {
            problems.add(
                format!("{path}.login_url"),
                "is only used with `session: required`",
            );
        }
        (Some(url), SessionMode::Required) if url.parse::<Uri>().is_err() || url.is_empty() => {
            problems.add(format!("{path}.login_url"), format!("`{url}` is not a URL"));
        }
        _ => {}
    }
    RouteSettings {
        name,
        host,
        path_prefix: prefix,
        upstreams,
        session: route.session,
        login_url: route.login_url,
        max_body_bytes: route.max_body_bytes,
        health,
        request_buffering,
    }
}

fn validate_buffering(
    path: &str,
    buffering: RequestBufferingFile,
    problems: &mut Problems,
) -> RequestBuffering {
    if buffering.max_bytes == 0 {
        problems.add(format!("{path}.max_bytes"), "must be greater than zero");
    }
    if buffering.memory_bytes == 0 {
        // Every body would touch the disk, even a one-byte form post.
        problems.add(format!("{path}.memory_bytes"), "must be greater than zero");
    } else if buffering.memory_bytes > buffering.max_bytes && buffering.max_bytes > 0 {
        problems.add(
            format!("{path}.memory_bytes"),
            format!(
                "must not exceed max_bytes ({}): no body can use more",
                buffering.max_bytes
            ),
        );
    }
    let temp_dir = buffering.temp_dir.map(|dir| {
        let key = format!("{path}.temp_dir");
        match std::fs::metadata(&dir) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                problems.add(key, format!("`{dir}` does not exist"))
            }
            Err(err) => problems.add(key, format!("`{dir}`: {err}")),
            Ok(meta) if !meta.is_dir() => problems.add(key, format!("`{dir}` is not a directory")),
            // Made and gone at once (unnamed): what the first spilled body would meet, found
            // now rather than as 500s. It is checked as the user running the check.
            Ok(_) => {
                if let Err(err) = tempfile::tempfile_in(&dir) {
                    problems.add(key, format!("`{dir}`: cannot create a file there: {err}"));
                }
            }
        }
        PathBuf::from(dir)
    });
    RequestBuffering {
        memory_bytes: buffering.memory_bytes,
        max_bytes: buffering.max_bytes,
        temp_dir,
    }
}

fn validate_health(path: &str, health: HealthFile, problems: &mut Problems) -> HealthSettings {
    if health.max_fails > 0 && health.fail_timeout.is_zero() {
        problems.add(
            format!("{path}.fail_timeout"),
            "must be greater than zero (or set max_fails: 0 to never skip an upstream)",
        );
    }
    let check = health.check.and_then(|check| {
        if check.interval.is_zero() || check.timeout.is_zero() {
            problems.add(
                format!("{path}.check"),
                "interval and timeout must be greater than zero",
            );
        }
        match check.path.parse::<http::uri::PathAndQuery>() {
            Ok(parsed) if check.path.starts_with('/') => Some(CheckSettings {
                path: parsed,
                interval: check.interval,
                timeout: check.timeout,
            }),
            _ => {
                problems.add(
                    format!("{path}.check.path"),
                    format!("`{}` is not a path starting with `/`", check.path),
                );
                None
            }
        }
    });
    HealthSettings {
        max_fails: health.max_fails,
        fail_timeout: health.fail_timeout,
        check,
    }
}

/// Route names become metric label values and log fields: kept to characters that need no
/// escaping anywhere.
fn is_route_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b))
}

fn parse_upstream(raw: &str) -> Result<Authority, String> {
    let uri: Uri = raw
        .parse()
        .map_err(|_| format!("`{raw}` is not a URL of the form http://host:port"))?;
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Err(format!("`{raw}`: only http:// upstreams are supported"));
    }
    if !matches!(
        uri.path_and_query().map(|p| p.as_str()),
        None | Some("/") | Some("")
    ) {
        return Err(format!(
            "`{raw}`: an upstream is host:port only, without a path or query"
        ));
    }
    match uri.into_parts().authority {
        Some(authority) if !authority.as_str().contains('@') => Ok(authority),
        _ => Err(format!("`{raw}` has no host, or has user info")),
    }
}

/// RFC 6265 §4.1.1: a cookie name is an RFC 2616 token.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, Settings};

    fn with_buffering(buffering: &str) -> String {
        format!(
            "store:\n  url: \"memory://\"\nroutes:\n  - match: {{ path_prefix: \"/upload\" }}\n    upstreams: [\"http://127.0.0.1:9000\"]\n{buffering}  - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"http://127.0.0.1:9001\"]\n"
        )
    }

    fn problems(text: &str) -> Vec<Problem> {
        match Settings::from_yaml(text, "test.yaml") {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    fn with_near_cache(url: &str, near: &str) -> String {
        format!(
            "store:\n  url: \"{url}\"\n  near_cache: {near}\nroutes:\n  - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"http://127.0.0.1:9001\"]\n"
        )
    }

    #[test]
    fn near_cache_is_off_unless_given_and_checked_where_it_cannot_work() {
        let off = Settings::from_yaml(&with_buffering(""), "test.yaml").expect("valid");
        assert_eq!(off.store.near_cache, None);
        let on = Settings::from_yaml(
            &with_near_cache("redis://127.0.0.1:6379/0", "{ max_sessions: 5000 }"),
            "test.yaml",
        )
        .expect("valid");
        assert_eq!(
            on.store.near_cache,
            Some(NearCacheSettings { max_sessions: 5000 })
        );
        let sentinel = "redis+sentinel://127.0.0.1:26379/mymaster";
        Settings::from_yaml(
            &with_near_cache(sentinel, "{ max_sessions: 1 }"),
            "test.yaml",
        )
        .expect("valid with Sentinel");
        for (url, near, message) in [
            (
                "redis://127.0.0.1:6379/0",
                "{ max_sessions: 0 }",
                "must be at least 1",
            ),
            (
                "memory://",
                "{ max_sessions: 10 }",
                "has no meaning for memory://",
            ),
            (
                "redis+cluster://127.0.0.1:7000",
                "{ max_sessions: 10 }",
                "is not available with redis+cluster://",
            ),
        ] {
            let found = problems(&with_near_cache(url, near));
            assert!(
                found
                    .iter()
                    .any(|p| p.path.starts_with("store.near_cache") && p.message.contains(message)),
                "{url} {near}: {found:?}"
            );
        }
    }

    #[test]
    fn request_buffering_is_off_unless_given_and_has_defaults() {
        let settings =
            Settings::from_yaml(&with_buffering("    request_buffering: {}\n"), "test.yaml")
                .expect("valid");
        assert_eq!(
            settings.routes[0].request_buffering,
            Some(RequestBuffering {
                memory_bytes: 65536,
                max_bytes: 10 * 1024 * 1024,
                temp_dir: None,
            })
        );
        assert_eq!(settings.routes[1].request_buffering, None);

        let dir = tempfile::tempdir().expect("temp dir");
        let given = format!(
            "    request_buffering:\n      memory_bytes: 4096\n      max_bytes: 4096\n      temp_dir: \"{}\"\n",
            dir.path().display()
        );
        let settings = Settings::from_yaml(&with_buffering(&given), "test.yaml").expect("valid");
        assert_eq!(
            settings.routes[0].request_buffering,
            Some(RequestBuffering {
                memory_bytes: 4096,
                max_bytes: 4096,
                temp_dir: Some(dir.path().to_path_buf()),
            })
        );
    }

    #[test]
    fn request_buffering_values_are_checked_with_their_key_paths() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let key = "routes[0].request_buffering";
        let cases = [
            (
                "{ memory_bytes: 0 }".to_owned(),
                vec![(format!("{key}.memory_bytes"), "greater than zero")],
            ),
            (
                "{ max_bytes: 0 }".to_owned(),
                vec![(format!("{key}.max_bytes"), "greater than zero")],
            ),
            (
                "{ memory_bytes: 2048, max_bytes: 1024 }".to_owned(),
                vec![(
                    format!("{key}.memory_bytes"),
                    "must not exceed max_bytes (1024)",
                )],
            ),
            (
                "{ temp_dir: \"/nonexistent/stickless\" }".to_owned(),
                vec![(format!("{key}.temp_dir"), "does not exist")],
            ),
            (
                format!("{{ temp_dir: \"{}\" }}", file.path().display()),
                vec![(format!("{key}.temp_dir"), "is not a directory")],
            ),
            (
                "{ memory_bytes: 0, max_bytes: 0, temp_dir: \"/nonexistent/x\" }".to_owned(),
                vec![
                    (format!("{key}.max_bytes"), "greater than zero"),
                    (format!("{key}.memory_bytes"), "greater than zero"),
                    (format!("{key}.temp_dir"), "does not exist"),
                ],
            ),
        ];
        for (buffering, expected) in cases {
            let text = with_buffering(&format!("    request_buffering: {buffering}\n"));
            let found = problems(&text);
            assert_eq!(found.len(), expected.len(), "{buffering}: {found:?}");
            for (problem, (path, message)) in found.iter().zip(&expected) {
                assert_eq!(&problem.path, path, "{buffering}: {found:?}");
                assert!(problem.message.contains(message), "{buffering}: {found:?}");
                assert_eq!(problem.line, Some(6), "{buffering}: {found:?}");
            }
        }
    }

    #[test]
    fn request_buffering_shape_errors_name_the_key() {
        let text =
            with_buffering("    request_buffering:\n      memory: 4096\n      max_bytes: lots\n");
        let found = problems(&text);
        let paths: Vec<(&str, Option<usize>)> =
            found.iter().map(|p| (p.path.as_str(), p.line)).collect();
        assert_eq!(
            paths,
            [
                ("routes[0].request_buffering.memory", Some(7)),
                ("routes[0].request_buffering.max_bytes", Some(8)),
            ],
            "{found:?}"
        );
        let flag = problems(&with_buffering("    request_buffering: true\n"));
        assert_eq!(flag.len(), 1, "{flag:?}");
        assert_eq!(flag[0].path, "routes[0].request_buffering");
    }
}
