//! Google BigQuery through the REST API v2 (`jobs.query`).
//!
//! A query is posted to `projects/{projectId}/queries` with positional
//! parameters (`?`, `parameterMode: POSITIONAL`), standard SQL, the row cap
//! plus one as `maxResults`, and `timeoutMs` (how long BigQuery holds the
//! request open, at most 10 s). When the job is not complete by then it is
//! polled with `getQueryResults` (`GET projects/{p}/queries/{jobId}`) and
//! cancelled (`POST projects/{p}/jobs/{jobId}/cancel`) at the deadline.
//! Further pages are fetched with `pageToken`. Timestamps are asked for as
//! integer microseconds (`formatOptions.useInt64Timestamp`), so no
//! precision is lost in a float.
//!
//! Listing uses the REST resources (`projects`, `datasets`, `tables`)
//! instead of SQL, so no identifier is ever put into SQL text.

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::http::{Api, Backoff, CANCEL_TIMEOUT, Reply, error_message};
use super::sql::{self, Dialect};
use super::{Collector, Column, Ctx, DataError, DataOp, Platform, QueryResult, Scalar, set, value};
use crate::error::ToolError;

/// Longest wait BigQuery is asked to hold a request open.
const MAX_WAIT_MS: u64 = 10_000;
/// Most pages followed for one call.
const MAX_PAGES: usize = 10_000;
/// Deepest nesting of RECORD fields decoded.
const MAX_DEPTH: usize = 32;

pub(super) async fn run(ctx: &Ctx<'_>, op: DataOp) -> Result<QueryResult, DataError> {
    let api = Api {
        ctx,
        bearer: ctx.target.credential.clone(),
        headers: Vec::new(),
    };
    match op {
        DataOp::Query(q) => {
            let params = parameters(&q.sql, &q.params)?;
            query(&api, &q.sql, params).await
        }
        DataOp::ListDatabases => {
            list(
                &api,
                &["projects"],
                "projects",
                vec![Column::new("name", "string")],
                |p| {
                    vec![
                        p.pointer("/projectReference/projectId")
                            .cloned()
                            .unwrap_or(Value::Null),
                    ]
                },
            )
            .await
        }
        DataOp::ListSchemas { database } => {
            let project = project_id(ctx, database.as_deref())?;
            list(
                &api,
                &["projects", &project, "datasets"],
                "datasets",
                vec![Column::new("name", "string")],
                |d| {
                    vec![
                        d.pointer("/datasetReference/datasetId")
                            .cloned()
                            .unwrap_or(Value::Null),
                    ]
                },
            )
            .await
        }
        DataOp::ListTables { database, schema } => {
            let project = project_id(ctx, database.as_deref())?;
            let dataset = dataset(schema.as_deref())?;
            list(
                &api,
                &["projects", &project, "datasets", &dataset, "tables"],
                "tables",
                vec![
                    Column::new("schema", "string"),
                    Column::new("name", "string"),
                    Column::new("type", "string"),
                ],
                |t| {
                    vec![
                        t.pointer("/tableReference/datasetId")
                            .cloned()
                            .unwrap_or(Value::Null),
                        t.pointer("/tableReference/tableId")
                            .cloned()
                            .unwrap_or(Value::Null),
                        t.get("type")
                            .and_then(Value::as_str)
                            .map_or(Value::Null, |s| Value::from(s.to_ascii_lowercase())),
                    ]
                },
            )
            .await
        }
        DataOp::DescribeTable {
            database,
            schema,
            table,
        } => {
            let project = project_id(ctx, database.as_deref())?;
            let dataset = dataset(schema.as_deref())?;
            describe(&api, &project, &dataset, &table).await
        }
    }
}

/// The project to use: the given one or the configured `projectId`.
fn project_id(ctx: &Ctx<'_>, database: Option<&str>) -> Result<String, ToolError> {
    match database {
        Some(p) => Ok(p.to_string()),
        None => Ok(ctx.required_setting("projectId")?.to_string()),
    }
}

fn dataset(schema: Option<&str>) -> Result<String, ToolError> {
    schema.map(str::to_string).ok_or_else(|| {
        ToolError::InvalidParams(
            "params.schema is required: the BigQuery dataset (list them with GOOGLEBIGQUERY_LIST_SCHEMAS)"
                .into(),
        )
    })
}

/// Positional query parameters for `params`; the SQL must have one `?` per
/// parameter.
fn parameters(sql: &str, params: &[Value]) -> Result<Vec<Value>, ToolError> {
    let placeholders = sql::positional_placeholders(sql, Dialect::BigQuery)?;
    if placeholders != params.len() {
        return Err(ToolError::InvalidParams(format!(
            "params.sql has {placeholders} `?` placeholder(s) but {} value(s) were given in params; BigQuery binds params in order to `?`",
            params.len()
        )));
    }
    let mut out = Vec::new();
    for (i, p) in params.iter().enumerate() {
        out.push(match Scalar::of(i, p)? {
            // An empty parameterValue is NULL.
            Scalar::Null => json!({"parameterType": {"type": "STRING"}, "parameterValue": {}}),
            Scalar::Bool(b) => {
                json!({"parameterType": {"type": "BOOL"}, "parameterValue": {"value": b.to_string()}})
            }
            Scalar::Int(n) => {
                json!({"parameterType": {"type": "INT64"}, "parameterValue": {"value": n.to_string()}})
            }
            Scalar::Float(_) => {
                json!({"parameterType": {"type": "FLOAT64"}, "parameterValue": {"value": p.to_string()}})
            }
            Scalar::Text(s) => {
                json!({"parameterType": {"type": "STRING"}, "parameterValue": {"value": s}})
            }
        });
    }
    Ok(out)
}

/// Runs a query job and collects its rows.
async fn query(api: &Api<'_>, sql: &str, params: Vec<Value>) -> Result<QueryResult, DataError> {
    let ctx = api.ctx;
    let limits = &ctx.limits;
    let project = ctx.required_setting("projectId")?.to_string();
    let location = ctx.setting("location").map(str::to_string);
    let page_size = limits.max_rows + 1;
    let wait_ms = wait_ms(ctx);
    let mut body = json!({
        "query": sql,
        "useLegacySql": false,
        "maxResults": page_size,
        "timeoutMs": wait_ms,
        "jobTimeoutMs": u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX),
        "dryRun": false,
        "formatOptions": {"useInt64Timestamp": true},
    });
    if !params.is_empty() {
        set(&mut body, "parameterMode", Value::from("POSITIONAL"));
        set(&mut body, "queryParameters", Value::Array(params));
    }
    if let Some(loc) = &location {
        set(&mut body, "location", Value::from(loc.as_str()));
    }
    let url = api.url(&["projects", &project, "queries"], &[])?;
    let reply = api.send(Method::POST, url, Some(&body)).await?;
    if reply.status != 200 {
        return Err(failure(api, &reply).into());
    }
    let mut answer = reply.body;
    let job = answer.get("jobReference").cloned().unwrap_or(Value::Null);
    let job_project = job
        .get("projectId")
        .and_then(Value::as_str)
        .map_or_else(|| project.clone(), str::to_string);
    let job_id = job.get("jobId").and_then(Value::as_str).map(str::to_string);
    let location = job
        .get("location")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or(location);
    let page_size_text = page_size.to_string();
    let results_url = |page_token: Option<&str>, wait: u64| -> Result<url::Url, ToolError> {
        let id = job_id.as_deref().ok_or_else(|| {
            ToolError::Unavailable("BigQuery sent no job id to wait for or page through".into())
        })?;
        let wait = wait.to_string();
        let mut q: Vec<(&str, &str)> = vec![
            ("maxResults", page_size_text.as_str()),
            ("timeoutMs", wait.as_str()),
            ("formatOptions.useInt64Timestamp", "true"),
        ];
        if let Some(loc) = &location {
            q.push(("location", loc.as_str()));
        }
        if let Some(token) = page_token {
            q.push(("pageToken", token));
        }
        api.url(&["projects", &job_project, "queries", id], &q)
    };
    let mut backoff = Backoff::new();
    while answer.get("jobComplete") == Some(&Value::Bool(false)) {
        if limits.remaining().is_zero() {
            if let Some(id) = &job_id {
                cancel(api, &job_project, id, location.as_deref()).await;
            }
            return Err(limits.timeout_error(Platform::BigQuery).into());
        }
        let url = results_url(None, wait_ms_now(ctx))?;
        let reply = api.send(Method::GET, url, None).await?;
        if reply.status != 200 {
            return Err(failure(api, &reply).into());
        }
        answer = reply.body;
        if answer.get("jobComplete") == Some(&Value::Bool(false)) && !backoff.wait(ctx).await {
            if let Some(id) = &job_id {
                cancel(api, &job_project, id, location.as_deref()).await;
            }
            return Err(limits.timeout_error(Platform::BigQuery).into());
        }
    }
    let fields = answer
        .pointer("/schema/fields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut collector = Collector::new(limits);
    collector.set_columns(
        fields
            .iter()
            .map(|f| Column::new(str_of(f, "name"), portable(f)))
            .collect(),
    );
    let add = |collector: &mut Collector, page: &Value| {
        for row in page
            .get("rows")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let cells = row.get("f").and_then(Value::as_array);
            let values = cells
                .map(|cells| {
                    cells
                        .iter()
                        .zip(&fields)
                        .map(|(cell, f)| decode(f, cell.get("v").unwrap_or(&Value::Null), 0))
                        .collect()
                })
                .unwrap_or_default();
            if !collector.push(values) {
                return;
            }
        }
    };
    add(&mut collector, &answer);
    let total_rows = answer.get("totalRows").and_then(|v| {
        v.as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .or(v.as_u64())
    });
    let mut pages = 0;
    let mut page = answer;
    while let Some(token) = page
        .get("pageToken")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        if collector.full() || collector.len() as u64 >= limits.max_rows || pages >= MAX_PAGES {
            collector.mark_truncated();
            break;
        }
        if limits.remaining().is_zero() {
            collector.mark_truncated();
            break;
        }
        let url = results_url(Some(&token), 0)?;
        let reply = api.send(Method::GET, url, None).await?;
        if reply.status != 200 {
            return Err(failure(api, &reply).into());
        }
        page = reply.body;
        add(&mut collector, &page);
        pages += 1;
    }
    if total_rows.is_some_and(|n| n > collector.len() as u64) {
        collector.mark_truncated();
    }
    Ok(collector.finish(limits))
}

/// How long BigQuery may hold the first request open.
fn wait_ms(ctx: &Ctx<'_>) -> u64 {
    wait_ms_now(ctx).max(1)
}

fn wait_ms_now(ctx: &Ctx<'_>) -> u64 {
    u64::try_from(ctx.limits.remaining().as_millis())
        .unwrap_or(u64::MAX)
        .min(MAX_WAIT_MS)
}

/// Asks BigQuery to stop a job; the caller reports the timeout whatever the
/// answer.
async fn cancel(api: &Api<'_>, project: &str, job_id: &str, location: Option<&str>) {
    let query: Vec<(&str, &str)> = location.map(|l| ("location", l)).into_iter().collect();
    let Ok(url) = api.url(&["projects", project, "jobs", job_id, "cancel"], &query) else {
        return;
    };
    if let Err(e) = api
        .send_with_timeout(Method::POST, url, None, CANCEL_TIMEOUT)
        .await
    {
        tracing::warn!(error = ?e, "cancelling a BigQuery job failed");
    }
}

/// The error for a failed request: quota reasons become `rate-limited`,
/// invalid queries `invalid-params`.
fn failure(api: &Api<'_>, reply: &Reply) -> ToolError {
    let reason = reply
        .body
        .pointer("/error/errors/0/reason")
        .and_then(Value::as_str)
        .unwrap_or("");
    match (reply.status, reason) {
        (403, "rateLimitExceeded") => ToolError::RateLimited {
            retry_after_ms: 1_000,
        },
        (400, _) => ToolError::InvalidParams(format!(
            "BigQuery could not run the query: {}",
            error_message(&reply.body)
        )),
        _ => api.failure(reply),
    }
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Portable type of a schema field.
fn portable(field: &Value) -> String {
    if str_of(field, "mode").eq_ignore_ascii_case("REPEATED") {
        return "json".into();
    }
    let t = str_of(field, "type").to_ascii_uppercase();
    match t.as_str() {
        "INTEGER" | "INT64" => "integer".into(),
        "FLOAT" | "FLOAT64" => "number".into(),
        "NUMERIC" | "BIGNUMERIC" | "DECIMAL" | "BIGDECIMAL" => "decimal".into(),
        "BOOLEAN" | "BOOL" => "boolean".into(),
        "STRING" => "string".into(),
        "BYTES" => "bytes".into(),
        "TIMESTAMP" => "timestamp".into(),
        "DATETIME" => "datetime".into(),
        "DATE" => "date".into(),
        "TIME" => "time".into(),
        "JSON" | "RECORD" | "STRUCT" => "json".into(),
        other => other.to_ascii_lowercase(),
    }
}

/// A cell's `v` for `field`: REPEATED fields are `[{v}]`, RECORDs
/// `{f: [{v}]}` (decoded into objects by field name), scalars strings.
fn decode(field: &Value, v: &Value, depth: usize) -> Value {
    if v.is_null() || depth > MAX_DEPTH {
        return if v.is_null() { Value::Null } else { v.clone() };
    }
    if str_of(field, "mode").eq_ignore_ascii_case("REPEATED") {
        let mut single = field.clone();
        if let Some(obj) = single.as_object_mut() {
            obj.insert("mode".into(), Value::from("NULLABLE"));
        }
        let items = v.as_array().map(|items| {
            items
                .iter()
                .map(|item| decode(&single, item.get("v").unwrap_or(&Value::Null), depth + 1))
                .collect()
        });
        return items.map_or_else(|| v.clone(), Value::Array);
    }
    let t = str_of(field, "type").to_ascii_uppercase();
    if matches!(t.as_str(), "RECORD" | "STRUCT") {
        let subfields = field
            .get("fields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let cells = v.get("f").and_then(Value::as_array);
        let Some(cells) = cells else {
            return v.clone();
        };
        let object: Map<String, Value> = subfields
            .iter()
            .zip(cells)
            .map(|(f, cell)| {
                (
                    str_of(f, "name"),
                    decode(f, cell.get("v").unwrap_or(&Value::Null), depth + 1),
                )
            })
            .collect();
        return Value::Object(object);
    }
    let Some(text) = v.as_str() else {
        return v.clone();
    };
    let keep = || Value::String(text.to_string());
    match t.as_str() {
        "INTEGER" | "INT64" => value::integer(text),
        "FLOAT" | "FLOAT64" => value::float(text),
        "NUMERIC" | "BIGNUMERIC" | "DECIMAL" | "BIGDECIMAL" => value::decimal(text),
        "BOOLEAN" | "BOOL" => value::boolean(text),
        "TIMESTAMP" => timestamp(text).map_or_else(keep, Value::String),
        "DATETIME" => value::naive(text).map_or_else(keep, Value::String),
        "DATE" => value::date(text).map_or_else(keep, Value::String),
        "TIME" => value::time(text).map_or_else(keep, Value::String),
        "JSON" => value::json_text(text),
        _ => keep(),
    }
}

/// A TIMESTAMP cell: integer microseconds since the epoch (asked for with
/// `useInt64Timestamp`), or the older float seconds (`"1.7E9"`).
fn timestamp(text: &str) -> Option<String> {
    let t = text.trim();
    if !t.is_empty()
        && t.trim_start_matches('-')
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        let micros: i64 = t.parse().ok()?;
        let secs = micros.div_euclid(1_000_000);
        let nanos = u32::try_from(micros.rem_euclid(1_000_000) * 1000).ok()?;
        return value::instant(secs, nanos, 0);
    }
    if let Some((secs, nanos)) = value::epoch(t) {
        return value::instant(secs, nanos, 0);
    }
    let f: f64 = t.parse().ok()?;
    if !f.is_finite() {
        return None;
    }
    // Float seconds carry microseconds at best.
    let micros = (f * 1e6).round();
    if micros.abs() > 9.0e18 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    let micros = micros as i64;
    let secs = micros.div_euclid(1_000_000);
    let nanos = u32::try_from(micros.rem_euclid(1_000_000) * 1000).ok()?;
    value::instant(secs, nanos, 0)
}

/// Lists a REST collection page by page into rows.
async fn list(
    api: &Api<'_>,
    segments: &[&str],
    items_key: &str,
    columns: Vec<Column>,
    row: impl Fn(&Value) -> Vec<Value>,
) -> Result<QueryResult, DataError> {
    let limits = &api.ctx.limits;
    let mut collector = Collector::new(limits);
    collector.set_columns(columns);
    let page_size = limits.max_rows.min(1000).to_string();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut query: Vec<(&str, &str)> = vec![("maxResults", page_size.as_str())];
        if let Some(t) = &token {
            query.push(("pageToken", t.as_str()));
        }
        let url = api.url(segments, &query)?;
        let reply = api.send(Method::GET, url, None).await?;
        if reply.status != 200 {
            return Err(failure(api, &reply).into());
        }
        for item in reply
            .body
            .get(items_key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !collector.push(row(item)) {
                break;
            }
        }
        token = reply
            .body
            .get("nextPageToken")
            .and_then(Value::as_str)
            .map(str::to_string);
        if token.is_none() {
            break;
        }
        if collector.full() || collector.len() as u64 >= limits.max_rows {
            collector.mark_truncated();
            break;
        }
        if limits.remaining().is_zero() {
            collector.mark_truncated();
            break;
        }
    }
    Ok(collector.finish(limits))
}

/// A table's columns from `tables.get`; RECORD fields are flattened with
/// dotted names (`address.city`).
async fn describe(
    api: &Api<'_>,
    project: &str,
    dataset: &str,
    table: &str,
) -> Result<QueryResult, DataError> {
    let url = api.url(
        &["projects", project, "datasets", dataset, "tables", table],
        &[],
    )?;
    let reply = api.send(Method::GET, url, None).await?;
    if reply.status == 404 {
        return Err(super::no_such_table(Platform::BigQuery, Some(dataset), table).into());
    }
    if reply.status != 200 {
        return Err(failure(api, &reply).into());
    }
    let limits = &api.ctx.limits;
    let mut collector = Collector::new(limits);
    collector.set_columns(vec![
        Column::new("name", "string"),
        Column::new("type", "string"),
        Column::new("nullable", "boolean"),
    ]);
    let fields = reply
        .body
        .pointer("/schema/fields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    flatten(&fields, "", 0, &mut collector);
    Ok(collector.finish(limits))
}

fn flatten(fields: &[Value], prefix: &str, depth: usize, out: &mut Collector) {
    if depth > MAX_DEPTH {
        return;
    }
    for f in fields {
        let name = format!("{prefix}{}", str_of(f, "name"));
        let mode = str_of(f, "mode").to_ascii_uppercase();
        let base = str_of(f, "type").to_ascii_lowercase();
        let r#type = if mode == "REPEATED" {
            format!("array<{base}>")
        } else {
            base
        };
        if !out.push(vec![
            Value::from(name.as_str()),
            Value::from(r#type),
            Value::Bool(mode != "REQUIRED"),
        ]) {
            return;
        }
        if let Some(sub) = f.get("fields").and_then(Value::as_array) {
            flatten(sub, &format!("{name}."), depth + 1, out);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_decoded_by_schema() {
        let f = |t: &str| json!({"name": "c", "type": t, "mode": "NULLABLE"});
        let s = |t: &str| Value::String(t.into());
        assert_eq!(decode(&f("INTEGER"), &s("42"), 0), json!(42));
        assert_eq!(decode(&f("FLOAT"), &s("0.25"), 0), json!(0.25));
        assert_eq!(decode(&f("NUMERIC"), &s("1.10"), 0), json!("1.10"));
        assert_eq!(decode(&f("BOOLEAN"), &s("true"), 0), json!(true));
        assert_eq!(
            decode(&f("TIMESTAMP"), &s("1700000000123456"), 0),
            json!("2023-11-14T22:13:20.123456Z")
        );
        assert_eq!(
            decode(&f("TIMESTAMP"), &s("1.7E9"), 0),
            json!("2023-11-14T22:13:20Z")
        );
        assert_eq!(
            decode(&f("DATETIME"), &s("2024-01-02T03:04:05"), 0),
            json!("2024-01-02T03:04:05")
        );
        assert_eq!(
            decode(&f("JSON"), &s("{\"k\":[true]}"), 0),
            json!({"k": [true]})
        );
        let record = json!({"name": "r", "type": "RECORD", "mode": "REPEATED", "fields": [
            {"name": "a", "type": "INTEGER"}, {"name": "b", "type": "STRING", "mode": "REPEATED"}
        ]});
        let v = json!([{"v": {"f": [{"v": "1"}, {"v": [{"v": "x"}, {"v": "y"}]}]}}]);
        assert_eq!(decode(&record, &v, 0), json!([{"a": 1, "b": ["x", "y"]}]));
        assert_eq!(portable(&record), "json");
    }

    #[test]
    fn parameters_are_positional_and_typed() {
        assert_eq!(
            parameters("SELECT ?, ?, ?", &[json!(1), json!("a"), Value::Null]).unwrap(),
            vec![
                json!({"parameterType": {"type": "INT64"}, "parameterValue": {"value": "1"}}),
                json!({"parameterType": {"type": "STRING"}, "parameterValue": {"value": "a"}}),
                json!({"parameterType": {"type": "STRING"}, "parameterValue": {}}),
            ]
        );
        assert!(parameters("SELECT '?'", &[json!(1)]).is_err());
    }
}
