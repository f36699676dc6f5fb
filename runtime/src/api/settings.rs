//! `/v1/{appId}/settings`: how end-user JWTs are verified, allowed
//! redirect URLs and the app's other settings.

use axum::Json;
use bytes::Bytes;
use host_api::broker::settings::SettingsPatch;
use serde_json::{Value, json};

use crate::api::error::{ApiError, parse_json};
use crate::auth::Admin;

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
