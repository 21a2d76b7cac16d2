//! The `store.url` forms of the contract.

use std::fmt;

use percent_encoding::percent_decode_str;

/// Where sessions live. Parsed from `store.url`; credentials never appear in `Display` or
/// `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `memory://[?max_sessions=N]`: embedded, one instance only.
    Memory { max_sessions: usize },
    /// Every `redis…://` form.
    Redis(RedisTarget),
}

#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub topology: Topology,
    /// `rediss…`: TLS to every node.
    pub tls: bool,
    /// The server; the cluster's seed nodes; or the sentinels.
    pub nodes: Vec<(String, u16)>,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// A standalone server or a primary endpoint (ElastiCache cluster mode disabled).
    Standalone,
    /// Redis Cluster (ElastiCache cluster mode enabled), reached through seed nodes.
    Cluster,
    /// A primary found through Sentinel under this master name.
    Sentinel { master: String },
}

/// Sessions the embedded store holds at most unless told otherwise: with the default 8 KiB
/// session limit that bounds it near 1 GiB, and typical sessions are far smaller.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;

const REDIS_PORT: u16 = 6379;
const SENTINEL_PORT: u16 = 26379;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("`{0}` is not a store URL (memory://, redis://, rediss://, redis+cluster://, rediss+cluster://, redis+sentinel://, rediss+sentinel://)")]
    UnknownScheme(String),
    #[error("`{0}`: the only memory:// option is ?max_sessions=N with N > 0")]
    MemoryOption(String),
    #[error("`{url}`: {problem}")]
    Redis { url: String, problem: String },
}

impl StoreUrl {
    pub fn parse(raw: &str) -> Result<StoreUrl, UrlError> {
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Err(UrlError::UnknownScheme(redact(raw)));
        };
        let (topology, tls) = match scheme {
            "memory" => return parse_memory(raw),
            "redis" => (Topology::Standalone, false),
            "rediss" => (Topology::Standalone, true),
            "redis+cluster" => (Topology::Cluster, false),
            "rediss+cluster" => (Topology::Cluster, true),
            "redis+sentinel" => (
                Topology::Sentinel {
                    master: String::new(),
                },
                false,
            ),
            "rediss+sentinel" => (
                Topology::Sentinel {
                    master: String::new(),
                },
                true,
            ),
            _ => return Err(UrlError::UnknownScheme(redact(raw))),
        };
        parse_redis(rest, topology, tls).map_err(|problem| UrlError::Redis {
            url: redact(raw),
            problem,
        })
    }

    pub fn uses_tls(&self) -> bool {
        matches!(self, StoreUrl::Redis(target) if target.tls)
    }
}

fn parse_memory(raw: &str) -> Result<StoreUrl, UrlError> {
    let rest = raw.trim_start_matches("memory://");
    let max_sessions = match rest {
        "" | "/" => DEFAULT_MAX_SESSIONS,
        _ => rest
            .trim_start_matches('/')
            .strip_prefix("?max_sessions=")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| UrlError::MemoryOption(raw.to_owned()))?,
    };
    Ok(StoreUrl::Memory { max_sessions })
}

fn parse_redis(rest: &str, topology: Topology, tls: bool) -> Result<StoreUrl, String> {
    if rest.contains('?') || rest.contains('#') {
        return Err("query strings and fragments are not supported; use the store.* keys".into());
    }
    let (userinfo, rest) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (hosts, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let default_port = match topology {
        Topology::Sentinel { .. } => SENTINEL_PORT,
        _ => REDIS_PORT,
    };
    let nodes = hosts
        .split(',')
        .map(|node| parse_node(node, default_port))
        .collect::<Result<Vec<_>, _>>()?;
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, pass) = info.split_once(':').unwrap_or((info, ""));
            (decode(user)?, decode(pass)?)
        }
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let db = |segment: Option<&&str>| -> Result<i64, String> {
        segment.map_or(Ok(0), |s| {
            s.parse::<i64>()
                .ok()
                .filter(|db| *db >= 0)
                .ok_or_else(|| format!("`{s}` is not a database number"))
        })
    };
    let (topology, db) = match topology {
        Topology::Standalone => {
            if nodes.len() != 1 {
                return Err("a redis:// URL names one server; use redis+cluster:// or redis+sentinel:// for several".into());
            }
            if segments.len() > 1 {
                return Err("the path is only the database number".into());
            }
            (Topology::Standalone, db(segments.first())?)
        }
        Topology::Cluster => {
            if !segments.is_empty() {
                return Err("Redis Cluster has only database 0; remove the path".into());
            }
            (Topology::Cluster, 0)
        }
        Topology::Sentinel { .. } => match segments.as_slice() {
            [master] | [master, _] => (
                Topology::Sentinel {
                    master: decode(master)?.unwrap_or_default(),
                },
                db(segments.get(1))?,
            ),
            _ => return Err("a Sentinel URL ends with /<master-name>[/<db>]".into()),
        },
    };
    Ok(StoreUrl::Redis(RedisTarget {
        topology,
        tls,
        nodes,
        db,
        username,
        password,
    }))
}

fn parse_node(node: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = match node.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{node}`: unclosed `[`"))?;
            (host, after.strip_prefix(':'))
        }
        None => match node.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (node, None),
        },
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("`{node}` has no host"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{node}` has no valid port"))?,
    };
    Ok((host.to_owned(), port))
}

fn decode(raw: &str) -> Result<Option<String>, String> {
    if raw.is_empty() {
        return Ok(None);
    }
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| Some(s.into_owned()))
        .map_err(|_| "the user name or password is not valid UTF-8 once percent-decoded".to_owned())
}

/// The URL with any password replaced by `***`, for messages and `stickless check`.
pub fn redact(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_owned();
    };
    match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                userinfo.to_owned()
            };
            format!("{scheme}://{hidden}@{}", &rest[at + 1..])
        }
        None => raw.to_owned(),
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Memory { max_sessions } => {
                write!(f, "memory:// (embedded, up to {max_sessions} sessions)")
            }
            StoreUrl::Redis(target) => write!(f, "{target}"),
        }
    }
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.tls { "s" } else { "" };
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|(h, p)| {
                if h.contains(':') {
                    format!("[{h}]:{p}")
                } else {
                    format!("{h}:{p}")
                }
            })
            .collect();
        let user = match (&self.username, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (Some(u), None) => format!("{u}@"),
            (None, Some(_)) => ":***@".to_owned(),
            (None, None) => String::new(),
        };
        match &self.topology {
            Topology::Standalone => write!(f, "redis{s}://{user}{}/{}", nodes.join(","), self.db),
            Topology::Cluster => write!(f, "redis{s}+cluster://{user}{}", nodes.join(",")),
            Topology::Sentinel { master } => write!(
                f,
                "redis{s}+sentinel://{user}{}/{master}/{}",
                nodes.join(","),
                self.db
            ),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(raw: &str) -> RedisTarget {
        match StoreUrl::parse(raw) {
            Ok(StoreUrl::Redis(t)) => t,
            other => panic!("{raw}: {other:?}"),
        }
    }

    #[test]
    fn memory_forms() {
        assert_eq!(
            StoreUrl::parse("memory://"),
            Ok(StoreUrl::Memory {
                max_sessions: DEFAULT_MAX_SESSIONS
            })
        );
        assert_eq!(
            StoreUrl::parse("memory://?max_sessions=5"),
            Ok(StoreUrl::Memory { max_sessions: 5 })
        );
        assert!(StoreUrl::parse("memory://?max_sessions=0").is_err());
        assert!(matches!(
            StoreUrl::parse("mysql://x"),
            Err(UrlError::UnknownScheme(_))
        ));
    }

    #[test]
    fn redis_forms() {
        let t = target("redis://127.0.0.1:6379/2");
        assert_eq!(
            (t.topology, t.tls, t.nodes, t.db),
            (
                Topology::Standalone,
                false,
                vec![("127.0.0.1".into(), 6379)],
                2
            )
        );
        let t = target("rediss://app:p%40ss@master.example.com");
        assert_eq!(
            (t.tls, t.db, t.username.as_deref(), t.password.as_deref()),
            (true, 0, Some("app"), Some("p@ss"))
        );
        assert_eq!(t.nodes, vec![("master.example.com".into(), 6379)]);
        let t = target("rediss+cluster://:secret@a:7000,b:7001,[::1]:7002");
        assert_eq!(t.topology, Topology::Cluster);
        assert_eq!(t.nodes.len(), 3);
        assert_eq!(t.nodes[2], ("::1".into(), 7002));
        assert_eq!((t.username, t.password.as_deref()), (None, Some("secret")));
        let t = target("redis+sentinel://s1,s2:26380/mymaster/3");
        assert_eq!(
            t.topology,
            Topology::Sentinel {
                master: "mymaster".into()
            }
        );
        assert_eq!((t.nodes[0].1, t.nodes[1].1, t.db), (26379, 26380, 3));
    }

    #[test]
    fn bad_redis_urls() {
        for bad in [
            "redis://a:1,b:2",
            "redis://h:notaport",
            "redis://h:1/x",
            "redis://h:1/0/1",
            "redis+cluster://a:1/0",
            "redis+sentinel://s1",
            "redis+sentinel://s1/m/x",
            "redis://h?timeout=1",
            "redis://:1",
        ] {
            assert!(
                matches!(StoreUrl::parse(bad), Err(UrlError::Redis { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://app:s3cret@h:6379/0"),
            "redis://app:***@h:6379/0"
        );
        assert_eq!(redact("redis://:s3cret@h:6379"), "redis://:***@h:6379");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        for raw in [
            "redis://app:s3cret@h:6379/0",
            "redis+cluster://:s3cret@a:1,b:2",
            "redis://app:s3cret@h:x",
        ] {
            let shown = match StoreUrl::parse(raw) {
                Ok(url) => format!("{url} {url:?}"),
                Err(err) => err.to_string(),
            };
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }
}
