//! The HTTP server: management API, function triggers, health.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use host_api::Broker;
use host_api::broker::Principal;
use host_api::store::Store;
use tokio::net::TcpListener;

use crate::api::{self, ApiError};
use crate::engine::MAX_COMPONENT_BYTES;
use crate::invoke::{InvokeError, Invoker};
use crate::registry::Registry;

/// Largest request body passed to a function.
pub const MAX_TRIGGER_BODY: usize = 10 * 1024 * 1024;
/// Largest body of a management call other than a deploy.
const MAX_ADMIN_BODY: usize = 1024 * 1024;
/// Header telling a function who called it (`admin`, `user`,
/// `anonymous`); set by the host only.
const PRINCIPAL_HEADER: &str = "x-runtime-principal";
/// Header carrying the verified end user's id; set by the host only.
const USER_HEADER: &str = "x-runtime-user";

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
    pub cron: Arc<crate::cron::Cron>,
    /// Every invocation's record (`runtime logs`).
    pub invocations: Arc<crate::invocations::InvocationLog>,
}

/// The router of the whole server.
pub fn router(state: Arc<AppState>) -> Router {
    let deploys = Router::new()
        .route(
            "/v1/{app}/functions",
            get(api::list_functions).post(api::deploy),
        )
        .route(
            "/v1/{app}/functions/{name}",
            get(api::get_function)
                .put(api::deploy_named)
                .delete(api::delete_function),
        )
        .layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES + 128 * 1024));
    let admin = Router::new()
        .route("/v1/{app}/integrations/configure", post(api::configure))
        .route(
            "/v1/{app}/integrations/configure/{toolkit}",
            delete(api::disable_toolkit),
        )
        .route("/v1/{app}/integrations/config", get(api::list_config))
        .route("/v1/{app}/integrations/available", get(api::available))
        .route("/v1/{app}/integrations/tools", get(api::tools))
        .route(
            "/v1/{app}/integrations/connectors",
            get(api::list_connectors).post(api::put_connector),
        )
        .route(
            "/v1/{app}/integrations/connectors/{slug}",
            delete(api::delete_connector),
        )
        .route("/v1/{app}/integrations/execute", post(api::execute))
        .route(
            "/v1/{app}/settings",
            get(api::get_settings).patch(api::patch_settings),
        )
        .route("/v1/{app}/integrations/connect", post(api::connect))
        .route("/v1/{app}/functions/{name}/runs", get(api::function_runs))
        .route("/v1/{app}/functions/{name}/logs", get(api::function_logs))
        .route("/v1/{app}/functions/{name}/run", post(api::run_function))
        .route(
            "/v1/{app}/integrations/connections",
            get(api::list_connections_of),
        )
        .route(
            "/v1/{app}/integrations/connections/{id}",
            delete(api::delete_connection).patch(api::patch_connection),
        )
        .route(
            host_api::connections::CALLBACK_PATH,
            get(crate::connect::callback),
        )
        .route(
            host_api::connections::CONNECT_PAGE_PATH,
            get(crate::connect::page).post(crate::connect::confirm),
        )
        .route("/v1/{app}/integrations/logs", get(api::logs))
        .route(
            "/v1/{app}/functions/{name}/versions",
            get(api::list_versions),
        )
        .route("/v1/{app}/functions/{name}/rollback", post(api::rollback))
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY));
    let triggers = Router::new()
        .route("/fn/{app}/{name}", any(trigger))
        .route("/fn/{app}/{name}/", any(trigger))
        .route("/fn/{app}/{name}/{*rest}", any(trigger))
        // The trigger enforces its own limit and answers 413 itself.
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/healthz", get(api::healthz))
        .merge(deploys)
        .merge(admin)
        .merge(triggers)
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

/// `ANY /fn/{appId}/{name}/...`: runs the function.
async fn trigger(
    State(state): State<Arc<AppState>>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, ApiError> {
    let app = params.get("app").map(String::as_str).unwrap_or_default();
    let name = params.get("name").map(String::as_str).unwrap_or_default();
    let rest = params.get("rest").map(String::as_str).unwrap_or_default();
    let function = state
        .registry
        .get(app, name)
        .filter(|f| f.record.manifest.http.enabled)
        .ok_or_else(|| ApiError::not_found(format!("no HTTP function `{name}` in app `{app}`")))?;

    let (mut parts, body) = request.into_parts();
    // A caller presenting the app's admin key is an admin invocation (which
    // may use `as-user` where the manifest allows); one presenting an end
    // user's JWT runs as that user, whose connections the function's calls
    // use. Either credential is removed so the function never sees it. A
    // JWT that fails verification is refused (401); any other bearer is the
    // function's own and passed through, the call running anonymous.
    let mut principal = Principal::Anonymous;
    if let Some(token) = api::bearer(&parts.headers)
        && let Some(p) = api::identify(&state, app, token).await?
    {
        principal = p;
        parts.headers.remove(http::header::AUTHORIZATION);
    }
    // Every `x-runtime-*` header is the host's to set (principal, user, the
    // cron trigger's run id...): none may come from outside.
    let spoofed: Vec<http::HeaderName> = parts
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-runtime-"))
        .cloned()
        .collect();
    for k in spoofed {
        parts.headers.remove(k);
    }
    let who = match &principal {
        Principal::Admin => "admin",
        Principal::User(_) => "user",
        _ => "anonymous",
    };
    parts
        .headers
        .insert(PRINCIPAL_HEADER, HeaderValue::from_static(who));
    if let Principal::User(user) = &principal
        && let Ok(v) = HeaderValue::from_str(user)
    {
        parts.headers.insert(USER_HEADER, v);
    }

    let body = axum::body::to_bytes(body, MAX_TRIGGER_BODY)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body is larger than {MAX_TRIGGER_BODY} bytes"),
            )
        })?;

    // The body is buffered, so its exact length is known: say so, which
    // lets a guest skip reading an empty body.
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));

    // The function sees the path below its route.
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let uri = format!("http://{host}/{rest}{query}");
    parts.uri = uri
        .parse()
        .map_err(|_| ApiError::bad_request("request URI or Host header is malformed"))?;
    let request = http::Request::from_parts(parts, body);

    match state
        .invoker
        .invoke_http(function, principal, request)
        .await
    {
        Ok(response) => Ok(response.map(Body::from)),
        Err(InvokeError::Busy(message)) => {
            let mut response =
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message).into_response();
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok(response)
        }
        Err(InvokeError::Failed(message)) => {
            tracing::warn!(app, function = name, %message, "function failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "function_failed",
                message,
            ))
        }
    }
}
