//! Router tests: the management API in process (`tower::ServiceExt::oneshot`),
//! on a real sled store in a temp dir, without starting the binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use runtime::config::{KeySource, ServeConfig};
use runtime::server::router;
use runtime::state::AppState;
use serde_json::{Value, json};
use tower::ServiceExt;

const KEY: &str = "router-test-admin-key-0123456789";
const CONNECTORS: &str = "/v1/app1/integrations/connectors";

/// The server configuration these tests start from.
fn config(dir: &std::path::Path, allow_insecure: bool) -> ServeConfig {
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        store_url: None,
        dev: false,
        key: KeySource::Hex(host_api::Secret::new("11".repeat(32))),
        allow_insecure_upstreams: allow_insecure,
        max_instances: 4,
        apps: vec!["app1".into()],
        admin_key: Some(host_api::Secret::new(KEY)),
        public_url: None,
        keep_alive_after: std::time::Duration::from_secs(3600),
        keep_alive_every: std::time::Duration::from_secs(3600),
        connectors_dir: None,
        connector_overrides: None,
        rate_limit_app: 0,
        rate_limit_user: 0,
        rate_limit_anonymous: None,
        outbound_proxy: None,
        retention: Default::default(),
    }
}

async fn start(dir: &std::path::Path, allow_insecure: bool) -> Arc<AppState> {
    config(dir, allow_insecure).start().await.unwrap().state
}

async fn call(
    state: &Arc<AppState>,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let response = router(state.clone()).oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A call with the app's admin key.
async fn admin(
    state: &Arc<AppState>,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call(state, method, uri, Some(KEY), body).await
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

fn acme(base: &str) -> Value {
    json!({
        "slug": "acme",
        "displayName": "Acme CRM",
        "apiBaseUrl": base,
        "auth": {"type": "header", "name": "X-Acme-Key"},
        "tools": [{
            "name": "ACME_GET_CONTACT",
            "description": "Fetch a contact.",
            "method": "GET",
            "path": "/contacts/{id}",
            "parameters": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}
        }]
    })
}

#[tokio::test]
async fn every_admin_route_needs_the_apps_key() {
    let dir = tempfile::tempdir().unwrap();
    let state = start(dir.path(), false).await;
    let (status, _) = call(&state, "GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for (method, uri) in [
        ("GET", "/v1/app1/functions"),
        ("GET", "/v1/app1/integrations/config"),
        ("GET", "/v1/app1/integrations/tools"),
        ("POST", "/v1/app1/integrations/execute"),
        ("POST", "/v1/app1/integrations/connectors"),
        ("DELETE", "/v1/app1/functions/x"),
    ] {
        let (status, body) = call(&state, method, uri, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert!(message(&body).contains("Authorization: Bearer"), "{body}");
        let (status, _) = call(&state, method, uri, Some("not-the-key-0123456789"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
    // The key of one app opens no other app.
    let (status, _) = admin(&state, "GET", "/v1/app2/functions", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(&state, "GET", "/nowhere", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message(&body).contains("/fn/"), "{body}");
}

#[tokio::test]
async fn custom_connectors_are_validated_listed_and_callable_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let state = start(dir.path(), false).await;

    let (status, body) = admin(
        &state,
        "POST",
        CONNECTORS,
        Some(acme("https://api.acme.test")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Each refused definition, and what its error must name.
    let mut clash = acme("https://api.acme.test");
    clash["slug"] = json!("github");
    let mut typo = acme("https://api.acme.test");
    typo["tooles"] = json!([]);
    let refused = [
        // Plain http without --allow-insecure-upstreams.
        (acme("http://acme.test"), "--allow-insecure-upstreams"),
        // A built-in slug cannot be taken.
        (clash, "built-in"),
        // Unknown fields are named.
        (typo, "tooles"),
    ];
    for (bad, names) in refused {
        let (status, body) = admin(&state, "POST", CONNECTORS, Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(message(&body).contains(names), "{body}");
    }

    let (_, tools) = admin(
        &state,
        "GET",
        "/v1/app1/integrations/tools?toolkit=acme",
        None,
    )
    .await;
    assert_eq!(tools["tools"][0]["name"], "ACME_GET_CONTACT", "{tools}");
    let (_, available) = admin(
        &state,
        "GET",
        "/v1/app1/integrations/available?search=acme",
        None,
    )
    .await;
    assert_eq!(
        available["toolkits"].as_array().unwrap().len(),
        1,
        "{available}"
    );
    assert_eq!(available["toolkits"][0]["custom"], true);

    // Executing before configuring says how to configure.
    let exec = json!({"toolName": "ACME_GET_CONTACT", "params": {"id": "c1"}});
    let (status, body) = admin(&state, "POST", "/v1/app1/integrations/execute", Some(exec)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["successful"], false);
    assert_eq!(body["error"]["kind"], "not-connected", "{body}");
    assert!(body["logId"].as_str().unwrap().starts_with("log_"));

    let (status, _) = admin(
        &state,
        "DELETE",
        "/v1/app1/integrations/connectors/acme",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = admin(
        &state,
        "DELETE",
        "/v1/app1/integrations/connectors/acme",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn configure_and_execute_reject_bad_input_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let state = start(dir.path(), false).await;
    let configure = "/v1/app1/integrations/configure";

    let (status, body) = admin(
        &state,
        "POST",
        configure,
        Some(json!({"toolkit": "nope", "apiKey": "k"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message(&body).contains("integrations/available"), "{body}");

    // Each refused body, and what its error must name.
    let refused = [
        // Credentials never go to loopback (no --allow-insecure-upstreams).
        (
            json!({"toolkit": "github", "apiKey": "k", "apiBaseUrl": "https://127.0.0.1/api"}),
            "apiBaseUrl",
        ),
        (json!({"toolkit": "github", "apiKey": ""}), "apiKey"),
        (json!({"toolkit": "github", "apikey": "k"}), "apikey"),
    ];
    for (bad, names) in refused {
        let (status, body) = admin(&state, "POST", configure, Some(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(message(&body).contains(names), "{bad}: {body}");
    }

    let (status, body) = admin(
        &state,
        "POST",
        configure,
        Some(json!({"toolkit": "github", "apiKey": "ghp_router_canary_123"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.to_string().contains("ghp_router_canary_123"));

    // Disabling an unconfigured toolkit is a 404 that names it.
    let (status, body) = admin(
        &state,
        "DELETE",
        "/v1/app1/integrations/configure/slack",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message(&body).contains("slack"), "{body}");

    let bad = json!({"toolName": "GITHUB_CREATE_ISSUE", "params": {"owner": "o", "repo": "r"}});
    let (_, body) = admin(&state, "POST", "/v1/app1/integrations/execute", Some(bad)).await;
    assert_eq!(body["error"]["kind"], "invalid-params", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("title"),
        "{body}"
    );
    let (status, body) = admin(
        &state,
        "POST",
        "/v1/app1/integrations/execute",
        Some(json!({"tool": "X"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("tool"), "{body}");
}

#[tokio::test]
async fn settings_and_the_connect_flow_refuse_bad_input_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let state = start(dir.path(), false).await;
    let settings = "/v1/app1/settings";

    // End users cannot authenticate before the app says how.
    let (status, body) = call(
        &state,
        "GET",
        "/v1/app1/integrations/connections",
        Some("aaa.bbb.ccc"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(message(&body).contains("PATCH /v1/app1/settings"), "{body}");

    let refused = [
        (
            json!({"jwt": {"hs256Secret": "x".repeat(40), "jwksUrl": "https://id.example.com/jwks"}}),
            "exactly one",
        ),
        (json!({"jwt": {"hs256Secret": "short"}}), "32"),
        (
            json!({"jwt": {"jwksUrl": "http://127.0.0.1/jwks", "issuer": "https://id.example.com", "audience": "app1"}}),
            "jwksUrl",
        ),
        // A multi-tenant JWKS would admit other tenants' tokens.
        (
            json!({"jwt": {"jwksUrl": "https://id.example.com/jwks"}}),
            "issuer and audience",
        ),
        (
            json!({"jwt": {"jwksUrl": "https://id.example.com/jwks", "audience": "app1"}}),
            "give issuer",
        ),
        (
            json!({"jwt": {"jwksUrl": "https://id.example.com/jwks", "issuer": "https://id.example.com"}}),
            "give audience",
        ),
        (
            json!({"redirectUrls": ["javascript:alert(1)"]}),
            "redirectUrls",
        ),
        (
            json!({"redirectUrls": ["https://a.example.com/x#f"]}),
            "redirectUrls",
        ),
        (json!({"redirects": []}), "redirects"),
    ];
    for (bad, names) in refused {
        let (status, body) = admin(&state, "PATCH", settings, Some(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(message(&body).contains(names), "{bad}: {body}");
    }
    let (status, body) = admin(
        &state,
        "PATCH",
        settings,
        Some(json!({"jwt": {"jwksUrl": "https://id.example.com/jwks", "issuer": "https://id.example.com", "audience": "app1"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["settings"]["jwt"]["kind"], "jwks");
    let secret = "router-jwt-secret-CANARY-0123456789abcdef";
    let (status, body) = admin(
        &state,
        "PATCH",
        settings,
        Some(json!({"jwt": {"hs256Secret": secret}, "redirectUrls": ["https://app.example.com/done"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["settings"]["jwt"]["kind"], "hs256");
    let (_, body) = admin(&state, "GET", settings, None).await;
    assert!(!body.to_string().contains(secret));
    assert!(
        body["settings"]["oauthRedirectUri"]
            .as_str()
            .unwrap()
            .ends_with("/v1/integrations/callback"),
        "{body}"
    );

    // An OAuth toolkit needs the app's client before anyone connects.
    let connect = "/v1/app1/integrations/connect";
    let (status, body) = admin(
        &state,
        "POST",
        connect,
        Some(json!({"toolkit": "github", "userId": "u1"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("configure"), "{body}");
    let configure = "/v1/app1/integrations/configure";
    let (status, body) = admin(
        &state,
        "POST",
        configure,
        Some(json!({"toolkit": "github"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("clientId"), "{body}");
    let (status, body) = admin(
        &state,
        "POST",
        configure,
        Some(json!({"toolkit": "github", "clientId": "cid", "clientSecret": "client-secret-CANARY-42"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body.to_string().contains("client-secret-CANARY-42"));
    assert_eq!(body["toolkit"]["auth"], "oauth");

    let (status, body) = admin(&state, "POST", connect, Some(json!({"toolkit": "github"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("shared"), "{body}");
    let (status, body) = admin(
        &state,
        "POST",
        connect,
        Some(json!({"toolkit": "github", "userId": "u1", "redirectUrl": "https://evil.example.com/done"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("redirectUrls"), "{body}");
    let (status, body) = admin(
        &state,
        "POST",
        connect,
        Some(json!({"toolkit": "github", "userId": "u1", "redirectUrl": "https://app.example.com/done"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // authUrl is the connect page; confirming it leads to the provider.
    let page = url::Url::parse(body["authUrl"].as_str().unwrap()).unwrap();
    assert_eq!(page.path(), "/v1/integrations/connect");
    let auth_url = url::Url::parse(&confirm_connect_page(&state, &page).await).unwrap();
    assert_eq!(auth_url.host_str(), Some("github.com"));
    let q: std::collections::HashMap<String, String> =
        auth_url.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], "repo");
    assert!(!auth_url.as_str().contains("client-secret-CANARY-42"));

    // The callback refuses what it cannot tie to a flow, without redirecting.
    for uri in [
        "/v1/integrations/callback?code=abc",
        "/v1/integrations/callback?code=abc&state=forged",
    ] {
        let (status, _) = call(&state, "GET", uri, None, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
    }
    let pending = admin(&state, "GET", "/v1/app1/integrations/connections", None)
        .await
        .1;
    assert_eq!(pending["connections"][0]["state"], "pending", "{pending}");
}

/// A guest component built from source by `scripts/test.sh`.
fn guest(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the guests first: scripts/test.sh does it",
            path.display()
        )
    })
}

/// `PUT /v1/app1/functions/{name}` with a component (multipart, by hand).
async fn deploy(state: &Arc<AppState>, name: &str, component: Vec<u8>) -> (StatusCode, Value) {
    let boundary = "router-test-boundary-5d1c9e";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"component\"; filename=\"c.wasm\"\r\nContent-Type: application/wasm\r\n\r\n"
    )
    .into_bytes();
    body.extend(component);
    body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let req = Request::builder()
        .method("PUT")
        .uri(format!("/v1/app1/functions/{name}"))
        .header("authorization", format!("Bearer {KEY}"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap();
    let response = router(state.clone()).oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The text a function answers `GET /fn/app1/{name}` with.
async fn answer_of(state: &Arc<AppState>, name: &str) -> String {
    let req = Request::builder()
        .uri(format!("/fn/app1/{name}"))
        .body(Body::empty())
        .unwrap();
    let response = router(state.clone()).oneshot(req).await.unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn versions_are_listed_and_rolled_back_with_errors_that_name_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let state = start(dir.path(), false).await;
    let versions = "/v1/app1/functions/f/versions";
    let rollback = "/v1/app1/functions/f/rollback";

    let (status, body) = admin(&state, "GET", versions, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = admin(&state, "POST", rollback, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(message(&body).contains("functions list"), "{body}");

    let (status, body) = deploy(&state, "f", guest("hello")).await;
    assert_eq!(
        (status, body["version"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{body}"
    );
    // Nothing before version 1.
    let (status, body) = admin(&state, "POST", rollback, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(message(&body).contains("no earlier version"), "{body}");

    let (_, body) = deploy(&state, "f", guest("plain_http")).await;
    assert_eq!(body["version"], 2, "{body}");
    assert!(answer_of(&state, "f").await.contains("plain wasi:http ok"));
    let (status, body) = admin(&state, "GET", versions, None).await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<(u64, bool)> = body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, [(2, true), (1, false)], "{body}");

    // Default: the version before the current.
    let (status, body) = admin(&state, "POST", rollback, None).await;
    assert_eq!(
        (status, body["version"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{body}"
    );
    assert!(answer_of(&state, "f").await.contains("Hello"));
    let (_, body) = admin(&state, "GET", "/v1/app1/functions/f", None).await;
    assert_eq!(body["version"], 1);

    // Unknown versions and bodies say how to find the right one.
    let (status, body) = admin(&state, "POST", rollback, Some(json!({"version": 9}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(message(&body).contains("kept: 2, 1"), "{body}");
    assert!(
        message(&body).contains("runtime functions versions f"),
        "{body}"
    );
    let (status, body) = admin(&state, "POST", rollback, Some(json!({"versoin": 2}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(message(&body).contains("versoin"), "{body}");

    // Numbers only increase: the next deploy after a rollback is version 3.
    let (_, body) = deploy(&state, "f", guest("plain_http")).await;
    assert_eq!(body["version"], 3, "{body}");

    // A missing compiled artifact is rebuilt from the kept component; with
    // both gone, the error says what to do.
    let hello_sha = {
        let (_, body) = admin(&state, "GET", versions, None).await;
        body["versions"][2]["componentSha256"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let artifacts = dir.path().join("artifacts");
    let files_of = |sha: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&artifacts)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(sha))
            .collect()
    };
    assert!(
        !files_of(&hello_sha).is_empty(),
        "v1's artifact was collected"
    );
    for p in files_of(&hello_sha) {
        if p.extension().is_some_and(|e| e == "cwasm") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let (status, body) = admin(&state, "POST", rollback, Some(json!({"version": 1}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(answer_of(&state, "f").await.contains("Hello"));
    let (status, _) = admin(&state, "POST", rollback, Some(json!({"version": 3}))).await;
    assert_eq!(status, StatusCode::OK);
    for p in files_of(&hello_sha) {
        std::fs::remove_file(p).unwrap();
    }
    let (status, body) = admin(&state, "POST", rollback, Some(json!({"version": 1}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(message(&body).contains("runtime deploy"), "{body}");
    // The failed rollback changed nothing.
    assert!(answer_of(&state, "f").await.contains("plain wasi:http ok"));

    // Removing the function removes its versions and their artifacts.
    let (status, _) = admin(&state, "DELETE", "/v1/app1/functions/f", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = admin(&state, "GET", versions, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let left = std::fs::read_dir(&artifacts).unwrap().count();
    assert_eq!(left, 0, "artifacts left after removing every function");
}

#[tokio::test]
async fn the_catalog_is_searchable_and_lists_tools_with_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let state = start(dir.path(), false).await;
    let names = |v: &Value| -> Vec<String> {
        v["toolkits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["toolkit"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, all) = admin(&state, "GET", "/v1/app1/integrations/available", None).await;
    assert_eq!(status, StatusCode::OK);
    let every = names(&all);
    for slug in [
        "gmail",
        "outlook",
        "googledocs",
        "googlesheets",
        "googleslides",
        "googledrive",
        "googlecalendar",
        "googleanalytics",
        "googlebigquery",
        "slack",
        "slackbot",
        "discord",
        "discordbot",
        "github",
        "notion",
        "clickup",
        "linear",
        "wrike",
        "salesforce",
        "hubspot",
        "linkedin",
        "tiktok",
        "wix",
        "dropbox",
        "box",
    ] {
        assert!(
            every.contains(&slug.to_string()),
            "{slug} missing from the catalog"
        );
    }
    // Ranked: an exact name first; every word must match.
    let (_, found) = admin(
        &state,
        "GET",
        "/v1/app1/integrations/available?search=slack",
        None,
    )
    .await;
    let found = names(&found);
    assert!(found.first().is_some_and(|f| f == "slack"), "{found:?}");
    assert!(found.contains(&"slackbot".to_string()));
    let (_, found) = admin(
        &state,
        "GET",
        "/v1/app1/integrations/available?search=email",
        None,
    )
    .await;
    let found = names(&found);
    assert!(
        found.contains(&"gmail".to_string()) && found.contains(&"outlook".to_string()),
        "{found:?}"
    );
    let (_, found) = admin(
        &state,
        "GET",
        "/v1/app1/integrations/available?search=crm%20deals",
        None,
    )
    .await;
    assert_eq!(names(&found), ["hubspot"]);
    let (_, none) = admin(
        &state,
        "GET",
        "/v1/app1/integrations/available?search=zzzz",
        None,
    )
    .await;
    assert!(names(&none).is_empty());

    let (status, tools) = admin(
        &state,
        "GET",
        "/v1/app1/integrations/tools?toolkit=gmail",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let tools = tools["tools"].as_array().unwrap();
    let send = tools
        .iter()
        .find(|t| t["name"] == "GMAIL_SEND_EMAIL")
        .unwrap();
    assert_eq!(
        send["scopes"],
        json!(["https://www.googleapis.com/auth/gmail.send"])
    );
    assert_eq!(send["idempotent"], json!(false));
    assert!(send["parameters"]["properties"]["to"].is_object());
    let list = tools
        .iter()
        .find(|t| t["name"] == "GMAIL_LIST_MESSAGES")
        .unwrap();
    assert_eq!(list["paginated"], json!(true));
    assert!(list["parameters"]["properties"]["maxPages"].is_object());
    assert!(tools.iter().any(|t| t["name"] == "GMAIL_PROXY"));
    let (status, body) = admin(
        &state,
        "GET",
        "/v1/app1/integrations/tools?toolkit=nope",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(message(&body).contains("available"), "{body}");
}

#[tokio::test]
async fn deployment_overrides_move_connectors_under_the_insecure_flag_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("overrides.toml");
    std::fs::write(
        &file,
        "[github]\napiBaseUrl = \"http://127.0.0.1:9/api/v3\"\ntokenUrl = \"http://127.0.0.1:9/login/oauth/access_token\"\n",
    )
    .unwrap();
    let with_overrides =
        |insecure: bool, data: &std::path::Path, overrides: &std::path::Path| ServeConfig {
            connector_overrides: Some(overrides.to_path_buf()),
            ..config(data, insecure)
        };
    let refused = with_overrides(false, &dir.path().join("a"), &file)
        .start()
        .await;
    let Err(err) = refused else {
        panic!("a loopback override needs the flag");
    };
    let err = format!("{err:#}");
    assert!(
        err.contains("github") && err.contains("--allow-insecure-upstreams"),
        "{err}"
    );

    let state = with_overrides(true, &dir.path().join("b"), &file)
        .start()
        .await
        .unwrap()
        .state;
    let (_, all) = admin(
        &state,
        "GET",
        "/v1/app1/integrations/available?search=github",
        None,
    )
    .await;
    assert_eq!(
        all["toolkits"][0]["apiBaseUrl"],
        "http://127.0.0.1:9/api/v3"
    );

    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"gitlab": {"apiBaseUrl": "https://gitlab.example.com"}}"#,
    )
    .unwrap();
    let err = format!(
        "{:#}",
        with_overrides(true, &dir.path().join("c"), &bad)
            .start()
            .await
            .err()
            .unwrap()
    );
    assert!(err.contains("gitlab"), "{err}");
}

/// Opens a connect page and submits its form with the cookie it set, as a
/// browser would: returns where the runtime sends the browser.
async fn confirm_connect_page(state: &Arc<AppState>, page: &url::Url) -> String {
    let uri = format!("{}?{}", page.path(), page.query().unwrap());
    let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let response = router(state.clone()).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_string();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let html = String::from_utf8(bytes.to_vec()).unwrap();
    let field = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let start = html.find(&marker).unwrap() + marker.len();
        let end = start + html[start..].find('"').unwrap();
        html[start..end].to_string()
    };
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("state", &field("state"))
        .append_pair("csrf", &field("csrf"))
        .finish();
    let req = Request::builder()
        .method("POST")
        .uri(page.path())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", cookie)
        .body(Body::from(form))
        .unwrap();
    let response = router(state.clone()).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let binding = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        binding.contains("HttpOnly") && binding.contains("SameSite=Lax"),
        "{binding}"
    );
    response.headers()["location"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_deploy_that_compiles_too_long_is_refused_with_422_and_deploys_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = start(dir.path(), false).await;
    // No real component compiles within a millisecond.
    state
        .registry
        .set_compile_timeout(std::time::Duration::from_millis(1));
    let (status, body) = deploy(&state, "f", guest("hello")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(message(&body).contains("took longer than"), "{body}");
    assert!(message(&body).contains("--release"), "{body}");
    let (status, body) = admin(&state, "GET", "/v1/app1/functions/f/versions", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    state
        .registry
        .set_compile_timeout(std::time::Duration::from_secs(120));
    let (status, body) = deploy(&state, "f", guest("hello")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
