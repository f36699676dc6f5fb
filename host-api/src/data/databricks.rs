//! Databricks SQL through the Statement Execution API 2.0
//! (`/api/2.0/sql/statements`).
//!
//! A statement is posted to the configured warehouse with named parameters
//! (the SQL uses `:p1`, `:p2`, … for `params[0]`, `params[1]`, …), results
//! `INLINE` as `JSON_ARRAY`, a `row_limit` of the cap plus one (to tell
//! whether more rows exist) and a `byte_limit` of the byte cap. Databricks
//! waits up to `wait_timeout` (10 s, less when the deadline is closer) and
//! then answers with the statement still `PENDING` or `RUNNING`; it is
//! polled (100 ms doubling to 1 s) and cancelled at the deadline. Further
//! result chunks are fetched through `next_chunk_internal_link`, which must
//! stay on the workspace host.

use reqwest::Method;
use serde_json::{Value, json};

use super::http::{Api, Backoff, CANCEL_TIMEOUT, Reply, error_message};
use super::sql::{self, Dialect};
use super::{
    Collector, Column, Ctx, DataError, DataOp, Platform, QueryResult, Scalar, no_such_table,
    project, set, value,
};
use crate::error::ToolError;

/// Longest `wait_timeout` used (Databricks allows 5 to 50 s; the provider
/// client gives up on a request after 30 s).
const MAX_WAIT_SECS: u64 = 10;
/// Databricks' own cap on an `INLINE` result.
const INLINE_LIMIT_BYTES: u64 = 25 * 1024 * 1024;
/// Most chunk links followed (each is a page of the result).
const MAX_CHUNKS: usize = 10_000;

pub(super) async fn run(ctx: &Ctx<'_>, op: DataOp) -> Result<QueryResult, DataError> {
    let api = Api {
        ctx,
        bearer: ctx.target.credential.clone(),
        headers: Vec::new(),
    };
    match op {
        DataOp::Query(q) => {
            let params = parameters(&q.params)?;
            execute(&api, &q.sql, params).await
        }
        DataOp::ListDatabases => {
            let result = execute(&api, "SHOW CATALOGS", Vec::new()).await?;
            Ok(project(result, &[("catalog", "name")])?)
        }
        DataOp::ListSchemas { database } => {
            let from = information_schema(ctx, database.as_deref())?;
            let sql = format!("SELECT schema_name AS name FROM {from}.schemata ORDER BY 1");
            execute(&api, &sql, Vec::new()).await
        }
        DataOp::ListTables { database, schema } => {
            let from = information_schema(ctx, database.as_deref())?;
            let schema = schema.or_else(|| ctx.setting("schema").map(str::to_string));
            let sql = format!(
                "SELECT table_schema AS schema, table_name AS name, lower(table_type) AS type \
                 FROM {from}.tables \
                 WHERE (:schema IS NULL AND table_schema <> 'information_schema') OR lower(table_schema) = lower(:schema) \
                 ORDER BY 1, 2"
            );
            execute(&api, &sql, vec![string_param("schema", schema.as_deref())]).await
        }
        DataOp::DescribeTable {
            database,
            schema,
            table,
        } => {
            let from = information_schema(ctx, database.as_deref())?;
            let schema = schema.or_else(|| ctx.setting("schema").map(str::to_string));
            let sql = format!(
                "SELECT column_name AS name, lower(full_data_type) AS type, is_nullable = 'YES' AS nullable \
                 FROM {from}.columns \
                 WHERE lower(table_schema) = lower(coalesce(:schema, current_schema())) AND lower(table_name) = lower(:table) \
                 ORDER BY ordinal_position"
            );
            let params = vec![
                string_param("schema", schema.as_deref()),
                string_param("table", Some(&table)),
            ];
            let result = execute(&api, &sql, params).await?;
            if result.rows.is_empty() {
                return Err(no_such_table(Platform::Databricks, schema.as_deref(), &table).into());
            }
            Ok(result)
        }
    }
}

/// `` `catalog`.information_schema `` for the given or configured catalog,
/// else the session's.
fn information_schema(ctx: &Ctx<'_>, catalog: Option<&str>) -> Result<String, ToolError> {
    match catalog.or_else(|| ctx.setting("catalog")) {
        Some(c) => Ok(format!(
            "{}.information_schema",
            sql::quote_ident(c, Dialect::Databricks)?
        )),
        None => Ok("information_schema".to_string()),
    }
}

/// Named parameters `p1`, `p2`, … for `params`.
fn parameters(params: &[Value]) -> Result<Vec<Value>, ToolError> {
    let mut out = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let name = format!("p{}", i + 1);
        out.push(match Scalar::of(i, p)? {
            // No value: SQL NULL.
            Scalar::Null => json!({"name": name, "type": "STRING"}),
            Scalar::Bool(b) => json!({"name": name, "value": b.to_string(), "type": "BOOLEAN"}),
            Scalar::Int(n) => json!({"name": name, "value": n.to_string(), "type": "BIGINT"}),
            Scalar::Float(_) => json!({"name": name, "value": p.to_string(), "type": "DOUBLE"}),
            Scalar::Text(s) => json!({"name": name, "value": s, "type": "STRING"}),
        });
    }
    Ok(out)
}

fn string_param(name: &str, v: Option<&str>) -> Value {
    match v {
        Some(v) => json!({"name": name, "value": v, "type": "STRING"}),
        None => json!({"name": name, "type": "STRING"}),
    }
}

/// Posts a statement, waits for it, and collects its rows.
async fn execute(
    api: &Api<'_>,
    statement: &str,
    parameters: Vec<Value>,
) -> Result<QueryResult, DataError> {
    let ctx = api.ctx;
    let limits = &ctx.limits;
    let warehouse = ctx.required_setting("warehouseId")?;
    let remaining = limits.remaining().as_secs();
    let wait = match remaining {
        s if s >= MAX_WAIT_SECS => MAX_WAIT_SECS,
        s if s >= 5 => s,
        _ => 0,
    };
    let mut body = json!({
        "statement": statement,
        "warehouse_id": warehouse,
        "wait_timeout": format!("{wait}s"),
        "on_wait_timeout": "CONTINUE",
        "disposition": "INLINE",
        "format": "JSON_ARRAY",
        "row_limit": limits.max_rows + 1,
        "byte_limit": limits.max_bytes.min(INLINE_LIMIT_BYTES),
    });
    for (key, setting) in [("catalog", "catalog"), ("schema", "schema")] {
        if let Some(v) = ctx.setting(setting) {
            set(&mut body, key, Value::from(v));
        }
    }
    if !parameters.is_empty() {
        set(&mut body, "parameters", Value::Array(parameters));
    }
    let url = api.url(&["api", "2.0", "sql", "statements"], &[])?;
    let reply = api.send(Method::POST, url, Some(&body)).await?;
    if reply.status != 200 {
        return Err(request_failure(api, &reply).into());
    }
    let mut answer = reply.body;
    let mut backoff = Backoff::new();
    loop {
        let state = answer
            .pointer("/status/state")
            .and_then(Value::as_str)
            .unwrap_or("");
        match state {
            "SUCCEEDED" => break,
            "PENDING" | "RUNNING" => {
                let id = statement_id(&answer)?;
                if !backoff.wait(ctx).await {
                    cancel(api, &id).await;
                    return Err(limits.timeout_error(Platform::Databricks).into());
                }
                let url = api.url(&["api", "2.0", "sql", "statements", &id], &[])?;
                let reply = api.send(Method::GET, url, None).await?;
                if reply.status != 200 {
                    return Err(request_failure(api, &reply).into());
                }
                answer = reply.body;
            }
            "FAILED" => {
                let message = answer
                    .pointer("/status/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("no details");
                let code = answer
                    .pointer("/status/error/error_code")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                return Err(match code {
                    "PERMISSION_DENIED" => ToolError::Denied(format!(
                        "Databricks refused: {message}; the connection's principal needs the privilege"
                    )),
                    _ => ToolError::InvalidParams(format!(
                        "Databricks could not run the statement: {message}"
                    )),
                }
                .into());
            }
            "CANCELED" | "CLOSED" => {
                return Err(ToolError::Unavailable(format!(
                    "Databricks reports the statement {}; run it again",
                    state.to_ascii_lowercase()
                ))
                .into());
            }
            other => {
                return Err(ToolError::Unavailable(format!(
                    "Databricks answered with an unknown statement state `{other}`"
                ))
                .into());
            }
        }
    }
    collect(api, answer).await
}

/// The statement id of an answer.
fn statement_id(answer: &Value) -> Result<String, ToolError> {
    answer
        .get("statement_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .map(str::to_string)
        .ok_or_else(|| ToolError::Unavailable("Databricks sent no statement_id".into()))
}

/// Asks Databricks to stop a statement; the caller reports the timeout
/// whatever the answer.
async fn cancel(api: &Api<'_>, id: &str) {
    let Ok(url) = api.url(&["api", "2.0", "sql", "statements", id, "cancel"], &[]) else {
        return;
    };
    if let Err(e) = api
        .send_with_timeout(Method::POST, url, None, CANCEL_TIMEOUT)
        .await
    {
        tracing::warn!(error = ?e, "cancelling a Databricks statement failed");
    }
}

fn request_failure(api: &Api<'_>, reply: &Reply) -> ToolError {
    if reply.status == 400 {
        return ToolError::InvalidParams(format!(
            "Databricks rejected the statement: {}",
            error_message(&reply.body)
        ));
    }
    api.failure(reply)
}

/// Portable type of a Databricks `type_name`.
fn portable(type_name: &str) -> String {
    match type_name {
        "BYTE" | "TINYINT" | "SHORT" | "SMALLINT" | "INT" | "INTEGER" | "LONG" | "BIGINT" => {
            "integer".into()
        }
        "FLOAT" | "REAL" | "DOUBLE" => "number".into(),
        "DECIMAL" => "decimal".into(),
        "BOOLEAN" => "boolean".into(),
        "STRING" | "CHAR" | "VARCHAR" => "string".into(),
        "DATE" => "date".into(),
        "TIMESTAMP" => "timestamp".into(),
        "TIMESTAMP_NTZ" => "datetime".into(),
        "BINARY" => "bytes".into(),
        "ARRAY" | "MAP" | "STRUCT" | "VARIANT" | "OBJECT" => "json".into(),
        other => other.to_ascii_lowercase(),
    }
}

/// A value sent as text, by the column's `type_name`.
fn decode(type_name: &str, v: &Value) -> Value {
    let Some(text) = v.as_str() else {
        return v.clone();
    };
    let keep = || Value::String(text.to_string());
    match portable(type_name).as_str() {
        "integer" => value::integer(text),
        "number" => value::float(text),
        "decimal" => value::decimal(text),
        "boolean" => value::boolean(text),
        "date" => value::date(text).map_or_else(keep, Value::String),
        "timestamp" => value::rfc3339(text).map_or_else(keep, Value::String),
        "datetime" => value::naive(text).map_or_else(keep, Value::String),
        "json" => value::json_text(text),
        _ => keep(),
    }
}

/// Reads the columns and rows of a finished statement, following chunk
/// links until the caps are reached.
async fn collect(api: &Api<'_>, answer: Value) -> Result<QueryResult, DataError> {
    let ctx = api.ctx;
    let limits = &ctx.limits;
    let columns = answer
        .pointer("/manifest/schema/columns")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let types: Vec<String> = columns
        .iter()
        .map(|c| {
            c.get("type_name")
                .and_then(Value::as_str)
                .unwrap_or("STRING")
                .to_ascii_uppercase()
        })
        .collect();
    let mut collector = Collector::new(limits);
    collector.set_columns(
        columns
            .iter()
            .zip(&types)
            .map(|(c, t)| {
                Column::new(
                    c.get("name").and_then(Value::as_str).unwrap_or_default(),
                    portable(t),
                )
            })
            .collect(),
    );
    let add = |collector: &mut Collector, result: &Value| {
        let rows = result.get("data_array").and_then(Value::as_array);
        for row in rows.into_iter().flatten() {
            let values = row
                .as_array()
                .map(|cells| {
                    cells
                        .iter()
                        .zip(&types)
                        .map(|(v, t)| decode(t, v))
                        .collect()
                })
                .unwrap_or_default();
            if !collector.push(values) {
                return;
            }
        }
    };
    let mut result = answer.get("result").cloned().unwrap_or(Value::Null);
    add(&mut collector, &result);
    let mut chunks = 0;
    while let Some(link) = result
        .get("next_chunk_internal_link")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        if collector.full() || collector.len() as u64 >= limits.max_rows || chunks >= MAX_CHUNKS {
            collector.mark_truncated();
            break;
        }
        if limits.remaining().is_zero() {
            collector.mark_truncated();
            break;
        }
        let url = chunk_url(ctx, &link)?;
        let reply = api.send(Method::GET, url, None).await?;
        if reply.status != 200 {
            return Err(request_failure(api, &reply).into());
        }
        result = reply.body;
        add(&mut collector, &result);
        chunks += 1;
    }
    if answer.pointer("/manifest/truncated") == Some(&Value::Bool(true)) {
        collector.mark_truncated();
    }
    Ok(collector.finish(limits))
}

/// A chunk link resolved against the workspace: same origin, below the
/// statements API.
fn chunk_url(ctx: &Ctx<'_>, link: &str) -> Result<url::Url, ToolError> {
    let base = ctx.target.base_url;
    let url = base.join(link).map_err(|_| {
        ToolError::Unavailable("Databricks sent a chunk link that is not a URL".into())
    })?;
    if url.origin() != base.origin() || !url.path().starts_with("/api/2.0/sql/statements/") {
        return Err(ToolError::Unavailable(
            "Databricks sent a chunk link outside the workspace's statements API; refused".into(),
        ));
    }
    Ok(url)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn values_are_mapped_by_type_name() {
        let s = |t: &str| Value::String(t.into());
        assert_eq!(
            decode("LONG", &s("9007199254740993")),
            json!(9_007_199_254_740_993i64)
        );
        assert_eq!(decode("INT", &s("-5")), json!(-5));
        assert_eq!(decode("DOUBLE", &s("2.5")), json!(2.5));
        assert_eq!(decode("DECIMAL", &s("10.10")), json!("10.10"));
        assert_eq!(decode("BOOLEAN", &s("true")), json!(true));
        assert_eq!(decode("DATE", &s("2024-02-29")), json!("2024-02-29"));
        assert_eq!(
            decode("TIMESTAMP", &s("2024-02-29T10:00:00.000Z")),
            json!("2024-02-29T10:00:00Z")
        );
        assert_eq!(
            decode("TIMESTAMP_NTZ", &s("2024-02-29T10:00:00.5")),
            json!("2024-02-29T10:00:00.500")
        );
        assert_eq!(decode("ARRAY", &s("[1,2]")), json!([1, 2]));
        assert_eq!(decode("STRUCT", &s("{\"a\":1}")), json!({"a": 1}));
        assert_eq!(decode("STRING", &Value::Null), Value::Null);
        assert_eq!(portable("INTERVAL"), "interval");
    }

    #[test]
    fn parameters_are_named_and_typed() {
        assert_eq!(
            parameters(&[json!(7), json!("x"), Value::Null, json!(false), json!(0.5)]).unwrap(),
            vec![
                json!({"name": "p1", "value": "7", "type": "BIGINT"}),
                json!({"name": "p2", "value": "x", "type": "STRING"}),
                json!({"name": "p3", "type": "STRING"}),
                json!({"name": "p4", "value": "false", "type": "BOOLEAN"}),
                json!({"name": "p5", "value": "0.5", "type": "DOUBLE"}),
            ]
        );
    }
}
