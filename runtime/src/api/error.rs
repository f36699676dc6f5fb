//! The management API's error: a status, a stable code and a message
//! saying how to fix the problem, answered as
//! `{"error": {"code", "message"}}`; and the mapping of every library
//! error the handlers meet onto it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use host_api::broker::AdminError;
use host_api::store::StoreError;
use serde_json::json;

use crate::engine::DeployError;
use crate::registry::RegistryError;

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

/// Parses a JSON body; a 400 names `what` and the parse error.
pub fn parse_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}
