//! End-to-end: the real binary, real components, a recording upstream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use e2e_tests::{
    ADMIN_KEY, APP, MASTER_KEY, Options, Reply, Runtime, Upstream, files_containing, guest,
};
use reqwest::Method;
use serde_json::{Value, json};

const CANARY: &str = "ghp_CANARY_e2e_9f8e7d6c5b4a39281706";

const PROBE_MANIFEST: &str =
    r#"{"grants": {"toolkits": ["github"]}, "limits": {"timeoutMs": 2000, "memoryMb": 32}}"#;

async fn configure_github(rt: &Runtime, upstream: &Upstream) {
    let (status, body) = rt
        .admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/configure"),
            Some(json!({"toolkit": "github", "apiKey": CANARY, "apiBaseUrl": upstream.url})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.to_string().contains(CANARY));
}

fn created_issue() -> Reply {
    Reply {
        status: 201,
        headers: vec![],
        body: json!({"number": 42, "html_url": "https://github.com/acme/widgets/issues/42"}),
    }
}

async fn probe_call(rt: &Runtime, body: Value) -> Value {
    let (status, text) = rt.call(Method::POST, "probe/call", Some(body)).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn hello_deploys_and_answers_on_its_route_and_sub_paths() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(dir.path(), Options::default()).await;
    let health = rt
        .http
        .get(format!("{}/healthz", rt.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let deployed = rt.deploy_ok("hello", guest("hello"), "{}").await;
    assert_eq!(deployed["version"], 1);
    let (status, body) = rt.call(Method::GET, "hello", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("Hello"), "{body}");
    let (status, _) = rt.call(Method::GET, "hello/some/sub/path?x=1", None).await;
    assert_eq!(status, 200);

    // A second deploy of other bytes is a new version; the same bytes are not.
    let again = rt.deploy_ok("hello", guest("hello"), "{}").await;
    assert_eq!(again["version"], 1);
    let v2 = rt
        .deploy_ok(
            "hello",
            guest("hello"),
            r#"{"limits": {"timeoutMs": 5000}}"#,
        )
        .await;
    assert_eq!(v2["version"], 2);

    let (status, list) = rt
        .admin(Method::GET, &format!("/v1/{APP}/functions"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["functions"].as_array().unwrap().len(), 1);

    let (status, _) = rt
        .admin(Method::DELETE, &format!("/v1/{APP}/functions/hello"), None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = rt.call(Method::GET, "hello", None).await;
    assert_eq!(status, 404, "{body}");
    rt.stop().await;
}

#[tokio::test]
async fn an_ordinary_wasi_http_component_runs_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(dir.path(), Options::default()).await;
    rt.deploy_ok("plain", guest("plain_http"), "").await;
    let (status, body) = rt.call(Method::GET, "plain", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("plain wasi:http ok"), "{body}");
    rt.stop().await;
}

#[tokio::test]
async fn bug_report_files_an_issue_with_a_credential_only_the_host_holds() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(created_issue()).await;
    let rt = Runtime::start(dir.path(), Options::default()).await;
    configure_github(&rt, &upstream).await;
    let manifest =
        std::fs::read_to_string(e2e_tests::root().join("functions/bug-report/manifest.json"))
            .unwrap();
    rt.deploy_ok("bug-report", guest("bug_report"), &manifest)
        .await;

    let (status, body) = rt
        .call(
            Method::POST,
            "bug-report",
            Some(json!({
                "repo": "acme/widgets",
                "title": "Export button does nothing",
                "description": "Clicking Export on the dashboard has no effect.",
                "steps": ["Open the dashboard", "Click Export"],
                "severity": "high",
                "reporter": "dana@example.com"
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["issue"], 42);
    assert!(!body.contains(CANARY));

    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.uri, "/repos/acme/widgets/issues");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {CANARY}").as_str())
    );
    assert_eq!(sent.header("x-github-api-version"), Some("2022-11-28"));
    let issue: Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(issue["title"], "Export button does nothing");
    assert!(issue["body"].as_str().unwrap().contains("Click Export"));
    assert!(issue["labels"].as_array().unwrap().contains(&json!("bug")));
    assert!(
        issue.get("owner").is_none(),
        "path params must not be repeated in the body"
    );

    // The audit trail records the call, without the credential.
    let (_, logs) = rt
        .admin(Method::GET, &format!("/v1/{APP}/integrations/logs"), None)
        .await;
    let log = &logs["logs"][0];
    assert_eq!(log["tool"], "GITHUB_CREATE_ISSUE");
    assert_eq!(log["outcome"], "ok");
    assert_eq!(log["function"], "bug-report");

    // The same broker answers the execute API.
    let (status, exec) = rt
        .admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/execute"),
            Some(json!({"toolName": "GITHUB_CREATE_ISSUE", "params": {"owner": "acme", "repo": "widgets", "title": "From the API"}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(exec["successful"], true, "{exec}");
    assert!(exec["logId"].as_str().unwrap().starts_with("log_"));

    // Configuration listing never shows the secret.
    let (_, config) = rt
        .admin(Method::GET, &format!("/v1/{APP}/integrations/config"), None)
        .await;
    assert_eq!(config["toolkits"][0]["hasCredential"], true);

    let output = rt.stop().await;
    assert!(
        !output.contains(CANARY),
        "credential leaked into the runtime's output"
    );
    let leaks = files_containing(dir.path(), CANARY.as_bytes());
    assert!(
        leaks.is_empty(),
        "credential stored in plain text in {leaks:?}"
    );
}

#[tokio::test]
async fn tool_errors_reach_the_guest_as_typed_wit_errors() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(created_issue()).await;
    let rt = Runtime::start(dir.path(), Options::default()).await;
    rt.deploy_ok("probe", guest("probe"), PROBE_MANIFEST).await;
    let create = |params: Value| json!({"tool": "GITHUB_CREATE_ISSUE", "params": params});
    let good = json!({"owner": "acme", "repo": "widgets", "title": "t"});

    // Not configured yet.
    let r = probe_call(&rt, create(good.clone())).await;
    assert_eq!(r["error"]["kind"], "not-connected", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("integrations/configure")
    );

    configure_github(&rt, &upstream).await;
    let r = probe_call(&rt, create(good.clone())).await;
    assert_eq!(r["ok"]["number"], 42, "{r}");

    // Invalid params name the field and never reach the network.
    let before = upstream.requests().len();
    let r = probe_call(
        &rt,
        create(json!({"owner": "acme", "repo": "widgets", "title": 7})),
    )
    .await;
    assert_eq!(r["error"]["kind"], "invalid-params", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("title"),
        "{r}"
    );
    assert_eq!(upstream.requests().len(), before);

    // Unknown tool.
    let r = probe_call(&rt, json!({"tool": "NOPE_DO_IT", "params": {}})).await;
    assert_eq!(r["error"]["kind"], "unavailable", "{r}");

    // as-user from an anonymous HTTP invocation of a function without the grant.
    let r = probe_call(
        &rt,
        json!({"tool": "GITHUB_CREATE_ISSUE", "params": good, "asUser": "u1"}),
    )
    .await;
    assert_eq!(r["error"]["kind"], "denied", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allowAsUser"),
        "{r}"
    );

    // Provider rate limit and provider failure.
    upstream.set_reply(Reply {
        status: 429,
        headers: vec![("retry-after".into(), "7".into())],
        body: json!({}),
    });
    let r = probe_call(&rt, create(good.clone())).await;
    assert_eq!(r["error"]["kind"], "rate-limited", "{r}");
    assert_eq!(r["error"]["retryAfterMs"], 7000);
    upstream.set_reply(Reply {
        status: 500,
        headers: vec![],
        body: json!({"message": format!("boom {CANARY}")}),
    });
    let r = probe_call(&rt, create(good.clone())).await;
    assert_eq!(r["error"]["kind"], "upstream", "{r}");
    assert_eq!(r["error"]["status"], 500);
    assert!(
        !r.to_string().contains(CANARY),
        "an echoed credential must be scrubbed: {r}"
    );

    // A disabled toolkit is denied, and works again when re-enabled.
    upstream.set_reply(created_issue());
    let (status, _) = rt
        .admin(
            Method::DELETE,
            &format!("/v1/{APP}/integrations/configure/github"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let r = probe_call(&rt, create(good.clone())).await;
    assert_eq!(r["error"]["kind"], "denied", "{r}");
    let (status, _) = rt
        .admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/configure"),
            Some(json!({"toolkit": "github"})),
        )
        .await;
    assert_eq!(status, 200);
    let r = probe_call(&rt, create(good)).await;
    assert_eq!(r["ok"]["number"], 42, "{r}");

    // as-user works for an admin-authenticated invocation of a function
    // whose manifest allows it (a shared toolkit serves every user).
    rt.deploy_ok(
        "actor",
        guest("probe"),
        r#"{"grants": {"toolkits": ["github"]}, "allowAsUser": true}"#,
    )
    .await;
    let call = json!({"tool": "GITHUB_CREATE_ISSUE", "params": {"owner": "acme", "repo": "widgets", "title": "t"}, "asUser": "u1"});
    let (_, text) = rt
        .call(Method::POST, "actor/call", Some(call.clone()))
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"]["kind"],
        "denied",
        "anonymous: {text}"
    );
    let r = rt
        .http
        .post(format!("{}/fn/{APP}/actor/call", rt.url))
        .bearer_auth(ADMIN_KEY)
        .json(&call)
        .send()
        .await
        .unwrap();
    let r: Value = r.json().await.unwrap();
    assert_eq!(r["ok"]["number"], 42, "admin: {r}");
    let (_, logs) = rt
        .admin(
            Method::GET,
            &format!("/v1/{APP}/integrations/logs?limit=1"),
            None,
        )
        .await;
    // The verified caller, and the user it acted for.
    assert_eq!(logs["logs"][0]["identity"], "admin", "{logs}");
    assert_eq!(logs["logs"][0]["asUser"], "u1", "{logs}");
    // The admin key used to authenticate never reached the provider.
    assert!(
        upstream
            .requests()
            .iter()
            .all(|r| !r.headers.iter().any(|(_, v)| v.contains(ADMIN_KEY)))
    );

    // A function without a grant for the tool is denied, with the fix named.
    rt.deploy_ok("ungranted", guest("probe"), "{}").await;
    let (_, text) = rt
        .call(
            Method::POST,
            "ungranted/call",
            Some(json!({"tool": "GITHUB_LIST_ISSUES", "params": {"owner": "a", "repo": "b"}})),
        )
        .await;
    let r: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["error"]["kind"], "denied", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("grants.tools"),
        "{r}"
    );

    // list-tools shows only what is granted.
    let (_, text) = rt.call(Method::GET, "ungranted/tools", None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&text)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        0,
        "{text}"
    );
    let (_, text) = rt.call(Method::GET, "probe/tools", None).await;
    assert!(text.contains("GITHUB_CREATE_ISSUE"), "{text}");
    rt.stop().await;
}

#[tokio::test]
async fn hostile_guests_hit_their_limits_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(dir.path(), Options::default()).await;
    rt.deploy_ok("probe", guest("probe"), PROBE_MANIFEST).await;
    rt.deploy_ok("hello", guest("hello"), "{}").await;

    // While one guest spins, others are served promptly.
    let spinning = {
        let http = rt.http.clone();
        let url = format!("{}/fn/{APP}/probe/loop", rt.url);
        tokio::spawn(async move { http.get(url).send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let (status, _) = rt.call(Method::GET, "hello", None).await;
        assert_eq!(status, 200);
    }
    // Ordering, not timing: the spinner (2 s CPU budget) is still running
    // after five other requests completed, so it did not block them.
    assert!(
        !spinning.is_finished(),
        "hello waited behind a spinning guest"
    );
    let looped = spinning.await.unwrap();
    // The deadline answers 504 Gateway Timeout (issue 12), same message.
    assert_eq!(looped.status(), 504);
    let text = looped.text().await.unwrap();
    assert!(text.contains("time limit of 2000 ms"), "{text}");

    for (path, expect) in [
        ("alloc", "memory limit of 32 MiB"),
        ("trap", "trapped"),
        ("panic", "trapped"),
        ("recurse", "stack"),
    ] {
        let (status, body) = rt.call(Method::GET, &format!("probe/{path}"), None).await;
        assert_eq!(status, 500, "{path}: {body}");
        assert!(body.contains(expect), "{path}: {body}");
        let (status, body) = rt.call(Method::GET, "probe/ok", None).await;
        assert_eq!((status, body.as_str()), (200, "ok"), "after {path}");
    }

    // The guest's own output (here its panic message) is logged as lines
    // attributed to the function.
    let output = rt.output();
    let panic_line = output
        .lines()
        .find(|l| l.contains("probe panicked on purpose"))
        .expect("panic message logged");
    assert!(
        panic_line.contains("function=probe") && panic_line.contains("stream=\"stderr\""),
        "{panic_line}"
    );

    // No ambient egress and no filesystem.
    let (_, body) = rt.call(Method::GET, "probe/egress", None).await;
    let egress: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(egress["denied"], true, "{body}");
    assert!(
        egress["error"]
            .as_str()
            .unwrap()
            .contains("HttpRequestDenied"),
        "refused by policy, not by chance: {body}"
    );
    let (_, body) = rt.call(Method::GET, "probe/env", None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["fs"],
        false,
        "{body}"
    );
    rt.stop().await;
}

#[tokio::test]
async fn bad_deploys_and_bad_requests_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(dir.path(), Options::default()).await;

    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "junk",
            b"this is not wasm".to_vec(),
            "not a WebAssembly component",
        ),
        (
            "core",
            b"\0asm\x01\0\0\0".to_vec(),
            "core WebAssembly module",
        ),
        ("badimport", guest("bad_import"), "example:bad"),
        ("nohandler", guest("no-handler"), "incoming-handler"),
    ];
    for (name, bytes, expect) in cases {
        let r = rt.deploy(name, bytes, "{}").await;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 422, "{name}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(expect),
            "{name}: {body}"
        );
    }
    let r = rt
        .deploy(
            "hello",
            guest("hello"),
            r#"{"limits": {"memoryMb": 999999}}"#,
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("memoryMb"));
    let r = rt
        .deploy("hello", guest("hello"), r#"{"grantz": []}"#)
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("grantz"));
    let r = rt.deploy("Bad Name", guest("hello"), "{}").await;
    assert_eq!(r.status(), 400);

    let (status, _) = rt.call(Method::GET, "missing", None).await;
    assert_eq!(status, 404);

    let no_key = rt
        .http
        .get(format!("{}/v1/{APP}/functions", rt.url))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 401);
    assert!(
        no_key
            .text()
            .await
            .unwrap()
            .contains("Authorization: Bearer")
    );
    let wrong = rt
        .http
        .get(format!("{}/v1/{APP}/functions", rt.url))
        .bearer_auth("wrong-key-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let other_app = rt
        .http
        .get(format!("{}/v1/other/functions", rt.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(other_app.status(), 401);

    rt.deploy_ok("hello", guest("hello"), "{}").await;
    let big = vec![b'x'; 11 * 1024 * 1024];
    let r = rt
        .http
        .post(format!("{}/fn/{APP}/hello", rt.url))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    rt.stop().await;
}

#[tokio::test]
async fn a_restart_serves_the_same_functions_without_recompiling_and_checks_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(dir.path(), Options::default()).await;
    rt.deploy_ok("hello", guest("hello"), "{}").await;
    rt.stop().await;

    let rt = Runtime::start(dir.path(), Options::default()).await;
    let (status, _) = rt.call(Method::GET, "hello", None).await;
    assert_eq!(status, 200);
    let output = rt.stop().await;
    assert!(
        !output.contains("recompiling"),
        "artifact was not reused:\n{output}"
    );

    // The wrong master key is refused before serving.
    let mut wrong = Options::default();
    wrong.env.retain(|(k, _)| k != "RUNTIME_MASTER_KEY");
    wrong
        .env
        .push(("RUNTIME_MASTER_KEY".into(), MASTER_KEY.replace('0', "1")));
    let out = Runtime::try_start(dir.path(), wrong).await.unwrap_err();
    assert!(
        out.contains("not the one this data directory was created with"),
        "{out}"
    );

    // Outside dev mode there is no start without a key.
    let mut none = Options::default();
    none.env.retain(|(k, _)| k != "RUNTIME_MASTER_KEY");
    let fresh = tempfile::tempdir().unwrap();
    let out = Runtime::try_start(fresh.path(), none).await.unwrap_err();
    assert!(out.contains("no master key"), "{out}");
}

#[tokio::test]
async fn dev_mode_deploys_the_examples_and_keeps_a_private_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        args: vec!["--dev".into()],
        env: vec![("RUNTIME_ADMIN_KEY".into(), ADMIN_KEY.into())],
    };
    let rt = Runtime::start(dir.path(), options).await;
    let r = rt
        .http
        .get(format!("{}/fn/dev/hello", rt.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = rt
        .http
        .get(format!("{}/v1/dev/functions", rt.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let list: Value = r.json().await.unwrap();
    let names: Vec<&str> = list["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"hello") && names.contains(&"bug-report"),
        "{names:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    rt.stop().await;
}

#[tokio::test]
async fn the_cli_deploys_lists_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(dir.path(), Options::default()).await;
    let wasm = e2e_tests::root().join("target/wasm32-wasip2/release/hello.wasm");
    let run = |args: Vec<String>| {
        std::process::Command::new(e2e_tests::runtime_bin())
            .args(args)
            .env("RUNTIME_URL", &rt.url)
            .env("RUNTIME_APP", APP)
            .env("RUNTIME_ADMIN_KEY", ADMIN_KEY)
            .output()
            .unwrap()
    };
    let out = run(vec![
        "deploy".into(),
        wasm.display().to_string(),
        "--name".into(),
        "hi".into(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("deployed hi version 1"));
    let out = run(vec!["functions".into(), "list".into()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("hi"));
    let (status, _) = rt.call(Method::GET, "hi", None).await;
    assert_eq!(status, 200);
    let out = run(vec!["functions".into(), "rm".into(), "hi".into()]);
    assert!(out.status.success());
    let (status, _) = rt.call(Method::GET, "hi", None).await;
    assert_eq!(status, 404);

    let help = std::process::Command::new(e2e_tests::runtime_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for verb in ["serve", "deploy", "functions", "keygen", "Examples:"] {
        assert!(help.contains(verb), "--help lacks {verb}:\n{help}");
    }
    rt.stop().await;
}

#[tokio::test]
async fn proxy_variables_of_the_environment_cannot_carry_credentials_past_the_address_guard() {
    // A "proxy" that counts who connects to it.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let connections = connections.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = proxy.accept().await {
                connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(socket);
            }
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options {
        // Production settings: private addresses are refused.
        args: vec!["--app".into(), APP.into()],
        ..Options::default()
    };
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        options.env.push((name.into(), proxy_url.clone()));
    }
    let rt = Runtime::start(dir.path(), options).await;
    // A name that resolves to loopback: through a proxy, the guard after
    // DNS never ran and the proxy reached it.
    let (status, body) = rt
        .admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/configure"),
            Some(json!({"toolkit": "github", "apiKey": CANARY, "apiBaseUrl": "https://localhost:9/api"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rt
        .admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/execute"),
            Some(json!({"toolName": "GITHUB_GET_AUTHENTICATED_USER", "params": {}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["successful"], false, "{body}");
    assert_eq!(body["error"]["kind"], "denied", "{body}");
    assert!(body.to_string().contains("127.0.0.1"), "{body}");
    assert!(!body.to_string().contains(CANARY), "{body}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the environment's proxy was used"
    );
}

#[tokio::test]
async fn pages_collected_by_the_host_stop_at_the_per_call_cap() {
    // Every page is 6 MiB and says there is another (the link needs the
    // upstream's address, known once it listens).
    let upstream = Upstream::start(created_issue()).await;
    upstream.set_reply(Reply {
        status: 200,
        headers: vec![(
            "link".into(),
            format!(
                "<{}/repos/acme/widgets/issues?page=2>; rel=\"next\"",
                upstream.url
            ),
        )],
        body: json!([{"title": "x".repeat(6 * 1024 * 1024)}]),
    });
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(dir.path(), Options::default()).await;
    configure_github(&rt, &upstream).await;
    let (status, body) = rt
        .admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/execute"),
            Some(json!({"toolName": "GITHUB_LIST_ISSUES",
                        "params": {"owner": "acme", "repo": "widgets", "maxPages": 20}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["successful"], false);
    assert_eq!(body["error"]["kind"], "unavailable", "{}", &body["error"]);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("32 MiB"), "{message}");
    assert!(message.contains("maxPages"), "{message}");
    // It stopped at the page that crossed the cap, not at 20.
    assert_eq!(upstream.requests().len(), 6);
}
