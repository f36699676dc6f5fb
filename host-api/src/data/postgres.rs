//! PostgreSQL through its wire protocol (tokio-postgres).
//!
//! Each call opens its own connection (no pool: a data tool call is rare
//! next to the connect cost, and nothing outlives the call) and runs in one
//! transaction: `READ ONLY` unless the admin allowed writes, with
//! `statement_timeout` set to what is left of the deadline. The statement
//! is prepared first, so each JSON parameter is checked against the type
//! PostgreSQL inferred for its `$n` placeholder before anything runs; the
//! values travel in text format and PostgreSQL parses them itself. Rows are
//! read from a portal limited to the row cap plus one, and reading stops at
//! the byte cap.
//!
//! Where the server may be: like the HTTP platforms, a connection is only
//! made to public addresses over TLS unless the runtime allows private
//! upstreams (`--allow-insecure-upstreams`): the host name is resolved and
//! checked here and the connection pinned to the checked address
//! (`hostaddr`), `sslmode=disable` is refused and `prefer` becomes
//! `require`. Certificates are verified against the Web PKI roots
//! (webpki-roots) and the host name, so a server with a private CA is
//! refused; `sslmode=require` is therefore what libpq calls `verify-full`.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use futures_util::TryStreamExt as _;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_postgres::types::{Format, FromSql, IsNull, Kind, ToSql, Type};
use tokio_postgres::{Client, Config, Socket, Transaction};

use super::{
    Collector, Column, Ctx, DataError, DataOp, Limits, Platform, QueryResult, Scalar,
    no_such_table, value,
};
use crate::egress::is_internal;
use crate::error::ToolError;

/// Longest a connection may take to open (less when the deadline is
/// nearer).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed past the deadline for the server's own timeout to arrive
/// before the client gives up on the connection.
const CLIENT_GRACE: Duration = Duration::from_secs(2);
/// Deepest nesting of arrays and records decoded.
const MAX_DEPTH: usize = 16;
/// Largest array dimension product accepted from the server.
const MAX_ARRAY_ELEMENTS: usize = 1_000_000;

const LIST_DATABASES: &str = "SELECT datname::text AS name FROM pg_catalog.pg_database \
     WHERE datallowconn AND NOT datistemplate AND has_database_privilege(datname, 'CONNECT') \
     ORDER BY 1";
const LIST_SCHEMAS: &str = "SELECT schema_name::text AS name FROM information_schema.schemata \
     WHERE schema_name NOT IN ('pg_catalog', 'information_schema') AND schema_name NOT LIKE 'pg\\_%' \
     ORDER BY 1";
const LIST_TABLES: &str = "SELECT table_schema::text AS schema, table_name::text AS name, \
     CASE table_type WHEN 'BASE TABLE' THEN 'table' WHEN 'VIEW' THEN 'view' \
     WHEN 'FOREIGN' THEN 'foreign table' ELSE lower(table_type) END AS type \
     FROM information_schema.tables \
     WHERE CASE WHEN $1::text IS NULL \
     THEN table_schema NOT IN ('pg_catalog', 'information_schema') \
     ELSE lower(table_schema) = lower($1::text) END \
     ORDER BY 1, 2";
const DESCRIBE_TABLE: &str = "SELECT column_name::text AS name, \
     CASE WHEN data_type IN ('USER-DEFINED', 'ARRAY') THEN udt_name::text ELSE data_type::text END AS type, \
     is_nullable = 'YES' AS nullable \
     FROM information_schema.columns \
     WHERE lower(table_schema) = lower(coalesce($1::text, current_schema())) \
     AND lower(table_name) = lower($2::text) \
     ORDER BY ordinal_position";

pub(super) async fn run(ctx: &Ctx<'_>, op: DataOp) -> Result<QueryResult, DataError> {
    let limits = ctx.limits;
    let (config, scrub) = config(ctx).await?;
    let work = async {
        let mut client = connect(&config, &scrub).await?;
        let tx = begin(&mut client, &limits, &scrub).await?;
        let result = match op {
            DataOp::Query(q) => fetch(&tx, &q.sql, &q.params, &limits, &scrub).await?,
            DataOp::ListDatabases => fetch(&tx, LIST_DATABASES, &[], &limits, &scrub).await?,
            DataOp::ListSchemas { database } => {
                same_database(&tx, database.as_deref(), &scrub).await?;
                fetch(&tx, LIST_SCHEMAS, &[], &limits, &scrub).await?
            }
            DataOp::ListTables { database, schema } => {
                same_database(&tx, database.as_deref(), &scrub).await?;
                let params = [schema.map_or(Value::Null, Value::String)];
                fetch(&tx, LIST_TABLES, &params, &limits, &scrub).await?
            }
            DataOp::DescribeTable {
                database,
                schema,
                table,
            } => {
                same_database(&tx, database.as_deref(), &scrub).await?;
                let params = [
                    schema.clone().map_or(Value::Null, Value::String),
                    Value::String(table.clone()),
                ];
                let result = fetch(&tx, DESCRIBE_TABLE, &params, &limits, &scrub).await?;
                if result.rows.is_empty() {
                    return Err(no_such_table(Platform::Postgres, schema.as_deref(), &table).into());
                }
                result
            }
        };
        let end = if limits.read_only {
            tx.rollback().await
        } else {
            tx.commit().await
        };
        end.map_err(|e| pg_error(&e, &limits, &scrub))?;
        Ok(result)
    };
    match tokio::time::timeout(limits.remaining() + CLIENT_GRACE, work).await {
        Ok(result) => result,
        // The server's statement_timeout should have answered first; the
        // connection is dropped with the future, which ends the session.
        Err(_) => Err(limits.timeout_error(Platform::Postgres).into()),
    }
}

/// Redacts the connection string's password (and the string itself) from
/// anything shown.
#[derive(Debug)]
struct Scrub {
    secrets: Vec<String>,
}

impl Scrub {
    fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if s.len() >= 4 {
                out = out.replace(s.as_str(), "[redacted]");
            }
        }
        out
    }
}

/// Parses the connection string and applies the egress rules.
async fn config(ctx: &Ctx<'_>) -> Result<(Config, Scrub), DataError> {
    let text = ctx.target.credential.expose();
    let mut scrub = Scrub {
        secrets: vec![text.to_string()],
    };
    let mut config: Config = text.parse().map_err(|e: tokio_postgres::Error| {
        ToolError::NotConnected(format!(
            "the PostgreSQL connection string is not valid ({}); an admin must configure one like postgres://user:password@host:5432/db?sslmode=require",
            scrub.apply(&e.to_string())
        ))
    })?;
    if let Some(p) = config.get_password() {
        let p = String::from_utf8_lossy(p).to_string();
        // Percent-encoded in a URL, as written in the string.
        let encoded = percent_encoding::utf8_percent_encode(&p, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
        scrub.secrets.push(p);
        scrub.secrets.push(encoded);
    }
    let remaining = ctx.limits.remaining();
    config.connect_timeout(
        CONNECT_TIMEOUT
            .min(remaining)
            .max(Duration::from_millis(100)),
    );
    config.application_name("runtime data connector");
    if ctx.egress.allow_private {
        return Ok((config, scrub));
    }
    match config.get_ssl_mode() {
        SslMode::Disable => {
            return Err(ToolError::Denied(
                "sslmode=disable is refused: PostgreSQL credentials and data travel only over TLS; use sslmode=require (or start the runtime with --allow-insecure-upstreams for a database on this machine)".into(),
            )
            .into());
        }
        _ => {
            config.ssl_mode(SslMode::Require);
        }
    }
    let refuse = |what: String| -> DataError {
        ToolError::Denied(format!(
            "{what} is a private, loopback or link-local address; credentials are not sent there (start the runtime with --allow-insecure-upstreams for local databases)"
        ))
        .into()
    };
    if !config.get_hostaddrs().is_empty() {
        for ip in config.get_hostaddrs() {
            if is_internal(*ip) {
                return Err(refuse(ip.to_string()));
            }
        }
        return Ok((config, scrub));
    }
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let hosts: Vec<Host> = config.get_hosts().to_vec();
    for host in hosts {
        let name = match host {
            Host::Tcp(name) => name,
            #[cfg(unix)]
            Host::Unix(_) => {
                return Err(ToolError::Denied(
                    "Unix-socket PostgreSQL hosts are refused; name the server by host name (or start the runtime with --allow-insecure-upstreams)".into(),
                )
                .into());
            }
        };
        let addrs: Vec<IpAddr> = match name.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|_| {
                    ToolError::Unavailable(format!("the PostgreSQL host {name} did not resolve"))
                })?
                .map(|a| a.ip())
                .collect(),
        };
        // Pinned: the connection goes to the address that was checked.
        match addrs.iter().find(|ip| !is_internal(**ip)) {
            Some(ip) => {
                config.hostaddr(*ip);
            }
            None => return Err(refuse(name)),
        }
    }
    Ok((config, scrub))
}

/// Opens the connection and drives it in the background.
async fn connect(config: &Config, scrub: &Scrub) -> Result<Client, DataError> {
    let tls = MakeRustls::new().map_err(|e| {
        ToolError::Unavailable(format!("TLS could not be set up for PostgreSQL: {e}"))
    })?;
    let (client, connection) = config.connect(tls).await.map_err(|e| {
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                return DataError::Unauthorized;
            }
            if *code == SqlState::INVALID_CATALOG_NAME {
                return ToolError::NotConnected(format!(
                    "PostgreSQL: {}; an admin must fix the database in the connection string",
                    scrub.apply(db.message())
                ))
                .into();
            }
        }
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            _ => "the configured host".into(),
        };
        let text = scrub.apply(&with_causes(&e));
        let fix = if text.contains("certificate") {
            "; the server's certificate must chain to a public CA (the Web PKI roots) and name the host in the connection string"
        } else {
            ""
        };
        ToolError::Unavailable(format!(
            "could not connect to PostgreSQL at {host}: {text}{fix}"
        ))
        .into()
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Starts the call's transaction: read-only when the policy says so, the
/// statement timeout set to what is left, standard strings pinned (the
/// classifier reads `'…'` that way).
async fn begin<'c>(
    client: &'c mut Client,
    limits: &Limits,
    scrub: &Scrub,
) -> Result<Transaction<'c>, DataError> {
    let tx = client
        .build_transaction()
        .read_only(limits.read_only)
        .start()
        .await
        .map_err(|e| pg_error(&e, limits, scrub))?;
    let ms = u64::try_from(limits.remaining().as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {ms}; SET LOCAL standard_conforming_strings = on"
    ))
    .await
    .map_err(|e| pg_error(&e, limits, scrub))?;
    Ok(tx)
}

/// Refuses listing another database than the connected one (PostgreSQL
/// sees only its own).
async fn same_database(
    tx: &Transaction<'_>,
    database: Option<&str>,
    scrub: &Scrub,
) -> Result<(), DataError> {
    let Some(wanted) = database else {
        return Ok(());
    };
    let row = tx
        .query_one("SELECT current_database()::text", &[])
        .await
        .map_err(|e| {
            ToolError::Unavailable(format!("PostgreSQL: {}", scrub.apply(&e.to_string())))
        })?;
    let current: String = row.try_get(0).map_err(|e| {
        ToolError::Unavailable(format!("PostgreSQL: {}", scrub.apply(&e.to_string())))
    })?;
    if current.eq_ignore_ascii_case(wanted) {
        return Ok(());
    }
    Err(ToolError::InvalidParams(format!(
        "this PostgreSQL connection is to database `{current}` and sees no other; leave params.database out, or configure a connection to `{wanted}`"
    ))
    .into())
}

/// Prepares, binds and reads a statement under the caps.
async fn fetch(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[Value],
    limits: &Limits,
    scrub: &Scrub,
) -> Result<QueryResult, DataError> {
    let statement = tx
        .prepare(sql)
        .await
        .map_err(|e| pg_error(&e, limits, scrub))?;
    let types = statement.params();
    if types.len() != params.len() {
        return Err(ToolError::InvalidParams(format!(
            "params.sql has {} placeholder(s) ($1 … ${}) but {} value(s) were given in params",
            types.len(),
            types.len(),
            params.len()
        ))
        .into());
    }
    let mut bound = Vec::with_capacity(params.len());
    for (i, (v, ty)) in params.iter().zip(types).enumerate() {
        bound.push(to_param(i, v, ty)?);
    }
    let columns: Vec<(String, PgKind)> = statement
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), pg_kind(c.type_(), 0)))
        .collect();
    for (name, kind) in &columns {
        if let Some(t) = kind.unsupported() {
            return Err(ToolError::InvalidParams(format!(
                "column `{name}` has type `{t}`, which this tool cannot return; cast it in the query (for example {name}::text)"
            ))
            .into());
        }
    }
    let mut collector = Collector::new(limits);
    collector.set_columns(
        columns
            .iter()
            .map(|(name, kind)| Column::new(name.as_str(), kind.portable()))
            .collect(),
    );
    let portal = tx
        .bind_raw(&statement, bound.iter())
        .await
        .map_err(|e| pg_error(&e, limits, scrub))?;
    let limit = i32::try_from(limits.max_rows.saturating_add(1)).unwrap_or(i32::MAX);
    let rows = tx
        .query_portal_raw(&portal, limit)
        .await
        .map_err(|e| pg_error(&e, limits, scrub))?;
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| pg_error(&e, limits, scrub))?
    {
        let mut values = Vec::with_capacity(columns.len());
        for (i, (name, kind)) in columns.iter().enumerate() {
            let Raw(bytes) = row.try_get::<_, Raw<'_>>(i).map_err(|_| {
                ToolError::Unavailable(format!("PostgreSQL sent no value for column `{name}`"))
            })?;
            let v = match bytes {
                None => Value::Null,
                Some(b) => decode(kind, b, 0).map_err(|what| {
                    ToolError::Unavailable(format!(
                        "PostgreSQL sent a malformed value for column `{name}` ({what})"
                    ))
                })?,
            };
            values.push(v);
        }
        if !collector.push(values) {
            break;
        }
    }
    Ok(collector.finish(limits))
}

/// Maps a driver error to what the function sees. Messages are the
/// server's (which never hold the password), scrubbed all the same.
fn pg_error(e: &tokio_postgres::Error, limits: &Limits, scrub: &Scrub) -> DataError {
    let Some(db) = e.as_db_error() else {
        if e.is_closed() {
            return ToolError::Unavailable(
                "the PostgreSQL connection closed during the call; try again".into(),
            )
            .into();
        }
        return ToolError::Unavailable(format!("PostgreSQL: {}", scrub.apply(&with_causes(e))))
            .into();
    };
    let mut message = scrub.apply(db.message());
    if let Some(detail) = db.detail() {
        message.push_str(&format!(" ({})", scrub.apply(detail)));
    }
    if let Some(hint) = db.hint() {
        message.push_str(&format!("; hint: {}", scrub.apply(hint)));
    }
    let code = db.code();
    if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        return ToolError::Denied(format!(
            "the connection is read-only and PostgreSQL refused a write ({message}); run a query that does not write, or an admin can allow writes with dataPolicy.readOnly = false"
        ))
        .into();
    }
    if *code == SqlState::QUERY_CANCELED {
        return limits.timeout_error(Platform::Postgres).into();
    }
    if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    {
        return DataError::Unauthorized;
    }
    if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        return ToolError::Denied(format!(
            "PostgreSQL refused: {message}; the connection's role needs the privilege"
        ))
        .into();
    }
    let class = code.code().get(..2).unwrap_or("");
    match class {
        // Connection, resources, operator intervention, system errors.
        "08" | "53" | "57" | "58" | "XX" => {
            ToolError::Unavailable(format!("PostgreSQL: {message}")).into()
        }
        _ => {
            ToolError::InvalidParams(format!("PostgreSQL rejected the statement: {message}")).into()
        }
    }
}

/// An error's text followed by its causes' (the driver's own text leaves
/// out why a TLS handshake or connection failed).
fn with_causes(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

/// A parameter value in PostgreSQL's text format (the server parses it as
/// the placeholder's type), or NULL.
#[derive(Debug)]
enum PgParam {
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
fn to_param(index: usize, v: &Value, ty: &Type) -> Result<PgParam, ToolError> {
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

/// A column's bytes exactly as PostgreSQL sent them (binary format).
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

/// What a PostgreSQL type is, for decoding and naming.
#[derive(Debug, Clone, PartialEq)]
enum PgKind {
    Bool,
    /// Signed integers of 16, 32 or 64 bits; 33 for `oid` (unsigned 32).
    Int(u8),
    Float,
    Float4,
    Numeric,
    Text,
    /// `"char"`: one byte.
    Char,
    Bytea,
    Timestamp,
    Timestamptz,
    Date,
    Time,
    Timetz,
    Interval,
    Json,
    Jsonb,
    Uuid,
    Inet,
    Array(Box<PgKind>),
    Composite(Vec<(String, PgKind)>),
    /// An anonymous `record`: each field names its own type.
    Record,
    /// `void` (functions such as `pg_sleep`): always null.
    Void,
    Unsupported(String),
}

impl PgKind {
    fn portable(&self) -> String {
        match self {
            PgKind::Bool => "boolean".into(),
            PgKind::Int(_) => "integer".into(),
            PgKind::Float | PgKind::Float4 => "number".into(),
            PgKind::Numeric => "decimal".into(),
            PgKind::Text | PgKind::Char => "string".into(),
            PgKind::Bytea => "bytes".into(),
            PgKind::Timestamp => "datetime".into(),
            PgKind::Timestamptz => "timestamp".into(),
            PgKind::Date => "date".into(),
            PgKind::Time | PgKind::Timetz => "time".into(),
            PgKind::Interval => "interval".into(),
            PgKind::Json | PgKind::Jsonb => "json".into(),
            PgKind::Uuid => "uuid".into(),
            PgKind::Inet => "inet".into(),
            PgKind::Array(_) | PgKind::Composite(_) | PgKind::Record => "json".into(),
            PgKind::Void => "void".into(),
            PgKind::Unsupported(name) => name.to_ascii_lowercase(),
        }
    }

    /// The name of a type inside this one that cannot be decoded.
    fn unsupported(&self) -> Option<&str> {
        match self {
            PgKind::Unsupported(name) => Some(name),
            PgKind::Array(inner) => inner.unsupported(),
            PgKind::Composite(fields) => fields.iter().find_map(|(_, k)| k.unsupported()),
            _ => None,
        }
    }
}

/// Classifies a type by OID (built-ins), then by kind and name.
fn pg_kind(ty: &Type, depth: usize) -> PgKind {
    if depth > MAX_DEPTH {
        return PgKind::Unsupported(ty.name().to_string());
    }
    match ty.kind() {
        Kind::Domain(base) => return pg_kind(base, depth + 1),
        Kind::Enum(_) => return PgKind::Text,
        Kind::Array(elem) => return PgKind::Array(Box::new(pg_kind(elem, depth + 1))),
        Kind::Composite(fields) => {
            return PgKind::Composite(
                fields
                    .iter()
                    .map(|f| (f.name().to_string(), pg_kind(f.type_(), depth + 1)))
                    .collect(),
            );
        }
        _ => {}
    }
    match ty.oid() {
        16 => PgKind::Bool,
        17 => PgKind::Bytea,
        18 => PgKind::Char,
        // name, text, bpchar, varchar, unknown, xml
        19 | 25 | 1042 | 1043 | 705 | 142 => PgKind::Text,
        20 => PgKind::Int(64),
        21 => PgKind::Int(16),
        23 => PgKind::Int(32),
        26 => PgKind::Int(33),
        114 => PgKind::Json,
        3802 => PgKind::Jsonb,
        700 => PgKind::Float4,
        701 => PgKind::Float,
        1700 => PgKind::Numeric,
        1082 => PgKind::Date,
        1083 => PgKind::Time,
        1114 => PgKind::Timestamp,
        1184 => PgKind::Timestamptz,
        1186 => PgKind::Interval,
        1266 => PgKind::Timetz,
        2950 => PgKind::Uuid,
        // inet, cidr
        869 | 650 => PgKind::Inet,
        2249 => PgKind::Record,
        2278 => PgKind::Void,
        // Extension text types send their text.
        _ if matches!(ty.name(), "citext" | "ltree" | "lquery") => PgKind::Text,
        _ => PgKind::Unsupported(ty.name().to_string()),
    }
}

/// Reads big-endian numbers off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("too short".into());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N)?
            .try_into()
            .map_err(|_| "too short".to_string())
    }

    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    /// A length-prefixed value (`-1` is NULL).
    fn value(&mut self) -> Result<Option<&'a [u8]>, String> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| "bad length".to_string())?;
        self.take(len).map(Some)
    }
}

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;

/// Decodes one value in PostgreSQL's binary format.
fn decode(kind: &PgKind, raw: &[u8], depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("nested too deeply".into());
    }
    let mut r = Reader(raw);
    let text = || String::from_utf8_lossy(raw).into_owned();
    Ok(match kind {
        PgKind::Bool => Value::Bool(r.u8()? != 0),
        PgKind::Int(16) => Value::from(r.i16()?),
        PgKind::Int(32) => Value::from(r.i32()?),
        PgKind::Int(33) => Value::from(r.u32()?),
        PgKind::Int(_) => Value::from(r.i64()?),
        PgKind::Float4 => {
            let f = f32::from_be_bytes(r.array()?);
            // Through its shortest text, so 1.1f32 stays 1.1.
            value::float(&f.to_string())
        }
        PgKind::Float => value::float_value(f64::from_be_bytes(r.array()?)),
        PgKind::Numeric => Value::String(numeric(&mut r)?),
        PgKind::Text => Value::String(text()),
        PgKind::Char => Value::String(char::from(r.u8()?).to_string()),
        PgKind::Bytea => Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
        PgKind::Timestamp | PgKind::Timestamptz => {
            let micros = r.i64()?;
            let infinite = match micros {
                i64::MAX => Some("infinity"),
                i64::MIN => Some("-infinity"),
                _ => None,
            };
            if let Some(inf) = infinite {
                return Ok(Value::from(inf));
            }
            let unix = micros
                .checked_add(PG_EPOCH_MICROS)
                .ok_or("timestamp out of range")?;
            let secs = unix.div_euclid(1_000_000);
            let nanos = u32::try_from(unix.rem_euclid(1_000_000) * 1000)
                .map_err(|_| "timestamp out of range".to_string())?;
            let text = if *kind == PgKind::Timestamptz {
                value::instant(secs, nanos, 0)
            } else {
                value::naive_from_epoch(secs, nanos)
            };
            Value::String(text.ok_or("timestamp out of range")?)
        }
        PgKind::Date => match r.i32()? {
            i32::MAX => Value::from("infinity"),
            i32::MIN => Value::from("-infinity"),
            days => Value::String(
                value::date_from_days(i64::from(days) + PG_EPOCH_DAYS)
                    .ok_or("date out of range")?,
            ),
        },
        PgKind::Time => Value::String(time_of_day(r.i64()?)?),
        PgKind::Timetz => {
            let time = time_of_day(r.i64()?)?;
            // Seconds west of UTC.
            let east = -r.i32()?;
            let sign = if east < 0 { '-' } else { '+' };
            let abs = east.unsigned_abs();
            Value::String(format!(
                "{time}{sign}{:02}:{:02}",
                abs / 3600,
                abs % 3600 / 60
            ))
        }
        PgKind::Interval => {
            let micros = r.i64()?;
            let days = r.i32()?;
            let months = r.i32()?;
            Value::String(interval(micros, days, months))
        }
        PgKind::Json => value::json_text(&text()),
        PgKind::Jsonb => {
            let version = r.u8()?;
            if version != 1 {
                return Err(format!("jsonb version {version}"));
            }
            value::json_text(&String::from_utf8_lossy(r.0))
        }
        PgKind::Uuid => {
            let b: [u8; 16] = r.array()?;
            let h = hex::encode(b);
            Value::String(format!(
                "{}-{}-{}-{}-{}",
                h.get(0..8).unwrap_or(""),
                h.get(8..12).unwrap_or(""),
                h.get(12..16).unwrap_or(""),
                h.get(16..20).unwrap_or(""),
                h.get(20..32).unwrap_or("")
            ))
        }
        PgKind::Inet => {
            let family = r.u8()?;
            let bits = r.u8()?;
            let is_cidr = r.u8()? != 0;
            let len = r.u8()?;
            let addr: IpAddr = match (family, len) {
                (2, 4) => IpAddr::from(r.array::<4>()?),
                (3, 16) => IpAddr::from(r.array::<16>()?),
                _ => return Err("unknown address family".into()),
            };
            let full = if addr.is_ipv4() { 32 } else { 128 };
            if is_cidr || bits != full {
                Value::String(format!("{addr}/{bits}"))
            } else {
                Value::String(addr.to_string())
            }
        }
        PgKind::Array(elem) => array(elem, &mut r, depth)?,
        PgKind::Composite(fields) => {
            let count = usize::try_from(r.i32()?).map_err(|_| "bad field count".to_string())?;
            let mut object = Map::new();
            for i in 0..count {
                let _oid = r.u32()?;
                let v = r.value()?;
                let (name, k) = fields.get(i).ok_or("more fields than the type has")?;
                let decoded = match v {
                    None => Value::Null,
                    Some(b) => decode(k, b, depth + 1)?,
                };
                object.insert(name.clone(), decoded);
            }
            Value::Object(object)
        }
        PgKind::Record => {
            let count = usize::try_from(r.i32()?).map_err(|_| "bad field count".to_string())?;
            let mut items = Vec::new();
            for _ in 0..count.min(MAX_ARRAY_ELEMENTS) {
                let oid = r.u32()?;
                let v = r.value()?;
                let k = Type::from_oid(oid).map_or_else(
                    || PgKind::Unsupported(oid.to_string()),
                    |t| pg_kind(&t, depth + 1),
                );
                items.push(match (v, &k) {
                    (None, _) => Value::Null,
                    (Some(_), PgKind::Unsupported(name)) => {
                        return Err(format!(
                            "a record field of type {name}; select the fields as columns"
                        ));
                    }
                    (Some(b), _) => decode(&k, b, depth + 1)?,
                });
            }
            Value::Array(items)
        }
        PgKind::Void => Value::Null,
        PgKind::Unsupported(name) => return Err(format!("type {name}")),
    })
}

/// A time of day from microseconds since midnight (`24:00:00` included).
fn time_of_day(micros: i64) -> Result<String, String> {
    if micros == 86_400_000_000 {
        return Ok("24:00:00".into());
    }
    let secs = micros.div_euclid(1_000_000);
    let nanos = u32::try_from(micros.rem_euclid(1_000_000) * 1000)
        .map_err(|_| "time out of range".to_string())?;
    value::time_from_seconds(secs, nanos).ok_or_else(|| "time out of range".into())
}

/// An interval as ISO 8601 (`P1Y2M3DT4H5M6.5S`; each part keeps its sign
/// as PostgreSQL's `iso_8601` style writes it).
fn interval(micros: i64, days: i32, months: i32) -> String {
    let mut out = String::from("P");
    let (years, months) = (months / 12, months % 12);
    if years != 0 {
        out.push_str(&format!("{years}Y"));
    }
    if months != 0 {
        out.push_str(&format!("{months}M"));
    }
    if days != 0 {
        out.push_str(&format!("{days}D"));
    }
    if micros != 0 {
        out.push('T');
        let hours = micros / 3_600_000_000;
        let minutes = micros % 3_600_000_000 / 60_000_000;
        let rest = micros % 60_000_000;
        if hours != 0 {
            out.push_str(&format!("{hours}H"));
        }
        if minutes != 0 {
            out.push_str(&format!("{minutes}M"));
        }
        if rest != 0 {
            let sign = if rest < 0 { "-" } else { "" };
            let abs = rest.unsigned_abs();
            let (s, frac) = (abs / 1_000_000, abs % 1_000_000);
            if frac == 0 {
                out.push_str(&format!("{sign}{s}S"));
            } else {
                let frac = format!("{frac:06}");
                out.push_str(&format!("{sign}{s}.{}S", frac.trim_end_matches('0')));
            }
        }
    }
    if out == "P" {
        out.push_str("T0S");
    }
    out
}

/// `numeric`'s binary form as decimal text.
fn numeric(r: &mut Reader<'_>) -> Result<String, String> {
    let ndigits = usize::try_from(r.i16()?).map_err(|_| "bad digit count".to_string())?;
    let weight = i64::from(r.i16()?);
    let sign = r.u16()?;
    let dscale = usize::from(r.u16()?);
    let mut digits = Vec::with_capacity(ndigits);
    for _ in 0..ndigits {
        digits.push(r.i16()?);
    }
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return Err("bad numeric sign".into()),
    }
    let digit = |k: i64| -> i16 {
        usize::try_from(k)
            .ok()
            .and_then(|k| digits.get(k).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for k in 0..=weight {
            if k == 0 {
                out.push_str(&digit(k).to_string());
            } else {
                out.push_str(&format!("{:04}", digit(k)));
            }
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut k = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(k)));
            k += 1;
        }
        frac.truncate(dscale);
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

/// An array in binary form as nested JSON arrays.
fn array(elem: &PgKind, r: &mut Reader<'_>, depth: usize) -> Result<Value, String> {
    let ndim = usize::try_from(r.i32()?).map_err(|_| "bad dimensions".to_string())?;
    let _has_nulls = r.i32()?;
    let _elem_oid = r.u32()?;
    if ndim == 0 {
        return Ok(Value::Array(Vec::new()));
    }
    if ndim > 6 {
        return Err("more than 6 dimensions".into());
    }
    let mut dims = Vec::with_capacity(ndim);
    let mut total: usize = 1;
    for _ in 0..ndim {
        let len = usize::try_from(r.i32()?).map_err(|_| "bad dimension".to_string())?;
        let _lower_bound = r.i32()?;
        total = total.saturating_mul(len);
        dims.push(len);
    }
    if total > MAX_ARRAY_ELEMENTS {
        return Err("array too large".into());
    }
    let mut items = Vec::with_capacity(total);
    for _ in 0..total {
        items.push(match r.value()? {
            None => Value::Null,
            Some(b) => decode(elem, b, depth + 1)?,
        });
    }
    // Fold the flat list into the dimensions, innermost first.
    for len in dims.iter().skip(1).rev() {
        if *len == 0 {
            break;
        }
        items = items
            .chunks(*len)
            .map(|c| Value::Array(c.to_vec()))
            .collect();
    }
    Ok(Value::Array(items))
}

/// TLS for PostgreSQL connections: rustls with the Web PKI roots, the
/// server name checked.
#[derive(Clone, Debug)]
struct MakeRustls(Arc<rustls::ClientConfig>);

impl MakeRustls {
    fn new() -> Result<Self, rustls::Error> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self(Arc::new(config)))
    }
}

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, Self::Error> {
        let name = rustls::pki_types::ServerName::try_from(domain.to_string())?;
        Ok(RustlsConnect {
            config: self.0.clone(),
            name,
        })
    }
}

#[derive(Debug)]
struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(RustlsStream(tls))
        })
    }
}

#[derive(Debug)]
struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl tokio_postgres::tls::TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding (binding would need the hash the
        // certificate was signed with).
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn numeric_bytes(ndigits: &[i16], weight: i16, sign: u16, dscale: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&i16::try_from(ndigits.len()).unwrap().to_be_bytes());
        b.extend_from_slice(&weight.to_be_bytes());
        b.extend_from_slice(&sign.to_be_bytes());
        b.extend_from_slice(&dscale.to_be_bytes());
        for d in ndigits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numerics_decode_exactly() {
        let n = |digits: &[i16], weight, sign, dscale| {
            numeric(&mut Reader(&numeric_bytes(digits, weight, sign, dscale))).unwrap()
        };
        assert_eq!(n(&[1234, 5678], 0, 0, 4), "1234.5678");
        assert_eq!(n(&[12, 3456, 7800], 1, 0x4000, 2), "-123456.78");
        assert_eq!(n(&[5000], -1, 0, 1), "0.5");
        assert_eq!(n(&[5], -2, 0, 8), "0.00000005");
        assert_eq!(n(&[5], -1, 0, 6), "0.000500");
        assert_eq!(n(&[1], 2, 0, 0), "100000000");
        assert_eq!(n(&[], 0, 0, 2), "0.00");
        assert_eq!(n(&[], 0, 0xC000, 0), "NaN");
    }

    #[test]
    fn intervals_and_times_are_iso() {
        assert_eq!(interval(0, 0, 0), "PT0S");
        assert_eq!(interval(3_723_500_000, 4, 14), "P1Y2M4DT1H2M3.5S");
        assert_eq!(interval(-1_000_000, 0, 0), "PT-1S");
        assert_eq!(time_of_day(86_400_000_000).unwrap(), "24:00:00");
        assert_eq!(time_of_day(45_296_000_001).unwrap(), "12:34:56.000001");
    }

    #[test]
    fn arrays_fold_into_their_dimensions() {
        let mut b = Vec::new();
        for v in [2i32, 0] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&23u32.to_be_bytes());
        for v in [2i32, 1, 2, 1] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        for v in [1i32, 2, 3, 4] {
            b.extend_from_slice(&4i32.to_be_bytes());
            b.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(
            decode(&PgKind::Array(Box::new(PgKind::Int(32))), &b, 0).unwrap(),
            json!([[1, 2], [3, 4]])
        );
        assert!(decode(&PgKind::Int(32), &[0, 1], 0).is_err());
    }

    #[test]
    fn params_are_checked_against_placeholder_types() {
        let text = |r: Result<PgParam, ToolError>| match r.unwrap() {
            PgParam::Text(t) => t,
            PgParam::Null => "NULL".into(),
        };
        assert_eq!(text(to_param(0, &json!(5), &Type::INT4)), "5");
        assert_eq!(text(to_param(0, &json!("7"), &Type::INT8)), "7");
        let err = to_param(2, &json!(70_000), &Type::INT2).unwrap_err();
        assert!(
            err.to_string().contains("params[2]") && err.to_string().contains("$3"),
            "{err}"
        );
        assert!(to_param(0, &json!("abc"), &Type::INT4).is_err());
        assert!(to_param(0, &json!(1.5), &Type::INT4).is_err());
        assert_eq!(text(to_param(0, &json!("12.50"), &Type::NUMERIC)), "12.50");
        assert!(to_param(0, &json!("12,50"), &Type::NUMERIC).is_err());
        assert_eq!(text(to_param(0, &json!(true), &Type::BOOL)), "true");
        assert_eq!(
            text(to_param(
                0,
                &json!("2024-05-01T12:00:00+02:00"),
                &Type::TIMESTAMPTZ
            )),
            "2024-05-01T12:00:00+02:00"
        );
        assert_eq!(
            text(to_param(
                0,
                &json!("2024-05-01T12:00:00+02:00"),
                &Type::TIMESTAMP
            )),
            "2024-05-01T10:00:00"
        );
        assert!(to_param(0, &json!("yesterday"), &Type::DATE).is_err());
        assert_eq!(text(to_param(0, &json!("SGkK"), &Type::BYTEA)), "\\x48690a");
        assert!(to_param(0, &json!("{bad"), &Type::JSONB).is_err());
        assert!(to_param(0, &json!("not-a-uuid"), &Type::UUID).is_err());
        assert!(to_param(0, &json!("a\u{0}b"), &Type::TEXT).is_err());
        assert_eq!(text(to_param(0, &json!(42), &Type::TEXT)), "42");
        assert_eq!(text(to_param(0, &Value::Null, &Type::INT4)), "NULL");
    }
}
