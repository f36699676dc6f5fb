//! Data connectors through the broker, as functions call them: the
//! generated `<SLUG>_QUERY` and listing tools, the admin's policy, and the
//! credential never leaving the host. The platforms themselves are tested
//! in `tests/data.rs`; this runs PostgreSQL for real (started by
//! `scripts/test.sh`, `RUNTIME_TEST_POSTGRES_URL`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use host_api::broker::{Broker, ConfigureToolkit, Invocation, Principal};
use host_api::catalog::Catalog;
use host_api::crypto::{KeySet, Keyring, MasterKey};
use host_api::egress::EgressPolicy;
use host_api::error::ToolError;
use host_api::store::{SledStore, Store};
use serde_json::{Value, json};

const APP: &str = "data";

fn broker(dir: &std::path::Path) -> Broker {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir).unwrap());
    let key = Arc::new(Keyring::new(KeySet::from(MasterKey::generate())));
    let broker = Broker::new(
        store,
        key,
        Arc::new(Catalog::builtin().unwrap()),
        EgressPolicy {
            allow_private: true,
        },
    )
    .unwrap();
    broker.set_rate_limits(host_api::ratelimit::RateLimits::new(None, None));
    broker
}

fn admin() -> Invocation {
    Invocation {
        app: APP.into(),
        function: Some("kpi-alert".into()),
        principal: Principal::Admin,
        grants: None,
        allow_as_user: false,
        run_as: None,
    }
}

async fn configure(broker: &Broker, body: Value) -> Result<(), String> {
    let req: ConfigureToolkit = serde_json::from_value(body).map_err(|e| e.to_string())?;
    broker
        .configure(APP, req)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn run(broker: &Broker, tool: &str, params: Value) -> Result<Value, ToolError> {
    broker
        .execute(&admin(), tool, &params.to_string(), None, None)
        .await
        .result
}

fn postgres_url() -> Option<String> {
    match std::env::var("RUNTIME_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("RUNTIME_REQUIRE_POSTGRES").is_err(),
                "RUNTIME_TEST_POSTGRES_URL is not set: scripts/test.sh starts PostgreSQL"
            );
            eprintln!("skipped: no RUNTIME_TEST_POSTGRES_URL (scripts/test.sh starts PostgreSQL)");
            None
        }
    }
}

#[tokio::test]
async fn postgres_queries_run_through_the_broker_under_the_admins_policy() {
    let Some(url) = postgres_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());

    // Not configured yet: the function is told what an admin must do.
    let err = run(&broker, "POSTGRES_QUERY", json!({"sql": "select 1"}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "not-connected", "{err}");

    configure(
        &broker,
        json!({"toolkit": "postgres", "apiKey": url, "dataPolicy": {"maxRows": 2}}),
    )
    .await
    .unwrap();
    let out = run(
        &broker,
        "POSTGRES_QUERY",
        json!({"sql": "select id, name from customers where id >= $1 order by id", "params": [1]}),
    )
    .await
    .unwrap();
    assert_eq!(out["columns"][0], json!({"name": "id", "type": "integer"}));
    assert_eq!(out["rows"].as_array().unwrap().len(), 2, "{out}");
    assert_eq!(out["truncated"], json!(true));
    assert!(out["elapsedMs"].is_u64());

    // Writes are refused before they reach the server.
    let err = run(
        &broker,
        "POSTGRES_QUERY",
        json!({"sql": "delete from customers"}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), "denied", "{err}");

    // Schema validation names the field; the connection string never shows.
    let err = run(&broker, "POSTGRES_QUERY", json!({"sql": 5}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/sql"), "{err}");
    let err = run(
        &broker,
        "POSTGRES_QUERY",
        json!({"sql": "select * from no_such_table"}),
    )
    .await
    .unwrap_err();
    assert!(!format!("{err:?}").contains(&url), "{err:?}");

    // Discovery for a data agent.
    let tables = run(&broker, "POSTGRES_LIST_TABLES", json!({"schema": "public"}))
        .await
        .unwrap();
    assert!(tables.to_string().contains("customers"), "{tables}");
    let columns = run(
        &broker,
        "POSTGRES_DESCRIBE_TABLE",
        json!({"table": "customers"}),
    )
    .await
    .unwrap();
    assert!(columns.to_string().contains("name"), "{columns}");

    // A policy that makes no sense is refused with the fix.
    let err = configure(
        &broker,
        json!({"toolkit": "postgres", "dataPolicy": {"maxRows": 0}}),
    )
    .await
    .unwrap_err();
    assert!(err.contains("maxRows"), "{err}");
    let err = configure(
        &broker,
        json!({"toolkit": "github", "dataPolicy": {"maxRows": 5}}),
    )
    .await
    .unwrap_err();
    assert!(err.contains("data connectors"), "{err}");
}

#[tokio::test]
async fn side_effect_functions_are_denied_before_they_reach_the_server() {
    // Functions that PostgreSQL's READ ONLY transaction would let run are
    // refused by the classifier under the default policy. The first server
    // does not exist: `denied` (not `unavailable`) shows nothing was sent.
    let nowhere = "postgres://nobody:pw@127.0.0.1:1/none?sslmode=disable".to_string();
    let urls = std::iter::once(nowhere).chain(postgres_url());
    for (n, url) in urls.enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path());
        configure(&broker, json!({"toolkit": "postgres", "apiKey": url}))
            .await
            .unwrap();
        for sql in [
            "SELECT pg_terminate_backend(1)",
            "SELECT set_config('x', 'y', false)",
            "select * from (select PG_CATALOG.pg_cancel_backend(pid) from pg_stat_activity) s",
        ] {
            let err = run(&broker, "POSTGRES_QUERY", json!({"sql": sql}))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), "denied", "{sql}: {err}");
            let m = err.to_string();
            assert!(
                m.contains("readOnly") && m.contains(r#""dataPolicy": {"readOnly": false}"#),
                "{m}"
            );
        }
        let read = run(&broker, "POSTGRES_QUERY", json!({"sql": "select 1 AS one"})).await;
        if n == 0 {
            // The same connection does try the server for a plain read.
            let err = read.unwrap_err();
            assert_ne!(err.kind(), "denied", "{err}");
        } else {
            assert_eq!(read.unwrap()["rows"], json!([[1]]));
        }
    }
}

#[tokio::test]
async fn accounts_with_their_own_host_must_be_configured_first() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    configure(
        &broker,
        json!({"toolkit": "snowflake", "apiKey": "pat-not-used", "settings": {"warehouse": "WH"}}),
    )
    .await
    .unwrap();
    let err = run(&broker, "SNOWFLAKE_QUERY", json!({"sql": "select 1"}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "not-connected");
    assert!(err.to_string().contains("apiBaseUrl"), "{err}");
}
