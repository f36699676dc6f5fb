//! The shared backend: one PostgreSQL database that several `runtime serve`
//! nodes use at once (`--store postgres://...`).
//!
//! Each record kind is a table of JSON documents (secrets inside them
//! arrive already sealed by the broker, with the same associated data as on
//! sled) plus the columns that queries select, order or compare by.
//! Everything that must be atomic across nodes is one statement or one
//! transaction on the server:
//!
//! * compare-and-swap writes are `UPDATE ... WHERE version = $expected`
//!   (or `INSERT ... ON CONFLICT DO NOTHING` for "none stored yet");
//! * a refresh lease is one `INSERT ... ON CONFLICT DO UPDATE ... WHERE`
//!   that takes the row only from its own holder or after it expired, and
//!   bumps the fencing number;
//! * a connect flow is redeemed by `DELETE ... RETURNING`, so of two
//!   callbacks on two nodes exactly one gets it;
//! * a deploy writes the kept version and the current pointer in one
//!   transaction.
//!
//! Every write has committed when its future resolves. The schema is
//! versioned and migrated at start ([`schema`]).

mod feed;
mod schema;

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::*;
use crate::catalog::ConnectorSpec;
use crate::pg_tls::MakeRustls;

/// Connections one node keeps to the database.
const POOL_SIZE: usize = 16;
/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a call waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// The PostgreSQL store.
#[derive(Debug)]
pub struct PostgresStore {
    pool: Pool,
    /// For the change feed's own connection.
    config: tokio_postgres::Config,
    tls: MakeRustls,
    /// `host:port/database`, for messages (never the password).
    place: String,
}

/// A PostgreSQL error as text: the server's message and SQLSTATE, or the
/// client's description. Never a parameter value.
fn pg_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

fn backend(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(format!("PostgreSQL: {}", pg_text(&e)))
}

/// Unsigned times and versions as PostgreSQL `bigint`.
fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_doc<T: Serialize>(what: &'static str, value: &T) -> Result<Value, StoreError> {
    serde_json::to_value(value).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

fn from_doc<T: DeserializeOwned>(what: &'static str, doc: Value) -> Result<T, StoreError> {
    serde_json::from_value(doc).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

/// The `doc` column of each row, decoded.
fn docs<T: DeserializeOwned>(what: &'static str, rows: Vec<Row>) -> Result<Vec<T>, StoreError> {
    rows.into_iter()
        .map(|r| from_doc(what, r.get("doc")))
        .collect()
}

/// Records whose version the store assigns, kept in a column beside the
/// document (the column is what counts).
fn with_version<T>(mut record: T, version: i64, set: impl FnOnce(&mut T, u64)) -> T {
    set(&mut record, unsigned(version));
    record
}

fn app_of(row: Row) -> Result<AppRecord, StoreError> {
    let version: i64 = row.get("version");
    let app: AppRecord = from_doc("app", row.get("doc"))?;
    Ok(with_version(app, version, |a, v| a.version = v))
}

fn toolkit_of(row: Row) -> Result<ToolkitRecord, StoreError> {
    let version: i64 = row.get("version");
    let t: ToolkitRecord = from_doc("toolkit", row.get("doc"))?;
    Ok(with_version(t, version, |t, v| t.version = v))
}

impl PostgresStore {
    /// Connects to the database at `url` (a libpq-style URL or key=value
    /// string; `sslmode=require` verifies the server against the Web PKI
    /// roots) and applies pending schema migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Backend(format!(
                "the store URL is not a PostgreSQL connection string ({e}); expected postgres://user:password@host:port/database"
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("runtime");
        }
        let place = describe(&config);
        let tls = MakeRustls::new()
            .map_err(|e| StoreError::Backend(format!("cannot set up TLS for the store: {e}")))?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the store's pool: {e}")))?;
        let store = Self {
            pool,
            config,
            tls,
            place,
        };
        let mut client = store.client().await?;
        schema::migrate(&mut client).await.map_err(|e| match e {
            StoreError::Backend(m) => StoreError::Backend(format!("{}: {m}", store.place)),
            other => other,
        })?;
        drop(client);
        Ok(store)
    }

    /// `host:port/database`, without credentials.
    pub fn place(&self) -> &str {
        &self.place
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            let why = match &e {
                deadpool_postgres::PoolError::Backend(pg) => pg_text(pg),
                other => other.to_string(),
            };
            StoreError::Backend(format!(
                "the PostgreSQL store at {} is unreachable: {why}",
                self.place
            ))
        })
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql).await.map_err(backend)?;
        c.query(&stmt, params).await.map_err(backend)
    }

    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql).await.map_err(backend)?;
        c.execute(&stmt, params).await.map_err(backend)
    }

    /// Writes a versioned record keyed by `keys` (column, value):
    /// unconditionally (`expected` `None`, the version becomes the stored
    /// one plus one) or as a compare-and-swap (`Some(None)`: only if none
    /// is stored; `Some(Some(v))`: only over version `v`).
    async fn write_versioned(
        &self,
        table: &str,
        keys: &[(&str, &str)],
        doc: Value,
        expected: Option<Option<u64>>,
    ) -> Result<bool, StoreError> {
        let columns: Vec<&str> = keys.iter().map(|(c, _)| *c).collect();
        let key_list = columns.join(", ");
        let placeholders: Vec<String> = (1..=keys.len()).map(|i| format!("${i}")).collect();
        let doc_at = keys.len() + 1;
        let mut params: Vec<&(dyn ToSql + Sync)> =
            keys.iter().map(|(_, v)| v as &(dyn ToSql + Sync)).collect();
        params.push(&doc);
        let insert = format!(
            "INSERT INTO {table} ({key_list}, version, doc) VALUES ({}, 1, ${doc_at})",
            placeholders.join(", ")
        );
        let version;
        let sql = match expected {
            None => format!(
                "{insert} ON CONFLICT ({key_list}) DO UPDATE
                 SET version = {table}.version + 1, doc = EXCLUDED.doc"
            ),
            Some(None) => format!("{insert} ON CONFLICT ({key_list}) DO NOTHING"),
            Some(Some(v)) => {
                version = big(v);
                params.push(&version);
                let matching: Vec<String> = columns
                    .iter()
                    .zip(&placeholders)
                    .map(|(c, p)| format!("{c} = {p}"))
                    .collect();
                format!(
                    "UPDATE {table} SET version = version + 1, doc = ${doc_at}
                     WHERE {} AND version = ${}",
                    matching.join(" AND "),
                    doc_at + 1
                )
            }
        };
        Ok(self.execute(&sql, &params).await? == 1)
    }

    /// Runs retention over one ordered table: rows matching `scope` older
    /// than `older_than_ms`, then all but the `keep_newest` newest.
    async fn prune(
        &self,
        table: &str,
        scope: &str,
        scope_value: &str,
        older_than_ms: u64,
        keep_newest: usize,
    ) -> Result<usize, StoreError> {
        let c = self.client().await?;
        let by_age = c
            .execute(
                &format!("DELETE FROM {table} WHERE {scope} AND at_ms < $2"),
                &[&scope_value, &big(older_than_ms)],
            )
            .await
            .map_err(backend)?;
        let by_count = c
            .execute(
                &format!(
                    "DELETE FROM {table} WHERE seq IN (
                         SELECT seq FROM {table} WHERE {scope}
                         ORDER BY at_ms DESC, seq DESC OFFSET $2)"
                ),
                &[&scope_value, &limit(keep_newest)],
            )
            .await
            .map_err(backend)?;
        Ok(usize::try_from(by_age + by_count).unwrap_or(usize::MAX))
    }
}

/// `host:port/database` of a connection config.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

#[async_trait]
impl Store for PostgresStore {
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .query_opt("SELECT value FROM runtime_meta WHERE key = $1", &[&key])
            .await?
            .map(|r| r.get(0)))
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO runtime_meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&key, &value],
        )
        .await
        .map(|_| ())
    }

    async fn get_app(&self, id: &str) -> Result<Option<AppRecord>, StoreError> {
        self.query_opt(
            "SELECT version, doc FROM runtime_apps WHERE id = $1",
            &[&id],
        )
        .await?
        .map(app_of)
        .transpose()
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.query("SELECT version, doc FROM runtime_apps ORDER BY id", &[])
            .await?
            .into_iter()
            .map(app_of)
            .collect()
    }

    async fn put_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        self.put_app_inner(app, None).await.map(|_| ())
    }

    async fn put_app_if_version(
        &self,
        app: &AppRecord,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.put_app_inner(app, Some(expected)).await
    }

    async fn get_function(
        &self,
        app: &str,
        name: &str,
    ) -> Result<Option<FunctionRecord>, StoreError> {
        self.query_opt(
            "SELECT doc FROM runtime_functions WHERE app = $1 AND name = $2",
            &[&app, &name],
        )
        .await?
        .map(|r| from_doc("function", r.get("doc")))
        .transpose()
    }

    async fn list_functions(&self, app: Option<&str>) -> Result<Vec<FunctionRecord>, StoreError> {
        let rows = match app {
            Some(app) => {
                self.query(
                    "SELECT doc FROM runtime_functions WHERE app = $1 ORDER BY name",
                    &[&app],
                )
                .await?
            }
            None => {
                self.query("SELECT doc FROM runtime_functions ORDER BY app, name", &[])
                    .await?
            }
        };
        docs("function", rows)
    }

    async fn put_function(&self, record: &FunctionRecord) -> Result<(), StoreError> {
        let doc = to_doc("function", record)?;
        let version = big(record.version);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        tx.execute(
            "INSERT INTO runtime_function_versions (app, name, version, doc) VALUES ($1, $2, $3, $4)
             ON CONFLICT (app, name, version) DO UPDATE SET doc = EXCLUDED.doc",
            &[&record.app, &record.name, &version, &doc],
        )
        .await
        .map_err(backend)?;
        // The oldest beyond the limit go; never the one being made current.
        tx.execute(
            "DELETE FROM runtime_function_versions WHERE app = $1 AND name = $2 AND version IN (
                 SELECT version FROM runtime_function_versions
                 WHERE app = $1 AND name = $2 AND version <> $3
                 ORDER BY version DESC OFFSET $4)",
            &[
                &record.app,
                &record.name,
                &version,
                &limit(MAX_VERSIONS.saturating_sub(1)),
            ],
        )
        .await
        .map_err(backend)?;
        tx.execute(
            "INSERT INTO runtime_functions (app, name, version, doc) VALUES ($1, $2, $3, $4)
             ON CONFLICT (app, name) DO UPDATE SET version = EXCLUDED.version, doc = EXCLUDED.doc",
            &[&record.app, &record.name, &version, &doc],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn delete_function(&self, app: &str, name: &str) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let existed = tx
            .execute(
                "DELETE FROM runtime_functions WHERE app = $1 AND name = $2",
                &[&app, &name],
            )
            .await
            .map_err(backend)?;
        tx.execute(
            "DELETE FROM runtime_function_versions WHERE app = $1 AND name = $2",
            &[&app, &name],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(existed > 0)
    }

    async fn list_function_versions(
        &self,
        app: &str,
        name: &str,
    ) -> Result<Vec<FunctionRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT doc FROM runtime_function_versions WHERE app = $1 AND name = $2
                 ORDER BY version DESC",
                &[&app, &name],
            )
            .await?;
        docs("function version", rows)
    }

    async fn get_function_version(
        &self,
        app: &str,
        name: &str,
        version: u64,
    ) -> Result<Option<FunctionRecord>, StoreError> {
        self.query_opt(
            "SELECT doc FROM runtime_function_versions WHERE app = $1 AND name = $2 AND version = $3",
            &[&app, &name, &big(version)],
        )
        .await?
        .map(|r| from_doc("function version", r.get("doc")))
        .transpose()
    }

    async fn get_toolkit(
        &self,
        app: &str,
        toolkit: &str,
    ) -> Result<Option<ToolkitRecord>, StoreError> {
        self.query_opt(
            "SELECT version, doc FROM runtime_toolkits WHERE app = $1 AND toolkit = $2",
            &[&app, &toolkit],
        )
        .await?
        .map(toolkit_of)
        .transpose()
    }

    async fn list_toolkits(&self, app: &str) -> Result<Vec<ToolkitRecord>, StoreError> {
        self.query(
            "SELECT version, doc FROM runtime_toolkits WHERE app = $1 ORDER BY toolkit",
            &[&app],
        )
        .await?
        .into_iter()
        .map(toolkit_of)
        .collect()
    }

    async fn put_toolkit(&self, record: &ToolkitRecord) -> Result<(), StoreError> {
        self.put_toolkit_inner(record, None).await.map(|_| ())
    }

    async fn put_toolkit_if_version(
        &self,
        record: &ToolkitRecord,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.put_toolkit_inner(record, Some(expected)).await
    }

    async fn list_connectors(&self, app: &str) -> Result<Vec<ConnectorSpec>, StoreError> {
        let rows = self
            .query(
                "SELECT doc FROM runtime_connectors WHERE app = $1 ORDER BY slug",
                &[&app],
            )
            .await?;
        docs("connector", rows)
    }

    async fn put_connector(&self, app: &str, spec: &ConnectorSpec) -> Result<(), StoreError> {
        let doc = to_doc("connector", spec)?;
        self.execute(
            "INSERT INTO runtime_connectors (app, slug, doc) VALUES ($1, $2, $3)
             ON CONFLICT (app, slug) DO UPDATE SET doc = EXCLUDED.doc",
            &[&app, &spec.slug, &doc],
        )
        .await
        .map(|_| ())
    }

    async fn delete_connector(&self, app: &str, slug: &str) -> Result<bool, StoreError> {
        Ok(self
            .execute(
                "DELETE FROM runtime_connectors WHERE app = $1 AND slug = $2",
                &[&app, &slug],
            )
            .await?
            > 0)
    }

    async fn get_connection(
        &self,
        app: &str,
        id: &str,
    ) -> Result<Option<ConnectionRecord>, StoreError> {
        self.query_opt(
            "SELECT doc FROM runtime_connections WHERE app = $1 AND id = $2",
            &[&app, &id],
        )
        .await?
        .map(|r| from_doc("connection", r.get("doc")))
        .transpose()
    }

    async fn list_connections(&self, app: &str) -> Result<Vec<ConnectionRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT doc FROM runtime_connections WHERE app = $1 ORDER BY id",
                &[&app],
            )
            .await?;
        docs("connection", rows)
    }

    async fn list_connections_for(
        &self,
        app: &str,
        toolkit: &str,
        user_id: Option<&str>,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT doc FROM runtime_connections
                 WHERE app = $1 AND toolkit = $2 AND user_id IS NOT DISTINCT FROM $3
                 ORDER BY id",
                &[&app, &toolkit, &user_id],
            )
            .await?;
        docs("connection", rows)
    }

    async fn put_connection(&self, record: &ConnectionRecord) -> Result<(), StoreError> {
        let doc = to_doc("connection", record)?;
        self.execute(
            "INSERT INTO runtime_connections (app, id, toolkit, user_id, version, doc)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (app, id) DO UPDATE SET toolkit = EXCLUDED.toolkit,
                 user_id = EXCLUDED.user_id, version = EXCLUDED.version, doc = EXCLUDED.doc",
            &[
                &record.app,
                &record.id,
                &record.toolkit,
                &record.user_id,
                &big(record.version),
                &doc,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn put_connection_if_version(
        &self,
        record: &ConnectionRecord,
        expected: u64,
    ) -> Result<bool, StoreError> {
        let doc = to_doc("connection", record)?;
        Ok(self
            .execute(
                "UPDATE runtime_connections SET toolkit = $3, user_id = $4, version = $5, doc = $6
                 WHERE app = $1 AND id = $2 AND version = $7",
                &[
                    &record.app,
                    &record.id,
                    &record.toolkit,
                    &record.user_id,
                    &big(record.version),
                    &doc,
                    &big(expected),
                ],
            )
            .await?
            == 1)
    }

    async fn delete_connection(&self, app: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .execute(
                "DELETE FROM runtime_connections WHERE app = $1 AND id = $2",
                &[&app, &id],
            )
            .await?
            > 0)
    }

    async fn put_flow(&self, state_hash: &str, flow: &FlowRecord) -> Result<(), StoreError> {
        let doc = to_doc("flow", flow)?;
        self.execute(
            "INSERT INTO runtime_flows (state_hash, app, expires_at_ms, doc) VALUES ($1, $2, $3, $4)
             ON CONFLICT (state_hash) DO UPDATE SET app = EXCLUDED.app,
                 expires_at_ms = EXCLUDED.expires_at_ms, doc = EXCLUDED.doc",
            &[&state_hash, &flow.app, &big(flow.expires_at_ms), &doc],
        )
        .await
        .map(|_| ())
    }

    async fn get_flow(&self, state_hash: &str) -> Result<Option<FlowRecord>, StoreError> {
        self.query_opt(
            "SELECT doc FROM runtime_flows WHERE state_hash = $1",
            &[&state_hash],
        )
        .await?
        .map(|r| from_doc("flow", r.get("doc")))
        .transpose()
    }

    async fn take_flow(&self, state_hash: &str) -> Result<Option<FlowRecord>, StoreError> {
        // One statement: of two callbacks racing with one state, on any
        // nodes, one gets the row and the other nothing.
        self.query_opt(
            "DELETE FROM runtime_flows WHERE state_hash = $1 RETURNING doc",
            &[&state_hash],
        )
        .await?
        .map(|r| from_doc("flow", r.get("doc")))
        .transpose()
    }

    async fn list_flows(&self, app: &str) -> Result<Vec<FlowRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT doc FROM runtime_flows WHERE app = $1 ORDER BY expires_at_ms",
                &[&app],
            )
            .await?;
        docs("flow", rows)
    }

    async fn purge_flows(&self, now_ms: u64) -> Result<usize, StoreError> {
        let n = self
            .execute(
                "DELETE FROM runtime_flows WHERE expires_at_ms <= $1",
                &[&big(now_ms)],
            )
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn acquire_lease(
        &self,
        connection: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        // Taken only from its own holder or once expired; the fencing
        // number grows with every acquisition, on whichever node.
        let row = self
            .query_opt(
                "INSERT INTO runtime_leases AS l (connection, holder, expires_at_ms, fence)
                 VALUES ($1, $2, $3, 1)
                 ON CONFLICT (connection) DO UPDATE
                 SET holder = EXCLUDED.holder, expires_at_ms = EXCLUDED.expires_at_ms,
                     fence = l.fence + 1
                 WHERE l.holder = EXCLUDED.holder OR l.expires_at_ms <= $4
                 RETURNING holder, expires_at_ms, fence",
                &[
                    &connection,
                    &holder,
                    &big(now_ms.saturating_add(ttl_ms)),
                    &big(now_ms),
                ],
            )
            .await?;
        Ok(row.map(|r| Lease {
            holder: r.get(0),
            expires_at_ms: unsigned(r.get(1)),
            fence: unsigned(r.get(2)),
        }))
    }

    async fn release_lease(&self, connection: &str, holder: &str) -> Result<(), StoreError> {
        // Expired rather than deleted, so the fencing number keeps growing.
        self.execute(
            "UPDATE runtime_leases SET expires_at_ms = 0 WHERE connection = $1 AND holder = $2",
            &[&connection, &holder],
        )
        .await
        .map(|_| ())
    }

    async fn append_run(
        &self,
        job: &str,
        at_ms: u64,
        run_id: &str,
        record: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.append_records(&[(job.to_string(), at_ms, run_id.to_string(), record.clone())])
            .await
    }

    async fn append_records(
        &self,
        records: &[(String, u64, String, serde_json::Value)],
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO runtime_runs (job, at_ms, run_id, doc) VALUES ($1, $2, $3, $4)",
            )
            .await
            .map_err(backend)?;
        let mut jobs: Vec<&str> = Vec::new();
        for (job, at_ms, id, record) in records {
            tx.execute(&insert, &[job, &big(*at_ms), id, record])
                .await
                .map_err(backend)?;
            if !jobs.contains(&job.as_str()) {
                jobs.push(job);
            }
        }
        for job in jobs {
            tx.execute(
                "DELETE FROM runtime_runs WHERE seq IN (
                     SELECT seq FROM runtime_runs WHERE job = $1
                     ORDER BY at_ms DESC, run_id DESC OFFSET $2)",
                &[&job, &limit(MAX_RUNS_PER_JOB)],
            )
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn list_runs(
        &self,
        prefix: &str,
        limit_n: usize,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        Ok(self
            .query(
                "SELECT doc FROM runtime_runs WHERE starts_with(job, $1)
                 ORDER BY at_ms DESC, run_id DESC LIMIT $2",
                &[&prefix, &limit(limit_n)],
            )
            .await?
            .into_iter()
            .map(|r| r.get("doc"))
            .collect())
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let doc = to_doc("audit record", record)?;
        self.execute(
            "INSERT INTO runtime_audit (app, at_ms, doc) VALUES ($1, $2, $3)",
            &[&record.app, &big(record.at_ms), &doc],
        )
        .await
        .map(|_| ())
    }

    async fn list_audit(&self, app: &str, limit_n: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT doc FROM runtime_audit WHERE app = $1
                 ORDER BY at_ms DESC, seq DESC LIMIT $2",
                &[&app, &limit(limit_n)],
            )
            .await?;
        docs("audit record", rows)
    }

    async fn prune_audit(
        &self,
        app: &str,
        older_than_ms: u64,
        keep_newest: usize,
    ) -> Result<usize, StoreError> {
        self.prune("runtime_audit", "app = $1", app, older_than_ms, keep_newest)
            .await
    }

    async fn claim_fire(
        &self,
        job: &str,
        at_ms: u64,
        holder: &str,
        forget_before_ms: u64,
    ) -> Result<bool, StoreError> {
        self.execute(
            "DELETE FROM runtime_cron_fires WHERE job = $1 AND at_ms < $2",
            &[&job, &big(forget_before_ms)],
        )
        .await?;
        Ok(self
            .execute(
                "INSERT INTO runtime_cron_fires (job, at_ms, holder) VALUES ($1, $2, $3)
                 ON CONFLICT (job, at_ms) DO NOTHING",
                &[&job, &big(at_ms), &holder],
            )
            .await?
            == 1)
    }

    async fn put_component(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO runtime_components (sha256, bytes) VALUES ($1, $2)
             ON CONFLICT (sha256) DO NOTHING",
            &[&sha256, &bytes],
        )
        .await
        .map(|_| ())
    }

    async fn get_component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .query_opt(
                "SELECT bytes FROM runtime_components WHERE sha256 = $1",
                &[&sha256],
            )
            .await?
            .map(|r| r.get(0)))
    }

    async fn delete_component(&self, sha256: &str) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM runtime_components WHERE sha256 = $1",
            &[&sha256],
        )
        .await
        .map(|_| ())
    }

    async fn watch_changes(&self) -> Option<tokio::sync::mpsc::Receiver<String>> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(feed::run(
            self.config.clone(),
            self.tls.clone(),
            self.place.clone(),
            tx,
        ));
        Some(rx)
    }

    async fn prune_runs(
        &self,
        prefix: &str,
        older_than_ms: u64,
        keep_newest: usize,
    ) -> Result<usize, StoreError> {
        self.prune(
            "runtime_runs",
            "starts_with(job, $1)",
            prefix,
            older_than_ms,
            keep_newest,
        )
        .await
    }
}

impl PostgresStore {
    async fn put_app_inner(
        &self,
        app: &AppRecord,
        expected: Option<Option<u64>>,
    ) -> Result<bool, StoreError> {
        let doc = to_doc("app", app)?;
        self.write_versioned("runtime_apps", &[("id", &app.id)], doc, expected)
            .await
    }

    async fn put_toolkit_inner(
        &self,
        record: &ToolkitRecord,
        expected: Option<Option<u64>>,
    ) -> Result<bool, StoreError> {
        let doc = to_doc("toolkit", record)?;
        self.write_versioned(
            "runtime_toolkits",
            &[("app", &record.app), ("toolkit", &record.toolkit)],
            doc,
            expected,
        )
        .await
    }
}
