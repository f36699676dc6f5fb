//! Keeping this node in step with the others on a shared store: deploys,
//! rollbacks, deletes and connector changes made on any node reach this
//! one through the store's change feed (PostgreSQL `LISTEN`/`NOTIFY`,
//! within milliseconds), with a periodic full reconcile as the safety net
//! for anything the feed missed. On the embedded store there is one node
//! and nothing to follow.

use std::sync::Arc;
use std::time::Duration;

use host_api::Broker;
use host_api::store::Store;

use crate::registry::Registry;
use crate::triggers::cron::Cron;

/// How often the node reconciles even when the feed is quiet.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// Changes arriving this close together are handled in one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// Starts following the store's changes, if it has several nodes.
pub async fn follow(
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    cron: Arc<Cron>,
    broker: Arc<Broker>,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut feed = store.watch_changes().await?;
    Some(tokio::spawn(async move {
        let mut every = tokio::time::interval(RECONCILE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                change = feed.recv() => {
                    if change.is_none() {
                        return;
                    }
                    tokio::time::sleep(DEBOUNCE).await;
                    while feed.try_recv().is_ok() {}
                }
                _ = every.tick() => {}
            }
            broker.forget_custom_connectors();
            match registry.reconcile().await {
                Ok(changed) => {
                    for (app, name) in changed {
                        cron.sync(&app, &name).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot reconcile with the shared store"),
            }
        }
    }))
}
