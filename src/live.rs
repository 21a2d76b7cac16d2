//! The live configuration: everything a reload can change, validated and built into one
//! snapshot that is swapped atomically. A request takes the snapshot once when it starts and
//! sees that one configuration to the end, however many reloads happen meanwhile; a
//! connection takes it when it opens.
//!
//! What must outlive reloads (the store, the upstream connection pools, upstream health, the
//! metrics registry) is held beside the snapshot by `proxy::Proxy`, not in it.

use std::sync::Arc;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::routing::Router;
use crate::upstream::check::Checks;
use crate::upstream::health::HealthRegistry;
use crate::upstream::UpstreamClient;

pub struct Live {
    pub settings: Settings,
    pub router: Router,
    /// The active health checks of this configuration; they stop when it is dropped.
    _checks: Checks,
}

impl Live {
    /// Builds the snapshot and starts its health checks (needs a Tokio runtime).
    pub fn new(
        settings: Settings,
        metrics: &Metrics,
        health: &HealthRegistry,
        client: &Arc<UpstreamClient>,
    ) -> Live {
        let router = Router::new(&settings.routes, metrics, health);
        let mut checks = Checks::default();
        for (route, configured) in router.routes().iter().zip(&settings.routes) {
            if let Some(check) = &configured.health.check {
                checks.start(client, &route.upstreams, check);
            }
        }
        Live {
            settings,
            router,
            _checks: checks,
        }
    }
}
