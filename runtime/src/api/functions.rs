//! `/v1/{appId}/functions/...`: deploy, list, inspect, roll back and remove
//! functions; their cron runs, manual runs and invocation logs.

use axum::Json;
use axum::extract::{Multipart, Path, Query};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use host_api::manifest::Manifest;
use host_api::store::FunctionRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::error::{ApiError, parse_json};
use crate::auth::Admin;
use crate::engine::MAX_COMPONENT_BYTES;

/// Largest manifest accepted.
const MAX_MANIFEST_BYTES: usize = 64 * 1024;

fn function_json(r: &FunctionRecord) -> Value {
    json!({
        "app": r.app,
        "name": r.name,
        "version": r.version,
        "manifest": r.manifest,
        "componentSha256": r.component_sha256,
        "componentSize": r.component_size,
        "deployedAt": r.deployed_at,
        "url": format!("/fn/{}/{}", r.app, r.name),
    })
}

async fn read_deploy_form(
    mut form: Multipart,
) -> Result<(Option<String>, Vec<u8>, Manifest), ApiError> {
    let multipart_error = |e: axum::extract::multipart::MultipartError| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "too_large",
                format!("the component is larger than {MAX_COMPONENT_BYTES} bytes"),
            )
        } else {
            ApiError::new(
                status,
                "bad_multipart",
                format!("multipart body: {}", e.body_text()),
            )
        }
    };
    let (mut name, mut component, mut manifest) = (None, None, None);
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        match field.name().unwrap_or_default() {
            "component" => component = Some(field.bytes().await.map_err(multipart_error)?),
            "manifest" => {
                let bytes = field.bytes().await.map_err(multipart_error)?;
                if bytes.len() > MAX_MANIFEST_BYTES {
                    return Err(ApiError::bad_request(format!(
                        "manifest is larger than {MAX_MANIFEST_BYTES} bytes"
                    )));
                }
                manifest = Some(bytes);
            }
            "name" => name = Some(field.text().await.map_err(multipart_error)?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown multipart field `{other}`; send `component` (the .wasm) and optionally `manifest` (JSON)"
                )));
            }
        }
    }
    let component: Bytes = component.ok_or_else(|| {
        ApiError::bad_request(
            "multipart field `component` (the .wasm file) is required: curl -F component=@fn.wasm",
        )
    })?;
    let manifest: Manifest = match manifest {
        Some(bytes) if !bytes.iter().all(u8::is_ascii_whitespace) => parse_manifest(&bytes)?,
        _ => Manifest::default(),
    };
    Ok((name, component.to_vec(), manifest))
}

/// A manifest in JSON (starts with `{`) or TOML.
fn parse_manifest(bytes: &[u8]) -> Result<Manifest, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request("manifest: not UTF-8 text"))?;
    if text.trim_start().starts_with('{') {
        return parse_json("manifest", bytes);
    }
    toml::from_str(text).map_err(|e| {
        ApiError::bad_request(format!(
            "manifest (read as TOML, since it does not start with `{{`): {e}"
        ))
    })
}

/// `PUT /v1/{appId}/functions/{name}` (multipart: `component`, `manifest`).
pub async fn deploy_named(
    Admin { app, state }: Admin,
    Path((_, name)): Path<(String, String)>,
    form: Multipart,
) -> Result<impl IntoResponse, ApiError> {
    let (_, component, manifest) = read_deploy_form(form).await?;
    let record = state
        .registry
        .deploy(&app, &name, component, manifest)
        .await?;
    tracing::info!(app = %app, function = %name, version = record.version, "deployed");
    state.cron.sync(&app, &name).await;
    Ok((StatusCode::OK, Json(function_json(&record))))
}

/// `POST /v1/{appId}/functions` (multipart: `name`, `component`, `manifest`).
pub async fn deploy(
    Admin { app, state }: Admin,
    form: Multipart,
) -> Result<impl IntoResponse, ApiError> {
    let (name, component, manifest) = read_deploy_form(form).await?;
    let name = name.or_else(|| manifest.name.clone()).ok_or_else(|| {
        ApiError::bad_request(
            "the function needs a name: multipart field `name`, \"name\" in the manifest, or PUT /v1/{appId}/functions/{name}",
        )
    })?;
    let record = state
        .registry
        .deploy(&app, &name, component, manifest)
        .await?;
    state.cron.sync(&app, &name).await;
    Ok((StatusCode::OK, Json(function_json(&record))))
}

/// `GET /v1/{appId}/functions`.
pub async fn list_functions(Admin { app, state }: Admin) -> Result<Json<Value>, ApiError> {
    let list = state.store.list_functions(Some(&app)).await?;
    Ok(Json(
        json!({ "functions": list.iter().map(function_json).collect::<Vec<_>>() }),
    ))
}

/// `GET /v1/{appId}/functions/{name}`.
pub async fn get_function(
    Admin { app, state }: Admin,
    Path((_, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let record = state
        .store
        .get_function(&app, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no function `{name}` in app `{app}`")))?;
    Ok(Json(function_json(&record)))
}

/// `DELETE /v1/{appId}/functions/{name}`.
pub async fn delete_function(
    Admin { app, state }: Admin,
    Path((_, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if state.registry.remove(&app, &name).await? {
        state.cron.sync(&app, &name).await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no function `{name}` in app `{app}`"
        )))
    }
}

/// `GET /v1/{appId}/functions/{name}/versions`: the kept versions, newest
/// first, each marked `current` or not.
pub async fn list_versions(
    Admin { app, state }: Admin,
    Path((_, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let current = state
        .store
        .get_function(&app, &name)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no function `{name}` in app `{app}`; list them with GET /v1/{app}/functions"
            ))
        })?;
    let versions = state.store.list_function_versions(&app, &name).await?;
    let versions: Vec<Value> = versions
        .iter()
        .map(|r| {
            let mut v = function_json(r);
            if let Value::Object(fields) = &mut v {
                fields.insert("current".into(), json!(r.version == current.version));
            }
            v
        })
        .collect();
    Ok(Json(json!({ "versions": versions })))
}

/// Body of `POST .../rollback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The version to make current; default: the one before the current.
    #[serde(default)]
    version: Option<u64>,
}

/// `POST /v1/{appId}/functions/{name}/rollback` `{"version": N}` or empty:
/// makes a kept version current again (default: the one before the current).
pub async fn rollback(
    Admin { app, state }: Admin,
    Path((_, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let version = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        parse_json::<RollbackBody>(
            "body (send {\"version\": N} or nothing for the previous version)",
            &body,
        )?
        .version
    };
    let record = state.registry.rollback(&app, &name, version).await?;
    state.cron.sync(&app, &name).await;
    tracing::info!(app = %app, function = %name, version = record.version, "rolled back");
    Ok(Json(function_json(&record)))
}

/// Query of the runs endpoint.
#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    limit: Option<usize>,
}

/// `GET /v1/{appId}/functions/{name}/runs?limit=`: cron run history,
/// newest first (trigger, times, outcome, error, tool calls).
pub async fn function_runs(
    Admin { app, state }: Admin,
    Path((_, name)): Path<(String, String)>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let runs = state.cron.runs(&app, &name, limit).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            e.to_string(),
        )
    })?;
    Ok(Json(json!({ "runs": runs })))
}

/// `POST /v1/{appId}/functions/{name}/run`: runs a cron function now.
pub async fn run_function(
    Admin { app, state }: Admin,
    Path((_, name)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    match state.cron.run_now(&app, &name).await {
        Ok(run_id) => Ok((StatusCode::ACCEPTED, Json(json!({ "runId": run_id })))),
        Err(crate::triggers::cron::CronError::NotFound(m)) => Err(ApiError::not_found(m)),
        Err(crate::triggers::cron::CronError::Busy(m)) => {
            Err(ApiError::new(StatusCode::CONFLICT, "busy", m))
        }
        Err(crate::triggers::cron::CronError::Store(m)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            m,
        )),
    }
}

/// `GET /v1/{appId}/functions/{name}/logs?limit=`: the newest invocations
/// (HTTP and cron) with trigger, status, duration, tool calls and the lines
/// the function printed.
pub async fn function_logs(
    Admin { app, state }: Admin,
    Path((_, name)): Path<(String, String)>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(20).clamp(1, 1000);
    let list = state.invocations.list(&app, &name, limit).await?;
    Ok(Json(json!({ "invocations": list })))
}
