//! The management API (`/v1/{appId}/...`), one file per resource:
//! [`functions`] (deploy and manage functions, their runs and logs),
//! [`integrations`] (toolkits, the catalog, connectors, execute, audit),
//! [`connections`] (the connect flow and connections) and [`settings`];
//! [`error`] is the error every handler answers with. Management calls
//! need the app's admin key; the connect flow, connections and execute
//! also accept an end user's JWT (acting only as that user); see
//! [`crate::auth`]. Every error names what was wrong and how to fix it.

pub mod connections;
pub mod error;
pub mod functions;
pub mod integrations;
pub mod settings;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::engine::MAX_COMPONENT_BYTES;
use crate::state::AppState;

/// Largest body of a management call other than a deploy.
const MAX_ADMIN_BODY: usize = 1024 * 1024;

/// The `/v1` routes (and the connect page and OAuth callback under them).
pub fn router() -> Router<Arc<AppState>> {
    let deploys = Router::new()
        .route(
            "/v1/{app}/functions",
            get(functions::list_functions).post(functions::deploy),
        )
        .route(
            "/v1/{app}/functions/{name}",
            get(functions::get_function)
                .put(functions::deploy_named)
                .delete(functions::delete_function),
        )
        .layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES + 128 * 1024));
    let admin = Router::new()
        .route(
            "/v1/{app}/integrations/configure",
            post(integrations::configure),
        )
        .route(
            "/v1/{app}/integrations/configure/{toolkit}",
            delete(integrations::disable_toolkit),
        )
        .route(
            "/v1/{app}/integrations/config",
            get(integrations::list_config),
        )
        .route(
            "/v1/{app}/integrations/available",
            get(integrations::available),
        )
        .route("/v1/{app}/integrations/tools", get(integrations::tools))
        .route(
            "/v1/{app}/integrations/connectors",
            get(integrations::list_connectors).post(integrations::put_connector),
        )
        .route(
            "/v1/{app}/integrations/connectors/{slug}",
            delete(integrations::delete_connector),
        )
        .route(
            "/v1/{app}/integrations/execute",
            post(integrations::execute),
        )
        .route(
            "/v1/{app}/settings",
            get(settings::get_settings).patch(settings::patch_settings),
        )
        .route("/v1/{app}/integrations/connect", post(connections::connect))
        .route(
            "/v1/{app}/functions/{name}/runs",
            get(functions::function_runs),
        )
        .route(
            "/v1/{app}/functions/{name}/logs",
            get(functions::function_logs),
        )
        .route(
            "/v1/{app}/functions/{name}/run",
            post(functions::run_function),
        )
        .route(
            "/v1/{app}/integrations/connections",
            get(connections::list_connections_of),
        )
        .route(
            "/v1/{app}/integrations/connections/{id}",
            delete(connections::delete_connection).patch(connections::patch_connection),
        )
        .route(
            host_api::broker::connect::CALLBACK_PATH,
            get(crate::connect::callback),
        )
        .route(
            host_api::broker::connect::CONNECT_PAGE_PATH,
            get(crate::connect::page).post(crate::connect::confirm),
        )
        .route("/v1/{app}/integrations/logs", get(integrations::logs))
        .route(
            "/v1/{app}/functions/{name}/versions",
            get(functions::list_versions),
        )
        .route(
            "/v1/{app}/functions/{name}/rollback",
            post(functions::rollback),
        )
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY));
    Router::new().merge(deploys).merge(admin)
}

/// `GET /healthz`.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
