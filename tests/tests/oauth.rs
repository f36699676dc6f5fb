//! End-to-end: OAuth connections against the fault-injecting fake provider
//! (tests/src/oauth.rs), driven the way a browser and an app would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use e2e_tests::oauth::{FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, FakeProvider, TokenMode};
use e2e_tests::{APP, ConnectBrowser, Options, Runtime, files_containing, guest, query, user_jwt};
use reqwest::Method;
use serde_json::{Value, json};

/// The app's HS256 secret for end-user JWTs (a canary: it must never show).
const JWT_SECRET: &str = "jwt-secret-CANARY-0123456789abcdef0123456789";
/// Where the app wants the browser back; nothing listens there.
const DONE: &str = "http://127.0.0.1:9/done";

struct World {
    rt: Runtime,
    fake: FakeProvider,
    dir: tempfile::TempDir,
    /// A browser with its cookies: follows no redirects, so each hop is
    /// seen.
    browser: ConnectBrowser,
}

fn jwt(sub: &str) -> String {
    user_jwt(sub, JWT_SECRET, 3600)
}

async fn world_with(configure: Value) -> World {
    let fake = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(dir.path(), Options::default()).await;
    World::setup(rt, fake, dir, configure).await
}

impl World {
    async fn setup(
        rt: Runtime,
        fake: FakeProvider,
        dir: tempfile::TempDir,
        configure: Value,
    ) -> World {
        let (s, b) = rt
            .admin(
                Method::PATCH,
                &format!("/v1/{APP}/settings"),
                Some(json!({"jwt": {"hs256Secret": JWT_SECRET}, "redirectUrls": [DONE]})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        assert!(!b.to_string().contains(JWT_SECRET));
        let (s, b) = rt
            .admin(
                Method::POST,
                &format!("/v1/{APP}/integrations/connectors"),
                Some(fake.connector()),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let mut body = json!({"toolkit": "fake", "clientId": FAKE_CLIENT_ID, "clientSecret": FAKE_CLIENT_SECRET});
        for (k, v) in configure.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, b) = rt
            .admin(
                Method::POST,
                &format!("/v1/{APP}/integrations/configure"),
                Some(body),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        assert!(!b.to_string().contains(FAKE_CLIENT_SECRET));
        let browser = ConnectBrowser::new();
        World {
            rt,
            fake,
            dir,
            browser,
        }
    }
}

async fn world() -> World {
    world_with(json!({})).await
}

impl World {
    /// Calls the API with a bearer (admin key or user JWT).
    async fn api(
        &self,
        bearer: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.rt.api(bearer, method, path, body).await
    }

    async fn connect(&self, bearer: &str, body: Value) -> Value {
        let (s, b) = self
            .api(
                bearer,
                Method::POST,
                &format!("/v1/{APP}/integrations/connect"),
                Some(body),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b
    }

    /// Follows an authorization URL like a browser whose user presses
    /// Continue on the connect page and "allow" at the provider: the
    /// page, the provider, then the runtime's callback. Returns the
    /// callback URL and the runtime's answer (status, Location).
    async fn consent(&self, auth_url: &str) -> (String, u16, Option<url::Url>) {
        let provider = self.browser.confirm(auth_url).await;
        self.consent_at_provider(&provider).await
    }

    /// The provider's part of [`World::consent`].
    async fn consent_at_provider(&self, provider_url: &str) -> (String, u16, Option<url::Url>) {
        let r = self.browser.get(provider_url).await;
        assert_eq!(r.status().as_u16(), 302, "provider did not redirect");
        let callback = r.headers()["location"].to_str().unwrap().to_string();
        let (status, location) = self.visit(&callback).await;
        (callback, status, location)
    }

    async fn visit(&self, url: &str) -> (u16, Option<url::Url>) {
        let r = self.browser.get(url).await;
        let location = r
            .headers()
            .get("location")
            .map(|l| url::Url::parse(l.to_str().unwrap()).unwrap());
        (r.status().as_u16(), location)
    }

    /// Connects `user` end to end; returns the connection id.
    async fn connect_user(&self, user: &str) -> String {
        let start = self
            .connect(&jwt(user), json!({"toolkit": "fake", "redirectUrl": DONE}))
            .await;
        let (_, status, location) = self.consent(start["authUrl"].as_str().unwrap()).await;
        assert_eq!(status, 303);
        let q = query(&location.unwrap());
        assert_eq!(q["status"], "connected", "{q:?}");
        q["connectionId"].clone()
    }

    async fn execute(&self, bearer: &str, tool: &str, params: Value) -> Value {
        let (s, b) = self
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

    async fn connections(&self, bearer: &str) -> Vec<Value> {
        let (s, b) = self
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
}

#[tokio::test]
async fn a_user_connects_through_the_browser_and_calls_with_their_own_token() {
    let w = world().await;
    let (_, config) =
        w.rt.admin(Method::GET, &format!("/v1/{APP}/integrations/config"), None)
            .await;
    let redirect_uri = format!("{}/v1/integrations/callback", w.rt.url);
    assert_eq!(
        config["toolkits"][0]["redirectUri"],
        redirect_uri.as_str(),
        "{config}"
    );
    assert_eq!(config["toolkits"][0]["auth"], "oauth");

    let start = w
        .connect(
            &jwt("alice"),
            json!({"toolkit": "fake", "redirectUrl": DONE}),
        )
        .await;
    let page = url::Url::parse(start["authUrl"].as_str().unwrap()).unwrap();
    assert_eq!(page.path(), "/v1/integrations/connect", "{page}");
    let auth_url = url::Url::parse(&w.browser.confirm(page.as_str()).await).unwrap();
    let q = query(&auth_url);
    assert_eq!(q["client_id"], FAKE_CLIENT_ID);
    assert_eq!(q["redirect_uri"], redirect_uri);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], "read write", "the union of the tools' scopes");
    assert!(q["state"].len() >= 22);
    assert!(!auth_url.as_str().contains(FAKE_CLIENT_SECRET));

    // Pending until the browser comes back.
    let pending = w.connections(&jwt("alice")).await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["state"], "pending");

    let (callback, status, location) = w.consent_at_provider(auth_url.as_str()).await;
    assert_eq!(status, 303);
    let location = location.unwrap();
    assert!(location.as_str().starts_with(DONE), "{location}");
    let back = query(&location);
    assert_eq!(back["status"], "connected");
    assert_eq!(back["toolkit"], "fake");
    assert_eq!(
        back["connectionRequestId"],
        start["connectionRequestId"].as_str().unwrap()
    );
    assert_eq!(
        back["connectionId"],
        start["connectionId"].as_str().unwrap()
    );
    assert!(!location.as_str().contains("code="), "no code is passed on");

    // The token request used the verifier and the identical redirect URI.
    let token_requests = w.fake.token_requests();
    assert_eq!(token_requests.len(), 1);
    let exchange = &token_requests[0];
    assert_eq!(exchange.grant_type(), Some("authorization_code"));
    assert_eq!(exchange.field("redirect_uri"), Some(redirect_uri.as_str()));
    assert!(exchange.field("code_verifier").is_some());
    let access = exchange.response_json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    let mine = w.connections(&jwt("alice")).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["state"], "active");
    assert_eq!(mine[0]["userId"], "alice");
    assert_eq!(mine[0]["account"]["id"], "4242");
    assert_eq!(mine[0]["account"]["name"], "fake-user");
    assert_eq!(mine[0]["scopes"], json!(["read", "write"]));
    assert_eq!(mine[0]["isDefault"], true);

    let out = w
        .execute(&jwt("alice"), "FAKE_ECHO", json!({"hello": "world"}))
        .await;
    assert_eq!(out["successful"], true, "{out}");
    assert_eq!(out["data"]["body"]["hello"], "world", "{out}");
    let seen = w.fake.api_requests();
    assert_eq!(
        seen.last().unwrap().authorization.as_deref(),
        Some(format!("Bearer {access}").as_str())
    );

    // The state is spent: the same callback again is refused, and the
    // token endpoint is not contacted.
    let (status, location) = w.visit(&callback).await;
    assert_eq!((status, location), (400, None));
    assert_eq!(w.fake.token_requests().len(), 1);

    // Another user sees nothing of alice's, cannot use or delete it.
    assert!(w.connections(&jwt("bob")).await.is_empty());
    let out = w.execute(&jwt("bob"), "FAKE_ECHO", json!({})).await;
    assert_eq!(out["error"]["kind"], "not-connected", "{out}");
    let (s, b) = w
        .api(
            &jwt("bob"),
            Method::POST,
            &format!("/v1/{APP}/integrations/execute"),
            Some(json!({"toolName": "FAKE_ECHO", "params": {}, "userId": "alice"})),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    let id = mine[0]["id"].as_str().unwrap();
    let (s, _) = w
        .api(
            &jwt("bob"),
            Method::DELETE,
            &format!("/v1/{APP}/integrations/connections/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 404);

    // The admin sees every connection and may act for a user.
    let all = w.connections(e2e_tests::ADMIN_KEY).await;
    assert_eq!(all.len(), 1);
    let (s, b) = w
        .api(
            e2e_tests::ADMIN_KEY,
            Method::POST,
            &format!("/v1/{APP}/integrations/execute"),
            Some(json!({"toolName": "FAKE_ME", "params": {}, "userId": "alice"})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["login"], "fake-user", "{b}");

    // Forged and expired JWTs are refused.
    for bad in [
        user_jwt("alice", "another-secret-0123456789abcdef0123", 3600),
        user_jwt("alice", JWT_SECRET, -3600),
    ] {
        let (s, b) = w
            .api(
                &bad,
                Method::GET,
                &format!("/v1/{APP}/integrations/connections"),
                None,
            )
            .await;
        assert_eq!(s, 401, "{b}");
    }

    // Disconnecting revokes upstream, then deletes.
    let (s, b) = w
        .api(
            &jwt("alice"),
            Method::DELETE,
            &format!("/v1/{APP}/integrations/connections/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["revokedUpstream"], true);
    assert_eq!(w.fake.revocations().len(), 1);
    assert!(w.connections(&jwt("alice")).await.is_empty());
    let out = w.execute(&jwt("alice"), "FAKE_ECHO", json!({})).await;
    assert_eq!(out["error"]["kind"], "not-connected");
}

#[tokio::test]
async fn concurrent_calls_on_an_expired_token_refresh_exactly_once() {
    let w = world().await;
    // Due for refresh on first use (the provider still accepts it).
    w.fake.announce_expires_in(Some(0));
    w.connect_user("alice").await;
    w.fake.announce_expires_in(None);

    let results = concurrent_executes(&w, "alice", "FAKE_ECHO", 50).await;
    for r in &results {
        assert_eq!(r["successful"], true, "{r}");
    }
    assert_eq!(w.fake.token_requests_by_grant("refresh_token"), 1);

    // The provider rotated the refresh token; the old one is dead and was
    // never presented again (reuse would have revoked the grant).
    let refreshes: Vec<_> = w
        .fake
        .token_requests()
        .into_iter()
        .filter(|r| r.grant_type() == Some("refresh_token"))
        .collect();
    let old = refreshes[0].field("refresh_token").unwrap().to_string();
    assert!(!w.fake.refresh_token_active(&old));

    // A 401 in the middle of a call: one forced refresh, one retry.
    w.fake.fail_next_api_call();
    let before = w.fake.api_calls();
    let out = w.execute(&jwt("alice"), "FAKE_ECHO", json!({})).await;
    assert_eq!(out["successful"], true, "{out}");
    assert_eq!(w.fake.api_calls(), before + 2);
    assert_eq!(w.fake.token_requests_by_grant("refresh_token"), 2);

    // A provider that sends no new refresh token: the old one is kept and
    // keeps working.
    w.fake.set_token_mode(TokenMode::OmitRefreshToken);
    w.fake.fail_next_api_call();
    assert_eq!(
        w.execute(&jwt("alice"), "FAKE_ECHO", json!({})).await["successful"],
        true
    );
    w.fake.set_token_mode(TokenMode::Normal);
    w.fake.fail_next_api_call();
    assert_eq!(
        w.execute(&jwt("alice"), "FAKE_ECHO", json!({})).await["successful"],
        true
    );
    assert_eq!(w.fake.token_requests_by_grant("refresh_token"), 4);

    // The audit trail names the connection, never a token.
    let (_, logs) =
        w.rt.admin(
            Method::GET,
            &format!("/v1/{APP}/integrations/logs?limit=100"),
            None,
        )
        .await;
    let logs = logs["logs"].as_array().unwrap();
    assert!(logs.len() >= 53);
    assert!(logs.iter().all(|l| {
        l["connection"]
            .as_str()
            .is_some_and(|c| c.starts_with("conn_"))
    }));
    assert_eq!(logs[0]["identity"], "user:alice");
}

/// Starts `n` executes of `tool` as `user` at once; returns their answers.
async fn concurrent_executes(w: &World, user: &str, tool: &str, n: usize) -> Vec<Value> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let http = w.rt.http.clone();
        let url = format!("{}/v1/{APP}/integrations/execute", w.rt.url);
        let token = jwt(user);
        let body = json!({"toolName": tool, "params": {"i": i}});
        tasks.spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        });
    }
    tasks.join_all().await
}

#[tokio::test]
async fn provider_faults_keep_tokens_or_ask_for_a_reconnect() {
    let w = world().await;
    // Tokens are announced as expired at once, so every call below starts
    // with a refresh.
    // Each fault gets its own user's connection: a failed refresh backs off
    // per connection, and that back-off (and the recovery after it) is
    // tested on the broker's clock in host-api/tests/refresh.rs, not here.
    w.fake.announce_expires_in(Some(0));
    w.connect_user("alice").await;

    // 5xx at the token endpoint: the call fails as unavailable and the
    // tokens are kept.
    w.fake.set_token_mode(TokenMode::ServerError);
    let out = w.execute(&jwt("alice"), "FAKE_ECHO", json!({})).await;
    assert_eq!(out["error"]["kind"], "unavailable", "{out}");
    assert_eq!(w.connections(&jwt("alice")).await[0]["state"], "active");

    // A slow token endpoint: ten waiting callers, one refresh.
    w.fake.set_token_mode(TokenMode::Normal);
    w.connect_user("bob").await;
    w.fake
        .set_token_mode(TokenMode::Slow(Duration::from_millis(1500)));
    let before = w.fake.token_requests_by_grant("refresh_token");
    for r in concurrent_executes(&w, "bob", "FAKE_ECHO", 10).await {
        assert_eq!(r["successful"], true, "{r}");
    }
    assert_eq!(w.fake.token_requests_by_grant("refresh_token"), before + 1);

    // A redirect from the token endpoint is not followed.
    w.fake.set_token_mode(TokenMode::Normal);
    w.connect_user("carol").await;
    w.fake.set_token_mode(TokenMode::Redirect);
    let out = w.execute(&jwt("carol"), "FAKE_ECHO", json!({})).await;
    assert_eq!(out["error"]["kind"], "unavailable", "{out}");
    assert_eq!(w.fake.redirect_followed(), 0);
    assert_eq!(w.connections(&jwt("carol")).await[0]["state"], "active");

    w.fake.set_token_mode(TokenMode::Normal);
    let id = w.connect_user("dave").await;
    // invalid_grant: the connection needs a reconnect ...
    w.fake.set_token_mode(TokenMode::InvalidGrant);
    let out = w.execute(&jwt("dave"), "FAKE_ECHO", json!({})).await;
    assert_eq!(out["error"]["kind"], "needs-reconnect", "{out}");
    let listed = w.connections(&jwt("dave")).await;
    assert_eq!(listed[0]["state"], "needs_reconnect");
    assert!(
        listed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid_grant")
    );
    let out = w.execute(&jwt("dave"), "FAKE_ECHO", json!({})).await;
    assert_eq!(out["error"]["kind"], "needs-reconnect");

    // ... which re-authorizes the same connection id.
    w.fake.set_token_mode(TokenMode::Normal);
    let start = w
        .connect(
            &jwt("dave"),
            json!({"toolkit": "fake", "connectionId": id, "redirectUrl": DONE}),
        )
        .await;
    assert_eq!(start["connectionId"], id.as_str());
    let (_, status, location) = w.consent(start["authUrl"].as_str().unwrap()).await;
    assert_eq!(status, 303);
    let back = query(&location.unwrap());
    assert_eq!(back.get("connectionId"), Some(&id), "{back:?}");
    let listed = w.connections(&jwt("dave")).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"], "active");
    assert_eq!(
        w.execute(&jwt("dave"), "FAKE_ECHO", json!({})).await["successful"],
        true
    );
}

#[tokio::test]
async fn missing_scopes_get_a_step_up_url_that_asks_only_for_what_is_needed() {
    let w = world_with(json!({"scopes": ["read"]})).await;
    let id = w.connect_user("alice").await;
    assert_eq!(
        w.connections(&jwt("alice")).await[0]["scopes"],
        json!(["read"])
    );

    let out = w.execute(&jwt("alice"), "FAKE_WRITE", json!({})).await;
    let err = &out["error"];
    assert_eq!(err["kind"], "insufficient-scope", "{out}");
    assert_eq!(err["missing"], json!(["write"]));
    let provider = w.browser.confirm(err["authUrl"].as_str().unwrap()).await;
    let auth_url = url::Url::parse(&provider).unwrap();
    assert_eq!(query(&auth_url)["scope"], "read write");

    let (_, status, location) = w.consent_at_provider(auth_url.as_str()).await;
    assert_eq!(status, 303);
    let back = query(&location.unwrap());
    assert_eq!(back["status"], "connected");
    assert_eq!(back["connectionId"], id);
    assert_eq!(
        w.connections(&jwt("alice")).await[0]["scopes"],
        json!(["read", "write"])
    );
    assert_eq!(
        w.execute(&jwt("alice"), "FAKE_WRITE", json!({})).await["successful"],
        true
    );
}

#[tokio::test]
async fn forged_states_refusals_and_bad_redirects_never_reach_the_token_endpoint() {
    let w = world().await;
    let start = w
        .connect(
            &jwt("alice"),
            json!({"toolkit": "fake", "redirectUrl": DONE}),
        )
        .await;
    let provider = w.browser.confirm(start["authUrl"].as_str().unwrap()).await;
    let r = w.browser.get(&provider).await;
    let callback = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let q = query(&callback);
    let mut tampered = callback.clone();
    let mut state = q["state"].clone();
    state.replace_range(0..1, if state.starts_with('A') { "B" } else { "A" });
    tampered
        .query_pairs_mut()
        .clear()
        .append_pair("code", &q["code"])
        .append_pair("state", &state);
    assert_eq!(w.visit(tampered.as_str()).await, (400, None));
    let mut no_state = callback.clone();
    no_state
        .query_pairs_mut()
        .clear()
        .append_pair("code", &q["code"]);
    assert_eq!(w.visit(no_state.as_str()).await, (400, None));
    assert_eq!(w.fake.token_requests().len(), 0);

    // The user says no at the provider: back to the app with the reason.
    w.fake.set_deny(true);
    let start = w
        .connect(
            &jwt("alice"),
            json!({"toolkit": "fake", "redirectUrl": DONE}),
        )
        .await;
    let (_, status, location) = w.consent(start["authUrl"].as_str().unwrap()).await;
    assert_eq!(status, 303);
    let back = query(&location.unwrap());
    assert_eq!(back["status"], "error");
    assert_eq!(back["reason"], "access_denied");
    w.fake.set_deny(false);

    // Redirect URLs off the allowlist, in their bypass forms.
    for bad in [
        "https://evil.test/done",
        "//evil.test/done",
        "http://127.0.0.1:9@evil.test/done",
        "http://127.0.0.1:9/done/../admin",
        "http://127.0.0.1:9\\@evil.test/done",
        "javascript:alert(1)//http://127.0.0.1:9/done",
        "http://127.0.0.1:99/done",
    ] {
        let (s, b) = w
            .api(
                &jwt("alice"),
                Method::POST,
                &format!("/v1/{APP}/integrations/connect"),
                Some(json!({"toolkit": "fake", "redirectUrl": bad})),
            )
            .await;
        assert_eq!(s, 400, "{bad}: {b}");
    }

    // The allowlist is checked again at the callback.
    let start = w
        .connect(
            &jwt("alice"),
            json!({"toolkit": "fake", "redirectUrl": DONE}),
        )
        .await;
    let (s, _) =
        w.rt.admin(
            Method::PATCH,
            &format!("/v1/{APP}/settings"),
            Some(json!({"redirectUrls": []})),
        )
        .await;
    assert_eq!(s, 200);
    let (_, status, location) = w.consent(start["authUrl"].as_str().unwrap()).await;
    assert_eq!((status, location), (400, None));
    assert_eq!(w.fake.token_requests().len(), 0);

    // An end user cannot connect the app's shared account, nor on behalf
    // of someone else.
    let (s, _) = w
        .api(
            &jwt("alice"),
            Method::POST,
            &format!("/v1/{APP}/integrations/connect"),
            Some(json!({"toolkit": "fake", "shared": true})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = w
        .api(
            &jwt("alice"),
            Method::POST,
            &format!("/v1/{APP}/integrations/connect"),
            Some(json!({"toolkit": "fake", "userId": "bob"})),
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn a_shared_toolkit_serves_every_user_and_disabling_keeps_connections() {
    // End users reach the shared account directly only through the tools
    // the admin opened to them (userTools); FAKE_ECHO stays closed.
    let w = world_with(json!({"shared": true, "userTools": ["FAKE_ME"]})).await;
    let start = w
        .connect(
            e2e_tests::ADMIN_KEY,
            json!({"toolkit": "fake", "shared": true}),
        )
        .await;
    // Without a redirectUrl the callback answers with a page.
    let provider = w.browser.confirm(start["authUrl"].as_str().unwrap()).await;
    let r = w.browser.get(&provider).await;
    let callback = r.headers()["location"].to_str().unwrap().to_string();
    let page = w.browser.get(&callback).await;
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("Connected"));

    for user in ["alice", "bob"] {
        let out = w.execute(&jwt(user), "FAKE_ME", json!({})).await;
        assert_eq!(out["successful"], true, "{out}");
    }
    let out = w.execute(&jwt("alice"), "FAKE_ECHO", json!({})).await;
    assert_eq!(out["error"]["kind"], "denied", "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("userTools"),
        "{out}"
    );
    let all = w.connections(e2e_tests::ADMIN_KEY).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["userId"], Value::Null);

    // Disabled: calls are denied, the connection is kept and shown as such.
    let (s, _) =
        w.rt.admin(
            Method::DELETE,
            &format!("/v1/{APP}/integrations/configure/fake"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let out = w.execute(&jwt("alice"), "FAKE_ME", json!({})).await;
    assert_eq!(out["error"]["kind"], "denied", "{out}");
    assert_eq!(
        w.connections(e2e_tests::ADMIN_KEY).await[0]["state"],
        "disabled"
    );
    let (s, _) =
        w.rt.admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/configure"),
            Some(json!({"toolkit": "fake"})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        w.execute(&jwt("alice"), "FAKE_ME", json!({})).await["successful"],
        true
    );
}

#[tokio::test]
async fn functions_use_the_callers_connection_and_as_user_only_where_allowed() {
    let w = world().await;
    w.connect_user("alice").await;
    let manifest = r#"{"grants": {"toolkits": ["fake"]}, "allowAsUser": true}"#;
    w.rt.deploy_ok("probe", guest("probe"), manifest).await;
    let call = |bearer: Option<String>, body: Value| {
        let w = &w;
        async move {
            let mut req =
                w.rt.http
                    .post(format!("{}/fn/{APP}/probe/call", w.rt.url))
                    .json(&body);
            if let Some(b) = bearer {
                req = req.bearer_auth(b);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (
                status,
                serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap_or(Value::Null),
            )
        }
    };
    let echo = json!({"tool": "FAKE_ECHO", "params": {"from": "function"}});
    // The end user's own connection.
    let (s, b) = call(Some(jwt("alice")), echo.clone()).await;
    assert_eq!(s, 200);
    assert_eq!(b["ok"]["body"]["from"], "function", "{b}");
    // Anonymous: no end user, no connection.
    let (_, b) = call(None, echo.clone()).await;
    assert_eq!(b["error"]["kind"], "not-connected", "{b}");
    // A forged or expired JWT is refused before the function runs.
    for bad in [
        user_jwt("alice", "another-secret-0123456789abcdef0123", 3600),
        user_jwt("alice", JWT_SECRET, -3600),
    ] {
        let (s, _) = call(Some(bad), echo.clone()).await;
        assert_eq!(s, 401);
    }
    // A bearer of the function's own scheme passes through; the call is
    // anonymous.
    let (_, b) = call(Some("webhook-secret-of-the-function".into()), echo.clone()).await;
    assert_eq!(b["error"]["kind"], "not-connected", "{b}");
    // as-user: from an admin invocation, yes; from an end user, no.
    let as_alice = json!({"tool": "FAKE_ECHO", "params": {}, "asUser": "alice"});
    let (_, b) = call(Some(e2e_tests::ADMIN_KEY.into()), as_alice.clone()).await;
    assert!(b["ok"].is_object(), "{b}");
    let (_, b) = call(Some(jwt("bob")), as_alice).await;
    assert_eq!(b["error"]["kind"], "denied", "{b}");
    // The audit records bob, who was verified, and the refused target
    // apart: never as if alice had made the call.
    let (_, logs) = w
        .api(
            e2e_tests::ADMIN_KEY,
            Method::GET,
            &format!("/v1/{APP}/integrations/logs?limit=1"),
            None,
        )
        .await;
    let last = &logs["logs"][0];
    assert_eq!(last["identity"], "user:bob", "{logs}");
    assert_eq!(last["asUser"], "alice", "{logs}");
    assert_eq!(last["outcome"], "denied", "{logs}");
    // Bob has no connection of his own.
    let (_, b) = call(Some(jwt("bob")), echo).await;
    assert_eq!(b["error"]["kind"], "not-connected", "{b}");
}

#[tokio::test]
async fn secrets_never_appear_in_output_answers_audit_or_store_files() {
    let w = world().await;
    // Due for refresh on first use, so the first call refreshes.
    w.fake.announce_expires_in(Some(0));
    let id = w.connect_user("alice").await;
    w.fake.announce_expires_in(None);
    let mut answers = String::new();
    answers.push_str(
        &w.execute(&jwt("alice"), "FAKE_ECHO", json!({}))
            .await
            .to_string(),
    );
    w.fake.fail_next_api_call();
    answers.push_str(
        &w.execute(&jwt("alice"), "FAKE_ME", json!({}))
            .await
            .to_string(),
    );
    // A step-up error also creates a flow (with its own PKCE verifier).
    answers.push_str(
        &w.execute(&jwt("alice"), "FAKE_WRITE", json!({}))
            .await
            .to_string(),
    );
    for path in [
        "integrations/config",
        "integrations/logs",
        "integrations/connections",
        "settings",
    ] {
        let (_, b) =
            w.rt.admin(Method::GET, &format!("/v1/{APP}/{path}"), None)
                .await;
        answers.push_str(&b.to_string());
    }

    let mut secrets: Vec<String> = vec![FAKE_CLIENT_SECRET.into(), JWT_SECRET.into(), jwt("alice")];
    for r in w.fake.token_requests() {
        let resp = r.response_json();
        for field in ["access_token", "refresh_token"] {
            if let Some(t) = resp[field].as_str() {
                secrets.push(t.to_string());
            }
        }
        for field in ["code", "code_verifier", "refresh_token"] {
            if let Some(v) = r.field(field) {
                secrets.push(v.to_string());
            }
        }
    }
    for a in w.fake.authorize_requests() {
        if let Some(s) = a.param("state") {
            secrets.push(s.to_string());
        }
    }
    assert!(secrets.len() > 8, "{secrets:?}");
    let (s, _) = w
        .api(
            &jwt("alice"),
            Method::DELETE,
            &format!("/v1/{APP}/integrations/connections/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let output = w.rt.output();
    for secret in &secrets {
        assert!(
            !output.contains(secret.as_str()),
            "a secret is in the runtime's output"
        );
        assert!(
            !answers.contains(secret.as_str()),
            "a secret is in an API answer"
        );
        let files = files_containing(w.dir.path(), secret.as_bytes());
        assert!(files.is_empty(), "a secret is stored in clear in {files:?}");
    }
}

#[tokio::test]
async fn idle_connections_are_refreshed_in_the_background() {
    let fake = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::default();
    options.args.extend(
        [
            "--keep-alive-after-secs",
            "1",
            "--keep-alive-every-secs",
            "1",
        ]
        .map(String::from),
    );
    let rt = Runtime::start(dir.path(), options).await;
    let w = World::setup(rt, fake, dir, json!({})).await;
    w.connect_user("alice").await;
    assert_eq!(w.fake.token_requests_by_grant("refresh_token"), 0);
    // Nobody calls; the sweep refreshes the grant.
    for _ in 0..50 {
        if w.fake.token_requests_by_grant("refresh_token") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(w.fake.token_requests_by_grant("refresh_token") >= 1);
    assert_eq!(
        w.execute(&jwt("alice"), "FAKE_ECHO", json!({})).await["successful"],
        true
    );
}

#[tokio::test]
async fn custom_connectors_can_come_from_a_directory_and_bad_ones_stop_start_up() {
    let fake = FakeProvider::start().await;
    let connectors = tempfile::tempdir().unwrap();
    std::fs::write(
        connectors.path().join("fake.json"),
        fake.connector().to_string(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::default();
    options.args.push("--connectors-dir".into());
    options
        .args
        .push(connectors.path().to_string_lossy().into_owned());
    let rt = Runtime::start(dir.path(), options.clone()).await;
    let (s, b) = rt
        .admin(
            Method::GET,
            &format!("/v1/{APP}/integrations/tools?toolkit=fake"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    // The three declared tools and the generated FAKE_PROXY.
    let names: Vec<&str> = b["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["FAKE_ECHO", "FAKE_ME", "FAKE_PROXY", "FAKE_WRITE"],
        "{b}"
    );
    rt.stop().await;

    // Plain-http OAuth endpoints are refused without the explicit flag.
    let strict = Options {
        args: options
            .args
            .iter()
            .filter(|a| *a != "--allow-insecure-upstreams")
            .cloned()
            .collect(),
        env: options.env.clone(),
    };
    let out = Runtime::try_start(tempfile::tempdir().unwrap().path(), strict)
        .await
        .unwrap_err();
    assert!(out.contains("fake.json"), "{out}");
    assert!(out.contains("--allow-insecure-upstreams"), "{out}");

    std::fs::write(
        connectors.path().join("zbad.json"),
        r#"{"slug": "Bad Slug"}"#,
    )
    .unwrap();
    let out = Runtime::try_start(tempfile::tempdir().unwrap().path(), options)
        .await
        .unwrap_err();
    assert!(out.contains("zbad.json"), "{out}");
}

// ---- Trust boundaries (issue 11): who may re-authorize what, and which
// browser may finish a flow.

fn account(id: &str, login: &str) -> e2e_tests::oauth::Account {
    e2e_tests::oauth::Account {
        id: id.into(),
        login: login.into(),
        email: format!("{login}@example.test"),
    }
}

impl World {
    /// Calls the `probe` function's `/call` path: (status, body).
    async fn probe(&self, bearer: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self
            .rt
            .http
            .post(format!("{}/fn/{APP}/probe/call", self.rt.url))
            .json(&body);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The admin connects the app's shared account as `who`.
    async fn connect_shared(&self, who: &e2e_tests::oauth::Account) -> String {
        self.fake.set_account(who.clone());
        let start = self
            .connect(
                e2e_tests::ADMIN_KEY,
                json!({"toolkit": "fake", "shared": true, "redirectUrl": DONE}),
            )
            .await;
        let (_, status, location) = self.consent(start["authUrl"].as_str().unwrap()).await;
        assert_eq!(status, 303);
        let q = query(&location.unwrap());
        assert_eq!(q["status"], "connected", "{q:?}");
        q["connectionId"].clone()
    }
}

#[tokio::test]
async fn only_an_admin_gets_a_link_to_reauthorize_the_shared_connection_and_it_cannot_switch_accounts()
 {
    let w = world_with(json!({"shared": true, "scopes": ["read"]})).await;
    let builder = account("1001", "builder");
    let id = w.connect_shared(&builder).await;
    w.rt.deploy_ok(
        "probe",
        guest("probe"),
        r#"{"grants": {"toolkits": ["fake"]}}"#,
    )
    .await;
    let write = json!({"tool": "FAKE_WRITE", "params": {}});

    // Anonymous callers and end users of a function: the missing scope is
    // named, an admin must approve it, and there is no link anywhere.
    for bearer in [None, Some(jwt("mallory"))] {
        let (_, b) = w.probe(bearer.as_deref(), write.clone()).await;
        let err = &b["error"];
        assert_eq!(err["kind"], "insufficient-scope", "{b}");
        assert_eq!(err["missing"], json!(["write"]));
        assert_eq!(err["authUrl"], Value::Null, "{b}");
        let text = b.to_string();
        assert!(text.contains("an admin"), "{text}");
        assert!(!text.contains("state="), "{text}");
    }
    // The bug-report example passes errors to whoever called it: no link.
    // (Its own unit test covers the mapping; here the flow count proves
    // that no step-up flow was even started for those callers.)
    let (_, pending) = w
        .api(
            e2e_tests::ADMIN_KEY,
            Method::GET,
            &format!("/v1/{APP}/integrations/connections?state=pending"),
            None,
        )
        .await;
    assert_eq!(pending["connections"], json!([]), "{pending}");

    // The admin gets the step-up link...
    let out = w
        .execute(e2e_tests::ADMIN_KEY, "FAKE_WRITE", json!({}))
        .await;
    let link = out["error"]["authUrl"].as_str().unwrap().to_string();
    assert!(link.contains("/v1/integrations/connect?state="), "{link}");
    // ...and whoever completes it must sign in as the same account: an
    // attacker's own account is refused, and the old grant keeps working.
    w.fake.set_account(account("6666", "attacker"));
    let (_, status, location) = w.consent(&link).await;
    assert_eq!(status, 303);
    let back = query(&location.unwrap());
    assert_eq!(back["status"], "error");
    assert_eq!(back["reason"], "account_mismatch");
    let me = w.execute(e2e_tests::ADMIN_KEY, "FAKE_ME", json!({})).await;
    assert_eq!(me["data"]["id"], "1001", "{me}");
    let listed = w.connections(e2e_tests::ADMIN_KEY).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["account"]["id"], "1001");
    assert_eq!(listed[0]["scopes"], json!(["read"]));

    // Only an admin may switch accounts, and only explicitly.
    let (s, b) = w
        .api(
            &jwt("mallory"),
            Method::POST,
            &format!("/v1/{APP}/integrations/connect"),
            Some(json!({"toolkit": "fake", "connectionId": id, "switchAccount": true})),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    let start = w
        .connect(
            e2e_tests::ADMIN_KEY,
            json!({"toolkit": "fake", "shared": true, "connectionId": id,
                   "switchAccount": true, "redirectUrl": DONE}),
        )
        .await;
    let page = w
        .browser
        .open_page(start["authUrl"].as_str().unwrap())
        .await;
    assert!(page.contains("switch"), "{page}");
    w.fake.set_account(account("2002", "new-owner"));
    let (_, status, location) = w.consent(start["authUrl"].as_str().unwrap()).await;
    assert_eq!(status, 303);
    assert_eq!(query(&location.unwrap())["status"], "connected");
    let me = w.execute(e2e_tests::ADMIN_KEY, "FAKE_ME", json!({})).await;
    assert_eq!(me["data"]["id"], "2002", "{me}");
}

#[tokio::test]
async fn a_users_own_reconnect_must_come_back_with_the_same_account() {
    let w = world().await;
    w.fake.set_account(account("501", "alice-at-provider"));
    let id = w.connect_user("alice").await;
    let start = w
        .connect(
            &jwt("alice"),
            json!({"toolkit": "fake", "connectionId": id, "redirectUrl": DONE}),
        )
        .await;
    w.fake.set_account(account("502", "someone-else"));
    let (_, _, location) = w.consent(start["authUrl"].as_str().unwrap()).await;
    let back = query(&location.unwrap());
    assert_eq!(back["reason"], "account_mismatch", "{back:?}");
    let me = w.execute(&jwt("alice"), "FAKE_ME", json!({})).await;
    assert_eq!(me["data"]["id"], "501", "{me}");
    // End users cannot ask to switch.
    let (s, _) = w
        .api(
            &jwt("alice"),
            Method::POST,
            &format!("/v1/{APP}/integrations/connect"),
            Some(json!({"toolkit": "fake", "connectionId": id, "switchAccount": true})),
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn a_forwarded_connect_link_cannot_attach_someone_elses_account() {
    let w = world().await;
    let start = w
        .connect(
            &jwt("mallory"),
            json!({"toolkit": "fake", "redirectUrl": DONE}),
        )
        .await;
    let link = start["authUrl"].as_str().unwrap();

    // The page says whose connection it makes, before anything else.
    let page = w.browser.open_page(link).await;
    assert!(page.contains("mallory") && page.contains(APP), "{page}");
    assert!(page.contains("read") && page.contains("write"), "{page}");

    // Mallory confirms in her browser and forwards the provider's URL;
    // the victim consents in theirs, which never confirmed the page.
    let provider = w.browser.confirm(link).await;
    let victim = ConnectBrowser::new();
    w.fake.set_account(account("777", "victim"));
    let r = victim.get(&provider).await;
    assert_eq!(r.status().as_u16(), 302);
    let callback = r.headers()["location"].to_str().unwrap().to_string();
    let r = victim.get(&callback).await;
    assert_eq!(r.status().as_u16(), 303);
    let back = query(&url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap());
    assert_eq!(back["reason"], "browser_mismatch", "{back:?}");
    assert_eq!(
        w.fake.token_requests().len(),
        0,
        "the code is never exchanged"
    );
    assert!(w.connections(&jwt("mallory")).await.is_empty());

    // Once confirmed in one browser, the link does not work in another.
    let start = w
        .connect(
            &jwt("mallory"),
            json!({"toolkit": "fake", "redirectUrl": DONE}),
        )
        .await;
    let link = start["authUrl"].as_str().unwrap();
    w.browser.confirm(link).await;
    let other = ConnectBrowser::new();
    let page = other.open_page(link).await;
    assert_eq!(other.submit(link, &page).await.0, 400);
    // The same browser may confirm again (a reload).
    let again = w.browser.open_page(link).await;
    assert_eq!(w.browser.submit(link, &again).await.0, 303);

    // A cross-site form post carries no page cookie: refused.
    let start = w
        .connect(
            &jwt("mallory"),
            json!({"toolkit": "fake", "redirectUrl": DONE}),
        )
        .await;
    let link = start["authUrl"].as_str().unwrap();
    let state = query(&url::Url::parse(link).unwrap())["state"].clone();
    let r = ConnectBrowser::new()
        .post_form(
            &format!("{}/v1/integrations/connect", w.rt.url),
            &[("state", &state), ("csrf", "guessed")],
        )
        .await;
    assert_eq!(r.status().as_u16(), 403);
    // The page cannot be framed.
    let r = w.browser.get(link).await;
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
}

#[tokio::test]
async fn one_user_cannot_fill_the_apps_pending_connect_flows() {
    let w = world_with(json!({"scopes": ["read"]})).await;
    let max = 20;
    for _ in 0..max {
        w.connect(&jwt("flooder"), json!({"toolkit": "fake"})).await;
    }
    let (s, b) = w
        .api(
            &jwt("flooder"),
            Method::POST,
            &format!("/v1/{APP}/integrations/connect"),
            Some(json!({"toolkit": "fake"})),
        )
        .await;
    assert_eq!(s, 429, "{b}");
    assert!(b.to_string().contains("flooder"), "{b}");
    // Everyone else still connects.
    w.connect_user("alice").await;
    // Step-up links count too: at the cap, alice's step-up error has no
    // link but says how to reconnect.
    for _ in 0..max {
        w.connect(&jwt("alice"), json!({"toolkit": "fake"})).await;
    }
    let out = w.execute(&jwt("alice"), "FAKE_WRITE", json!({})).await;
    assert_eq!(out["error"]["kind"], "insufficient-scope", "{out}");
    assert_eq!(out["error"]["authUrl"], Value::Null, "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reconnect"),
        "{out}"
    );
}

#[tokio::test]
async fn an_end_users_direct_execute_never_uses_the_apps_own_credentials() {
    let w = world().await;
    // An API-key toolkit of the app (the fake's API accepts the key as a
    // bearer token only if it is a real grant: here any refusal is fine,
    // what matters is that no request is sent).
    let (s, b) =
        w.rt.admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/connectors"),
            Some(json!({
                "slug": "keyed", "displayName": "Keyed", "apiBaseUrl": w.fake.api_url(),
                "auth": {"type": "bearer"},
                "tools": [{"name": "KEYED_ME", "description": "Me", "method": "GET", "path": "/me",
                           "parameters": {"type": "object"}}]
            })),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) =
        w.rt.admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/configure"),
            Some(json!({"toolkit": "keyed", "apiKey": "app-api-key-CANARY"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    w.fake.reset_counters();
    for tool in ["KEYED_ME", "KEYED_PROXY"] {
        let params = if tool == "KEYED_PROXY" {
            json!({"method": "GET", "path": "/me"})
        } else {
            json!({})
        };
        let out = w.execute(&jwt("alice"), tool, params).await;
        assert_eq!(out["error"]["kind"], "denied", "{tool}: {out}");
        assert!(
            out["error"]["message"]
                .as_str()
                .unwrap()
                .contains("userTools"),
            "{out}"
        );
    }
    assert_eq!(w.fake.api_calls(), 0, "nothing reached the provider");
    // Opening one tool does not open the proxy.
    let (s, b) =
        w.rt.admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/configure"),
            Some(json!({"toolkit": "keyed", "userTools": ["KEYED_ME"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["toolkit"]["userTools"], json!(["KEYED_ME"]), "{b}");
    let out = w
        .execute(
            &jwt("alice"),
            "KEYED_PROXY",
            json!({"method": "GET", "path": "/me"}),
        )
        .await;
    assert_eq!(out["error"]["kind"], "denied", "{out}");
    let out = w.execute(&jwt("alice"), "KEYED_ME", json!({})).await;
    assert_ne!(out["error"]["kind"], "denied", "{out}");
    // Unknown tools are refused at configure.
    let (s, b) =
        w.rt.admin(
            Method::POST,
            &format!("/v1/{APP}/integrations/configure"),
            Some(json!({"toolkit": "keyed", "userTools": ["FAKE_ECHO"]})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    // The audit names the verified principal.
    let (_, logs) = w
        .api(
            e2e_tests::ADMIN_KEY,
            Method::GET,
            &format!("/v1/{APP}/integrations/logs?limit=10"),
            None,
        )
        .await;
    let first = &logs["logs"].as_array().unwrap()[0];
    assert_eq!(first["identity"], "user:alice", "{logs}");
}
