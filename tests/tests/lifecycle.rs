//! End-to-end: function versions and rollback through the real binary, its
//! CLI, and a restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use e2e_tests::{ADMIN_KEY, APP, Options, Runtime, guest};
use reqwest::Method;
use serde_json::Value;

/// `(version, current)` of each kept version, newest first.
async fn versions(rt: &Runtime, name: &str) -> Vec<(u64, bool)> {
    let (status, body) = rt
        .admin(
            Method::GET,
            &format!("/v1/{APP}/functions/{name}/versions"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["current"] == Value::Bool(true),
            )
        })
        .collect()
}

/// Runs a client verb of the binary against `rt`.
fn cli(rt: &Runtime, args: &[&str]) -> std::process::Output {
    std::process::Command::new(e2e_tests::runtime_bin())
        .args(args)
        .env("RUNTIME_URL", &rt.url)
        .env("RUNTIME_APP", APP)
        .env("RUNTIME_ADMIN_KEY", ADMIN_KEY)
        .output()
        .unwrap()
}

async fn answer(rt: &Runtime) -> String {
    let (status, body) = rt.call(Method::GET, "hello", None).await;
    assert_eq!(status, 200, "{body}");
    body
}

const V1: &str = "Hello";
const V2: &str = "plain wasi:http ok";

#[tokio::test]
async fn versions_are_kept_rolled_back_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(dir.path(), Options::default()).await;
    assert_eq!(
        rt.deploy_ok("hello", guest("hello"), "{}").await["version"],
        1
    );
    assert_eq!(
        rt.deploy_ok("hello", guest("plain_http"), "{}").await["version"],
        2
    );
    assert!(answer(&rt).await.contains(V2));
    assert_eq!(versions(&rt, "hello").await, [(2, true), (1, false)]);

    // The CLI rolls back to a named version; the function answers as it.
    let out = cli(&rt, &["functions", "rollback", "hello", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("hello is now at version 1"), "{stdout}");
    assert!(answer(&rt).await.contains(V1));
    assert_eq!(versions(&rt, "hello").await, [(2, false), (1, true)]);

    // Deploying after a rollback makes a new, higher version.
    assert_eq!(
        rt.deploy_ok("hello", guest("plain_http"), "{}").await["version"],
        3
    );
    assert!(answer(&rt).await.contains(V2));

    let out = cli(&rt, &["functions", "versions", "hello"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    assert_eq!(&rows[0][..2], ["3", "*"], "{stdout}");
    assert_eq!(rows[1][0], "2", "{stdout}");
    assert_ne!(rows[1][1], "*", "{stdout}");

    // An unknown version is refused with the way to list them.
    let out = cli(&rt, &["functions", "rollback", "hello", "9"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("runtime functions versions hello"),
        "{stderr}"
    );
    rt.stop().await;

    // A restart serves the same version and keeps the others, whose
    // artifacts are loaded, not recompiled.
    let rt = Runtime::start(dir.path(), Options::default()).await;
    assert!(answer(&rt).await.contains(V2));
    assert_eq!(
        versions(&rt, "hello").await,
        [(3, true), (2, false), (1, false)]
    );
    let out = cli(&rt, &["functions", "rollback", "hello", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(answer(&rt).await.contains(V1));
    // Without a version: the one before the current... of which there is
    // none below 1.
    let out = cli(&rt, &["functions", "rollback", "hello"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no earlier version"));
    let output = rt.stop().await;
    assert!(
        !output.contains("recompiling"),
        "an artifact was not reused:\n{output}"
    );

    // The rollback survives a restart too.
    let rt = Runtime::start(dir.path(), Options::default()).await;
    assert!(answer(&rt).await.contains(V1));
    rt.stop().await;
}
