//! `/v1/{appId}/integrations/connect` and `.../connections`: start the
//! connect flow, list, disconnect and choose the default connection. An
//! end user sees and acts on their own connections only.

use axum::Json;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use bytes::Bytes;
use host_api::broker::connect::ConnectRequest;
use host_api::broker::connections::ConnectionFilter;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::error::{ApiError, parse_json};
use crate::auth::Caller;

/// `POST /v1/{appId}/integrations/connect` `{toolkit, redirectUrl?, shared?, userId?, connectionId?, scopes?}`.
pub async fn connect(caller: Caller, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: ConnectRequest = parse_json("body", &body)?;
    let start = caller
        .state
        .broker
        .connect(&caller.app, &caller.principal, req)
        .await?;
    Ok(Json(serde_json::to_value(start).unwrap_or(Value::Null)))
}

/// `GET /v1/{appId}/integrations/connections?toolkit=&userId=&state=`.
pub async fn list_connections_of(
    caller: Caller,
    Query(filter): Query<ConnectionFilter>,
) -> Result<Json<Value>, ApiError> {
    let list = caller
        .state
        .broker
        .list_connections(&caller.app, &caller.principal, &filter)
        .await?;
    Ok(Json(json!({ "connections": list })))
}

/// `DELETE /v1/{appId}/integrations/connections/{id}`: revoke upstream
/// where possible, delete here in any case.
pub async fn delete_connection(
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let revoked = caller
        .state
        .broker
        .disconnect(&caller.app, &caller.principal, &id)
        .await?;
    Ok(Json(json!({ "deleted": id, "revokedUpstream": revoked })))
}

/// Body of `PATCH .../connections/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPatch {
    default: bool,
}

/// `PATCH /v1/{appId}/integrations/connections/{id}` `{"default": true}`.
pub async fn patch_connection(
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let patch: ConnectionPatch = parse_json("body", &body)?;
    if !patch.default {
        return Err(ApiError::bad_request(
            "only {\"default\": true} is supported: make another connection the default instead",
        ));
    }
    caller
        .state
        .broker
        .set_default_connection(&caller.app, &caller.principal, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
