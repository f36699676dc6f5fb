//! [`AppState`]: the long-lived services every handler and trigger shares,
//! built once at start-up (`config.rs`) and handed to the router.

use std::sync::Arc;

use host_api::Broker;
use host_api::store::Store;

use crate::invocations::InvocationLog;
use crate::invoke::Invoker;
use crate::registry::Registry;
use crate::triggers::cron::Cron;

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Tool calls and toolkit configuration.
    pub broker: Arc<Broker>,
    /// Deployed functions.
    pub registry: Arc<Registry>,
    /// Runs functions.
    pub invoker: Arc<Invoker>,
    /// Cron triggers.
    pub cron: Arc<Cron>,
    /// Every invocation's record (`runtime logs`).
    pub invocations: Arc<InvocationLog>,
}
