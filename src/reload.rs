//! Reloading the configuration (SIGHUP): read and validate the file as `check` does, refuse
//! what cannot change while running, and otherwise swap the live configuration. Requests and
//! connections already open finish undisturbed; a refused file leaves the running
//! configuration serving.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use crate::certificate::CertResolver;
use crate::config::{ConfigError, Settings};
use crate::logging;
use crate::proxy::Proxy;
use crate::store::url::{RedisTarget, StoreUrl};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{file}: {} cannot change while running; restart stickless to apply it (the running configuration keeps serving)", .keys.join(", "))]
    Fixed {
        file: String,
        keys: Vec<&'static str>,
    },
}

/// Applies new configurations to a running proxy.
#[derive(Clone)]
pub struct Reloader {
    proxy: Arc<Proxy>,
    /// The listener's connection slots: `limits.max_connections` changes live through it.
    slots: Arc<Semaphore>,
    /// With `tls`: where new handshakes find their certificate, swapped by each reload.
    certificate: Option<Arc<CertResolver>>,
}

impl Reloader {
    pub(crate) fn new(
        proxy: Arc<Proxy>,
        slots: Arc<Semaphore>,
        certificate: Option<Arc<CertResolver>>,
    ) -> Reloader {
        Reloader {
            proxy,
            slots,
            certificate,
        }
    }

    /// Reads `path` and applies it; logs the outcome and counts it in the metrics.
    pub fn reload_file(&self, path: &Path) -> Result<(), ReloadError> {
        let file = path.display().to_string();
        let result = match Settings::load(path) {
            Ok(settings) => self.apply(settings, &file),
            Err(err) => {
                self.proxy.metrics().reloaded(false);
                Err(err.into())
            }
        };
        match &result {
            Ok(()) => info!(file, "configuration reloaded"),
            Err(err) => error!("reload refused: stickless: {err}"),
        }
        result
    }

    /// Applies validated settings, unless they change what cannot change live. `file` names
    /// them in the refusal.
    pub fn apply(&self, settings: Settings, file: &str) -> Result<(), ReloadError> {
        let current = self.proxy.live();
        let old = &current.settings;
        let keys = fixed_changes(old, &settings);
        if !keys.is_empty() {
            self.proxy.metrics().reloaded(false);
            return Err(ReloadError::Fixed {
                file: file.to_owned(),
                keys,
            });
        }
        self.resize(old.limits.max_connections, settings.limits.max_connections);
        // The files were read and checked with the rest (`Settings::load`): a certificate that
        // cannot be loaded refused the whole file above, as `check` would.
        if let (Some(resolver), Some(tls)) = (&self.certificate, &settings.tls) {
            resolver.replace(tls.key.clone());
            self.proxy.metrics().tls_certificate_expires(tls.not_after);
            if let Some(warning) = tls.expiry_warning(std::time::SystemTime::now()) {
                warn!("{}: {warning}", file);
            }
        }
        logging::set_format(settings.log);
        self.proxy.replace(settings);
        self.proxy.metrics().reloaded(true);
        Ok(())
    }

    fn resize(&self, old: usize, new: usize) {
        if new > old {
            self.slots.add_permits(new - old);
        } else if new < old {
            // Fewer slots: take the surplus as connections end, then retire it.
            let surplus = u32::try_from(old - new).unwrap_or(u32::MAX);
            let slots = self.slots.clone();
            tokio::spawn(async move {
                if let Ok(permits) = slots.acquire_many_owned(surplus).await {
                    permits.forget();
                }
            });
        }
    }
}

/// The keys whose change needs a restart: the listeners' addresses are bound sockets (and
/// whether the proxy's speaks TLS), and the
/// store's connections (with their address, credentials, TLS, key prefix and timeout) are
/// shared by every request and outlive reloads.
fn fixed_changes(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.listen != new.listen {
        keys.push("listen");
    }
    if old.admin.as_ref().map(|a| a.listen) != new.admin.as_ref().map(|a| a.listen) {
        keys.push("admin.listen");
    }
    // The listener is TLS or not for its whole life; the certificate itself changes live.
    if old.tls.is_some() != new.tls.is_some() {
        keys.push("tls");
    }
    if old.limits.listen_backlog != new.limits.listen_backlog {
        keys.push("limits.listen_backlog");
    }
    let (a, b) = (&old.store, &new.store);
    let credentials = |url: &StoreUrl| match url {
        StoreUrl::Redis(target) => (target.username.clone(), target.password.clone()),
        StoreUrl::Memory { .. } => (None, None),
    };
    let same_credentials = credentials(&a.url) == credentials(&b.url);
    for (key, changed) in [
        (
            "store.url",
            a.url != b.url
                && (same_credentials || without_credentials(&a.url) != without_credentials(&b.url)),
        ),
        ("the store's user name or password", !same_credentials),
        ("store.key_prefix", a.key_prefix != b.key_prefix),
        ("store.timeout", a.timeout != b.timeout),
        ("store.tls", a.tls != b.tls),
        ("store.durability", a.durability != b.durability),
        ("store.near_cache", a.near_cache != b.near_cache),
        ("events", a.events != b.events),
    ] {
        if changed {
            keys.push(key);
        }
    }
    keys
}

fn without_credentials(url: &StoreUrl) -> StoreUrl {
    match url {
        StoreUrl::Redis(target) => StoreUrl::Redis(RedisTarget {
            username: None,
            password: None,
            ..target.clone()
        }),
        memory => memory.clone(),
    }
}
