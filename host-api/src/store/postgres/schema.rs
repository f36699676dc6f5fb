//! The PostgreSQL store's schema and its versioned migrations.
//!
//! Migrations are applied at start under a session-level advisory lock, so
//! several nodes starting at once migrate once: the first takes the lock
//! and migrates, the others wait for it and then find nothing to do. A
//! database whose schema is newer than this binary is refused, naming both
//! versions, rather than written with an older idea of the tables.

use tokio_postgres::Client;

use super::backend;
use crate::store::StoreError;

/// Key of the advisory lock held while migrating (any constant the
/// operator's other applications are unlikely to use).
const MIGRATION_LOCK: i64 = 0x7275_6e74_696d_6531; // "runtime1"

/// The migrations, in order; the schema version is how many have run.
/// Never edit a released one: add the next.
const MIGRATIONS: &[&str] = &[
    // 1: every record kind the Store trait holds. Records are JSON
    // documents (secrets inside them already sealed by the broker), with
    // the columns queries select or order by.
    r"
    CREATE TABLE runtime_meta (
        key text PRIMARY KEY,
        value bytea NOT NULL
    );
    CREATE TABLE runtime_apps (
        id text PRIMARY KEY,
        version bigint NOT NULL,
        doc jsonb NOT NULL
    );
    CREATE TABLE runtime_functions (
        app text NOT NULL,
        name text NOT NULL,
        version bigint NOT NULL,
        doc jsonb NOT NULL,
        PRIMARY KEY (app, name)
    );
    CREATE TABLE runtime_function_versions (
        app text NOT NULL,
        name text NOT NULL,
        version bigint NOT NULL,
        doc jsonb NOT NULL,
        PRIMARY KEY (app, name, version)
    );
    CREATE TABLE runtime_toolkits (
        app text NOT NULL,
        toolkit text NOT NULL,
        version bigint NOT NULL,
        doc jsonb NOT NULL,
        PRIMARY KEY (app, toolkit)
    );
    CREATE TABLE runtime_connectors (
        app text NOT NULL,
        slug text NOT NULL,
        doc jsonb NOT NULL,
        PRIMARY KEY (app, slug)
    );
    CREATE TABLE runtime_connections (
        app text NOT NULL,
        id text NOT NULL,
        toolkit text NOT NULL,
        user_id text,
        version bigint NOT NULL,
        doc jsonb NOT NULL,
        PRIMARY KEY (app, id)
    );
    CREATE INDEX runtime_connections_owner ON runtime_connections (app, toolkit, user_id);
    CREATE TABLE runtime_flows (
        state_hash text PRIMARY KEY,
        app text NOT NULL,
        expires_at_ms bigint NOT NULL,
        doc jsonb NOT NULL
    );
    CREATE INDEX runtime_flows_app ON runtime_flows (app);
    CREATE INDEX runtime_flows_expiry ON runtime_flows (expires_at_ms);
    CREATE TABLE runtime_leases (
        connection text PRIMARY KEY,
        holder text NOT NULL,
        expires_at_ms bigint NOT NULL,
        fence bigint NOT NULL
    );
    CREATE TABLE runtime_runs (
        seq bigserial PRIMARY KEY,
        job text NOT NULL,
        at_ms bigint NOT NULL,
        run_id text NOT NULL,
        doc jsonb NOT NULL
    );
    CREATE INDEX runtime_runs_job_time ON runtime_runs (job, at_ms, run_id);
    CREATE TABLE runtime_audit (
        seq bigserial PRIMARY KEY,
        app text NOT NULL,
        at_ms bigint NOT NULL,
        doc jsonb NOT NULL
    );
    CREATE INDEX runtime_audit_app_time ON runtime_audit (app, at_ms, seq);
    ",
    // 2: what several nodes share beyond the records: component bytes,
    // claimed cron fires, and a change feed (NOTIFY on commit) so every node
    // picks up deploys and configuration changes made on another.
    r"
    CREATE TABLE runtime_components (
        sha256 text PRIMARY KEY,
        bytes bytea NOT NULL
    );
    CREATE TABLE runtime_cron_fires (
        job text NOT NULL,
        at_ms bigint NOT NULL,
        holder text NOT NULL,
        PRIMARY KEY (job, at_ms)
    );
    CREATE FUNCTION runtime_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('runtime_changes', TG_TABLE_NAME);
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER runtime_functions_changed AFTER INSERT OR UPDATE OR DELETE
        ON runtime_functions FOR EACH STATEMENT EXECUTE FUNCTION runtime_notify_change();
    CREATE TRIGGER runtime_toolkits_changed AFTER INSERT OR UPDATE OR DELETE
        ON runtime_toolkits FOR EACH STATEMENT EXECUTE FUNCTION runtime_notify_change();
    CREATE TRIGGER runtime_connectors_changed AFTER INSERT OR UPDATE OR DELETE
        ON runtime_connectors FOR EACH STATEMENT EXECUTE FUNCTION runtime_notify_change();
    CREATE TRIGGER runtime_apps_changed AFTER INSERT OR UPDATE OR DELETE
        ON runtime_apps FOR EACH STATEMENT EXECUTE FUNCTION runtime_notify_change();
    ",
];

/// The channel the change feed is sent on.
pub(super) const CHANGES_CHANNEL: &str = "runtime_changes";

/// The schema version this binary writes.
pub(super) fn current_version() -> i32 {
    i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX)
}

/// Brings the database to [`current_version`], once across nodes.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(backend)?;
    let result = migrate_locked(client).await;
    // Released even when a migration failed; the session ending would
    // release it too.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result?;
    unlocked.map_err(backend)?;
    Ok(())
}

async fn migrate_locked(client: &mut Client) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS runtime_schema (
                 only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
                 version integer NOT NULL
             )",
        )
        .await
        .map_err(backend)?;
    let row = client
        .query_opt("SELECT version FROM runtime_schema", &[])
        .await
        .map_err(backend)?;
    let at: i32 = row.map_or(0, |r| r.get(0));
    let ours = current_version();
    if at > ours {
        return Err(StoreError::Backend(format!(
            "the database's schema is version {at}, newer than this runtime's ({ours}): \
             a newer runtime has used it; upgrade this one instead of downgrading the database"
        )));
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(at).unwrap_or(0))
    {
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        let tx = client.transaction().await.map_err(backend)?;
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Backend(format!(
                "schema migration {version} failed: {}",
                super::pg_text(&e)
            ))
        })?;
        tx.execute(
            "INSERT INTO runtime_schema (version) VALUES ($1)
             ON CONFLICT (only_row) DO UPDATE SET version = EXCLUDED.version",
            &[&version],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        tracing::info!(version, "applied store schema migration");
    }
    Ok(())
}
