//! Checking a JSON parameter against the type PostgreSQL inferred for its
//! `$n` placeholder, and sending it in text format.

use base64::Engine as _;
use serde_json::Value;
use tokio_postgres::types::{Format, IsNull, ToSql, Type};

use super::binary::{PgKind, pg_kind};
use crate::data::{Scalar, value};
use crate::error::ToolError;

/// A parameter value in PostgreSQL's text format (the server parses it as
/// the placeholder's type), or NULL.
#[derive(Debug)]
pub(super) enum PgParam {
    Null,
    Text(String),
}

impl ToSql for PgParam {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            PgParam::Null => Ok(IsNull::Yes),
            PgParam::Text(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Checks `params[index]` against the placeholder's type and renders it.
pub(super) fn to_param(index: usize, v: &Value, ty: &Type) -> Result<PgParam, ToolError> {
    let scalar = Scalar::of(index, v)?;
    let kind = pg_kind(ty, 0);
    let n = index + 1;
    let bad = |expected: &str| {
        ToolError::InvalidParams(format!(
            "params.params[{index}] (bound to ${n}, type {}) must be {expected}",
            ty.name()
        ))
    };
    let text = match scalar {
        Scalar::Null => return Ok(PgParam::Null),
        Scalar::Text(s) => {
            if s.contains('\0') {
                return Err(ToolError::InvalidParams(format!(
                    "params.params[{index}] (bound to ${n}) contains a NUL character, which PostgreSQL cannot store in text; remove it"
                )));
            }
            s
        }
        _ => "",
    };
    let out = match (&kind, &scalar) {
        (PgKind::Bool, Scalar::Bool(b)) => b.to_string(),
        (PgKind::Bool, Scalar::Int(i @ (0 | 1))) => (*i == 1).to_string(),
        (PgKind::Bool, Scalar::Text(_)) => {
            let t = text.trim().to_ascii_lowercase();
            if !matches!(
                t.as_str(),
                "true" | "false" | "t" | "f" | "yes" | "no" | "on" | "off" | "1" | "0"
            ) {
                return Err(bad("a boolean"));
            }
            t
        }
        (PgKind::Bool, _) => return Err(bad("a boolean")),
        (PgKind::Int(bits), _) => {
            let i = match scalar {
                Scalar::Int(i) => i,
                Scalar::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => {
                    #[allow(clippy::cast_possible_truncation)]
                    let i = f as i64;
                    i
                }
                Scalar::Text(_) => text.trim().parse::<i64>().map_err(|_| bad("an integer"))?,
                _ => return Err(bad("an integer")),
            };
            let fits = match bits {
                16 => i16::try_from(i).is_ok(),
                32 => i32::try_from(i).is_ok(),
                33 => u32::try_from(i).is_ok(),
                _ => true,
            };
            if !fits {
                return Err(bad("an integer in the column type's range"));
            }
            i.to_string()
        }
        (PgKind::Float, Scalar::Int(i)) => i.to_string(),
        (PgKind::Float, Scalar::Float(_)) => v.to_string(),
        (PgKind::Float, Scalar::Text(_)) => {
            let t = text.trim();
            let special = matches!(
                t.to_ascii_lowercase().as_str(),
                "nan" | "infinity" | "-infinity" | "inf" | "-inf"
            );
            if !special && t.parse::<f64>().is_err() {
                return Err(bad("a number"));
            }
            t.to_string()
        }
        (PgKind::Numeric, Scalar::Int(_) | Scalar::Float(_)) => v.to_string(),
        (PgKind::Numeric, Scalar::Text(_)) => {
            if !value::is_decimal(text) {
                return Err(bad(
                    "a decimal number (as a number or a string such as \"12.50\")",
                ));
            }
            text.trim().to_string()
        }
        (PgKind::Float | PgKind::Numeric, _) => return Err(bad("a number")),
        (PgKind::Bytea, Scalar::Text(_)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| bad("base64 text"))?;
            format!("\\x{}", hex::encode(bytes))
        }
        (PgKind::Bytea, _) => return Err(bad("base64 text")),
        (PgKind::Timestamptz, Scalar::Text(_)) => match text.trim() {
            t @ ("infinity" | "-infinity") => t.to_string(),
            t => chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|_| bad("an RFC 3339 timestamp such as 2024-05-01T12:00:00Z"))?
                .to_rfc3339(),
        },
        (PgKind::Timestamp, Scalar::Text(_)) => match text.trim() {
            t @ ("infinity" | "-infinity") => t.to_string(),
            t => match chrono::DateTime::parse_from_rfc3339(t) {
                // With an offset: the UTC wall-clock time.
                Ok(dt) => value::naive_text(&dt.naive_utc()),
                Err(_) => value::naive(t)
                    .ok_or_else(|| bad("a date and time such as 2024-05-01T12:00:00"))?,
            },
        },
        (PgKind::Date, Scalar::Text(_)) => match text.trim() {
            t @ ("infinity" | "-infinity") => t.to_string(),
            t => value::date(t).ok_or_else(|| bad("a date YYYY-MM-DD"))?,
        },
        (PgKind::Time, Scalar::Text(_)) => {
            value::time(text).ok_or_else(|| bad("a time HH:MM:SS"))?
        }
        (PgKind::Timestamp | PgKind::Timestamptz | PgKind::Date | PgKind::Time, _) => {
            return Err(bad("a string (RFC 3339 date or time)"));
        }
        (PgKind::Json | PgKind::Jsonb, Scalar::Text(_)) => {
            if serde_json::from_str::<Value>(text).is_err() {
                return Err(bad("JSON text"));
            }
            text.to_string()
        }
        (PgKind::Json | PgKind::Jsonb, _) => v.to_string(),
        (PgKind::Uuid, Scalar::Text(_)) => {
            let hex_digits = text.chars().filter(char::is_ascii_hexdigit).count();
            let others = text
                .chars()
                .filter(|c| !c.is_ascii_hexdigit() && !matches!(c, '-' | '{' | '}'))
                .count();
            if hex_digits != 32 || others != 0 {
                return Err(bad("a UUID"));
            }
            text.to_string()
        }
        (PgKind::Uuid, _) => return Err(bad("a UUID string")),
        // Text-like and every other type: PostgreSQL parses the text.
        (_, Scalar::Text(_)) => text.to_string(),
        (_, Scalar::Int(i)) => i.to_string(),
        (_, Scalar::Float(_)) => v.to_string(),
        (_, Scalar::Bool(b)) => b.to_string(),
        (_, Scalar::Null) => return Ok(PgParam::Null),
    };
    Ok(PgParam::Text(out))
}
