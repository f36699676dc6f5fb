//! Who is calling: the [`Admin`] and [`Caller`] extractors every
//! management handler takes (so none can forget the check), and the
//! bearer-token reading and verification they and the HTTP trigger share.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use host_api::broker::Principal;

use crate::api::error::ApiError;
use crate::apps;
use crate::state::AppState;

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
