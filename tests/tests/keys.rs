//! End-to-end: rotating the master key of a running server
//! (`runtime keys rotate`), and what the rotated data directory accepts at
//! the next start.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e_tests::oauth::{FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, FakeProvider};
use e2e_tests::{
    ADMIN_KEY, APP, ConnectBrowser, MASTER_KEY, Options, Reply, Runtime, Upstream,
    files_containing, query, runtime_bin, user_jwt,
};
use reqwest::Method;
use serde_json::{Value, json};

/// The GitHub API key (a canary: it must never show in plain text).
const API_KEY: &str = "ghp_CANARY_keys_0a1b2c3d4e5f60718293a4b5";
/// The app's HS256 secret for end-user JWTs (a canary too).
const JWT_SECRET: &str = "jwt-secret-CANARY-keys-0123456789abcdef012345";
/// Where the app wants the browser back; nothing listens there.
const DONE: &str = "http://127.0.0.1:9/done";
/// How long re-encryption may take to be logged after `keys rotate`.
const REKEY_TIMEOUT: Duration = Duration::from_secs(15);

/// Options serving with `--master-key-file` and no `RUNTIME_MASTER_KEY`.
fn jwt(sub: &str) -> String {
    user_jwt(sub, JWT_SECRET, 3600)
}

fn with_key_file(path: &Path) -> Options {
    let mut options = Options::default();
    options
        .args
        .extend(["--master-key-file".into(), path.display().to_string()]);
    options.env.retain(|(k, _)| k != "RUNTIME_MASTER_KEY");
    options
}

fn write_key_file(path: &Path, keys: &[&str]) {
    let text: String = keys.iter().map(|k| format!("{k}\n")).collect();
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// The key lines of a key file (comments and blank lines left out).
fn key_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Runs `runtime keys <verb> --master-key-file <path>`; returns stdout.
fn keys_cli(verb: &str, path: &Path) -> String {
    let out = std::process::Command::new(runtime_bin())
        .args(["keys", verb, "--master-key-file"])
        .arg(path)
        .env_remove("RUNTIME_MASTER_KEY")
        .env_remove("RUNTIME_MASTER_KEY_FILE")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        out.status.success(),
        "keys {verb} failed: {stdout}\n{stderr}"
    );
    stdout
}

/// The key ids `runtime keys status` lists, the active one first.
fn status_ids(path: &Path) -> Vec<String> {
    let out = keys_cli("status", path);
    assert!(!out.contains("warning"), "the key file is private: {out}");
    out.lines()
        .filter(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// Sets up every kind of sealed value: the app's JWT secret, an API key
/// (github) and an OAuth client secret (fake).
async fn configure(rt: &Runtime, upstream: &Upstream, fake: &FakeProvider) {
    let calls = [
        (
            Method::PATCH,
            format!("/v1/{APP}/settings"),
            json!({"jwt": {"hs256Secret": JWT_SECRET}, "redirectUrls": [DONE]}),
            200,
        ),
        (
            Method::POST,
            format!("/v1/{APP}/integrations/configure"),
            json!({"toolkit": "github", "apiKey": API_KEY, "apiBaseUrl": upstream.url}),
            200,
        ),
        (
            Method::POST,
            format!("/v1/{APP}/integrations/connectors"),
            json!({
                "slug": "fake",
                "displayName": "Fake",
                "apiBaseUrl": fake.api_url(),
                "oauth": {
                    "authorizeUrl": fake.authorize_url(),
                    "tokenUrl": fake.token_url(),
                    "revocationUrl": fake.revocation_url()
                },
                "tools": [{"name": "FAKE_ECHO", "description": "Echo", "method": "POST",
                           "path": "/echo", "scopes": ["read"],
                           "parameters": {"type": "object"}}]
            }),
            201,
        ),
        (
            Method::POST,
            format!("/v1/{APP}/integrations/configure"),
            json!({"toolkit": "fake", "clientId": FAKE_CLIENT_ID,
                   "clientSecret": FAKE_CLIENT_SECRET, "shared": false}),
            200,
        ),
    ];
    for (method, path, body, expected) in calls {
        let (s, b) = rt.admin(method, &path, Some(body)).await;
        assert_eq!(s, expected, "{path}: {b}");
    }
}

/// Connects `user` to the fake through the browser flow (the token exchange
/// needs the unsealed client secret); returns the connection id.
async fn connect(rt: &Runtime, user: &str) -> String {
    let (s, start) = rt
        .api(
            &jwt(user),
            Method::POST,
            &format!("/v1/{APP}/integrations/connect"),
            Some(json!({"toolkit": "fake", "redirectUrl": DONE})),
        )
        .await;
    assert_eq!(s, 200, "{start}");
    let browser = ConnectBrowser::new();
    let provider = browser.confirm(start["authUrl"].as_str().unwrap()).await;
    let r = browser.get(&provider).await;
    assert_eq!(r.status(), 302);
    let callback = r.headers()["location"].to_str().unwrap().to_string();
    let r = browser.get(&callback).await;
    assert_eq!(r.status(), 303, "{}", rt.output());
    let location = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let back = query(&location);
    assert_eq!(back["status"], "connected", "{back:?}\n{}", rt.output());
    back["connectionId"].clone()
}

async fn execute(rt: &Runtime, bearer: &str, tool: &str, params: Value) -> Value {
    let (s, b) = rt
        .api(
            bearer,
            Method::POST,
            &format!("/v1/{APP}/integrations/execute"),
            Some(json!({"toolName": tool, "params": params})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b
}

/// Every sealed value still opens: the API key reaches GitHub's stand-in,
/// alice's JWT is accepted (JWT secret) and her connection's access token
/// reaches the fake's API.
async fn assert_secrets_open(rt: &Runtime, upstream: &Upstream, fake: &FakeProvider) {
    let out = execute(rt, ADMIN_KEY, "GITHUB_GET_AUTHENTICATED_USER", json!({})).await;
    assert_eq!(out["successful"], true, "{out}\n{}", rt.output());
    assert_eq!(out["data"]["login"], "octocat", "{out}");
    let sent = upstream.requests().pop().unwrap();
    assert_eq!(sent.uri, "/user");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );

    let calls = fake.api_calls();
    let out = execute(rt, &jwt("alice"), "FAKE_ECHO", json!({"n": 1})).await;
    assert_eq!(out["successful"], true, "{out}\n{}", rt.output());
    assert_eq!(out["data"]["body"]["n"], 1, "{out}");
    assert_eq!(fake.api_calls(), calls + 1);
}

#[tokio::test]
async fn rotating_the_master_key_reencrypts_while_serving() {
    let upstream = Upstream::start(Reply {
        status: 200,
        headers: vec![],
        body: json!({"login": "octocat", "id": 1}),
    })
    .await;
    let fake = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("master.key");
    write_key_file(&key_file, &[MASTER_KEY]);
    let old_ids = status_ids(&key_file);
    assert_eq!(old_ids.len(), 1);
    let old_id = old_ids[0].clone();
    let mut outputs = Vec::new();

    // First run: everything sealed under MASTER_KEY.
    let rt = Runtime::start(dir.path(), with_key_file(&key_file)).await;
    configure(&rt, &upstream, &fake).await;
    connect(&rt, "alice").await;
    assert_secrets_open(&rt, &upstream, &fake).await;

    // Rotate while serving; calls keep working during re-encryption.
    let logged_before = rt.output().len();
    let printed = keys_cli("rotate", &key_file);
    assert!(printed.contains("rotated"), "{printed}");
    assert!(!printed.contains(MASTER_KEY), "{printed}");
    let ids = status_ids(&key_file);
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[1], old_id, "the old key stays below the new one");
    let new_id = ids[0].clone();
    assert_ne!(new_id, old_id);
    let lines = key_lines(&key_file);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1], MASTER_KEY);
    let new_key = lines[0].clone();
    assert!(printed.contains(&new_id) && !printed.contains(&new_key));

    let started = Instant::now();
    while !rt.output()[logged_before..].contains("re-encryption finished") {
        assert!(
            started.elapsed() < REKEY_TIMEOUT,
            "no `re-encryption finished` within {REKEY_TIMEOUT:?}:\n{}",
            rt.output()
        );
        assert_secrets_open(&rt, &upstream, &fake).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        rt.output()[logged_before..].contains(&new_id),
        "the rotation is logged with the new key id:\n{}",
        rt.output()
    );
    assert_secrets_open(&rt, &upstream, &fake).await;
    outputs.push(rt.stop().await);

    // Restart with the new key alone, straight away: the online pass moved
    // everything under it. (A start with both keys would re-encrypt itself,
    // so this comes first to test what the running server did.)
    let new_only = keys.path().join("new-only.key");
    write_key_file(&new_only, &[&new_key]);
    assert_eq!(status_ids(&new_only), std::slice::from_ref(&new_id));
    let rt = Runtime::try_start(dir.path(), with_key_file(&new_only))
        .await
        .unwrap_or_else(|output| panic!("refused to start with the new key alone:\n{output}"));
    assert_secrets_open(&rt, &upstream, &fake).await;
    // A new connection needs the client secret, re-encrypted too.
    connect(&rt, "bob").await;
    let out = execute(&rt, &jwt("bob"), "FAKE_ECHO", json!({"n": 2})).await;
    assert_eq!(out["successful"], true, "{out}");
    outputs.push(rt.stop().await);

    // Restart with the rotated file (both keys).
    let rt = Runtime::start(dir.path(), with_key_file(&key_file)).await;
    assert_secrets_open(&rt, &upstream, &fake).await;
    let out = execute(&rt, &jwt("bob"), "FAKE_ECHO", json!({"n": 3})).await;
    assert_eq!(out["successful"], true, "{out}");
    outputs.push(rt.stop().await);

    // The old key alone is refused: it opens nothing any more.
    let old_only = keys.path().join("old-only.key");
    write_key_file(&old_only, &[MASTER_KEY]);
    let refused = Runtime::try_start(dir.path(), with_key_file(&old_only)).await;
    let output = match refused {
        Ok(rt) => panic!("started with the old key alone:\n{}", rt.stop().await),
        Err(output) => output,
    };
    assert!(
        output.contains(&new_id) && output.contains(&old_id),
        "the refusal should name the loaded key {old_id} and the missing key {new_id}:\n{output}"
    );
    outputs.push(output);

    for secret in [
        API_KEY,
        FAKE_CLIENT_SECRET,
        JWT_SECRET,
        MASTER_KEY,
        &new_key,
    ] {
        for output in &outputs {
            assert!(!output.contains(secret), "{secret} printed:\n{output}");
        }
        let leaks: Vec<PathBuf> = files_containing(dir.path(), secret.as_bytes());
        assert!(leaks.is_empty(), "{secret} in plain text in {leaks:?}");
    }
}

/// The admin key the server printed for `app` at start.
fn printed_key(output: &str, app: &str) -> String {
    let prefix = format!("admin key for app `{app}`");
    let line = output
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no key printed for {app}:\n{output}"));
    line.rsplit(": ").next().unwrap().trim().to_string()
}

#[tokio::test]
async fn several_apps_get_one_admin_key_each_and_the_operator_key_opens_none() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        args: vec![
            "--allow-insecure-upstreams".into(),
            "--app".into(),
            "billing".into(),
            "--app".into(),
            "support".into(),
        ],
        ..Options::default()
    };
    let rt = Runtime::start(dir.path(), options.clone()).await;
    let output = rt.output();
    let billing = printed_key(&output, "billing");
    let support = printed_key(&output, "support");
    assert_ne!(billing, support);
    assert_ne!(billing, ADMIN_KEY);
    let status = |key: &str, app: &str| {
        let (rt, key, app) = (&rt, key.to_string(), app.to_string());
        async move {
            rt.api(&key, Method::GET, &format!("/v1/{app}/functions"), None)
                .await
                .0
        }
    };
    assert_eq!(status(&billing, "billing").await, 200);
    assert_eq!(status(&support, "support").await, 200);
    // A key of one app never opens the other, and the seed opens neither.
    assert_eq!(status(&billing, "support").await, 401);
    assert_eq!(status(&support, "billing").await, 401);
    assert_eq!(status(ADMIN_KEY, "billing").await, 401);
    assert_eq!(status(ADMIN_KEY, "support").await, 401);

    // The CLI recomputes a key from the seed; a restart keeps them.
    let again = std::process::Command::new(runtime_bin())
        .args(["keys", "admin-key", "--app", "billing"])
        .env("RUNTIME_ADMIN_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    assert!(again.status.success(), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains(&billing),
        "{again:?}"
    );
    drop(rt.stop().await);
    let rt = Runtime::start(dir.path(), options).await;
    assert_eq!(
        rt.api(&billing, Method::GET, "/v1/billing/functions", None)
            .await
            .0,
        200
    );
}
