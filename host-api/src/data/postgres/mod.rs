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

use std::net::IpAddr;
use std::time::Duration;

use futures_util::TryStreamExt as _;
use serde_json::Value;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, Transaction};

mod binary;
mod params;

use self::binary::{PgKind, Raw, decode, pg_kind};
use self::params::to_param;
use super::{
    Collector, Column, Ctx, DataError, DataOp, Limits, Platform, QueryResult, no_such_table,
};
use crate::egress::is_internal;
use crate::error::ToolError;
use crate::pg_tls::MakeRustls;

/// Longest a connection may take to open (less when the deadline is
/// nearer).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed past the deadline for the server's own timeout to arrive
/// before the client gives up on the connection.
const CLIENT_GRACE: Duration = Duration::from_secs(2);

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::binary::*;
    use super::params::*;
    use super::*;
    use serde_json::json;
    use tokio_postgres::types::Type;

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
