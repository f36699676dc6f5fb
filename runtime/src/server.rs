//! The HTTP server: the whole router (health, the management API, the
//! function triggers) and `serve(listener, shutdown)`. Handlers live in
//! [`crate::api`] and [`crate::triggers`]; this file only puts them together.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::api::{self, error::ApiError};
use crate::state::AppState;
use crate::triggers;

/// The router of the whole server.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(api::healthz))
        .merge(api::router())
        .merge(triggers::http::router())
        .fallback(|| async {
            ApiError::not_found("no such endpoint; see the README for the API (functions are under /fn/{appId}/{name})")
        })
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
