//! The management API (`/v1/{appId}/...`): deploy and manage functions,
//! app settings, toolkits and connectors, the connect flow and connections,
//! executing tools. Management calls need the app's admin key; the connect
//! flow, connections and execute also accept an end user's JWT (acting only
//! as that user). Every error names what was wrong and how to fix it.

use std::sync::Arc;

use axum::Json;
use std::collections::HashMap;

use axum::extract::{FromRequestParts, Multipart, Path, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use host_api::ToolError;
use host_api::broker::{AdminError, ConfigureToolkit, Invocation, Principal};
use host_api::catalog::ConnectorSpec;
use host_api::connections::{ConnectRequest, ConnectionFilter};
use host_api::manifest::Manifest;
use host_api::settings::SettingsPatch;
use host_api::store::{FunctionRecord, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::apps;
use crate::engine::{DeployError, MAX_COMPONENT_BYTES};
use crate::registry::RegistryError;
use crate::server::AppState;

/// Largest manifest accepted.
const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// An API error: status, a stable code and a message saying how to fix it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": { "code": self.code, "message": self.message } })),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            format!("{e}; check the server's disk and logs"),
        )
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid(m) => ApiError::bad_request(m),
            AdminError::NotFound(m) => ApiError::not_found(m),
            AdminError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            AdminError::Busy(m) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "busy", m),
            AdminError::Store(s) => s.into(),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Invalid(m) => ApiError::bad_request(m),
            RegistryError::Deploy(d) => {
                let code = match d {
                    DeployError::NotAComponent(_) => "not_a_component",
                    DeployError::Invalid(_) => "invalid_component",
                    DeployError::UnsupportedImport(_) => "unsupported_import",
                    DeployError::MissingExport(_) => "missing_export",
                };
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, d.to_string())
            }
            RegistryError::Store(s) => s.into(),
            RegistryError::Internal(m) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
            }
            RegistryError::NotFound(m) => ApiError::not_found(m),
            RegistryError::Unavailable(m) => {
                ApiError::new(StatusCode::CONFLICT, "version_unavailable", m)
            }
            e @ RegistryError::CompileTimeout(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "compile_timeout",
                e.to_string(),
            ),
            e @ RegistryError::CompileBusy => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
            }
        }
    }
}

/// The `{app}` of a request's path.
async fn path_app(parts: &mut Parts, state: &Arc<AppState>) -> Result<String, ApiError> {
    let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    Ok(params.get("app").cloned().unwrap_or_default())
}

/// An authenticated admin call: the `{app}` of the path and proof that the
/// request carries that app's admin key. Every management handler takes
/// one, so none can forget the check.
#[derive(Debug)]
pub struct Admin {
    /// The app acted on.
    pub app: String,
    /// Shared server state.
    pub state: Arc<AppState>,
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let app = path_app(parts, state).await?;
        let unauthorized = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let presented = bearer(&parts.headers).ok_or_else(|| {
            unauthorized(format!(
                "missing admin key: send `Authorization: Bearer <admin key of app {app}>`"
            ))
        })?;
        if !apps::verify(state.store.as_ref(), &app, presented).await? {
            return Err(unauthorized(format!(
                "the admin key is not valid for app `{app}`"
            )));
        }
        Ok(Admin {
            app,
            state: state.clone(),
        })
    }
}

/// An authenticated caller of the end-user endpoints: the app's admin (any
/// user of the app) or one end user, proven by a JWT the app signed.
#[derive(Debug)]
pub struct Caller {
    /// The app acted on.
    pub app: String,
    /// Admin or the verified user.
    pub principal: Principal,
    /// Shared server state.
    pub state: Arc<AppState>,
}

/// Who a bearer token proves the caller to be, for `app`: the admin (an
/// admin key), an end user (a valid JWT), or an error saying why not.
pub async fn authenticate(state: &AppState, app: &str, token: &str) -> Result<Principal, ApiError> {
    if let Some(principal) = identify(state, app, token).await? {
        return Ok(principal);
    }
    let message = if token.split('.').count() == 3 {
        format!(
            "app `{app}` does not accept end-user JWTs yet: an admin sets how they are verified with PATCH /v1/{app}/settings {{\"jwt\": {{...}}}}"
        )
    } else {
        format!("the key is not an admin key of app `{app}`, nor an end-user JWT")
    };
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        message,
    ))
}

/// Who a bearer token on a function's request proves the caller to be:
/// `Some` for the app's admin key or a valid end-user JWT, `None` for a
/// token that is neither (the function's own scheme, passed through). A
/// JWT-shaped token that fails verification is refused, so a user with a
/// stale token is told rather than silently served as anonymous.
pub async fn identify(
    state: &AppState,
    app: &str,
    token: &str,
) -> Result<Option<Principal>, ApiError> {
    if apps::verify(state.store.as_ref(), app, token).await? {
        return Ok(Some(Principal::Admin));
    }
    if token.split('.').count() != 3 {
        return Ok(None);
    }
    match state.broker.verify_user(app, token).await {
        Ok(Some(user)) => Ok(Some(Principal::User(user))),
        Ok(None) => Ok(None),
        Err(e) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("end-user JWT refused: {e}"),
        )),
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let app = path_app(parts, state).await?;
        let token = bearer(&parts.headers).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("send `Authorization: Bearer <admin key or end-user JWT of app {app}>`"),
            )
        })?;
        let principal = authenticate(state, &app, token).await?;
        Ok(Caller {
            app,
            principal,
            state: state.clone(),
        })
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

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

/// `GET /healthz`.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
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

/// A manifest that names its function must be deployed under that name.
fn check_manifest_name(name: &str, manifest: &Manifest) -> Result<(), ApiError> {
    match &manifest.name {
        Some(n) if n != name => Err(ApiError::bad_request(format!(
            "the manifest names the function `{n}` but it is being deployed as `{name}`; deploy it as `{n}` or change \"name\""
        ))),
        _ => Ok(()),
    }
}

/// Refuses grants naming toolkits or tools that do not exist for the app, so
/// a typo fails the deploy instead of every call.
async fn check_grants(state: &AppState, app: &str, manifest: &Manifest) -> Result<(), ApiError> {
    for toolkit in &manifest.grants.toolkits {
        if state.broker.find_connector(app, toolkit).await?.is_none() {
            return Err(ApiError::bad_request(format!(
                "manifest: grants.toolkits names `{toolkit}`, which is not a connector of app `{app}`; GET /v1/{app}/integrations/available lists them"
            )));
        }
    }
    for tool in &manifest.grants.tools {
        if state.broker.find_tool_info(app, tool).await?.is_none() {
            return Err(ApiError::bad_request(format!(
                "manifest: grants.tools names `{tool}`, which is not a tool of app `{app}`; GET /v1/{app}/integrations/tools lists them"
            )));
        }
    }
    Ok(())
}

/// `PUT /v1/{appId}/functions/{name}` (multipart: `component`, `manifest`).
pub async fn deploy_named(
    Admin { app, state }: Admin,
    Path((_, name)): Path<(String, String)>,
    form: Multipart,
) -> Result<impl IntoResponse, ApiError> {
    let (_, component, manifest) = read_deploy_form(form).await?;
    check_manifest_name(&name, &manifest)?;
    check_grants(&state, &app, &manifest).await?;
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
    check_grants(&state, &app, &manifest).await?;
    let name = name.or_else(|| manifest.name.clone()).ok_or_else(|| {
        ApiError::bad_request(
            "the function needs a name: multipart field `name`, \"name\" in the manifest, or PUT /v1/{appId}/functions/{name}",
        )
    })?;
    check_manifest_name(&name, &manifest)?;
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

/// `GET /v1/{appId}/settings`.
pub async fn get_settings(Admin { app, state }: Admin) -> Result<Json<Value>, ApiError> {
    let settings = state.broker.app_settings(&app).await?;
    Ok(Json(
        json!({ "settings": state.broker.settings_view(&settings) }),
    ))
}

/// `PATCH /v1/{appId}/settings` `{jwt?: {hs256Secret, issuer?, audience?} | {jwksUrl, issuer, audience} | null, redirectUrls?}`.
pub async fn patch_settings(
    Admin { app, state }: Admin,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let patch: SettingsPatch = parse_json("settings", &body)?;
    let view = state.broker.update_settings(&app, patch).await?;
    Ok(Json(json!({ "settings": view })))
}

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
        Err(crate::cron::CronError::NotFound(m)) => Err(ApiError::not_found(m)),
        Err(crate::cron::CronError::Busy(m)) => Err(ApiError::new(StatusCode::CONFLICT, "busy", m)),
        Err(crate::cron::CronError::Store(m)) => Err(ApiError::new(
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
