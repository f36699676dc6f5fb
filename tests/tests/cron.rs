//! End-to-end: cron triggers of deployed functions, run on schedule and on
//! demand through the real binary, with their run history and tool calls.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use e2e_tests::{APP, Options, Reply, Runtime, Upstream, guest};
use reqwest::Method;
use serde_json::{Value, json};

async fn runs(rt: &Runtime, name: &str) -> Vec<Value> {
    let (s, b) = rt
        .admin(
            Method::GET,
            &format!("/v1/{APP}/functions/{name}/runs"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b["runs"].as_array().unwrap().clone()
}

/// Polls the run history until `pred` holds (at most 10 s).
async fn wait_for_runs(rt: &Runtime, name: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..100 {
        let list = runs(rt, name).await;
        if pred(&list) {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "runs of {name} never matched: {:?}\n{}",
        runs(rt, name).await,
        rt.output()
    );
}

/// Runs the CLI against `rt` without blocking the test's runtime (which
/// serves the upstream the functions call).
async fn cli(rt: &Runtime, args: &[&str]) -> String {
    let out = tokio::process::Command::new(e2e_tests::runtime_bin())
        .args(args)
        .env("RUNTIME_URL", &rt.url)
        .env("RUNTIME_APP", APP)
        .env("RUNTIME_ADMIN_KEY", e2e_tests::ADMIN_KEY)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn cron_functions_run_on_schedule_and_on_demand_and_keep_their_history() {
    let upstream = octo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(dir.path(), Options::default()).await;
    let (s, b) = rt
        .admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/configure"),
            Some(json!({"toolkit": "github", "apiKey": "ghp_cron_test_token_0123", "apiBaseUrl": upstream.url})),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    // Refused at deploy, with the fix in the message.
    for (manifest, names) in [
        (json!({"cron": [{"schedule": "61 * * * *"}]}), "cron[0]"),
        (
            json!({"cron": [{"schedule": "0 9 * * *", "timezone": "Mars/Olympus"}]}),
            "Mars/Olympus",
        ),
        (json!({"cron": [{"schedule": "0 9 30 2 *"}]}), "never"),
        (
            json!({"cron": [{"schedule": "0 9 * * *", "path": "no-slash"}]}),
            "path",
        ),
    ] {
        let r = rt
            .deploy("bad", guest("probe"), &manifest.to_string())
            .await;
        let s = r.status().as_u16();
        let b: Value = r.json().await.unwrap();
        assert_eq!(s, 400, "{manifest}: {b}");
        assert!(b.to_string().contains(names), "{manifest}: {b}");
    }

    // Grants must name real toolkits and tools.
    for manifest in [
        json!({"grants": {"tools": ["GITHUB_DELETE_EVERYTHING"]}}),
        json!({"grants": {"toolkits": ["nope"]}}),
    ] {
        let r = rt
            .deploy("bad", guest("probe"), &manifest.to_string())
            .await;
        assert_eq!(r.status().as_u16(), 400, "{manifest}");
        let b: Value = r.json().await.unwrap();
        assert!(b.to_string().contains("grants."), "{b}");
    }
    // Manifests may be TOML.
    let toml_manifest = r#"
retries = 1

[http]
enabled = true

[[cron]]
schedule = "0 8 * * 1"
timezone = "America/New_York"
path = "/ok"
"#;
    let body = rt.deploy_ok("weekly", guest("probe"), toml_manifest).await;
    assert_eq!(
        body["manifest"]["cron"][0]["timezone"], "America/New_York",
        "{body}"
    );

    // A daily digest that only runs on its schedule (no HTTP route), asked
    // to run now.
    let digest = json!({
        "http": {"enabled": false},
        "grants": {"tools": ["GITHUB_GET_AUTHENTICATED_USER"]},
        "cron": [{"schedule": "0 17 * * 1-5", "timezone": "Europe/Paris", "path": "/call",
                  "payload": {"tool": "GITHUB_GET_AUTHENTICATED_USER", "params": {}}}]
    });
    rt.deploy_ok("digest", guest("probe"), &digest.to_string())
        .await;
    let (s, _) = rt.call(Method::POST, "digest/call", Some(json!({}))).await;
    assert_eq!(s, 404, "HTTP is off for this function");
    let (s, b) = rt
        .admin(
            Method::POST,
            &format!("/v1/{APP}/functions/digest/run"),
            None,
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let run_id = b["runId"].as_str().unwrap().to_string();
    let list = wait_for_runs(&rt, "digest", |r| !r.is_empty()).await;
    let run = &list[0];
    assert_eq!(run["runId"], run_id.as_str(), "{run}");
    assert_eq!(run["outcome"], "ok", "{run}");
    assert_eq!(run["trigger"], "manual");
    let calls = run["toolCalls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{run}");
    assert!(
        calls[0]
            .as_str()
            .unwrap()
            .starts_with("GITHUB_GET_AUTHENTICATED_USER: ok"),
        "{run}"
    );
    assert_eq!(upstream.requests().len(), 1);
    assert_eq!(upstream.requests()[0].uri, "/user");

    // The invocation log has the run too, with its trigger and path.
    let (s, b) = rt
        .admin(
            Method::GET,
            &format!("/v1/{APP}/functions/digest/logs"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let inv = &b["invocations"][0];
    assert_eq!(inv["trigger"], "manual", "{b}");
    assert_eq!(inv["path"], "/call");
    assert_eq!(inv["principal"], "cron");
    assert_eq!(inv["status"], 200);

    // The CLI: run now and wait, then the logs, with a panic's message.
    let out = cli(&rt, &["functions", "run", "digest"]).await;
    assert!(out.contains("manual") && out.contains(" ok "), "{out}");
    assert!(out.contains("GITHUB_GET_AUTHENTICATED_USER: ok"), "{out}");
    let probe = json!({"grants": {}});
    rt.deploy_ok("noisy", guest("probe"), &probe.to_string())
        .await;
    let (s, _) = rt.call(Method::GET, "noisy/panic", None).await;
    assert_eq!(s, 500);
    let out = cli(&rt, &["logs", "noisy"]).await;
    assert!(out.contains("http") && out.contains("/panic"), "{out}");
    assert!(out.contains("probe panicked on purpose"), "{out}");
    assert!(out.contains("error:"), "{out}");

    // A function without a cron trigger cannot be run this way.
    rt.deploy_ok("hello", guest("hello"), "{}").await;
    let (s, b) = rt
        .admin(
            Method::POST,
            &format!("/v1/{APP}/functions/hello/run"),
            None,
        )
        .await;
    assert_eq!(s, 404);
    assert!(b.to_string().contains("no cron trigger"), "{b}");

    // Every second: runs come by themselves, as `cron`, never overlapping.
    let ticker = json!({"cron": [{"schedule": "* * * * * *", "path": "/ok"}], "retries": 0});
    rt.deploy_ok("ticker", guest("probe"), &ticker.to_string())
        .await;
    let list = wait_for_runs(&rt, "ticker", |r| {
        r.iter().filter(|x| x["outcome"] == "ok").count() >= 2
    })
    .await;
    assert!(
        list.iter()
            .all(|r| r["trigger"] == "cron" || r["trigger"] == "catch_up"),
        "{list:?}"
    );

    // A restart keeps the schedules and the history.
    let before = runs(&rt, "digest").await.len();
    rt.stop().await;
    let rt = Runtime::start(dir.path(), Options::default()).await;
    assert_eq!(runs(&rt, "digest").await.len(), before);
    let seen = runs(&rt, "ticker").await.len();
    wait_for_runs(&rt, "ticker", |r| r.len() > seen).await;

    // Removing a function stops its schedule.
    let (s, _) = rt
        .admin(Method::DELETE, &format!("/v1/{APP}/functions/ticker"), None)
        .await;
    assert_eq!(s, 204);
}

#[tokio::test]
async fn the_pr_digest_example_files_a_digest_of_open_pull_requests() {
    let upstream = Upstream::start(Reply {
        status: 200,
        headers: vec![],
        body: json!([
            {"number": 7, "title": "Add export", "html_url": "https://github.com/acme/widgets/pull/7",
             "created_at": "2026-01-02T10:00:00Z", "user": {"login": "dev1"}},
            {"number": 9, "title": "Fix typo", "html_url": "https://github.com/acme/widgets/pull/9",
             "created_at": "2026-01-05T10:00:00Z", "user": {"login": "dev2"}}
        ]),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(dir.path(), Options::default()).await;
    let (s, b) = rt
        .admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/configure"),
            Some(json!({"toolkit": "github", "apiKey": "ghp_digest_test_0123", "apiBaseUrl": upstream.url})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let mut manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(e2e_tests::root().join("functions/pr-digest/manifest.json"))
            .unwrap(),
    )
    .unwrap();
    manifest["cron"][0]["payload"]["repo"] = json!("acme/widgets");
    // A manifest that names its function cannot be deployed as another.
    let r = rt
        .deploy("other", guest("pr_digest"), &manifest.to_string())
        .await;
    assert_eq!(r.status().as_u16(), 400);
    // The CLI takes the name from the manifest.
    let manifest_file = dir.path().join("pr-digest.json");
    std::fs::write(&manifest_file, manifest.to_string()).unwrap();
    let wasm = e2e_tests::root().join("target/wasm32-wasip2/release/pr_digest.wasm");
    let out = cli(
        &rt,
        &[
            "deploy",
            wasm.to_str().unwrap(),
            "--manifest",
            manifest_file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.contains("deployed pr-digest version 1"), "{out}");
    let out = cli(&rt, &["functions", "run", "pr-digest"]).await;
    assert!(out.contains(" ok "), "{out}\n{}", rt.output());
    assert!(out.contains("GITHUB_LIST_PULL_REQUESTS: ok"), "{out}");
    assert!(out.contains("GITHUB_CREATE_ISSUE: ok"), "{out}");
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests[0].uri.starts_with("/repos/acme/widgets/pulls?"),
        "{}",
        requests[0].uri
    );
    assert!(requests[0].uri.contains("state=open"));
    assert_eq!(requests[1].method, "POST");
    assert_eq!(requests[1].uri, "/repos/acme/widgets/issues");
    let issue: Value = serde_json::from_str(&requests[1].body).unwrap();
    assert!(
        issue["title"]
            .as_str()
            .unwrap()
            .starts_with("Open pull requests in acme/widgets"),
        "{issue}"
    );
    let body = issue["body"].as_str().unwrap();
    assert!(
        body.find("[#7]").unwrap() < body.find("[#9]").unwrap(),
        "oldest first: {body}"
    );
    let logs = cli(&rt, &["logs", "pr-digest"]).await;
    assert!(logs.contains("filed digest of 2 pull requests"), "{logs}");
}

/// A server with the github toolkit on `upstream`, a cron function
/// `digest` whose run calls it, and an HTTP function `api` that does too.
async fn slow_provider_world(upstream: &Upstream, dir: &std::path::Path, grace: &str) -> Runtime {
    let mut options = Options::default();
    options
        .args
        .extend(["--shutdown-grace-secs".to_string(), grace.to_string()]);
    let rt = Runtime::start(dir, options).await;
    let (s, b) = rt
        .admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/configure"),
            Some(json!({"toolkit": "github", "apiKey": "ghp_stop_test_token_0123", "apiBaseUrl": upstream.url})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let digest = json!({
        "http": {"enabled": false},
        "grants": {"tools": ["GITHUB_GET_AUTHENTICATED_USER"]},
        "cron": [{"schedule": "0 17 * * 1-5", "path": "/call",
                  "payload": {"tool": "GITHUB_GET_AUTHENTICATED_USER", "params": {}}}]
    });
    rt.deploy_ok("digest", guest("probe"), &digest.to_string())
        .await;
    let api = json!({"grants": {"tools": ["GITHUB_GET_AUTHENTICATED_USER"]}});
    rt.deploy_ok("api", guest("probe"), &api.to_string()).await;
    rt
}

/// A provider answering every call with GitHub's authenticated user.
async fn octo_upstream() -> Upstream {
    Upstream::start(Reply {
        status: 200,
        headers: vec![],
        body: json!({"login": "octo"}),
    })
    .await
}

async fn run_now(rt: &Runtime, name: &str) -> String {
    let (s, b) = rt
        .admin(
            Method::POST,
            &format!("/v1/{APP}/functions/{name}/run"),
            None,
        )
        .await;
    assert_eq!(s, 202, "{b}");
    b["runId"].as_str().unwrap().to_string()
}

/// Waits until the upstream has seen `n` requests (at most 10 s).
async fn wait_for_requests(upstream: &Upstream, n: usize) {
    for _ in 0..100 {
        if upstream.requests().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the upstream saw {:?}", upstream.requests());
}

#[tokio::test]
async fn sigterm_lets_runs_and_requests_in_progress_finish_and_records_them() {
    let upstream = octo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = slow_provider_world(&upstream, dir.path(), "30").await;
    upstream.set_delay(Duration::from_secs(3));

    // A cron run and an HTTP request, both waiting on the slow provider.
    let run_id = run_now(&rt, "digest").await;
    let request = {
        let http = rt.http.clone();
        let url = format!("{}/fn/{APP}/api/call", rt.url);
        tokio::spawn(async move {
            let r = http
                .post(url)
                .json(&json!({"tool": "GITHUB_GET_AUTHENTICATED_USER", "params": {}}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    wait_for_requests(&upstream, 2).await;

    let (exited_ok, output) = rt.terminate(Duration::from_secs(25)).await;
    assert!(exited_ok, "{output}");
    let (status, body) = request.await.unwrap();
    assert_eq!(status, 200, "the request in progress finished: {body}");
    assert!(body.contains("octo"), "{body}");

    // Everything is in the history after a restart.
    upstream.set_delay(Duration::ZERO);
    let rt = Runtime::start(dir.path(), Options::default()).await;
    let list = runs(&rt, "digest").await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["runId"], run_id.as_str());
    assert_eq!(list[0]["outcome"], "ok", "{list:?}");
    let (s, b) = rt
        .admin(Method::GET, &format!("/v1/{APP}/functions/api/logs"), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["invocations"][0]["status"], 200, "{b}");
    assert_eq!(b["invocations"][0]["path"], "/call", "{b}");
}

#[tokio::test]
async fn a_run_outlasting_the_shutdown_grace_is_recorded_as_interrupted() {
    let upstream = octo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = slow_provider_world(&upstream, dir.path(), "1").await;
    upstream.set_delay(Duration::from_secs(20));
    let run_id = run_now(&rt, "digest").await;
    wait_for_requests(&upstream, 1).await;

    let (exited_ok, output) = rt.terminate(Duration::from_secs(15)).await;
    assert!(exited_ok, "{output}");
    assert!(output.contains("interrupted"), "{output}");

    upstream.set_delay(Duration::ZERO);
    let rt = Runtime::start(dir.path(), Options::default()).await;
    let list = runs(&rt, "digest").await;
    assert_eq!(list.len(), 1, "recorded once: {list:?}");
    assert_eq!(list[0]["runId"], run_id.as_str());
    assert_eq!(list[0]["outcome"], "interrupted", "{list:?}");
    assert!(
        list[0]["error"].as_str().unwrap().contains("grace period"),
        "{list:?}"
    );
}
