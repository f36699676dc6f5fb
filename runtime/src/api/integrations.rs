//! `/v1/{appId}/integrations/...` for toolkits and tools: configure and
//! disable toolkits, search the catalog, custom connectors, execute a tool,
//! the audit log.

use axum::Json;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use host_api::ToolError;
use host_api::broker::{ConfigureToolkit, Invocation, Principal};
use host_api::catalog::ConnectorSpec;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::error::{ApiError, parse_json};
use crate::auth::{Admin, Caller};

/// `POST /v1/{appId}/integrations/configure`
/// `{toolkit, displayName?, scopes?, clientId?, clientSecret?, shared?, apiKey?, apiBaseUrl?, authorizeUrl?, tokenUrl?, revocationUrl?}`.
pub async fn configure(Admin { app, state }: Admin, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: ConfigureToolkit = parse_json("body", &body)?;
    let view = state.broker.configure(&app, req).await?;
    Ok(Json(json!({ "toolkit": view })))
}

/// `DELETE /v1/{appId}/integrations/configure/{toolkit}`.
pub async fn disable_toolkit(
    Admin { app, state }: Admin,
    Path((_, toolkit)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.broker.disable(&app, &toolkit).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/{appId}/integrations/config`.
pub async fn list_config(Admin { app, state }: Admin) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "toolkits": state.broker.list_configured(&app).await? }),
    ))
}

/// Query of the catalog endpoints.
#[derive(Debug, Deserialize)]
pub struct CatalogQuery {
    search: Option<String>,
    toolkit: Option<String>,
}

/// `GET /v1/{appId}/integrations/available?search=`: built-in and custom
/// connectors, best match first (every word must match the name,
/// categories, description or a tool).
pub async fn available(
    Admin { app, state }: Admin,
    Query(q): Query<CatalogQuery>,
) -> Result<Json<Value>, ApiError> {
    let query = q.search.unwrap_or_default();
    if query.len() > 200 {
        return Err(ApiError::bad_request(
            "search is limited to 200 characters; use a few words such as `email` or `crm`",
        ));
    }
    let custom = state.store.list_connectors(&app).await?;
    let configured: Vec<String> = state
        .store
        .list_toolkits(&app)
        .await?
        .into_iter()
        .filter(|t| t.enabled)
        .map(|t| t.toolkit)
        .collect();
    let builtin = state
        .broker
        .builtin()
        .connectors()
        .map(|c| (&c.spec, false));
    let mut ranked: Vec<(u32, Value)> = builtin
        .chain(custom.iter().map(|s| (s, true)))
        .filter_map(|(s, custom)| {
            let score = host_api::catalog::search_score(s, &query)?;
            Some((
                score,
                json!({
                    "toolkit": s.slug, "displayName": s.display_name, "description": s.description,
                    "categories": s.categories, "kind": s.kind,
                    "auth": if s.oauth.is_some() { "oauth" } else { "api_key" },
                    "apiBaseUrl": s.api_base_url, "custom": custom,
                    "configured": configured.contains(&s.slug),
                    // The generated <SLUG>_PROXY tool counts too.
                    "tools": s.tools.len() + 1,
                }),
            ))
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.0.cmp(&a.0).then_with(|| {
            a.1.get("toolkit")
                .and_then(Value::as_str)
                .cmp(&b.1.get("toolkit").and_then(Value::as_str))
        })
    });
    let all: Vec<Value> = ranked.into_iter().map(|(_, v)| v).collect();
    Ok(Json(json!({ "toolkits": all })))
}

fn admin_invocation(app: &str) -> Invocation {
    Invocation {
        app: app.to_string(),
        function: None,
        principal: Principal::Admin,
        grants: None,
        allow_as_user: true,
        run_as: None,
    }
}

/// `GET /v1/{appId}/integrations/tools?toolkit=`.
pub async fn tools(
    Admin { app, state }: Admin,
    Query(q): Query<CatalogQuery>,
) -> Result<Json<Value>, ApiError> {
    let mut tools = state.broker.list_tools(&admin_invocation(&app)).await?;
    if let Some(t) = &q.toolkit {
        tools.retain(|tool| &tool.toolkit == t);
        if tools.is_empty() {
            return Err(ApiError::not_found(format!(
                "no toolkit `{t}`; GET /v1/{app}/integrations/available lists them"
            )));
        }
    }
    Ok(Json(json!({ "tools": tools })))
}

/// `GET /v1/{appId}/integrations/connectors`.
pub async fn list_connectors(Admin { app, state }: Admin) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "connectors": state.store.list_connectors(&app).await? }),
    ))
}

/// `POST /v1/{appId}/integrations/connectors` (a connector definition).
pub async fn put_connector(
    Admin { app, state }: Admin,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let spec: ConnectorSpec = parse_json("connector", &body)?;
    let slug = spec.slug.clone();
    state.broker.put_connector(&app, spec).await?;
    Ok((StatusCode::CREATED, Json(json!({ "toolkit": slug }))))
}

/// `DELETE /v1/{appId}/integrations/connectors/{slug}`.
pub async fn delete_connector(
    Admin { app, state }: Admin,
    Path((_, slug)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.broker.delete_connector(&app, &slug).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /v1/{appId}/integrations/execute`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecuteBody {
    tool_name: String,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    connection_id: Option<String>,
}

/// A tool error as JSON, with its structured fields.
pub fn tool_error_json(e: &ToolError) -> Value {
    let mut v = serde_json::Map::new();
    v.insert("kind".into(), json!(e.kind()));
    v.insert("message".into(), json!(e.to_string()));
    match e {
        ToolError::InsufficientScope {
            missing, auth_url, ..
        } => {
            v.insert("missing".into(), json!(missing));
            v.insert("authUrl".into(), json!(auth_url));
        }
        ToolError::RateLimited { retry_after_ms } => {
            v.insert("retryAfterMs".into(), json!(retry_after_ms));
        }
        ToolError::Upstream { status, body } => {
            v.insert("status".into(), json!(status));
            v.insert("body".into(), json!(body));
        }
        _ => {}
    }
    Value::Object(v)
}

/// `POST /v1/{appId}/integrations/execute` `{toolName, params, userId?, connectionId?}`.
/// An admin may act for any user (`userId`); an end user acts as themself.
pub async fn execute(
    Caller {
        app,
        principal,
        state,
    }: Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: ExecuteBody = parse_json("body", &body)?;
    let params = req
        .params
        .unwrap_or(Value::Object(Default::default()))
        .to_string();
    let invocation = match &principal {
        Principal::User(u) => {
            if req.user_id.as_deref().is_some_and(|id| id != u) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "an end user can only act as themself; leave userId out",
                ));
            }
            Invocation {
                app: app.clone(),
                function: None,
                principal: principal.clone(),
                grants: None,
                allow_as_user: false,
                run_as: None,
            }
        }
        _ => admin_invocation(&app),
    };
    let as_user = match principal {
        Principal::User(_) => None,
        _ => req.user_id.as_deref(),
    };
    let outcome = state
        .broker
        .execute(
            &invocation,
            &req.tool_name,
            &params,
            as_user,
            req.connection_id.as_deref(),
        )
        .await;
    Ok(Json(match outcome.result {
        Ok(data) => {
            json!({ "successful": true, "data": data, "error": null, "logId": outcome.log_id })
        }
        Err(e) => {
            json!({ "successful": false, "data": null, "error": tool_error_json(&e), "logId": outcome.log_id })
        }
    }))
}

/// Query of the audit endpoint.
#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    limit: Option<usize>,
}

/// `GET /v1/{appId}/integrations/logs?limit=`: the audit trail, newest first.
pub async fn logs(
    Admin { app, state }: Admin,
    Query(q): Query<LogsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(
        json!({ "logs": state.broker.audit_log(&app, limit).await? }),
    ))
}
