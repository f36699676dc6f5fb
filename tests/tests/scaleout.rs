//! Several `runtime serve` nodes on one PostgreSQL database give the same
//! answers as one node: a deploy on one is served by the others, a connect
//! flow started on one completes on another, concurrent calls on an expired
//! token across the nodes refresh it once, and each cron tick runs once.
//! Uses the PostgreSQL server `scripts/test.sh` starts (a fresh database
//! per test).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use e2e_tests::oauth::{FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, FakeProvider};
use e2e_tests::{APP, ConnectBrowser, Options, Runtime, guest, query, user_jwt};
use reqwest::Method;
use serde_json::{Value, json};

const JWT_SECRET: &str = "jwt-secret-scaleout-0123456789abcdef0123456";
const DONE: &str = "http://127.0.0.1:9/done";

fn jwt(sub: &str) -> String {
    user_jwt(sub, JWT_SECRET, 3600)
}

/// A fresh database on the test server; `None` outside `scripts/test.sh`.
async fn database() -> Option<String> {
    let admin = match std::env::var("RUNTIME_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            assert!(
                std::env::var("RUNTIME_REQUIRE_POSTGRES").is_err(),
                "RUNTIME_TEST_POSTGRES_URL is not set: scripts/test.sh starts PostgreSQL"
            );
            eprintln!("skipped: no RUNTIME_TEST_POSTGRES_URL");
            return None;
        }
    };
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let name = format!(
        "runtime_scaleout_{}",
        hex::encode(rand::random::<[u8; 6]>())
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&name);
    Some(url.to_string())
}

/// Three nodes on `store`, each with its own data directory.
async fn nodes(store: &str) -> (Vec<Runtime>, Vec<tempfile::TempDir>) {
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut options = Options::default();
        options
            .args
            .extend(["--store".to_string(), store.to_string()]);
        nodes.push(Runtime::start(dir.path(), options).await);
        dirs.push(dir);
    }
    (nodes, dirs)
}

/// Polls `check` until it holds, for at most `within`; returns how long.
async fn within<F, Fut>(within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("did not happen within {within:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploys_reach_every_node_and_deletes_stop_them_everywhere() {
    let Some(store) = database().await else {
        return;
    };
    let (n, _dirs) = nodes(&store).await;
    n[0].deploy_ok("hello", guest("hello"), "{}").await;
    for node in &n[1..] {
        within(Duration::from_secs(1), || async {
            node.call(Method::GET, "hello", None).await.0 == 200
        })
        .await;
    }
    // A second version deployed on B replaces the first on A and C.
    n[1].deploy_ok("hello", guest("probe"), r#"{"grants": {}}"#)
        .await;
    for node in [&n[0], &n[2]] {
        within(Duration::from_secs(1), || async {
            node.call(Method::GET, "hello/ok", None).await.0 == 200
        })
        .await;
    }
    // Deleted on C: no node serves it after that.
    let (s, b) = n[2]
        .admin(Method::DELETE, &format!("/v1/{APP}/functions/hello"), None)
        .await;
    assert!(s == 200 || s == 204, "{s} {b}");
    for node in &n {
        within(Duration::from_secs(1), || async {
            node.call(Method::GET, "hello/ok", None).await.0 == 404
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flow_started_on_one_node_completes_on_another_and_one_refresh_serves_all() {
    let Some(store) = database().await else {
        return;
    };
    let fake = FakeProvider::start().await;
    let (n, _dirs) = nodes(&store).await;
    let (s, b) = n[0]
        .admin(
            Method::PATCH,
            &format!("/v1/{APP}/settings"),
            Some(json!({"jwt": {"hs256Secret": JWT_SECRET}, "redirectUrls": [DONE]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = n[1]
        .admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/connectors"),
            Some(fake.connector()),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = n[2]
        .admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/configure"),
            Some(json!({"toolkit": "fake", "clientId": FAKE_CLIENT_ID, "clientSecret": FAKE_CLIENT_SECRET})),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    // Connect on A (born due for refresh); the callback lands on B.
    fake.announce_expires_in(Some(0));
    let (s, start) = n[0]
        .api(
            &jwt("alice"),
            Method::POST,
            &format!("/v1/{APP}/integrations/connect"),
            Some(json!({"toolkit": "fake", "redirectUrl": DONE})),
        )
        .await;
    assert_eq!(s, 200, "{start}");
    let browser = ConnectBrowser::new();
    let provider = browser.confirm(start["authUrl"].as_str().unwrap()).await;
    let r = browser.get(&provider).await;
    assert_eq!(r.status().as_u16(), 302);
    let mut callback = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let on_b = url::Url::parse(&n[1].url).unwrap();
    callback.set_port(on_b.port()).unwrap();
    let r = browser.get_via(&n[0].url, callback.as_str()).await;
    assert_eq!(r.status().as_u16(), 303, "{}", n[1].output());
    let back = query(&url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap());
    assert_eq!(back["status"], "connected", "{back:?}");
    // The same state again, on C: already redeemed.
    let on_c = url::Url::parse(&n[2].url).unwrap();
    callback.set_port(on_c.port()).unwrap();
    let r = browser.get_via(&n[0].url, callback.as_str()).await;
    assert_ne!(r.status().as_u16(), 303);
    fake.announce_expires_in(None);

    // Sixty calls over the three nodes on the expired token: one refresh
    // (the fake rotates refresh tokens and revokes the grant on reuse).
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..60 {
        let http = n[i % 3].http.clone();
        let url = format!("{}/v1/{APP}/integrations/execute", n[i % 3].url);
        let token = jwt("alice");
        calls.spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({"toolName": "FAKE_ECHO", "params": {"i": i}}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        });
    }
    for answer in calls.join_all().await {
        assert_eq!(answer["successful"], true, "{answer}");
    }
    assert_eq!(fake.token_requests_by_grant("refresh_token"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_cron_tick_runs_once_across_the_nodes() {
    let Some(store) = database().await else {
        return;
    };
    let (n, _dirs) = nodes(&store).await;
    let ticker = json!({"cron": [{"schedule": "*/2 * * * * *", "path": "/ok"}], "retries": 0});
    n[0].deploy_ok("ticker", guest("probe"), &ticker.to_string())
        .await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    let (s, b) = n[2]
        .admin(
            Method::GET,
            &format!("/v1/{APP}/functions/ticker/runs"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let runs = b["runs"].as_array().unwrap();
    let mut fires: Vec<&str> = runs
        .iter()
        .filter(|r| r["trigger"] == "cron")
        .map(|r| r["scheduledFor"].as_str().unwrap())
        .collect();
    assert!(fires.len() >= 3, "{b}");
    let all = fires.len();
    fires.sort_unstable();
    fires.dedup();
    assert_eq!(fires.len(), all, "a tick ran twice: {b}");
}
