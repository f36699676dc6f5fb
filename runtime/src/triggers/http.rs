//! The HTTP trigger: `ANY /fn/{appId}/{name}/...` runs the function with the
//! request, as the caller its bearer token proves (admin, end user or
//! anonymous), and answers with the function's response or an error that
//! says which limit was hit.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use host_api::broker::Principal;

use crate::api::error::ApiError;
use crate::auth;
use crate::invoke::{InvokeError, Trigger};
use crate::state::AppState;
use crate::triggers::headers;

/// Largest request body passed to a function.
pub const MAX_TRIGGER_BODY: usize = 10 * 1024 * 1024;

/// The function routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/fn/{app}/{name}", any(trigger))
        .route("/fn/{app}/{name}/", any(trigger))
        .route("/fn/{app}/{name}/{*rest}", any(trigger))
        // The trigger enforces its own limit and answers 413 itself.
        .layer(DefaultBodyLimit::disable())
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
    if let Some(token) = auth::bearer(&parts.headers)
        && let Some(p) = auth::identify(&state, app, token).await?
    {
        principal = p;
        parts.headers.remove(http::header::AUTHORIZATION);
    }
    let trigger = Trigger::Http(principal);
    headers::set(&mut parts.headers, &trigger);

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

    let (result, _calls) = state.invoker.invoke(function, trigger, request).await;
    match result {
        Ok(response) => Ok(response.map(Body::from)),
        Err(e @ (InvokeError::FunctionBusy { .. } | InvokeError::RuntimeBusy)) => {
            let mut response =
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
                    .into_response();
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok(response)
        }
        Err(e) => {
            let message = e.to_string();
            tracing::warn!(app, function = name, %message, "function failed");
            // The deadline is the gateway's kind of failure: 504.
            let status = if e.is_deadline() {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            Err(ApiError::new(status, "function_failed", message))
        }
    }
}
