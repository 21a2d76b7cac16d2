//! Active health checks: one task per upstream of each route that configures a check,
//! running while its configuration is the live one.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::balance::UpstreamSet;
use super::health::Failure;
use super::UpstreamClient;
use crate::config::CheckSettings;

/// The checks of one configuration; dropping it stops them (a reload starts the new ones).
#[derive(Debug, Default)]
pub struct Checks(Vec<JoinHandle<()>>);

impl Drop for Checks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Checks {
    /// Starts checking every upstream of `set` (needs a Tokio runtime).
    pub fn start(
        &mut self,
        client: &Arc<UpstreamClient>,
        set: &Arc<UpstreamSet>,
        check: &CheckSettings,
    ) {
        for index in 0..set.members().len() {
            let client = client.clone();
            let set = set.clone();
            let check = check.clone();
            self.0.push(tokio::spawn(async move {
                let mut ticks = tokio::time::interval(check.interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let Some(upstream) = set.members().get(index) else {
                        return;
                    };
                    if client
                        .check(upstream.authority(), &check.path, check.timeout)
                        .await
                    {
                        upstream.succeeded();
                    } else {
                        upstream.failed(Failure::CheckFailed, &set.policy);
                    }
                }
            }));
        }
    }
}
