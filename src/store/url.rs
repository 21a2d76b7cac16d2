//! The `store.url` forms of the contract.

use std::fmt;

/// Where sessions live. Parsed from `store.url`; credentials never appear in `Display`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `memory://[?max_sessions=N]`: embedded, one instance only.
    Memory { max_sessions: usize },
    /// `redis://[user:pass@]host:port[/db]`: a standalone server or a primary endpoint.
    Redis { url: String },
}

/// Sessions the embedded store holds at most unless told otherwise: with the default 8 KiB
/// session limit that bounds it near 1 GiB, and typical sessions are far smaller.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("`{0}` is not a store URL (memory://, redis://, rediss://, redis+cluster://, redis+sentinel://)")]
    UnknownScheme(String),
    #[error("`{0}`: the only memory:// option is ?max_sessions=N with N > 0")]
    MemoryOption(String),
    #[error("{0}: {1}")]
    Redis(String, String),
    #[error(
        "`{scheme}` store URLs (TLS, cluster, Sentinel) are not supported by this version yet"
    )]
    NotYetSupported { scheme: String },
}

impl StoreUrl {
    pub fn parse(raw: &str) -> Result<StoreUrl, UrlError> {
        let scheme = raw.split("://").next().unwrap_or_default();
        match scheme {
            "memory" => parse_memory(raw),
            "redis" => match redis::Client::open(raw) {
                Ok(_) => Ok(StoreUrl::Redis {
                    url: raw.to_owned(),
                }),
                Err(err) => Err(UrlError::Redis(redact(raw), err.to_string())),
            },
            "rediss" | "redis+cluster" | "rediss+cluster" | "redis+sentinel"
            | "rediss+sentinel" => Err(UrlError::NotYetSupported {
                scheme: scheme.to_owned(),
            }),
            _ => Err(UrlError::UnknownScheme(redact(raw))),
        }
    }

    pub fn uses_tls(&self) -> bool {
        false
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

/// The URL with any password replaced by `***`, for messages and `stickless check`.
pub fn redact(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".into()
            };
            format!("{scheme}://{hidden}@{hosts}{tail}")
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
            StoreUrl::Redis { url } => write!(f, "{}", redact(url)),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
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
            StoreUrl::parse("redis://127.0.0.1:6379/0"),
            Ok(StoreUrl::Redis { .. })
        ));
        assert!(matches!(
            StoreUrl::parse("mysql://x"),
            Err(UrlError::UnknownScheme(_))
        ));
        assert!(matches!(
            StoreUrl::parse("redis+cluster://a:1,b:2"),
            Err(UrlError::NotYetSupported { .. })
        ));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://app:s3cret@h:6379/0"),
            "redis://app:***@h:6379/0"
        );
        assert_eq!(redact("redis://:s3cret@h:6379"), "redis://:***@h:6379");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        let url = StoreUrl::parse("redis://app:s3cret@h:6379/0").expect("valid");
        assert!(!url.to_string().contains("s3cret"));
        assert!(!format!("{url:?}").contains("s3cret"));
    }
}
