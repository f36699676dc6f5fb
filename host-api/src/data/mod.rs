//! Data connectors: SQL on PostgreSQL, Snowflake, Databricks and BigQuery
//! with bound parameters, one result shape, and an admin's policy.
//!
//! Every platform answers a [`DataOp`] with the same [`QueryResult`]:
//! `{columns: [{name, type}], rows, truncated, elapsedMs}`, values typed the
//! same way everywhere (see [`Column`]). What a call may do is bounded by the
//! connection's [`DataPolicy`]: read-only unless an admin allowed writes
//! (statements that write are refused by [`sql::check`] before anything is
//! sent; PostgreSQL also runs every call in a `READ ONLY` transaction), at
//! most so many rows and bytes, and a statement timeout after which a
//! running statement is cancelled on the platform.
//!
//! Parameters are always bound by the platform, never pasted into the SQL.
//! The placeholders differ per platform, as each one's own API wants them:
//!
//! | platform | placeholders | how the values travel |
//! |---|---|---|
//! | PostgreSQL | `$1`, `$2`, … | extended protocol; each value is checked against the type PostgreSQL inferred for its placeholder |
//! | Snowflake | `?` (positional) | SQL API `bindings` `{"1": {"type", "value"}}` |
//! | Databricks | `:p1`, `:p2`, … (named) | Statement Execution API `parameters` `[{name: "p1", value, type}]` |
//! | BigQuery | `?` (positional) | `jobs.query` `parameterMode: POSITIONAL`, `queryParameters` |
//!
//! The modules: [`sql`] (the read-only classifier and identifier quoting),
//! `postgres`, `snowflake`, `databricks`, `bigquery` (one per platform),
//! `http` (the REST call shared by the three cloud platforms) and `value`
//! (turning each platform's text into portable JSON values).

mod bigquery;
mod databricks;
mod http;
mod postgres;
mod snowflake;
pub mod sql;
mod value;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tracing::instrument;

use crate::egress::EgressPolicy;
use crate::error::ToolError;
use crate::secret::Secret;

/// Largest row cap an admin may set: a function gets its answer in memory,
/// and an agent cannot use more rows than this anyway.
pub const MAX_ROWS_LIMIT: u64 = 100_000;
/// Largest byte cap an admin may set (the serialized rows).
pub const MAX_BYTES_LIMIT: u64 = 64 * 1024 * 1024;
/// Longest statement timeout an admin may set: a tool call holds a function
/// invocation open for that long.
pub const MAX_TIMEOUT_MS: u64 = 600_000;
/// Longest SQL text accepted (the generated tool schema allows 100 000
/// characters; this bounds direct callers of [`run`] as well).
pub const MAX_SQL_BYTES: usize = 1024 * 1024;
/// Most parameters one statement may bind.
pub const MAX_PARAMS: usize = 1000;
/// Largest total size of the parameters' values.
pub const MAX_PARAMS_BYTES: usize = 1024 * 1024;
/// Longest database, schema or table name a listing accepts (the
/// platforms' own limits are 255 bytes or less).
pub const MAX_NAME_BYTES: usize = 255;

/// A data platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// PostgreSQL over its wire protocol; the credential is a connection
    /// string.
    Postgres,
    /// Snowflake SQL API v2.
    Snowflake,
    /// Databricks SQL Statement Execution API 2.0.
    Databricks,
    /// BigQuery `jobs.query` (REST v2). Spelled `bigquery`, as in the
    /// catalog's `data.platform`.
    #[serde(rename = "bigquery")]
    BigQuery,
}

impl Platform {
    /// The name people know it by, for messages.
    pub fn display_name(self) -> &'static str {
        match self {
            Platform::Postgres => "PostgreSQL",
            Platform::Snowflake => "Snowflake",
            Platform::Databricks => "Databricks",
            Platform::BigQuery => "BigQuery",
        }
    }

    /// The SQL dialect the classifier tokenizes with.
    pub fn dialect(self) -> sql::Dialect {
        match self {
            Platform::Postgres => sql::Dialect::Postgres,
            Platform::Snowflake => sql::Dialect::Snowflake,
            Platform::Databricks => sql::Dialect::Databricks,
            Platform::BigQuery => sql::Dialect::BigQuery,
        }
    }
}

impl From<crate::catalog::DataPlatform> for Platform {
    fn from(p: crate::catalog::DataPlatform) -> Self {
        use crate::catalog::DataPlatform;
        match p {
            DataPlatform::Postgres => Platform::Postgres,
            DataPlatform::Snowflake => Platform::Snowflake,
            DataPlatform::Databricks => Platform::Databricks,
            DataPlatform::BigQuery => Platform::BigQuery,
        }
    }
}

/// What an admin allows a data connection to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct DataPolicy {
    /// Refuse statements that write (the default). PostgreSQL calls also run
    /// in a `READ ONLY` transaction, which catches writes hidden in
    /// functions.
    pub read_only: bool,
    /// At most this many rows per call (1 to [`MAX_ROWS_LIMIT`]); a caller
    /// may ask for fewer.
    pub max_rows: u64,
    /// At most this many bytes of serialized rows per call (1 KiB to
    /// [`MAX_BYTES_LIMIT`]).
    pub max_bytes: u64,
    /// Cancel a statement still running after this long, in milliseconds
    /// (100 to [`MAX_TIMEOUT_MS`]); a caller may ask for less.
    pub statement_timeout_ms: u64,
}

impl Default for DataPolicy {
    fn default() -> Self {
        Self {
            read_only: true,
            max_rows: 1000,
            max_bytes: 4 * 1024 * 1024,
            statement_timeout_ms: 30_000,
        }
    }
}

/// Smallest byte cap: room for a few rows and their punctuation.
const MIN_BYTES: u64 = 1024;
/// Shortest statement timeout: less cannot even reach a cloud platform.
const MIN_TIMEOUT_MS: u64 = 100;

impl DataPolicy {
    /// The policy if every value is within its bounds, else a message naming
    /// the field, its bounds and how to fix it (for an admin's request).
    pub fn checked(self) -> Result<Self, String> {
        let bound = |name: &str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "dataPolicy.{name} is {value}; it must be between {min} and {max}"
                ))
            }
        };
        bound("maxRows", self.max_rows, 1, MAX_ROWS_LIMIT)?;
        bound("maxBytes", self.max_bytes, MIN_BYTES, MAX_BYTES_LIMIT)?;
        bound(
            "statementTimeoutMs",
            self.statement_timeout_ms,
            MIN_TIMEOUT_MS,
            MAX_TIMEOUT_MS,
        )?;
        Ok(self)
    }

    /// The policy with every value forced into its bounds (a stored policy
    /// is trusted no further than this).
    pub fn clamped(&self) -> Self {
        Self {
            read_only: self.read_only,
            max_rows: self.max_rows.clamp(1, MAX_ROWS_LIMIT),
            max_bytes: self.max_bytes.clamp(MIN_BYTES, MAX_BYTES_LIMIT),
            statement_timeout_ms: self
                .statement_timeout_ms
                .clamp(MIN_TIMEOUT_MS, MAX_TIMEOUT_MS),
        }
    }
}

/// One SQL statement to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryRequest {
    /// One statement, placeholders as the platform wants them (see the
    /// module documentation).
    pub sql: String,
    /// Values bound to the placeholders in order: strings, numbers,
    /// booleans or nulls.
    #[serde(default)]
    pub params: Vec<Value>,
    /// Fewer rows than the policy allows.
    #[serde(default)]
    pub max_rows: Option<u64>,
    /// A shorter timeout than the policy's, in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// A result column.
///
/// `type` is a portable name: `string`, `integer`, `number`, `decimal`,
/// `boolean`, `timestamp` (an instant, RFC 3339 with its offset),
/// `datetime` (a date and time without a time zone, RFC 3339 without the
/// offset: `2024-05-01T12:30:00`), `date` (`YYYY-MM-DD`), `time`
/// (`HH:MM:SS[.ffffff]`), `json` (any JSON value: JSON columns, arrays,
/// records, maps, variants), `bytes` (base64); otherwise the platform's own
/// type name in lower case (`uuid`, `interval`, `geography`, …) with the
/// value as the platform's text.
///
/// Values: `integer` is a JSON number when it fits in an `i64`, else a
/// string of digits; `number` is a JSON number when finite, else `"NaN"`,
/// `"Infinity"` or `"-Infinity"`; `decimal` is always a string, so no digit
/// is lost; SQL `NULL` is `null` in every type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The column's name as the platform reports it.
    pub name: String,
    /// The portable type name.
    pub r#type: String,
}

impl Column {
    /// A column.
    pub fn new(name: impl Into<String>, r#type: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            r#type: r#type.into(),
        }
    }
}

/// What every data operation answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryResult {
    /// The columns, in order.
    pub columns: Vec<Column>,
    /// The rows, each with one value per column.
    pub rows: Vec<Vec<Value>>,
    /// More rows existed than the row or byte cap let through.
    pub truncated: bool,
    /// Milliseconds from the call's start to its answer.
    pub elapsed_ms: u64,
}

/// Where and as whom a data operation runs.
#[derive(Debug, Clone, Copy)]
pub struct DataTarget<'a> {
    /// The platform.
    pub platform: Platform,
    /// The API base: the Snowflake account host
    /// (`https://<account>.snowflakecomputing.com`), the Databricks
    /// workspace host, BigQuery's `https://bigquery.googleapis.com/bigquery/v2`.
    /// Unused for PostgreSQL, whose connection string names the server.
    pub base_url: &'a url::Url,
    /// A bearer token (OAuth access token or Databricks personal access
    /// token); for Snowflake with `authType: "keypair"` the PEM RSA private
    /// key (PKCS#8 or PKCS#1, unencrypted); for PostgreSQL the connection
    /// string.
    pub credential: &'a Secret,
    /// Non-secret settings: Snowflake `{account, user, warehouse, database,
    /// schema, role, authType: "oauth"|"keypair"}`; Databricks
    /// `{warehouseId, catalog, schema}`; BigQuery `{projectId, location}`;
    /// PostgreSQL none.
    pub settings: &'a Map<String, Value>,
}

/// A data operation.
#[derive(Debug, Clone, PartialEq)]
pub enum DataOp {
    /// Run one SQL statement.
    Query(QueryRequest),
    /// List databases (BigQuery projects, Databricks catalogs).
    ListDatabases,
    /// List the schemas (BigQuery datasets) of a database, by default the
    /// connection's.
    ListSchemas {
        /// The database; `None` for the connection's.
        database: Option<String>,
    },
    /// List tables and views: `{schema, name, type}`.
    ListTables {
        /// The database; `None` for the connection's.
        database: Option<String>,
        /// The schema; `None` for every schema (BigQuery needs a dataset).
        schema: Option<String>,
    },
    /// Describe a table's columns: `{name, type, nullable}`.
    DescribeTable {
        /// The database; `None` for the connection's.
        database: Option<String>,
        /// The schema; `None` for the connection's current one.
        schema: Option<String>,
        /// The table or view.
        table: String,
    },
}

/// Why a data operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The platform refused the credential (HTTP 401, PostgreSQL
    /// authentication failure): an OAuth token may be refreshed and the call
    /// retried once.
    #[error("the platform refused the credential")]
    Unauthorized,
    /// Any other failure, as the function will see it.
    #[error(transparent)]
    Tool(#[from] ToolError),
}

/// The caps and the deadline in force for one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Rows to return at most.
    pub max_rows: u64,
    /// Bytes of serialized rows to return at most.
    pub max_bytes: u64,
    /// The statement timeout for this call.
    pub timeout: Duration,
    /// The policy's timeout, named in timeout errors.
    pub policy_timeout_ms: u64,
    /// When the call started.
    pub start: Instant,
    /// When the statement must be cancelled.
    pub deadline: Instant,
    /// Refuse writes.
    pub read_only: bool,
}

impl Limits {
    fn new(policy: &DataPolicy, max_rows: Option<u64>, timeout_ms: Option<u64>) -> Self {
        let max_rows = max_rows.map_or(policy.max_rows, |r| r.min(policy.max_rows));
        let timeout_ms = timeout_ms.map_or(policy.statement_timeout_ms, |t| {
            t.min(policy.statement_timeout_ms)
        });
        let start = Instant::now();
        let timeout = Duration::from_millis(timeout_ms);
        Self {
            max_rows,
            max_bytes: policy.max_bytes,
            timeout,
            policy_timeout_ms: policy.statement_timeout_ms,
            start,
            deadline: start + timeout,
            read_only: policy.read_only,
        }
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The error for a statement that outlived its timeout.
    pub fn timeout_error(&self, platform: Platform) -> ToolError {
        ToolError::Unavailable(format!(
            "{} did not finish the statement within the {} ms timeout, so it was cancelled; narrow the query (filters, LIMIT, aggregates) or pass a larger timeoutMs (this connection allows up to {} ms)",
            platform.display_name(),
            self.timeout.as_millis(),
            self.policy_timeout_ms
        ))
    }
}

/// Collects rows under the row and byte caps.
#[derive(Debug)]
pub(crate) struct Collector {
    columns: Vec<Column>,
    rows: Vec<Vec<Value>>,
    bytes: u64,
    max_rows: u64,
    max_bytes: u64,
    truncated: bool,
}

impl Collector {
    pub fn new(limits: &Limits) -> Self {
        Self {
            columns: Vec::new(),
            rows: Vec::new(),
            bytes: 2,
            max_rows: limits.max_rows,
            max_bytes: limits.max_bytes,
            truncated: false,
        }
    }

    /// Sets the columns (once the platform described them).
    pub fn set_columns(&mut self, columns: Vec<Column>) {
        self.columns = columns;
    }

    /// Adds a row; `false` once no more rows are wanted (a cap was reached
    /// and the result is marked truncated).
    pub fn push(&mut self, row: Vec<Value>) -> bool {
        if self.truncated {
            return false;
        }
        if self.rows.len() as u64 >= self.max_rows {
            self.truncated = true;
            return false;
        }
        // The row as it will be serialized, plus the separating comma.
        let size = serde_json::to_vec(&row).map_or(u64::MAX, |v| v.len() as u64 + 1);
        if self.bytes.saturating_add(size) > self.max_bytes {
            self.truncated = true;
            return false;
        }
        self.bytes += size;
        self.rows.push(row);
        true
    }

    /// Whether a cap was reached.
    pub fn full(&self) -> bool {
        self.truncated
    }

    /// How many rows were kept.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Marks the result truncated (the platform said more rows exist).
    pub fn mark_truncated(&mut self) {
        self.truncated = true;
    }

    pub fn finish(self, limits: &Limits) -> QueryResult {
        QueryResult {
            columns: self.columns,
            rows: self.rows,
            truncated: self.truncated,
            elapsed_ms: u64::try_from(limits.start.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// What a platform module needs for one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub client: &'a reqwest::Client,
    pub egress: &'a EgressPolicy,
    pub target: &'a DataTarget<'a>,
    pub limits: Limits,
}

impl Ctx<'_> {
    /// A non-empty string setting.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.target
            .settings
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// A setting the platform cannot work without.
    pub fn required_setting(&self, name: &str) -> Result<&str, ToolError> {
        self.setting(name).ok_or_else(|| {
            ToolError::NotConnected(format!(
                "the {} connection has no `{name}` setting; an admin must configure settings.{name} for it",
                self.target.platform.display_name()
            ))
        })
    }
}

/// Runs a data operation on the target's platform under `policy`.
///
/// Statements are checked before anything leaves the process: a write on a
/// read-only connection, several statements, or malformed parameters are
/// refused without a round trip. A 401 (or a PostgreSQL authentication
/// failure) is [`DataError::Unauthorized`], so the caller can refresh an
/// OAuth token and retry once.
#[instrument(skip_all, fields(platform = ?target.platform))]
pub async fn run(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    target: &DataTarget<'_>,
    policy: &DataPolicy,
    op: DataOp,
) -> Result<QueryResult, DataError> {
    let policy = policy.clamped();
    let limits = match &op {
        DataOp::Query(q) => {
            validate_request(q, target.platform, &policy)?;
            Limits::new(&policy, q.max_rows, q.timeout_ms)
        }
        DataOp::ListDatabases => Limits::new(&policy, None, None),
        DataOp::ListSchemas { database } => {
            check_name("database", database.as_deref())?;
            Limits::new(&policy, None, None)
        }
        DataOp::ListTables { database, schema } => {
            check_name("database", database.as_deref())?;
            check_name("schema", schema.as_deref())?;
            Limits::new(&policy, None, None)
        }
        DataOp::DescribeTable {
            database,
            schema,
            table,
        } => {
            check_name("database", database.as_deref())?;
            check_name("schema", schema.as_deref())?;
            if table.trim().is_empty() {
                return Err(ToolError::InvalidParams(
                    "params.table is required: the table or view to describe".into(),
                )
                .into());
            }
            check_name("table", Some(table))?;
            Limits::new(&policy, None, None)
        }
    };
    let ctx = Ctx {
        client,
        egress,
        target,
        limits,
    };
    match target.platform {
        Platform::Postgres => postgres::run(&ctx, op).await,
        Platform::Snowflake => snowflake::run(&ctx, op).await,
        Platform::Databricks => databricks::run(&ctx, op).await,
        Platform::BigQuery => bigquery::run(&ctx, op).await,
    }
}

/// A listing operation's database, schema or table name: 1 to
/// [`MAX_NAME_BYTES`] bytes, no control characters.
fn check_name(field: &str, name: Option<&str>) -> Result<(), ToolError> {
    let Some(name) = name else { return Ok(()) };
    if name.trim().is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(ToolError::InvalidParams(format!(
            "params.{field} must be 1 to {MAX_NAME_BYTES} bytes long (leave it out for the connection's default)"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ToolError::InvalidParams(format!(
            "params.{field} cannot contain control characters"
        )));
    }
    Ok(())
}

/// Everything about a query that can be refused without a round trip.
fn validate_request(
    q: &QueryRequest,
    platform: Platform,
    policy: &DataPolicy,
) -> Result<(), ToolError> {
    if q.sql.trim().is_empty() {
        return Err(ToolError::InvalidParams(
            "params.sql is empty; pass one SQL statement".into(),
        ));
    }
    if q.sql.len() > MAX_SQL_BYTES {
        return Err(ToolError::InvalidParams(format!(
            "params.sql is {} bytes; at most {MAX_SQL_BYTES} are accepted",
            q.sql.len()
        )));
    }
    if q.max_rows == Some(0) {
        return Err(ToolError::InvalidParams(
            "params.maxRows must be at least 1".into(),
        ));
    }
    if q.timeout_ms == Some(0) {
        return Err(ToolError::InvalidParams(
            "params.timeoutMs must be at least 1".into(),
        ));
    }
    if q.params.len() > MAX_PARAMS {
        return Err(ToolError::InvalidParams(format!(
            "params.params has {} values; at most {MAX_PARAMS} can be bound",
            q.params.len()
        )));
    }
    let mut total = 0usize;
    for (i, p) in q.params.iter().enumerate() {
        match p {
            Value::Null | Value::Bool(_) | Value::Number(_) => total += 8,
            Value::String(s) => total += s.len(),
            Value::Array(_) | Value::Object(_) => {
                return Err(ToolError::InvalidParams(format!(
                    "params.params[{i}] is {}; bind strings, numbers, booleans or null (pass JSON as a string)",
                    if p.is_array() {
                        "an array"
                    } else {
                        "an object"
                    }
                )));
            }
        }
    }
    if total > MAX_PARAMS_BYTES {
        return Err(ToolError::InvalidParams(format!(
            "params.params hold {total} bytes; at most {MAX_PARAMS_BYTES} can be bound"
        )));
    }
    sql::check(&q.sql, platform.dialect(), policy.read_only)
}

/// A JSON parameter as a plain scalar.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'a str),
}

impl<'a> Scalar<'a> {
    /// Classifies `params[index]`; numbers that are integers but do not fit
    /// in an `i64` are refused (pass them as strings).
    pub fn of(index: usize, v: &'a Value) -> Result<Self, ToolError> {
        Ok(match v {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::String(s) => Scalar::Text(s),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Scalar::Int(i)
                } else if n.is_u64() {
                    return Err(ToolError::InvalidParams(format!(
                        "params.params[{index}] ({n}) does not fit in a 64-bit integer; pass it as a string"
                    )));
                } else {
                    Scalar::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::Array(_) | Value::Object(_) => {
                return Err(ToolError::InvalidParams(format!(
                    "params.params[{index}] must be a string, number, boolean or null"
                )));
            }
        })
    }
}

/// Sets `key` in a JSON object body (a no-op on anything else).
pub(crate) fn set(body: &mut Value, key: &str, value: Value) {
    if let Some(object) = body.as_object_mut() {
        object.insert(key.to_string(), value);
    }
}

/// Keeps only the named columns of a result (case-insensitively), renamed
/// to the given names: `SHOW DATABASES` answers many columns, the listing
/// tools one.
pub(crate) fn project(
    result: QueryResult,
    wanted: &[(&str, &str)],
) -> Result<QueryResult, ToolError> {
    let mut indices = Vec::new();
    for (source, _) in wanted {
        let i = result
            .columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(source))
            .ok_or_else(|| {
                ToolError::Unavailable(format!("the platform's answer has no `{source}` column"))
            })?;
        indices.push(i);
    }
    let columns = indices
        .iter()
        .zip(wanted)
        .map(|(&i, (_, name))| {
            let r#type = result
                .columns
                .get(i)
                .map_or_else(|| "string".to_string(), |c| c.r#type.clone());
            Column::new(*name, r#type)
        })
        .collect();
    let rows = result
        .rows
        .into_iter()
        .map(|row| {
            indices
                .iter()
                .map(|&i| row.get(i).cloned().unwrap_or(Value::Null))
                .collect()
        })
        .collect();
    Ok(QueryResult {
        columns,
        rows,
        truncated: result.truncated,
        elapsed_ms: result.elapsed_ms,
    })
}

/// The error for a `DescribeTable` that found no columns.
pub(crate) fn no_such_table(platform: Platform, schema: Option<&str>, table: &str) -> ToolError {
    let prefix = match platform {
        Platform::Postgres => "POSTGRES",
        Platform::Snowflake => "SNOWFLAKE",
        Platform::Databricks => "DATABRICKS",
        Platform::BigQuery => "GOOGLEBIGQUERY",
    };
    let place = schema.map_or_else(
        || "the connection's current schema".to_string(),
        |s| format!("schema `{s}`"),
    );
    ToolError::InvalidParams(format!(
        "{} has no table or view `{table}` in {place} that this connection can see; list them with {prefix}_LIST_TABLES",
        platform.display_name()
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policy_defaults_bounds_and_serde() {
        let p: DataPolicy = serde_json::from_value(json!({})).unwrap();
        assert_eq!(p, DataPolicy::default());
        assert!(p.read_only);
        let p: DataPolicy =
            serde_json::from_value(json!({"readOnly": false, "maxRows": 5})).unwrap();
        assert!(!p.read_only);
        assert_eq!(p.max_rows, 5);
        assert_eq!(p.statement_timeout_ms, 30_000);
        assert!(serde_json::from_value::<DataPolicy>(json!({"maxrows": 5})).is_err());
        let err = DataPolicy {
            max_rows: 200_000,
            ..DataPolicy::default()
        }
        .checked()
        .unwrap_err();
        assert!(err.contains("maxRows") && err.contains("100000"), "{err}");
        let err = DataPolicy {
            statement_timeout_ms: 0,
            ..DataPolicy::default()
        }
        .checked()
        .unwrap_err();
        assert!(err.contains("statementTimeoutMs"), "{err}");
        let c = DataPolicy {
            read_only: false,
            max_rows: 0,
            max_bytes: u64::MAX,
            statement_timeout_ms: u64::MAX,
        }
        .clamped();
        assert_eq!(
            (c.max_rows, c.max_bytes, c.statement_timeout_ms),
            (1, MAX_BYTES_LIMIT, MAX_TIMEOUT_MS)
        );
        assert!(!c.read_only);
    }

    #[test]
    fn request_caps_only_lower_the_policy() {
        let policy = DataPolicy::default();
        let l = Limits::new(&policy, Some(5), Some(100));
        assert_eq!(l.max_rows, 5);
        assert_eq!(l.timeout, Duration::from_millis(100));
        let l = Limits::new(&policy, Some(5_000_000), Some(5_000_000));
        assert_eq!(l.max_rows, 1000);
        assert_eq!(l.timeout, Duration::from_millis(30_000));
    }

    #[test]
    fn results_serialize_in_the_documented_shape() {
        let r = QueryResult {
            columns: vec![Column::new("id", "integer")],
            rows: vec![vec![json!(1)]],
            truncated: false,
            elapsed_ms: 3,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"columns": [{"name": "id", "type": "integer"}], "rows": [[1]], "truncated": false, "elapsedMs": 3})
        );
        assert_eq!(
            serde_json::to_value(Platform::BigQuery).unwrap(),
            json!("bigquery")
        );
    }

    #[test]
    fn collector_enforces_rows_and_bytes() {
        let policy = DataPolicy {
            max_rows: 2,
            ..DataPolicy::default()
        };
        let l = Limits::new(&policy, None, None);
        let mut c = Collector::new(&l);
        assert!(c.push(vec![json!(1)]));
        assert!(c.push(vec![json!(2)]));
        assert!(!c.push(vec![json!(3)]));
        let r = c.finish(&l);
        assert_eq!(r.rows.len(), 2);
        assert!(r.truncated);

        let policy = DataPolicy {
            max_bytes: 1024,
            ..DataPolicy::default()
        };
        let l = Limits::new(&policy, None, None);
        let mut c = Collector::new(&l);
        let row = vec![json!("x".repeat(300))];
        assert!(c.push(row.clone()));
        assert!(c.push(row.clone()));
        assert!(c.push(row.clone()));
        assert!(!c.push(row));
        let r = c.finish(&l);
        assert_eq!(r.rows.len(), 3);
        assert!(r.truncated);
        assert!(serde_json::to_vec(&r.rows).unwrap().len() <= 1024);
    }

    #[test]
    fn requests_are_validated_before_anything_is_sent() {
        let policy = DataPolicy::default();
        let q = |sql: &str, params: Vec<Value>| QueryRequest {
            sql: sql.into(),
            params,
            ..QueryRequest::default()
        };
        assert!(validate_request(&q("select 1", vec![]), Platform::Postgres, &policy).is_ok());
        assert!(matches!(
            validate_request(&q("  ", vec![]), Platform::Postgres, &policy),
            Err(ToolError::InvalidParams(_))
        ));
        let err = validate_request(
            &q("select $1", vec![json!({"a": 1})]),
            Platform::Postgres,
            &policy,
        )
        .unwrap_err();
        assert!(err.to_string().contains("params[0]"), "{err}");
        assert!(matches!(
            validate_request(&q("delete from t", vec![]), Platform::Postgres, &policy),
            Err(ToolError::Denied(_))
        ));
        assert!(matches!(
            Scalar::of(0, &json!(u64::MAX)),
            Err(ToolError::InvalidParams(_))
        ));
        assert_eq!(Scalar::of(0, &json!(-3)).unwrap(), Scalar::Int(-3));
    }

    #[test]
    fn listing_names_are_bounded() {
        assert!(check_name("schema", None).is_ok());
        assert!(check_name("schema", Some("sales")).is_ok());
        assert!(check_name("schema", Some(" ")).is_err());
        assert!(check_name("table", Some("a\u{0}b")).is_err());
        let err = check_name("database", Some(&"x".repeat(256))).unwrap_err();
        assert!(err.to_string().contains("params.database"), "{err}");
    }

    #[test]
    fn projection_keeps_and_renames_columns() {
        let r = QueryResult {
            columns: vec![
                Column::new("created_on", "timestamp"),
                Column::new("NAME", "string"),
            ],
            rows: vec![vec![json!("t"), json!("DB1")]],
            truncated: true,
            elapsed_ms: 1,
        };
        let p = project(r, &[("name", "name")]).unwrap();
        assert_eq!(p.columns, vec![Column::new("name", "string")]);
        assert_eq!(p.rows, vec![vec![json!("DB1")]]);
        assert!(p.truncated);
    }
}
