//! One contract for the [`Store`] trait, run against every backend: the
//! embedded sled store (in a temp dir) and PostgreSQL (a fresh database per
//! test on the server `scripts/test.sh` starts, `RUNTIME_TEST_POSTGRES_URL`).
//! Each `contract!` entry below becomes one test per backend.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use host_api::manifest::Manifest;
use host_api::store::{
    AppRecord, AppSettings, AuditRecord, ConnectionRecord, ConnectionState, FlowRecord,
    FunctionRecord, MAX_RUNS_PER_JOB, MAX_VERSIONS, PostgresStore, SledStore, Store, ToolkitRecord,
};

/// A store for one test, and what must live as long as it.
struct Backend {
    store: Arc<dyn Store>,
    _guard: Guard,
}

enum Guard {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Database { admin_url: String, name: String },
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Database { admin_url, name } = self {
            let (url, name) = (admin_url.clone(), name.clone());
            // Dropped outside the test's runtime: a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                });
            })
            .join();
        }
    }
}

fn sled() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    Backend {
        store: Arc::new(SledStore::open(dir.path()).unwrap()),
        _guard: Guard::Dir(dir),
    }
}

/// The test server's URL, or `None` (skipped) outside `scripts/test.sh`.
pub fn postgres_url() -> Option<String> {
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

/// A fresh database on the test server, migrated by `PostgresStore`.
async fn postgres() -> Option<Backend> {
    let admin_url = postgres_url()?;
    let name = format!("runtime_contract_{}", hex(8));
    let (client, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&name);
    let store = PostgresStore::connect(url.as_str()).await.unwrap();
    Some(Backend {
        store: Arc::new(store),
        _guard: Guard::Database { admin_url, name },
    })
}

fn hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod on_sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = super::sled();
                    super::$name(&*b.store).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(b) = super::postgres().await else { return };
                    super::$name(&*b.store).await;
                }
            )*
        }
    };
}

contract!(
    versions_are_kept_newest_first_pruned_and_deleted_with_the_function,
    audit_retention_drops_old_records_keeps_the_newest_and_spares_other_apps,
    run_retention_prunes_each_job_by_age_and_the_prefix_by_count,
    app_and_toolkit_writes_compare_and_swap_on_the_version,
    meta_values_and_app_lists_round_trip,
    functions_list_per_app_and_across_apps,
    custom_connectors_are_per_app,
    connections_are_found_by_owner_and_swapped_on_their_version,
    flows_are_listed_purged_and_taken_once_under_concurrency,
    leases_exclude_other_holders_until_they_expire_and_fence_every_acquisition,
    concurrent_lease_acquisitions_have_one_winner,
    run_records_append_in_batches_and_keep_the_newest_per_job,
    a_cron_fire_is_claimed_once_and_old_claims_are_forgotten,
);

fn function(name: &str, version: u64) -> FunctionRecord {
    function_of("a", name, version)
}

fn function_of(app: &str, name: &str, version: u64) -> FunctionRecord {
    FunctionRecord {
        app: app.into(),
        name: name.into(),
        version,
        manifest: Manifest::default(),
        component_sha256: format!("sha{version}"),
        component_size: 1,
        deployed_at: version,
    }
}

fn audit(app: &str, at_ms: u64, n: usize) -> AuditRecord {
    serde_json::from_value(serde_json::json!({
        "logId": format!("log_{n:06}"),
        "app": app,
        "function": null,
        "identity": "admin",
        "tool": "T",
        "outcome": "ok",
        "status": null,
        "durationMs": 1,
        "atMs": at_ms,
    }))
    .unwrap()
}

fn times(records: &[AuditRecord]) -> Vec<u64> {
    records.iter().map(|r| r.at_ms).collect()
}

async fn run(s: &dyn Store, job: &str, at_ms: u64) {
    let record = serde_json::json!({ "job": job, "at": at_ms });
    s.append_run(job, at_ms, &format!("run_{at_ms}"), &record)
        .await
        .unwrap();
}

fn run_times(runs: &[serde_json::Value]) -> Vec<u64> {
    runs.iter().map(|r| r["at"].as_u64().unwrap()).collect()
}

fn app(id: &str) -> AppRecord {
    AppRecord {
        id: id.into(),
        admin_key_hashes: vec![],
        created_at: 1,
        settings: AppSettings::default(),
        version: 0,
    }
}

async fn versions_are_kept_newest_first_pruned_and_deleted_with_the_function(s: &dyn Store) {
    // A name that extends another must not share its versions.
    s.put_function(&function("hello-x", 1)).await.unwrap();
    for v in 1..=3 {
        s.put_function(&function("hello", v)).await.unwrap();
    }
    let versions: Vec<u64> = s
        .list_function_versions("a", "hello")
        .await
        .unwrap()
        .iter()
        .map(|f| f.version)
        .collect();
    assert_eq!(versions, [3, 2, 1]);
    // Making an older version current again keeps the others.
    s.put_function(&function("hello", 1)).await.unwrap();
    assert_eq!(
        s.get_function("a", "hello").await.unwrap().unwrap().version,
        1
    );
    assert_eq!(
        s.list_function_versions("a", "hello").await.unwrap().len(),
        3
    );
    let v2 = s
        .get_function_version("a", "hello", 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v2.component_sha256, "sha2");

    for v in 4..=(MAX_VERSIONS as u64 + 5) {
        s.put_function(&function("hello", v)).await.unwrap();
    }
    let kept = s.list_function_versions("a", "hello").await.unwrap();
    assert_eq!(kept.len(), MAX_VERSIONS);
    assert_eq!(kept.first().unwrap().version, MAX_VERSIONS as u64 + 5);
    assert!(
        s.get_function_version("a", "hello", 5)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.get_function_version("a", "hello", 6)
            .await
            .unwrap()
            .is_some()
    );

    assert!(s.delete_function("a", "hello").await.unwrap());
    assert!(
        s.list_function_versions("a", "hello")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.list_function_versions("a", "hello-x")
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn audit_retention_drops_old_records_keeps_the_newest_and_spares_other_apps(s: &dyn Store) {
    // "a" and "ab": an app whose id extends another's is not touched.
    for app in ["a", "ab"] {
        for (n, at) in (1000..1010).enumerate() {
            s.append_audit(&audit(app, at, n)).await.unwrap();
        }
    }
    // Two records in the same millisecond, told apart by their ids.
    s.append_audit(&audit("a", 1009, 99)).await.unwrap();

    // By age: everything before 1004 goes.
    assert_eq!(s.prune_audit("a", 1004, 100).await.unwrap(), 4);
    let left = s.list_audit("a", 100).await.unwrap();
    assert_eq!(times(&left), [1009, 1009, 1008, 1007, 1006, 1005, 1004]);
    // Nothing left to do is a no-op.
    assert_eq!(s.prune_audit("a", 1004, 100).await.unwrap(), 0);

    // By count: the newest three stay, whatever their age.
    assert_eq!(s.prune_audit("a", 0, 3).await.unwrap(), 4);
    let left = s.list_audit("a", 100).await.unwrap();
    assert_eq!(times(&left), [1009, 1009, 1008]);
    assert_eq!(left.last().unwrap().log_id, "log_000008");

    // Both bounds at once: the stricter wins.
    assert_eq!(s.prune_audit("a", 1009, 2).await.unwrap(), 1);
    assert_eq!(s.prune_audit("a", 0, 0).await.unwrap(), 2);
    assert!(s.list_audit("a", 100).await.unwrap().is_empty());

    assert_eq!(s.list_audit("ab", 100).await.unwrap().len(), 10);
    assert_eq!(s.prune_audit("b", u64::MAX, 0).await.unwrap(), 0);
}

async fn run_retention_prunes_each_job_by_age_and_the_prefix_by_count(s: &dyn Store) {
    for at in [10, 20, 30, 40] {
        run(s, "a/cron#0", at).await;
    }
    for at in [15, 25, 35] {
        run(s, "a/web@", at).await;
    }
    for at in [5, 50] {
        run(s, "ab/web@", at).await;
    }

    // By age, in every job of app `a`.
    assert_eq!(s.prune_runs("a/", 21, 100).await.unwrap(), 3);
    assert_eq!(
        run_times(&s.list_runs("a/", 100).await.unwrap()),
        [40, 35, 30, 25]
    );

    // By count, across its jobs: the newest three of the app stay.
    assert_eq!(s.prune_runs("a/", 0, 3).await.unwrap(), 1);
    assert_eq!(
        run_times(&s.list_runs("a/", 100).await.unwrap()),
        [40, 35, 30]
    );
    assert_eq!(run_times(&s.list_runs("a/web@", 100).await.unwrap()), [35]);

    // Another app's history is untouched.
    assert_eq!(run_times(&s.list_runs("ab/", 100).await.unwrap()), [50, 5]);
    assert_eq!(s.prune_runs("a/", 0, 3).await.unwrap(), 0);
    assert_eq!(s.prune_runs("ab/", 6, 0).await.unwrap(), 2);
    assert!(s.list_runs("ab/", 100).await.unwrap().is_empty());
    assert_eq!(s.list_runs("a/", 100).await.unwrap().len(), 3);
}

async fn app_and_toolkit_writes_compare_and_swap_on_the_version(s: &dyn Store) {
    // Creating only if absent.
    assert!(s.put_app_if_version(&app("a"), None).await.unwrap());
    assert!(!s.put_app_if_version(&app("a"), None).await.unwrap());
    let read = s.get_app("a").await.unwrap().unwrap();
    assert_eq!(read.version, 1);

    // Two writers read version 1; the second one's swap is refused.
    let mut first = read.clone();
    first.admin_key_hashes = vec!["first".into()];
    let mut second = read.clone();
    second.admin_key_hashes = vec!["second".into()];
    assert!(s.put_app_if_version(&first, Some(1)).await.unwrap());
    assert!(!s.put_app_if_version(&second, Some(1)).await.unwrap());
    let stored = s.get_app("a").await.unwrap().unwrap();
    assert_eq!(stored.admin_key_hashes, ["first"]);
    assert_eq!(stored.version, 2);
    // An unconditional write still moves the version on.
    s.put_app(&stored).await.unwrap();
    assert_eq!(s.get_app("a").await.unwrap().unwrap().version, 3);
    assert!(!s.put_app_if_version(&app("b"), Some(0)).await.unwrap());

    let toolkit = ToolkitRecord {
        app: "a".into(),
        toolkit: "github".into(),
        enabled: true,
        ..ToolkitRecord::default()
    };
    assert!(s.put_toolkit_if_version(&toolkit, None).await.unwrap());
    let disabled = ToolkitRecord {
        enabled: false,
        ..toolkit.clone()
    };
    assert!(s.put_toolkit_if_version(&disabled, Some(1)).await.unwrap());
    // A writer still holding version 1 cannot re-enable it.
    assert!(!s.put_toolkit_if_version(&toolkit, Some(1)).await.unwrap());
    let stored = s.get_toolkit("a", "github").await.unwrap().unwrap();
    assert!(!stored.enabled);
    assert_eq!(stored.version, 2);
}

async fn meta_values_and_app_lists_round_trip(s: &dyn Store) {
    assert_eq!(s.get_meta("k").await.unwrap(), None);
    s.put_meta("k", b"one").await.unwrap();
    s.put_meta("k", b"two").await.unwrap();
    assert_eq!(s.get_meta("k").await.unwrap().as_deref(), Some(&b"two"[..]));
    assert!(s.list_apps().await.unwrap().is_empty());
    s.put_app(&app("b")).await.unwrap();
    s.put_app(&app("a")).await.unwrap();
    let mut ids: Vec<String> = s
        .list_apps()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    assert!(s.get_app("c").await.unwrap().is_none());
}

async fn functions_list_per_app_and_across_apps(s: &dyn Store) {
    s.put_function(&function_of("a", "one", 1)).await.unwrap();
    s.put_function(&function_of("a", "two", 1)).await.unwrap();
    s.put_function(&function_of("ab", "one", 1)).await.unwrap();
    s.put_function(&function_of("a", "one", 2)).await.unwrap();
    let names = |fs: Vec<FunctionRecord>| {
        let mut v: Vec<String> = fs
            .into_iter()
            .map(|f| format!("{}/{}@{}", f.app, f.name, f.version))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(s.list_functions(Some("a")).await.unwrap()),
        ["a/one@2", "a/two@1"]
    );
    assert_eq!(
        names(s.list_functions(None).await.unwrap()),
        ["a/one@2", "a/two@1", "ab/one@1"]
    );
    assert!(!s.delete_function("a", "missing").await.unwrap());
    assert!(s.get_function("a", "missing").await.unwrap().is_none());
}

async fn custom_connectors_are_per_app(s: &dyn Store) {
    let spec: host_api::catalog::ConnectorSpec = serde_json::from_value(serde_json::json!({
        "slug": "acme", "displayName": "Acme", "apiBaseUrl": "https://api.acme.example",
        "tools": []
    }))
    .unwrap();
    s.put_connector("a", &spec).await.unwrap();
    s.put_connector("a", &spec).await.unwrap();
    assert_eq!(s.list_connectors("a").await.unwrap().len(), 1);
    assert!(s.list_connectors("ab").await.unwrap().is_empty());
    assert!(s.delete_connector("a", "acme").await.unwrap());
    assert!(!s.delete_connector("a", "acme").await.unwrap());
    assert!(s.list_connectors("a").await.unwrap().is_empty());
}

fn connection(app: &str, id: &str, user: Option<&str>, version: u64) -> ConnectionRecord {
    ConnectionRecord {
        id: id.into(),
        app: app.into(),
        toolkit: "github".into(),
        user_id: user.map(str::to_string),
        state: ConnectionState::Active,
        reason: None,
        is_default: true,
        account: Default::default(),
        scopes: vec!["repo".into()],
        sealed_access_token: Some("00ff".into()),
        sealed_refresh_token: None,
        expires_at_ms: Some(10),
        version,
        created_at_ms: 1,
        updated_at_ms: 1,
        refreshed_at_ms: None,
        api_base_url: None,
    }
}

async fn connections_are_found_by_owner_and_swapped_on_their_version(s: &dyn Store) {
    s.put_connection(&connection("a", "c1", Some("alice"), 1))
        .await
        .unwrap();
    s.put_connection(&connection("a", "c2", Some("bob"), 1))
        .await
        .unwrap();
    s.put_connection(&connection("a", "c3", None, 1))
        .await
        .unwrap();
    s.put_connection(&connection("ab", "c4", Some("alice"), 1))
        .await
        .unwrap();
    let ids = |cs: Vec<ConnectionRecord>| {
        let mut v: Vec<String> = cs.into_iter().map(|c| c.id).collect();
        v.sort();
        v
    };
    assert_eq!(
        ids(s.list_connections("a").await.unwrap()),
        ["c1", "c2", "c3"]
    );
    assert_eq!(
        ids(s
            .list_connections_for("a", "github", Some("alice"))
            .await
            .unwrap()),
        ["c1"]
    );
    assert_eq!(
        ids(s.list_connections_for("a", "github", None).await.unwrap()),
        ["c3"]
    );
    assert!(
        s.list_connections_for("a", "slack", Some("alice"))
            .await
            .unwrap()
            .is_empty()
    );

    // Two refreshes read version 1; only the first one's write lands.
    let mut first = connection("a", "c1", Some("alice"), 2);
    first.sealed_access_token = Some("01".into());
    let mut second = connection("a", "c1", Some("alice"), 2);
    second.sealed_access_token = Some("02".into());
    assert!(s.put_connection_if_version(&first, 1).await.unwrap());
    assert!(!s.put_connection_if_version(&second, 1).await.unwrap());
    let stored = s.get_connection("a", "c1").await.unwrap().unwrap();
    assert_eq!(stored.sealed_access_token.as_deref(), Some("01"));
    assert_eq!(stored.version, 2);
    // A vanished connection is not recreated by a swap.
    assert!(
        !s.put_connection_if_version(&connection("a", "gone", None, 2), 1)
            .await
            .unwrap()
    );
    assert!(s.get_connection("a", "gone").await.unwrap().is_none());

    assert!(s.delete_connection("a", "c1").await.unwrap());
    assert!(!s.delete_connection("a", "c1").await.unwrap());
    assert!(
        s.list_connections_for("a", "github", Some("alice"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(s
            .list_connections_for("ab", "github", Some("alice"))
            .await
            .unwrap()),
        ["c4"]
    );
}

fn flow(app: &str, request: &str, expires_at_ms: u64) -> FlowRecord {
    serde_json::from_value(serde_json::json!({
        "app": app, "toolkit": "github", "requestId": request, "connectionId": "conn_1",
        "userId": null, "redirectUrl": null, "scopes": ["repo"], "expiresAtMs": expires_at_ms,
        "redirectUri": "http://127.0.0.1/cb", "tokenUrl": "http://127.0.0.1/token",
        "sealedPkceVerifier": null, "reconnect": false, "createdAtMs": 1
    }))
    .unwrap()
}

async fn flows_are_listed_purged_and_taken_once_under_concurrency(s: &dyn Store) {
    s.put_flow("h1", &flow("a", "r1", 100)).await.unwrap();
    s.put_flow("h2", &flow("a", "r2", 200)).await.unwrap();
    s.put_flow("h3", &flow("ab", "r3", 100)).await.unwrap();
    assert_eq!(s.list_flows("a").await.unwrap().len(), 2);
    assert_eq!(s.get_flow("h1").await.unwrap().unwrap().request_id, "r1");
    // Expired ones go: those expiring at or before now.
    assert_eq!(s.purge_flows(100).await.unwrap(), 2);
    assert!(s.get_flow("h1").await.unwrap().is_none());
    assert_eq!(s.list_flows("a").await.unwrap().len(), 1);

    // Twenty callbacks with one state at once: one redeems it.
    let taken: Vec<bool> = futures_util::future::join_all(
        (0..20).map(|_| async { s.take_flow("h2").await.unwrap().is_some() }),
    )
    .await;
    assert_eq!(taken.iter().filter(|t| **t).count(), 1);
    assert!(s.take_flow("h2").await.unwrap().is_none());
}

async fn leases_exclude_other_holders_until_they_expire_and_fence_every_acquisition(s: &dyn Store) {
    let a = s
        .acquire_lease("c1", "node-a", 1_000, 30_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.holder.as_str(), a.expires_at_ms, a.fence),
        ("node-a", 31_000, 1)
    );
    // Another node is refused while it runs ...
    assert!(
        s.acquire_lease("c1", "node-b", 30_999, 30_000)
            .await
            .unwrap()
            .is_none()
    );
    // ... its holder may renew it (a new fencing number) ...
    let renewed = s
        .acquire_lease("c1", "node-a", 2_000, 30_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.fence, 2);
    // ... a release by someone else changes nothing ...
    s.release_lease("c1", "node-b").await.unwrap();
    assert!(
        s.acquire_lease("c1", "node-b", 3_000, 30_000)
            .await
            .unwrap()
            .is_none()
    );
    // ... and once it expired (its holder died), another node steals it.
    let stolen = s
        .acquire_lease("c1", "node-b", 32_000, 30_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stolen.holder.as_str(), stolen.fence), ("node-b", 3));
    // The old holder's late release does not free the new holder's lease.
    s.release_lease("c1", "node-a").await.unwrap();
    assert!(
        s.acquire_lease("c1", "node-a", 33_000, 30_000)
            .await
            .unwrap()
            .is_none()
    );
    s.release_lease("c1", "node-b").await.unwrap();
    let again = s
        .acquire_lease("c1", "node-a", 33_000, 30_000)
        .await
        .unwrap()
        .unwrap();
    // Fencing numbers never go back, a release in between included.
    assert_eq!(again.fence, stolen.fence + 1, "{again:?}");
    // Leases are per connection.
    assert!(
        s.acquire_lease("c2", "node-b", 33_000, 30_000)
            .await
            .unwrap()
            .is_some()
    );
}

async fn concurrent_lease_acquisitions_have_one_winner(s: &dyn Store) {
    let got: Vec<bool> = futures_util::future::join_all((0..16).map(|i| async move {
        s.acquire_lease("c1", &format!("node-{i}"), 1_000, 30_000)
            .await
            .unwrap()
            .is_some()
    }))
    .await;
    assert_eq!(got.iter().filter(|g| **g).count(), 1, "{got:?}");
}

async fn run_records_append_in_batches_and_keep_the_newest_per_job(s: &dyn Store) {
    let batch: Vec<(String, u64, String, serde_json::Value)> = (0..MAX_RUNS_PER_JOB as u64 + 5)
        .map(|i| {
            (
                "a/cron#0".to_string(),
                i,
                format!("run_{i:05}"),
                serde_json::json!({"at": i}),
            )
        })
        .chain(std::iter::once((
            "a/web@".to_string(),
            7,
            "run_web".to_string(),
            serde_json::json!({"at": 7}),
        )))
        .collect();
    s.append_records(&batch).await.unwrap();
    let cron = s.list_runs("a/cron#0", usize::MAX).await.unwrap();
    assert_eq!(cron.len(), MAX_RUNS_PER_JOB);
    assert_eq!(cron[0]["at"], MAX_RUNS_PER_JOB as u64 + 4);
    assert_eq!(cron.last().unwrap()["at"], 5);
    assert_eq!(s.list_runs("a/web@", 10).await.unwrap().len(), 1);
    // Newest first across the jobs of a prefix, limited.
    let newest = s.list_runs("a/", 2).await.unwrap();
    assert_eq!(
        run_times(&newest),
        [MAX_RUNS_PER_JOB as u64 + 4, MAX_RUNS_PER_JOB as u64 + 3]
    );
    s.append_records(&[]).await.unwrap();
}

// PostgreSQL only: start-up against the database.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_at_once_migrate_once_and_a_newer_schema_is_refused() {
    let Some(b) = postgres().await else { return };
    let Guard::Database { admin_url, name } = &b._guard else {
        unreachable!()
    };
    let mut url = url::Url::parse(admin_url).unwrap();
    url.set_path(name);
    // Five more nodes on the migrated database, at once: all start.
    let starts =
        futures_util::future::join_all((0..5).map(|_| PostgresStore::connect(url.as_str()))).await;
    assert!(starts.iter().all(Result::is_ok));

    let (client, conn) = tokio_postgres::connect(url.as_str(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let version: i32 = client
        .query_one("SELECT version FROM runtime_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert!(version >= 1);
    client
        .execute("UPDATE runtime_schema SET version = version + 1", &[])
        .await
        .unwrap();
    let err = PostgresStore::connect(url.as_str())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("newer than this runtime"), "{err}");
    assert!(!err.contains(url.password().unwrap_or("\u{0}")), "{err}");
}

#[tokio::test]
async fn an_unreachable_store_is_named_without_its_password() {
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let err = PostgresStore::connect(&format!(
        "postgres://runtime:s3cret-pw@127.0.0.1:{port}/runtime?sslmode=disable"
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}/runtime")), "{err}");
    assert!(err.contains("unreachable"), "{err}");
    assert!(!err.contains("s3cret-pw"), "{err}");
    let err = PostgresStore::connect("mysql://nope")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a PostgreSQL connection string"), "{err}");
}

async fn a_cron_fire_is_claimed_once_and_old_claims_are_forgotten(s: &dyn Store) {
    let won: Vec<bool> = futures_util::future::join_all((0..8).map(|i| async move {
        s.claim_fire("a/cron#0", 2_000, &format!("node-{i}"), 0)
            .await
            .unwrap()
    }))
    .await;
    assert_eq!(won.iter().filter(|w| **w).count(), 1);
    // Another time, another job: claimable.
    assert!(s.claim_fire("a/cron#0", 4_000, "node-1", 0).await.unwrap());
    assert!(s.claim_fire("a/cron#1", 2_000, "node-1", 0).await.unwrap());
    // Claims before the horizon are dropped (a later claim of that time,
    // which a scheduler never makes, would be accepted again).
    assert!(
        !s.claim_fire("a/cron#0", 4_000, "node-2", 3_000)
            .await
            .unwrap()
    );
    assert!(
        s.claim_fire("a/cron#0", 2_000, "node-2", 3_000)
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_components_and_announces_changes_from_any_node() {
    let Some(b) = postgres().await else { return };
    let Guard::Database { admin_url, name } = &b._guard else {
        unreachable!()
    };
    let mut url = url::Url::parse(admin_url).unwrap();
    url.set_path(name);
    let other = PostgresStore::connect(url.as_str()).await.unwrap();
    let mut feed = b.store.watch_changes().await.unwrap();

    other.put_component("abc", b"\0asm-bytes").await.unwrap();
    assert_eq!(
        b.store.get_component("abc").await.unwrap().as_deref(),
        Some(&b"\0asm-bytes"[..])
    );
    b.store.delete_component("abc").await.unwrap();
    assert!(other.get_component("abc").await.unwrap().is_none());

    // The feed needs a moment to start listening; write until it hears.
    let heard = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            other.put_function(&function("hello", 1)).await.unwrap();
            if let Ok(Some(m)) =
                tokio::time::timeout(std::time::Duration::from_millis(200), feed.recv()).await
            {
                break m;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(heard, "runtime_functions");
    other.put_app(&app("x")).await.unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let m = feed.recv().await.unwrap();
            if m != "runtime_functions" {
                break m;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(next, "runtime_apps");
}
