//! End-to-end: the connect flow against an OAuth 2.0 server that is not
//! ours, the npm package oauth2-mock-server (see tests/src/oauth.rs), driven
//! the way a browser and an app would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e_tests::oauth::MockOAuthServer;
use e2e_tests::{
    APP, ConnectBrowser, Options, Reply, Runtime, Upstream, files_containing, query, user_jwt,
};
use reqwest::Method;
use serde_json::{Value, json};

/// The app's HS256 secret for end-user JWTs.
const JWT_SECRET: &str = "jwt-secret-mock-server-0123456789abcdef0123";
/// Where the app wants the browser back; nothing listens there.
const DONE: &str = "http://127.0.0.1:9/done";
/// The client secret configured for the toolkit (the mock checks none).
const CLIENT_SECRET: &str = "mock-client-secret-CANARY-5a5a5a5a";

fn jwt(sub: &str) -> String {
    user_jwt(sub, JWT_SECRET, 3600)
}

async fn connections(rt: &Runtime, bearer: &str) -> Vec<Value> {
    let (s, b) = rt
        .api(
            bearer,
            Method::GET,
            &format!("/v1/{APP}/integrations/connections"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b["connections"].as_array().unwrap().clone()
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

/// A GET that follows no redirect: (status, Location).
async fn visit(browser: &ConnectBrowser, url: &str) -> (u16, Option<String>) {
    let r = browser.get(url).await;
    let location = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    (r.status().as_u16(), location)
}

#[tokio::test]
async fn the_connect_flow_works_against_an_independent_oauth_server() {
    let mock = MockOAuthServer::start().await;
    let upstream = Upstream::start(Reply {
        status: 200,
        headers: vec![],
        body: json!({"echoed": true}),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(dir.path(), Options::default()).await;
    let browser = ConnectBrowser::new();

    let (s, b) = rt
        .admin(
            Method::PATCH,
            &format!("/v1/{APP}/settings"),
            Some(json!({"jwt": {"hs256Secret": JWT_SECRET}, "redirectUrls": [DONE]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let object = json!({"type": "object"});
    let (s, b) = rt
        .admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/connectors"),
            Some(json!({
                "slug": "mock",
                "displayName": "Mock",
                "apiBaseUrl": upstream.url,
                "auth": {"type": "bearer"},
                "oauth": {
                    "authorizeUrl": mock.authorize_url(),
                    "tokenUrl": mock.token_url(),
                    "revocationUrl": mock.revocation_url(),
                    "pkce": true
                },
                "tools": [
                    {"name": "MOCK_ECHO", "description": "Echo", "method": "POST",
                     "path": "/echo", "parameters": object},
                    {"name": "MOCK_ADMIN", "description": "Needs a scope the mock never grants",
                     "method": "POST", "path": "/admin", "scopes": ["admin"],
                     "parameters": object}
                ]
            })),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = rt
        .admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/configure"),
            Some(json!({"toolkit": "mock", "clientId": "mock-client",
                        "clientSecret": CLIENT_SECRET, "shared": false})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, config) = rt
        .admin(Method::GET, &format!("/v1/{APP}/integrations/config"), None)
        .await;
    let redirect_uri = format!("{}/v1/integrations/callback", rt.url);
    assert_eq!(
        config["toolkits"][0]["redirectUri"],
        redirect_uri.as_str(),
        "{config}"
    );

    // The app starts a connection for alice.
    let alice = jwt("alice");
    let (s, start) = rt
        .api(
            &alice,
            Method::POST,
            &format!("/v1/{APP}/integrations/connect"),
            Some(json!({"toolkit": "mock", "redirectUrl": DONE})),
        )
        .await;
    assert_eq!(s, 200, "{start}");
    // The connect page first, confirmed in this browser.
    let auth_url = &browser.confirm(start["authUrl"].as_str().unwrap()).await;
    assert!(auth_url.starts_with(&mock.authorize_url()), "{auth_url}");
    let q = query(&url::Url::parse(auth_url).unwrap());
    assert_eq!(q["client_id"], "mock-client");
    assert_eq!(q["redirect_uri"], redirect_uri);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], "admin", "the scopes the tools declare");

    // The browser: the mock redirects at once to the runtime's callback.
    let (status, callback) = visit(&browser, auth_url).await;
    assert_eq!(status, 302, "{}", mock.output());
    let callback = callback.unwrap();
    assert!(callback.starts_with(&redirect_uri), "{callback}");
    let callback_url = url::Url::parse(&callback).unwrap();
    let state = query(&callback_url)["state"].clone();
    assert!(query(&callback_url).contains_key("code"), "{callback}");

    // A tampered state is refused with a page, not a redirect, and does not
    // spend the real one.
    let last = state.chars().last().unwrap();
    let tampered_state = format!(
        "{}{}",
        &state[..state.len() - last.len_utf8()],
        if last == 'A' { 'B' } else { 'A' }
    );
    let mut tampered = callback_url.clone();
    tampered
        .query_pairs_mut()
        .clear()
        .extend_pairs(query(&callback_url).into_iter().map(|(k, v)| {
            if k == "state" {
                (k, tampered_state.clone())
            } else {
                (k, v)
            }
        }));
    let (status, location) = visit(&browser, tampered.as_str()).await;
    assert_eq!(status, 400);
    assert_eq!(location, None);

    // The real callback: the code is exchanged (with the PKCE verifier,
    // which the mock checks) and the browser goes back to the app.
    let (status, location) = visit(&browser, &callback).await;
    assert_eq!(status, 303, "{}", rt.output());
    let location = url::Url::parse(&location.unwrap()).unwrap();
    assert!(location.as_str().starts_with(DONE), "{location}");
    let back = query(&location);
    assert_eq!(back["status"], "connected", "{back:?}\n{}", rt.output());
    assert_eq!(back["toolkit"], "mock");
    assert_eq!(
        back["connectionRequestId"],
        start["connectionRequestId"].as_str().unwrap()
    );
    assert_eq!(
        back["connectionId"],
        start["connectionId"].as_str().unwrap()
    );
    let connection_id = back["connectionId"].clone();

    // The same callback again: the state is spent.
    let (status, location) = visit(&browser, &callback).await;
    assert_eq!(status, 400);
    assert_eq!(location, None);

    // Alice sees her active connection; bob sees nothing; the admin sees it.
    let mine = connections(&rt, &alice).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["id"], connection_id.as_str());
    assert_eq!(mine[0]["toolkit"], "mock");
    assert_eq!(mine[0]["userId"], "alice");
    assert_eq!(mine[0]["state"], "active");
    assert_eq!(mine[0]["isDefault"], true);
    // The mock grants "dummy" whatever was asked: the runtime records what
    // the token response says was granted, not what it asked for.
    assert_eq!(mine[0]["scopes"], json!(["dummy"]));
    assert!(connections(&rt, &jwt("bob")).await.is_empty());
    assert_eq!(connections(&rt, e2e_tests::ADMIN_KEY).await.len(), 1);

    // Alice's call carries the mock's access token (a JWT) upstream.
    let out = execute(&rt, &alice, "MOCK_ECHO", json!({"hello": "world"})).await;
    assert_eq!(out["successful"], true, "{out}");
    assert_eq!(out["data"]["echoed"], true, "{out}");
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].uri, "/echo");
    let token = requests[0]
        .header("authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {token}");
    assert!(parts.iter().all(|p| !p.is_empty()), "{token}");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(
        claims["iss"],
        mock.base.as_str().trim_end_matches('/'),
        "{claims}"
    );

    // A tool needing a scope that was not granted is refused before any call.
    let out = execute(&rt, &alice, "MOCK_ADMIN", json!({})).await;
    assert_eq!(out["successful"], false, "{out}");
    assert_eq!(out["error"]["kind"], "insufficient-scope", "{out}");
    assert_eq!(out["error"]["missing"], json!(["admin"]), "{out}");
    assert_eq!(upstream.requests().len(), 1);

    let (_, logs) = rt
        .admin(Method::GET, &format!("/v1/{APP}/integrations/logs"), None)
        .await;
    assert!(
        logs["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["tool"] == "MOCK_ECHO" && l["outcome"] == "ok"),
        "{logs}"
    );
    assert!(!logs.to_string().contains(&token));

    // Disconnecting revokes at the mock and removes the connection.
    let (s, b) = rt
        .api(
            &alice,
            Method::DELETE,
            &format!("/v1/{APP}/integrations/connections/{connection_id}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["deleted"], connection_id.as_str());
    assert_eq!(b["revokedUpstream"], true, "{b}\n{}", rt.output());
    assert!(connections(&rt, &alice).await.is_empty());
    assert!(connections(&rt, e2e_tests::ADMIN_KEY).await.is_empty());
    let out = execute(&rt, &alice, "MOCK_ECHO", json!({})).await;
    assert_eq!(out["successful"], false, "{out}");
    assert_eq!(upstream.requests().len(), 1);

    let output = rt.stop().await;
    for secret in [token.as_str(), CLIENT_SECRET, JWT_SECRET] {
        assert!(
            !output.contains(secret),
            "{secret} leaked into the runtime's output"
        );
        let leaks = files_containing(dir.path(), secret.as_bytes());
        assert!(
            leaks.is_empty(),
            "{secret} stored in plain text in {leaks:?}"
        );
    }
    mock.stop().await;
}
