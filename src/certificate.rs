//! The HTTPS listener's certificate (`tls:`): read and checked from its PEM files whenever a
//! configuration is validated (`check`, start, every reload), and handed to new handshakes by
//! a resolver whose key is swapped on reload, so that renewing a certificate needs no restart
//! and connections already open keep the one they were made with.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// `check` (and the log at start and on reload) warns this long before notAfter: two weeks
/// leave time for a renewal that failed unnoticed (Let's Encrypt's own reminders start at 20
/// days, certbot renews at 30).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// A certificate chain with its private key, checked to belong together.
#[derive(Clone)]
pub struct ServerCertificate {
    pub cert_file: String,
    pub key_file: String,
    pub key: Arc<CertifiedKey>,
    /// The leaf's notAfter, in Unix seconds.
    pub not_after: i64,
}

/// The key material never reaches logs.
impl fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCertificate")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// Why a certificate or key cannot be served. Each names its file; `key_path` names the
/// configuration key it is reported under.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        key_path: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not valid PEM: {source}")]
    Pem {
        key_path: &'static str,
        path: String,
        #[source]
        source: pem::Error,
    },
    #[error("`{path}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: String },
    #[error("`{path}` holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: String },
    #[error("the first certificate in `{path}` is not a valid X.509 certificate: {source}")]
    X509 {
        path: String,
        #[source]
        source: x509_parser::nom::Err<x509_parser::error::X509Error>,
    },
    #[error("`{path}`: the private key cannot be used: {source}")]
    Key {
        path: String,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "the private key in `{key}` does not belong to the certificate in `{cert}` ({source})"
    )]
    Mismatch {
        cert: String,
        key: String,
        #[source]
        source: rustls::Error,
    },
}

impl CertificateError {
    /// The configuration key the problem is reported under.
    pub fn key_path(&self) -> &'static str {
        match self {
            CertificateError::Read { key_path, .. } | CertificateError::Pem { key_path, .. } => {
                key_path
            }
            CertificateError::NoCertificate { .. } | CertificateError::X509 { .. } => {
                "tls.cert_file"
            }
            CertificateError::NoKey { .. }
            | CertificateError::Key { .. }
            | CertificateError::Mismatch { .. } => "tls.key_file",
        }
    }
}

/// The provider every TLS context of the listener uses: ring, as the store's TLS does (never
/// aws-lc, which needs cmake and more to build).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ServerCertificate {
    /// Reads `cert_file` (the leaf first, then its intermediates, as certbot's
    /// `fullchain.pem`) and `key_file`, and checks that the key is the certificate's.
    pub fn load(cert_file: &str, key_file: &str) -> Result<ServerCertificate, CertificateError> {
        let read = |key_path, path: &str| {
            std::fs::read(path).map_err(|source| CertificateError::Read {
                key_path,
                path: path.to_owned(),
                source,
            })
        };
        let cert_pem = read("tls.cert_file", cert_file)?;
        let key_pem = read("tls.key_file", key_file)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| CertificateError::Pem {
                key_path: "tls.cert_file",
                path: cert_file.to_owned(),
                source,
            })?;
        let Some(leaf) = chain.first() else {
            return Err(CertificateError::NoCertificate {
                path: cert_file.to_owned(),
            });
        };
        let not_after = x509_parser::parse_x509_certificate(leaf)
            .map_err(|source| CertificateError::X509 {
                path: cert_file.to_owned(),
                source,
            })?
            .1
            .validity()
            .not_after
            .timestamp();
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| match err {
            pem::Error::NoItemsFound => CertificateError::NoKey {
                path: key_file.to_owned(),
            },
            source => CertificateError::Pem {
                key_path: "tls.key_file",
                path: key_file.to_owned(),
                source,
            },
        })?;
        let signing = provider()
            .key_provider
            .load_private_key(private)
            .map_err(|source| CertificateError::Key {
                path: key_file.to_owned(),
                source,
            })?;
        let key = CertifiedKey::new(chain, signing);
        // Fail closed: a key whose public half cannot be compared is refused too, rather than
        // found out by every client's failed handshake.
        key.keys_match()
            .map_err(|source| CertificateError::Mismatch {
                cert: cert_file.to_owned(),
                key: key_file.to_owned(),
                source,
            })?;
        Ok(ServerCertificate {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            key: Arc::new(key),
            not_after,
        })
    }

    /// notAfter as a time.
    pub fn expires(&self) -> SystemTime {
        let secs = self.not_after.unsigned_abs();
        if self.not_after >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs)
        }
    }

    /// A warning when the certificate has expired or expires within `EXPIRY_WARNING` of
    /// `now`; `None` otherwise.
    pub fn expiry_warning(&self, now: SystemTime) -> Option<String> {
        let expires = self.expires();
        let date = humantime::format_rfc3339_seconds(expires);
        match expires.duration_since(now) {
            Err(_) => Some(format!(
                "tls.cert_file: the certificate in `{}` expired on {date}; clients refuse it",
                self.cert_file
            )),
            Ok(left) if left < EXPIRY_WARNING => Some(format!(
                "tls.cert_file: the certificate in `{}` expires on {date}, in {} days; renew it",
                self.cert_file,
                left.as_secs() / 86_400
            )),
            Ok(_) => None,
        }
    }
}

/// Hands every new handshake the certificate of the live configuration. A reload swaps it;
/// a connection already open keeps the one it was made with (its handshake is over).
#[derive(Debug)]
pub struct CertResolver(ArcSwap<CertifiedKey>);

impl CertResolver {
    pub fn new(key: Arc<CertifiedKey>) -> CertResolver {
        CertResolver(ArcSwap::new(key))
    }

    pub fn replace(&self, key: Arc<CertifiedKey>) {
        self.0.store(key);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}
