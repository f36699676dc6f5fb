//! Snowflake through the SQL API v2 (`/api/v2/statements`).
//!
//! A statement is posted with its bindings (`?` placeholders, bound in
//! order) and the connection's warehouse, database, schema and role. A
//! synchronous answer (200) carries the first partition of the result; a
//! 202 carries a statement handle that is polled (100 ms doubling to 1 s)
//! until the result is ready, or cancelled (`POST …/{handle}/cancel`) at the
//! deadline. Further partitions are fetched with `?partition=N` (they arrive
//! gzip-compressed) until the row or byte cap is reached. The body's
//! `timeout` asks Snowflake to cancel the statement at the same deadline on
//! its side.
//!
//! Authentication: `authType: "oauth"` (default) sends the OAuth token,
//! `"keypair"` signs a key-pair JWT with the configured RSA private key,
//! `"pat"` sends a programmatic access token.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use reqwest::Method;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use super::http::{Api, Backoff, CANCEL_TIMEOUT, Reply, error_message};
use super::sql::{self, Dialect};
use super::{
    Collector, Column, Ctx, DataError, DataOp, Platform, QueryResult, Scalar, no_such_table,
    project, set, value,
};
use crate::error::ToolError;
use crate::secret::Secret;

/// How long a key-pair JWT is valid: Snowflake accepts at most an hour.
const JWT_LIFETIME_SECS: u64 = 3600;
/// Snowflake's error code for a statement cancelled by its timeout.
const TIMEOUT_CODE: &str = "000630";

pub(super) async fn run(ctx: &Ctx<'_>, op: DataOp) -> Result<QueryResult, DataError> {
    let api = api(ctx)?;
    match op {
        DataOp::Query(q) => {
            let bindings = bindings(&q.sql, &q.params)?;
            execute(&api, &q.sql, bindings).await
        }
        DataOp::ListDatabases => {
            let result = execute(&api, "SHOW DATABASES", Map::new()).await?;
            Ok(project(result, &[("name", "name")])?)
        }
        DataOp::ListSchemas { database } => {
            let from = information_schema(ctx, database.as_deref())?;
            let sql = format!("SELECT SCHEMA_NAME AS \"name\" FROM {from}.SCHEMATA ORDER BY 1");
            execute(&api, &sql, Map::new()).await
        }
        DataOp::ListTables { database, schema } => {
            let from = information_schema(ctx, database.as_deref())?;
            let schema = schema.or_else(|| ctx.setting("schema").map(str::to_string));
            let sql = format!(
                "SELECT TABLE_SCHEMA AS \"schema\", TABLE_NAME AS \"name\", \
                 CASE TABLE_TYPE WHEN 'BASE TABLE' THEN 'table' ELSE LOWER(TABLE_TYPE) END AS \"type\" \
                 FROM {from}.TABLES \
                 WHERE (? IS NULL AND TABLE_SCHEMA <> 'INFORMATION_SCHEMA') OR LOWER(TABLE_SCHEMA) = LOWER(?) \
                 ORDER BY 1, 2"
            );
            let s = text_binding(schema.as_deref());
            execute(&api, &sql, numbered(vec![s.clone(), s])).await
        }
        DataOp::DescribeTable {
            database,
            schema,
            table,
        } => {
            let from = information_schema(ctx, database.as_deref())?;
            let schema = schema.or_else(|| ctx.setting("schema").map(str::to_string));
            let sql = format!(
                "SELECT COLUMN_NAME AS \"name\", LOWER(DATA_TYPE) AS \"type\", IS_NULLABLE = 'YES' AS \"nullable\" \
                 FROM {from}.COLUMNS \
                 WHERE LOWER(TABLE_SCHEMA) = LOWER(COALESCE(?, CURRENT_SCHEMA())) AND LOWER(TABLE_NAME) = LOWER(?) \
                 ORDER BY ORDINAL_POSITION"
            );
            let bindings = numbered(vec![
                text_binding(schema.as_deref()),
                text_binding(Some(&table)),
            ]);
            let result = execute(&api, &sql, bindings).await?;
            if result.rows.is_empty() {
                return Err(no_such_table(Platform::Snowflake, schema.as_deref(), &table).into());
            }
            Ok(result)
        }
    }
}

/// `"DB".INFORMATION_SCHEMA` for the given or configured database, else
/// the session's.
fn information_schema(ctx: &Ctx<'_>, database: Option<&str>) -> Result<String, ToolError> {
    match database.or_else(|| ctx.setting("database")) {
        Some(db) => Ok(format!(
            "{}.INFORMATION_SCHEMA",
            sql::quote_ident(db, Dialect::Snowflake)?
        )),
        None => Ok("INFORMATION_SCHEMA".to_string()),
    }
}

/// The API with the credential presented as the connection's `authType`
/// says.
fn api<'a>(ctx: &'a Ctx<'a>) -> Result<Api<'a>, ToolError> {
    let auth = ctx
        .setting("authType")
        .unwrap_or("oauth")
        .to_ascii_lowercase();
    let (bearer, kind) = match auth.as_str() {
        "oauth" => (ctx.target.credential.clone(), "OAUTH"),
        "pat" => (ctx.target.credential.clone(), "PROGRAMMATIC_ACCESS_TOKEN"),
        "keypair" => {
            let account = match ctx.setting("account") {
                Some(a) => a.to_string(),
                None => ctx
                    .target
                    .base_url
                    .host_str()
                    .and_then(|h| h.split('.').next())
                    .unwrap_or_default()
                    .to_string(),
            };
            let user = ctx.required_setting("user")?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let jwt = keypair_jwt(ctx.target.credential.expose(), &account, user, now)
                .map_err(ToolError::NotConnected)?;
            (jwt, "KEYPAIR_JWT")
        }
        other => {
            return Err(ToolError::NotConnected(format!(
                "the Snowflake connection's settings.authType is `{other}`; an admin must set it to oauth, keypair or pat"
            )));
        }
    };
    Ok(Api {
        ctx,
        bearer,
        headers: vec![("X-Snowflake-Authorization-Token-Type", kind.to_string())],
    })
}

/// Posts a statement, waits for it, and collects its rows.
async fn execute(
    api: &Api<'_>,
    statement: &str,
    bindings: Map<String, Value>,
) -> Result<QueryResult, DataError> {
    let ctx = api.ctx;
    let limits = &ctx.limits;
    let timeout_secs = limits.timeout.as_millis().div_ceil(1000).max(1);
    let mut body = json!({
        "statement": statement,
        "timeout": u64::try_from(timeout_secs).unwrap_or(u64::MAX),
        "parameters": {"MULTI_STATEMENT_COUNT": "1"},
    });
    for key in ["database", "schema", "warehouse", "role"] {
        if let Some(v) = ctx.setting(key) {
            set(&mut body, key, Value::from(v));
        }
    }
    if !bindings.is_empty() {
        set(&mut body, "bindings", Value::Object(bindings));
    }
    let url = api.url(&["api", "v2", "statements"], &[])?;
    let reply = api.send(Method::POST, url, Some(&body)).await?;
    let first = match reply.status {
        200 => reply.body,
        202 => {
            let handle = handle_of(&reply.body)?;
            poll(api, &handle).await?
        }
        _ => return Err(statement_failure(api, &reply).into()),
    };
    collect(api, first).await
}

/// Polls a statement until it has a result; cancels it at the deadline.
async fn poll(api: &Api<'_>, handle: &str) -> Result<Value, DataError> {
    let ctx = api.ctx;
    let mut backoff = Backoff::new();
    loop {
        if !backoff.wait(ctx).await {
            cancel(api, handle).await;
            return Err(ctx.limits.timeout_error(Platform::Snowflake).into());
        }
        let url = api.url(&["api", "v2", "statements", handle], &[])?;
        let reply = api.send(Method::GET, url, None).await?;
        match reply.status {
            200 => return Ok(reply.body),
            202 => continue,
            _ => return Err(statement_failure(api, &reply).into()),
        }
    }
}

/// Asks Snowflake to stop a statement; the caller reports the timeout
/// whatever the answer.
async fn cancel(api: &Api<'_>, handle: &str) {
    let Ok(url) = api.url(&["api", "v2", "statements", handle, "cancel"], &[]) else {
        return;
    };
    if let Err(e) = api
        .send_with_timeout(Method::POST, url, None, CANCEL_TIMEOUT)
        .await
    {
        tracing::warn!(error = ?e, "cancelling a Snowflake statement failed");
    }
}

/// The statement handle of a 202 answer.
fn handle_of(body: &Value) -> Result<String, ToolError> {
    body.get("statementHandle")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty() && h.len() <= 128)
        .map(str::to_string)
        .ok_or_else(|| {
            ToolError::Unavailable(
                "Snowflake accepted the statement but sent no statement handle".into(),
            )
        })
}

/// The error for a failed statement: Snowflake's message, a timeout, or
/// the generic mapping.
fn statement_failure(api: &Api<'_>, reply: &Reply) -> ToolError {
    let code = reply.body.get("code").and_then(Value::as_str);
    if reply.status == 408 || code == Some(TIMEOUT_CODE) {
        return api.ctx.limits.timeout_error(Platform::Snowflake);
    }
    if reply.status == 422 {
        let state = reply
            .body
            .get("sqlState")
            .and_then(Value::as_str)
            .map(|s| format!(" (SQL state {s})"))
            .unwrap_or_default();
        return ToolError::InvalidParams(format!(
            "Snowflake could not run the statement: {}{state}",
            error_message(&reply.body)
        ));
    }
    api.failure(reply)
}

/// How one result column's text becomes a value.
#[derive(Debug, Clone)]
struct Col {
    kind: String,
    scale: i64,
}

impl Col {
    fn portable(&self) -> String {
        match self.kind.as_str() {
            "fixed" if self.scale == 0 => "integer".into(),
            "fixed" | "decfloat" => "decimal".into(),
            "real" | "float" | "double" => "number".into(),
            "text" => "string".into(),
            "boolean" => "boolean".into(),
            "date" => "date".into(),
            "time" => "time".into(),
            "timestamp_ntz" => "datetime".into(),
            "timestamp_ltz" | "timestamp_tz" => "timestamp".into(),
            "binary" => "bytes".into(),
            "variant" | "object" | "array" | "map" | "vector" => "json".into(),
            other => other.to_string(),
        }
    }

    fn decode(&self, v: &Value) -> Value {
        let Some(text) = v.as_str() else {
            return v.clone();
        };
        let keep = || Value::String(text.to_string());
        match self.kind.as_str() {
            "fixed" if self.scale == 0 => value::integer(text),
            "fixed" | "decfloat" => value::decimal(text),
            "real" | "float" | "double" => value::float(text),
            "boolean" => value::boolean(text),
            "date" => text
                .trim()
                .parse::<i64>()
                .ok()
                .and_then(value::date_from_days)
                .map_or_else(keep, Value::String),
            "time" => value::epoch(text)
                .and_then(|(s, n)| value::time_from_seconds(s, n))
                .map_or_else(keep, Value::String),
            "timestamp_ntz" => value::epoch(text)
                .and_then(|(s, n)| value::naive_from_epoch(s, n))
                .map_or_else(keep, Value::String),
            "timestamp_ltz" => value::epoch(text)
                .and_then(|(s, n)| value::instant(s, n, 0))
                .map_or_else(keep, Value::String),
            "timestamp_tz" => timestamp_tz(text).map_or_else(keep, Value::String),
            "binary" => value::hex_bytes(text),
            "variant" | "object" | "array" | "map" | "vector" => value::json_text(text),
            _ => keep(),
        }
    }
}

/// `TIMESTAMP_TZ` text: `"<epoch seconds> <offset minutes + 1440>"`.
fn timestamp_tz(text: &str) -> Option<String> {
    let (epoch, tz) = text.trim().split_once(' ')?;
    let (secs, nanos) = value::epoch(epoch)?;
    let minutes = tz.trim().parse::<i32>().ok()? - 1440;
    value::instant(secs, nanos, minutes.checked_mul(60)?)
}

/// Reads the first answer's columns and rows, then further partitions
/// until the caps are reached.
async fn collect(api: &Api<'_>, first: Value) -> Result<QueryResult, DataError> {
    let ctx = api.ctx;
    let limits = &ctx.limits;
    let meta = first
        .get("resultSetMetaData")
        .cloned()
        .unwrap_or(Value::Null);
    let row_type = meta
        .get("rowType")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let cols: Vec<Col> = row_type
        .iter()
        .map(|c| Col {
            kind: c
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("text")
                .to_ascii_lowercase(),
            scale: c.get("scale").and_then(Value::as_i64).unwrap_or(0),
        })
        .collect();
    let mut collector = Collector::new(limits);
    collector.set_columns(
        row_type
            .iter()
            .zip(&cols)
            .map(|(c, col)| {
                Column::new(
                    c.get("name").and_then(Value::as_str).unwrap_or_default(),
                    col.portable(),
                )
            })
            .collect(),
    );
    let add = |collector: &mut Collector, data: &Value| {
        for row in data.as_array().into_iter().flatten() {
            let values = row
                .as_array()
                .map(|cells| {
                    cells
                        .iter()
                        .zip(&cols)
                        .map(|(v, col)| col.decode(v))
                        .collect()
                })
                .unwrap_or_default();
            if !collector.push(values) {
                return;
            }
        }
    };
    add(&mut collector, first.get("data").unwrap_or(&Value::Null));
    let partitions = meta
        .get("partitionInfo")
        .and_then(Value::as_array)
        .map_or(1, Vec::len);
    let total_rows = meta.get("numRows").and_then(Value::as_u64);
    if partitions > 1 {
        let handle = handle_of(&first)?;
        for partition in 1..partitions {
            if collector.full() || collector.len() as u64 >= limits.max_rows {
                break;
            }
            if limits.remaining().is_zero() {
                // The statement is done; what arrived in time is returned.
                collector.mark_truncated();
                break;
            }
            let number = partition.to_string();
            let url = api.url(
                &["api", "v2", "statements", &handle],
                &[("partition", number.as_str())],
            )?;
            let reply = api.send(Method::GET, url, None).await?;
            if reply.status != 200 {
                return Err(statement_failure(api, &reply).into());
            }
            let data = match &reply.body {
                Value::Array(_) => &reply.body,
                other => other.get("data").unwrap_or(&Value::Null),
            };
            add(&mut collector, data);
        }
    }
    if total_rows.is_some_and(|n| n > collector.len() as u64) {
        collector.mark_truncated();
    }
    Ok(collector.finish(limits))
}

/// Snowflake bindings for `params`: `{"1": {"type", "value"}, …}`; the SQL
/// must have exactly one `?` per parameter.
fn bindings(sql: &str, params: &[Value]) -> Result<Map<String, Value>, ToolError> {
    let placeholders = sql::positional_placeholders(sql, Dialect::Snowflake)?;
    if placeholders != params.len() {
        return Err(ToolError::InvalidParams(format!(
            "params.sql has {placeholders} `?` placeholder(s) but {} value(s) were given in params; Snowflake binds params in order to `?`",
            params.len()
        )));
    }
    let mut out = Vec::new();
    for (i, p) in params.iter().enumerate() {
        out.push(match Scalar::of(i, p)? {
            Scalar::Null => json!({"type": "TEXT", "value": null}),
            Scalar::Bool(b) => json!({"type": "BOOLEAN", "value": b.to_string()}),
            Scalar::Int(n) => json!({"type": "FIXED", "value": n.to_string()}),
            Scalar::Float(_) => json!({"type": "REAL", "value": p.to_string()}),
            Scalar::Text(s) => json!({"type": "TEXT", "value": s}),
        });
    }
    Ok(numbered(out))
}

fn text_binding(v: Option<&str>) -> Value {
    json!({"type": "TEXT", "value": v})
}

/// `{"1": a, "2": b, …}`.
fn numbered(values: Vec<Value>) -> Map<String, Value> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| ((i + 1).to_string(), v))
        .collect()
}

/// A key-pair JWT for `account` and `user` signed with the PEM RSA private
/// key, as Snowflake documents it: `iss` is
/// `ACCOUNT.USER.SHA256:<base64 SHA-256 of the public key's DER>`, `sub`
/// is `ACCOUNT.USER`, valid for an hour from `now`.
pub(super) fn keypair_jwt(
    pem: &str,
    account: &str,
    user: &str,
    now: u64,
) -> Result<Secret, String> {
    let key = private_key(pem)?;
    let fingerprint = public_key_fingerprint(&key)?;
    let account = jwt_account(account);
    if account.is_empty() {
        return Err(
            "the Snowflake connection has no account; an admin must configure settings.account"
                .into(),
        );
    }
    let qualified = format!("{account}.{}", user.trim().to_ascii_uppercase());
    let claims = json!({
        "iss": format!("{qualified}.{fingerprint}"),
        "sub": qualified,
        "iat": now,
        "exp": now + JWT_LIFETIME_SECS,
    });
    let der = key
        .to_pkcs1_der()
        .map_err(|_| "the Snowflake private key could not be re-encoded".to_string())?;
    let signing = jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes());
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    jsonwebtoken::encode(&header, &claims, &signing)
        .map(Secret::new)
        .map_err(|_| "signing the Snowflake key-pair JWT failed; an admin must configure a valid RSA key (2048 bits or more)".to_string())
}

/// The account part of JWT names: upper case, without a region suffix
/// (`xy12345.us-east-1` → `XY12345`).
fn jwt_account(account: &str) -> String {
    account
        .trim()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase()
}

/// Reads an unencrypted PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA
/// PRIVATE KEY`) PEM key. Error texts never include key material.
fn private_key(pem: &str) -> Result<rsa::RsaPrivateKey, String> {
    let pem = pem.trim();
    if pem.contains("ENCRYPTED") {
        return Err("the Snowflake private key is encrypted; an admin must configure it unencrypted (openssl pkcs8 -topk8 -nocrypt) as the connection's apiKey".into());
    }
    rsa::RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| "the Snowflake private key is not a PEM RSA private key; an admin must configure one (BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY) as the connection's apiKey".to_string())
}

/// `SHA256:<base64>` of the public key's SubjectPublicKeyInfo DER, as
/// `ALTER USER … SET RSA_PUBLIC_KEY` records it (`RSA_PUBLIC_KEY_FP`).
fn public_key_fingerprint(key: &rsa::RsaPrivateKey) -> Result<String, String> {
    let der = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|_| "the Snowflake public key could not be encoded".to_string())?;
    let digest = Sha256::digest(der.as_bytes());
    Ok(format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use rsa::pkcs1::EncodeRsaPublicKey as _;
    use rsa::pkcs8::EncodePrivateKey as _;

    #[test]
    fn values_are_mapped_by_type() {
        let col = |kind: &str, scale: i64| Col {
            kind: kind.into(),
            scale,
        };
        let s = |t: &str| Value::String(t.into());
        assert_eq!(col("fixed", 0).decode(&s("42")), json!(42));
        assert_eq!(
            col("fixed", 0).decode(&s("12345678901234567890123")),
            json!("12345678901234567890123")
        );
        assert_eq!(col("fixed", 2).decode(&s("12.50")), json!("12.50"));
        assert_eq!(col("real", 0).decode(&s("1.5")), json!(1.5));
        assert_eq!(col("boolean", 0).decode(&s("false")), json!(false));
        assert_eq!(col("date", 0).decode(&s("19000")), json!("2022-01-08"));
        assert_eq!(
            col("time", 9).decode(&s("3723.500000000")),
            json!("01:02:03.500")
        );
        assert_eq!(
            col("timestamp_ntz", 9).decode(&s("1616173619.000000000")),
            json!("2021-03-19T17:06:59")
        );
        assert_eq!(
            col("timestamp_ltz", 9).decode(&s("1616173619.123000000")),
            json!("2021-03-19T17:06:59.123Z")
        );
        assert_eq!(
            col("timestamp_tz", 9).decode(&s("1616173619.000000000 1020")),
            json!("2021-03-19T10:06:59-07:00")
        );
        assert_eq!(col("binary", 0).decode(&s("48690a")), json!("SGkK"));
        assert_eq!(
            col("variant", 0).decode(&s("{\n  \"a\": 1\n}")),
            json!({"a": 1})
        );
        assert_eq!(col("text", 0).decode(&Value::Null), Value::Null);
        assert_eq!(col("geography", 0).portable(), "geography");
    }

    #[test]
    fn bindings_are_typed_and_counted() {
        let b = bindings(
            "SELECT ? , ?, ?, ?, ? FROM t WHERE x = '?'",
            &[json!(1), json!(1.5), json!(true), json!("a'b"), Value::Null],
        )
        .unwrap();
        assert_eq!(
            Value::Object(b),
            json!({
                "1": {"type": "FIXED", "value": "1"},
                "2": {"type": "REAL", "value": "1.5"},
                "3": {"type": "BOOLEAN", "value": "true"},
                "4": {"type": "TEXT", "value": "a'b"},
                "5": {"type": "TEXT", "value": null},
            })
        );
        let err = bindings("SELECT ?", &[]).unwrap_err();
        assert!(err.to_string().contains("1 `?` placeholder"), "{err}");
    }

    /// The SubjectPublicKeyInfo of a 2048-bit RSA key, wrapped by hand
    /// around the PKCS#1 key so the fingerprint is checked independently.
    fn spki_by_hand(key: &rsa::RsaPublicKey) -> Vec<u8> {
        let pkcs1 = key.to_pkcs1_der().unwrap();
        let pkcs1 = pkcs1.as_bytes();
        assert_eq!(pkcs1.len(), 270, "a 2048-bit key with e = 65537");
        let mut der = vec![
            0x30, 0x82, 0x01, 0x22, // SEQUENCE, 290 bytes
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
            0x00, // rsaEncryption, NULL
            0x03, 0x82, 0x01, 0x0f, 0x00, // BIT STRING, 271 bytes, no unused bits
        ];
        der.extend_from_slice(pkcs1);
        der
    }

    #[test]
    fn keypair_jwts_carry_the_documented_claims() {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let expected_fp = format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD
                .encode(Sha256::digest(spki_by_hand(&key.to_public_key())))
        );
        assert_eq!(public_key_fingerprint(&key).unwrap(), expected_fp);

        let jwt = keypair_jwt(&pem, "xy12345.us-east-1", "analyst", 1_700_000_000).unwrap();
        let public_der = key.to_public_key().to_pkcs1_der().unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_rsa_der(public_der.as_bytes());
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Value>(jwt.expose(), &decoding, &validation).unwrap();
        assert_eq!(
            data.claims,
            json!({
                "iss": format!("XY12345.ANALYST.{expected_fp}"),
                "sub": "XY12345.ANALYST",
                "iat": 1_700_000_000u64,
                "exp": 1_700_003_600u64,
            })
        );
        assert_eq!(data.header.alg, jsonwebtoken::Algorithm::RS256);

        // PKCS#1 PEM works too; the answer names no key material.
        let pkcs1 = key.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF).unwrap();
        assert!(keypair_jwt(&pkcs1, "ACME-PROD", "u", 1).is_ok());
        let err = keypair_jwt(
            "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----",
            "a",
            "u",
            1,
        )
        .unwrap_err();
        assert!(
            err.contains("not a PEM RSA private key") && !err.contains("nope"),
            "{err}"
        );
        assert!(
            keypair_jwt("-----BEGIN ENCRYPTED PRIVATE KEY-----", "a", "u", 1)
                .unwrap_err()
                .contains("encrypted")
        );
    }
}
