//! OAuth 2.0 peers the end-to-end tests run the runtime against.
//!
//! * [`MockOAuthServer`]: an independent implementation, the npm package
//!   `oauth2-mock-server` (pinned in `tests/oauth-peer/package.json`, started
//!   by `tests/oauth-peer/serve.mjs`). It proves the runtime interoperates
//!   with an OAuth server that is not ours. It is permissive: it checks no
//!   client credentials and does not rotate refresh tokens (see the comment
//!   at the top of `serve.mjs`).
//! * [`FakeProvider`]: our own strict, fault-injecting provider: an
//!   authorization server (code flow with PKCE S256, refresh-token rotation
//!   with reuse detection, RFC 7009 revocation) plus a tiny protected API.
//!   Tests switch its faults at runtime and inspect everything it received.
//!
//! Both listen on 127.0.0.1 only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, header};
use axum::routing::{any, get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

mod fake_endpoints;
mod mock_server;

use self::fake_endpoints::{api, authorize, redirected, revoke, token};
pub use self::mock_server::MockOAuthServer;

/// The client id [`FakeProvider`] accepts.
pub const FAKE_CLIENT_ID: &str = "fake-client-id";
/// The client secret [`FakeProvider`] accepts; distinctive, so tests can
/// search logs and files for it (it must never show up there).
pub const FAKE_CLIENT_SECRET: &str = "fake-client-secret-CANARY-c0ffee5ecre7";

/// Authorization codes expire this long after `/oauth/authorize`.
const CODE_LIFETIME: Duration = Duration::from_secs(600);

/// How [`FakeProvider`]'s token endpoint (`POST /oauth/token`) answers.
/// Set with [`FakeProvider::set_token_mode`] (until changed) or
/// [`FakeProvider::set_token_mode_once`] (next request only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenMode {
    /// Validates and answers like a correct, strict server.
    #[default]
    Normal,
    /// `400 {"error":"invalid_grant"}` without looking at the request; no
    /// state changes (the grant stays valid).
    InvalidGrant,
    /// `503` with an HTML body (a load balancer's error page).
    ServerError,
    /// Waits this long, then behaves like `Normal`. If the client gives up
    /// first, the request is not processed (its record keeps `status: None`).
    Slow(Duration),
    /// Like `Normal`, but refresh responses carry no `refresh_token` and the
    /// presented refresh token stays valid (no rotation).
    /// Authorization-code responses still include one.
    OmitRefreshToken,
    /// `302 Found` to [`FakeProvider::redirected_token_url`], which counts
    /// hits in [`FakeProvider::redirect_followed`].
    Redirect,
}

/// The provider-side account a grant belongs to, as `GET /api/me` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Stable account id.
    pub id: String,
    /// User name.
    pub login: String,
    /// Email address.
    pub email: String,
}

impl Default for Account {
    fn default() -> Self {
        Self {
            id: "4242".into(),
            login: "fake-user".into(),
            email: "fake-user@example.test".into(),
        }
    }
}

/// How a client authenticated to the token or revocation endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` (client_secret_basic).
    Basic,
    /// `client_id` and `client_secret` in the form (client_secret_post).
    Post,
    /// No client secret at all.
    None,
}

/// One `GET /oauth/authorize` the fake received.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    /// Query parameters in order, decoded.
    pub params: Vec<(String, String)>,
    /// Status answered (302 when it redirected back to the client).
    pub status: u16,
    /// The `Location` answered, if it redirected.
    pub location: Option<String>,
}

impl AuthorizeRequest {
    /// A query parameter (the first, if repeated).
    pub fn param(&self, name: &str) -> Option<&str> {
        find(&self.params, name)
    }
}

/// One `POST /oauth/token` the fake received, secrets included.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// Form fields in order, decoded (`client_secret`, `code`,
    /// `code_verifier`, `refresh_token` included).
    pub form: Vec<(String, String)>,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
    /// How the client authenticated (as far as the request shows).
    pub client_auth: ClientAuth,
    /// Status answered; `None` while pending, or if the client went away
    /// before the answer (see [`TokenMode::Slow`]).
    pub status: Option<u16>,
    /// Body answered.
    pub response: Option<String>,
    seq: u64,
}

impl TokenRequest {
    /// A form field (the first, if repeated).
    pub fn field(&self, name: &str) -> Option<&str> {
        find(&self.form, name)
    }

    /// The `grant_type` field.
    pub fn grant_type(&self) -> Option<&str> {
        self.field("grant_type")
    }

    /// The answer as JSON (`Null` if none or not JSON).
    pub fn response_json(&self) -> Value {
        self.response
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or(Value::Null)
    }
}

/// One request to the fake's protected API (`/api/...`).
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
    /// Body text.
    pub body: String,
    /// Status answered.
    pub status: u16,
}

/// One `POST /oauth/revoke` the fake received.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// The `token` field (empty if missing).
    pub token: String,
    /// The `token_type_hint` field.
    pub token_type_hint: Option<String>,
    /// Form fields in order, decoded.
    pub form: Vec<(String, String)>,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
    /// How the client authenticated.
    pub client_auth: ClientAuth,
    /// Whether the token was one this fake issued to that client (its grant
    /// is then revoked).
    pub known: bool,
    /// Status answered.
    pub status: u16,
}

#[derive(Debug)]
struct PendingCode {
    client_id: String,
    redirect_uri: String,
    challenge: Option<String>,
    scopes: Vec<String>,
    account: Account,
    issued: Instant,
    used: bool,
    /// The grant its exchange created, revoked if the code is replayed.
    grant: Option<usize>,
}

#[derive(Debug)]
struct Grant {
    client_id: String,
    account: Account,
    scopes: Vec<String>,
    revoked: bool,
}

#[derive(Debug)]
struct AccessToken {
    grant: usize,
    scopes: Vec<String>,
    expires_at: Instant,
}

#[derive(Debug)]
struct RefreshToken {
    grant: usize,
    used: bool,
}

#[derive(Debug)]
struct Inner {
    // Settings.
    redirect_uris: Vec<String>,
    require_pkce: bool,
    deny: bool,
    granted_scopes: Option<Vec<String>>,
    expires_in: u64,
    /// Lifetime told to the client, when it differs from the real one.
    announced_expires_in: Option<u64>,
    account: Account,
    token_mode: TokenMode,
    token_mode_once: bool,
    revocation_fails: bool,
    fail_next_api_call: bool,
    // Issued state.
    codes: HashMap<String, PendingCode>,
    grants: Vec<Grant>,
    access_tokens: HashMap<String, AccessToken>,
    refresh_tokens: HashMap<String, RefreshToken>,
    // Records.
    authorize_requests: Vec<AuthorizeRequest>,
    token_requests: Vec<TokenRequest>,
    api_requests: Vec<ApiRequest>,
    revocations: Vec<Revocation>,
    redirect_followed: usize,
    next_seq: u64,
}

impl Inner {
    fn new() -> Self {
        Self {
            redirect_uris: Vec::new(),
            require_pkce: true,
            deny: false,
            granted_scopes: None,
            expires_in: 3600,
            announced_expires_in: None,
            account: Account::default(),
            token_mode: TokenMode::Normal,
            token_mode_once: false,
            revocation_fails: false,
            fail_next_api_call: false,
            codes: HashMap::new(),
            grants: Vec::new(),
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            authorize_requests: Vec::new(),
            token_requests: Vec::new(),
            api_requests: Vec::new(),
            revocations: Vec::new(),
            redirect_followed: 0,
            next_seq: 0,
        }
    }

    fn revoke_grant(&mut self, grant: usize) {
        if let Some(g) = self.grants.get_mut(grant) {
            g.revoked = true;
        }
        self.access_tokens.retain(|_, t| t.grant != grant);
        self.refresh_tokens.retain(|_, t| t.grant != grant);
    }

    /// Scopes and account of a usable access token.
    fn access(&self, token: &str) -> Option<(Vec<String>, Account)> {
        let t = self.access_tokens.get(token)?;
        let grant = self.grants.get(t.grant)?;
        (!grant.revoked && Instant::now() < t.expires_at)
            .then(|| (t.scopes.clone(), grant.account.clone()))
    }

    /// Issues an access token (and a refresh token unless `with_refresh` is
    /// false) on `grant`; returns the token response body.
    fn issue(&mut self, grant: usize, scopes: Vec<String>, with_refresh: bool) -> Value {
        let access = random_token("at_");
        let scope = scopes.join(" ");
        self.access_tokens.insert(
            access.clone(),
            AccessToken {
                grant,
                scopes,
                expires_at: Instant::now() + Duration::from_secs(self.expires_in),
            },
        );
        let mut body = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.announced_expires_in.unwrap_or(self.expires_in),
            "scope": scope,
        });
        if with_refresh {
            let refresh = random_token("rt_");
            self.refresh_tokens
                .insert(refresh.clone(), RefreshToken { grant, used: false });
            body["refresh_token"] = Value::String(refresh);
        }
        body
    }
}

/// A fault-injecting OAuth 2.0 provider on `127.0.0.1:PORT`: an
/// authorization server and a small protected API sharing one state.
///
/// Client: [`FAKE_CLIENT_ID`] / [`FAKE_CLIENT_SECRET`] (client_secret_basic
/// or client_secret_post). Endpoints:
///
/// * `GET /oauth/authorize`: checks `response_type=code`, `client_id`,
///   `redirect_uri` (http(s), no fragment; one of
///   [`FakeProvider::set_redirect_uris`] if set), `state`, and
///   `code_challenge` with `code_challenge_method=S256` (required unless
///   [`FakeProvider::set_require_pkce`]`(false)`; `plain` is refused), then
///   answers 302 to `redirect_uri` with `code` and `state`, as a user who
///   clicked "allow". A bad `client_id`/`redirect_uri` gets a 400 page, no
///   redirect; other problems redirect with `error` (RFC 6749 4.1.2.1).
/// * `POST /oauth/token`: `authorization_code` (single use, 10 min; a replay
///   revokes what the code produced; `redirect_uri` identical; PKCE verifier
///   must match) and `refresh_token` (rotation with reuse detection: a used
///   refresh token revokes the whole grant). Opaque tokens (`at_...`,
///   `rt_...`). Faults: [`TokenMode`].
/// * `POST /oauth/revoke` (RFC 7009): revokes the token's whole grant;
///   200 for any token once the client is authenticated.
/// * `GET /api/me`, `POST /api/echo`, any other `/api/...`: need a valid
///   bearer token, else 401 `{"error":"invalid_token"}`.
///
/// Cloning shares the same server and state.
#[derive(Debug, Clone)]
pub struct FakeProvider {
    base: String,
    state: Arc<Mutex<Inner>>,
}

#[derive(Clone)]
struct Ctx {
    base: String,
    state: Arc<Mutex<Inner>>,
}

impl FakeProvider {
    /// Starts the fake on `127.0.0.1:0`.
    pub async fn start() -> FakeProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(Inner::new()));
        let ctx = Ctx {
            base: base.clone(),
            state: state.clone(),
        };
        let app = Router::new()
            .route("/oauth/authorize", get(authorize))
            .route("/oauth/token", post(token))
            .route("/oauth/revoke", post(revoke))
            .route("/redirected/token", any(redirected))
            .route("/api/{*rest}", any(api))
            .with_state(ctx);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeProvider { base, state }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().unwrap()
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The authorization endpoint, `{base}/oauth/authorize`.
    pub fn authorize_url(&self) -> String {
        format!("{}/oauth/authorize", self.base)
    }

    /// The token endpoint, `{base}/oauth/token`.
    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.base)
    }

    /// The RFC 7009 revocation endpoint, `{base}/oauth/revoke`.
    pub fn revocation_url(&self) -> String {
        format!("{}/oauth/revoke", self.base)
    }

    /// A custom connector (`fake`) for this provider: its OAuth endpoints,
    /// the account endpoint, and three tools (`FAKE_ECHO` needs `read`,
    /// `FAKE_WRITE` needs `write`, `FAKE_ME` is idempotent).
    pub fn connector(&self) -> Value {
        let object = json!({"type": "object", "additionalProperties": true});
        json!({
            "slug": "fake",
            "displayName": "Fake",
            "apiBaseUrl": self.api_url(),
            "oauth": {
                "authorizeUrl": self.authorize_url(),
                "tokenUrl": self.token_url(),
                "revocationUrl": self.revocation_url(),
                "accountPath": "/me",
                "accountIdPointer": "/id",
                "accountNamePointer": "/login"
            },
            "tools": [
                {"name": "FAKE_ECHO", "description": "Echo", "method": "POST", "path": "/echo",
                 "scopes": ["read"], "parameters": object},
                {"name": "FAKE_WRITE", "description": "Write", "method": "POST", "path": "/echo",
                 "scopes": ["write"], "parameters": object},
                {"name": "FAKE_ME", "description": "Me", "method": "GET", "path": "/me",
                 "idempotent": true, "parameters": object}
            ]
        })
    }

    /// The protected API's base, `{base}/api` (so `{api_url}/me`).
    pub fn api_url(&self) -> String {
        format!("{}/api", self.base)
    }

    /// Where [`TokenMode::Redirect`] sends clients, `{base}/redirected/token`.
    pub fn redirected_token_url(&self) -> String {
        format!("{}/redirected/token", self.base)
    }

    /// [`FAKE_CLIENT_ID`].
    pub fn client_id(&self) -> &'static str {
        FAKE_CLIENT_ID
    }

    /// [`FAKE_CLIENT_SECRET`].
    pub fn client_secret(&self) -> &'static str {
        FAKE_CLIENT_SECRET
    }

    // --- settings ---

    /// Sets how the token endpoint answers from now on.
    pub fn set_token_mode(&self, mode: TokenMode) {
        let mut s = self.lock();
        s.token_mode = mode;
        s.token_mode_once = false;
    }

    /// Uses `mode` for the next token request only, then `Normal`.
    pub fn set_token_mode_once(&self, mode: TokenMode) {
        let mut s = self.lock();
        s.token_mode = mode;
        s.token_mode_once = true;
    }

    /// The token endpoint's current mode.
    pub fn token_mode(&self) -> TokenMode {
        self.lock().token_mode
    }

    /// When true, `/oauth/authorize` redirects back with
    /// `error=access_denied` (the user clicked "deny").
    pub fn set_deny(&self, deny: bool) {
        self.lock().deny = deny;
    }

    /// Grants exactly these scopes at the next authorizations, whatever
    /// was requested.
    pub fn set_granted_scopes(&self, scopes: &[&str]) {
        self.lock().granted_scopes = Some(scopes.iter().map(|s| (*s).to_string()).collect());
    }

    /// Grants the requested scopes again (the default).
    pub fn clear_granted_scopes(&self) {
        self.lock().granted_scopes = None;
    }

    /// `expires_in` (seconds) of access tokens issued from now on (default
    /// 3600; 0 gives tokens that are already expired).
    pub fn set_expires_in(&self, seconds: u64) {
        self.lock().expires_in = seconds;
    }

    /// Tells clients `seconds` as `expires_in` while the tokens stay valid
    /// for their real lifetime ([`Self::set_expires_in`]); `None` tells the
    /// truth again. `Some(0)` makes a token the broker must refresh on its
    /// first use without the test waiting for it to expire.
    pub fn announce_expires_in(&self, seconds: Option<u64>) {
        self.lock().announced_expires_in = seconds;
    }

    /// The account that the next authorizations log in as.
    pub fn set_account(&self, account: Account) {
        self.lock().account = account;
    }

    /// Registers the only redirect URIs `/oauth/authorize` accepts (exact
    /// match). Empty (the default): any http(s) URI.
    pub fn set_redirect_uris(&self, uris: &[&str]) {
        self.lock().redirect_uris = uris.iter().map(|s| (*s).to_string()).collect();
    }

    /// Whether `/oauth/authorize` requires a PKCE challenge (default true).
    /// Without one, the token endpoint refuses a `code_verifier`.
    pub fn set_require_pkce(&self, require: bool) {
        self.lock().require_pkce = require;
    }

    /// When true, `/oauth/revoke` answers 503 (and revokes nothing).
    pub fn set_revocation_fails(&self, fails: bool) {
        self.lock().revocation_fails = fails;
    }

    /// Expires every access token issued so far (refresh tokens stay valid).
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for t in self.lock().access_tokens.values_mut() {
            t.expires_at = now;
        }
    }

    /// Makes the next API call answer 401 `invalid_token`, even with a
    /// valid token (one shot).
    pub fn fail_next_api_call(&self) {
        self.lock().fail_next_api_call = true;
    }

    /// Revokes every grant (the user removed the app at the provider):
    /// access and refresh tokens stop working.
    pub fn revoke_all_grants(&self) {
        let mut s = self.lock();
        for g in 0..s.grants.len() {
            s.revoke_grant(g);
        }
    }

    // --- inspection ---

    /// Authorization requests received.
    pub fn authorize_requests(&self) -> Vec<AuthorizeRequest> {
        self.lock().authorize_requests.clone()
    }

    /// Token endpoint requests received (all grant types and modes).
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.lock().token_requests.clone()
    }

    /// How many token requests had this `grant_type`
    /// (`"authorization_code"`, `"refresh_token"`).
    pub fn token_requests_by_grant(&self, grant_type: &str) -> usize {
        self.lock()
            .token_requests
            .iter()
            .filter(|r| r.grant_type() == Some(grant_type))
            .count()
    }

    /// Requests to the protected API (`/api/...`), answered or refused.
    pub fn api_requests(&self) -> Vec<ApiRequest> {
        self.lock().api_requests.clone()
    }

    /// How many requests reached the protected API.
    pub fn api_calls(&self) -> usize {
        self.lock().api_requests.len()
    }

    /// Revocation requests received.
    pub fn revocations(&self) -> Vec<Revocation> {
        self.lock().revocations.clone()
    }

    /// How many requests reached [`FakeProvider::redirected_token_url`]
    /// (a client that followed [`TokenMode::Redirect`]).
    pub fn redirect_followed(&self) -> usize {
        self.lock().redirect_followed
    }

    /// Whether an access token is currently accepted by the API.
    pub fn access_token_active(&self, token: &str) -> bool {
        self.lock().access(token).is_some()
    }

    /// Whether a refresh token would currently be accepted (issued, not yet
    /// used, grant not revoked).
    pub fn refresh_token_active(&self, token: &str) -> bool {
        let s = self.lock();
        s.refresh_tokens
            .get(token)
            .is_some_and(|t| !t.used && s.grants.get(t.grant).is_some_and(|g| !g.revoked))
    }

    /// Clears the records and counters (requests, revocations, redirect
    /// hits); issued tokens and settings stay.
    pub fn reset_counters(&self) {
        let mut s = self.lock();
        s.authorize_requests.clear();
        s.token_requests.clear();
        s.api_requests.clear();
        s.revocations.clear();
        s.redirect_followed = 0;
    }
}

/// A new random PKCE code verifier (43 characters, RFC 7636 4.1).
pub fn pkce_verifier() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The S256 code challenge of `verifier`: `BASE64URL(SHA256(verifier))`.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn random_token(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 24]>()))
}

fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn parse_form(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::mock_server::MOCK_LISTENING_PREFIX;
    use super::*;
    use url::Url;

    const REDIRECT_URI: &str = "http://127.0.0.1:9/oauth/callback";

    /// A client that, like the runtime's token client, follows no redirects.
    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// The query parameters of a `Location` header.
    fn location_params(response: &reqwest::Response) -> HashMap<String, String> {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .expect("Location header")
            .to_str()
            .unwrap();
        Url::parse(location)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect()
    }

    async fn json_of(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    // --- oauth2-mock-server ---

    #[tokio::test]
    async fn mock_server_code_flow_with_pkce_refresh_and_revocation() {
        let server = MockOAuthServer::start().await;
        let http = http();
        let base = server.base.as_str().trim_end_matches('/').to_string();
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");

        // Discovery agrees with the documented paths.
        let (status, discovery) =
            json_of(http.get(server.discovery_url()).send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(discovery["issuer"], base);
        assert_eq!(discovery["authorization_endpoint"], server.authorize_url());
        assert_eq!(discovery["token_endpoint"], server.token_url());
        assert_eq!(discovery["revocation_endpoint"], server.revocation_url());
        assert_eq!(discovery["userinfo_endpoint"], server.userinfo_url());
        assert_eq!(discovery["jwks_uri"], server.jwks_url());

        let authorize = |verifier: &str| {
            http.get(server.authorize_url())
                .query(&[
                    ("response_type", "code"),
                    ("client_id", "any-client"),
                    ("redirect_uri", REDIRECT_URI),
                    ("scope", "read write"),
                    ("state", "state-123"),
                    ("code_challenge", pkce_challenge(verifier).as_str()),
                    ("code_challenge_method", "S256"),
                ])
                .send()
        };
        let exchange = |code: &str, verifier: &str, secret: &str| {
            http.post(server.token_url())
                .basic_auth("any-client", Some(secret))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", REDIRECT_URI),
                    ("code_verifier", verifier),
                ])
                .send()
        };

        // Authorize: an immediate 302 to redirect_uri with code and state.
        let verifier = pkce_verifier();
        let r = authorize(&verifier).await.unwrap();
        assert_eq!(r.status(), 302);
        let location = r.headers()[reqwest::header::LOCATION].to_str().unwrap();
        assert!(location.starts_with(REDIRECT_URI), "{location}");
        let params = location_params(&r);
        assert_eq!(params["state"], "state-123");
        let code = params["code"].clone();

        // A wrong verifier is refused (400 problem+json), and burns the code.
        let (status, body) = json_of(exchange(&code, &pkce_verifier(), "x").await.unwrap()).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["detail"].as_str().unwrap().contains("does not match"),
            "{body}"
        );
        let (status, body) = json_of(exchange(&code, &verifier, "x").await.unwrap()).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("code_challenge required"),
            "{body}"
        );

        // The right verifier works, with any client secret.
        let verifier = pkce_verifier();
        let params = location_params(&authorize(&verifier).await.unwrap());
        let (status, tokens) = json_of(
            exchange(&params["code"], &verifier, "wrong-secret")
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{tokens}");
        assert_eq!(tokens["token_type"], "Bearer");
        assert_eq!(tokens["expires_in"], 3600);
        let access = tokens["access_token"].as_str().unwrap().to_string();
        let refresh1 = tokens["refresh_token"].as_str().unwrap().to_string();
        assert!(tokens["id_token"].is_string());
        // The scope comes from the token request (none here), not /authorize.
        assert_eq!(tokens["scope"], "dummy");

        // The code works once with a verifier.
        let (status, _) = json_of(exchange(&params["code"], &verifier, "x").await.unwrap()).await;
        assert_eq!(status, 400);

        // The access token is a JWT signed by a key in /jwks, issued by base.
        let parts: Vec<&str> = access.split('.').collect();
        assert_eq!(parts.len(), 3, "{access}");
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(claims["iss"], base);
        assert_eq!(claims["sub"], "johndoe");
        let (status, jwks) = json_of(http.get(server.jwks_url()).send().await.unwrap()).await;
        assert_eq!(status, 200);
        let keys = jwks["keys"].as_array().unwrap();
        assert!(keys.iter().any(|k| k["kid"] == header["kid"]), "{jwks}");
        assert!(
            keys.iter().all(|k| k.get("d").is_none()),
            "private key material in /jwks"
        );

        // Refresh: a new refresh token each time, but the old one still works.
        let refresh = |token: &str| {
            http.post(server.token_url())
                .basic_auth("any-client", Some("x"))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
                .send()
        };
        let (status, refreshed) = json_of(refresh(&refresh1).await.unwrap()).await;
        assert_eq!(status, 200, "{refreshed}");
        let refresh2 = refreshed["refresh_token"].as_str().unwrap();
        assert_ne!(refresh2, refresh1);
        // Access tokens carry no jti and RS256 signing is deterministic, so a
        // token issued in the same second with the same claims is identical.
        assert_eq!(str_of(&refreshed, "access_token").split('.').count(), 3);
        let (status, again) = json_of(refresh(&refresh1).await.unwrap()).await;
        assert_eq!(status, 200, "no rotation enforcement expected: {again}");

        // Userinfo: fixed answer.
        let (status, userinfo) = json_of(
            http.get(server.userinfo_url())
                .bearer_auth(&access)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, userinfo), (200, json!({ "sub": "johndoe" })));

        // Revocation: 200 with an empty body, and nothing is revoked.
        let r = http
            .post(server.revocation_url())
            .basic_auth("any-client", Some("x"))
            .form(&[
                ("token", refresh1.as_str()),
                ("token_type_hint", "refresh_token"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().is_empty());
        let (status, _) = json_of(refresh(&refresh1).await.unwrap()).await;
        assert_eq!(status, 200);

        let output = server.stop().await;
        assert!(output.contains(MOCK_LISTENING_PREFIX), "{output}");
    }

    #[tokio::test]
    async fn mock_server_authorize_without_pkce_and_bad_response_type() {
        let server = MockOAuthServer::start().await;
        let http = http();
        // No PKCE at all: accepted, and the code exchange needs no verifier.
        let r = http
            .get(server.authorize_url())
            .query(&[
                ("response_type", "code"),
                ("client_id", "c"),
                ("redirect_uri", REDIRECT_URI),
                ("state", "s1"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let code = location_params(&r)["code"].clone();
        let (status, _) = json_of(
            http.post(server.token_url())
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("client_id", "c"),
                ])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);

        // Another response_type: redirected back with an error.
        let r = http
            .get(server.authorize_url())
            .query(&[
                ("response_type", "token"),
                ("redirect_uri", REDIRECT_URI),
                ("state", "s2"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let params = location_params(&r);
        assert_eq!(params["error"], "unsupported_response_type");
        assert_eq!(params["state"], "s2");
    }

    // --- FakeProvider ---

    /// What a client keeps from one authorization.
    struct Flow {
        verifier: String,
        redirect_uri: String,
        code: String,
    }

    async fn authorize_fake(p: &FakeProvider, http: &reqwest::Client, scope: &str) -> Flow {
        let verifier = pkce_verifier();
        let r = http
            .get(p.authorize_url())
            .query(&[
                ("response_type", "code"),
                ("client_id", FAKE_CLIENT_ID),
                ("redirect_uri", REDIRECT_URI),
                ("scope", scope),
                ("state", "st-1"),
                ("code_challenge", pkce_challenge(&verifier).as_str()),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let params = location_params(&r);
        assert_eq!(params["state"], "st-1");
        Flow {
            verifier,
            redirect_uri: REDIRECT_URI.to_string(),
            code: params["code"].clone(),
        }
    }

    async fn exchange_fake(p: &FakeProvider, http: &reqwest::Client, flow: &Flow) -> (u16, Value) {
        json_of(
            http.post(p.token_url())
                .basic_auth(FAKE_CLIENT_ID, Some(FAKE_CLIENT_SECRET))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", flow.code.as_str()),
                    ("redirect_uri", flow.redirect_uri.as_str()),
                    ("code_verifier", flow.verifier.as_str()),
                ])
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Authorizes and exchanges; returns the token response.
    async fn connect(p: &FakeProvider, http: &reqwest::Client, scope: &str) -> Value {
        let flow = authorize_fake(p, http, scope).await;
        let (status, body) = exchange_fake(p, http, &flow).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn refresh_fake(p: &FakeProvider, http: &reqwest::Client, token: &str) -> (u16, Value) {
        json_of(
            http.post(p.token_url())
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", token),
                    ("client_id", FAKE_CLIENT_ID),
                    ("client_secret", FAKE_CLIENT_SECRET),
                ])
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn me(p: &FakeProvider, http: &reqwest::Client, token: &str) -> (u16, Value) {
        json_of(
            http.get(format!("{}/me", p.api_url()))
                .bearer_auth(token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing in {v}"))
    }

    #[tokio::test]
    async fn fake_code_flow_with_pkce() {
        let p = FakeProvider::start().await;
        let http = http();
        assert!(p.base().starts_with("http://127.0.0.1:"));

        // A wrong verifier is refused, and the code is spent.
        let mut flow = authorize_fake(&p, &http, "read write").await;
        let right = std::mem::replace(&mut flow.verifier, pkce_verifier());
        let (status, body) = exchange_fake(&p, &http, &flow).await;
        assert_eq!((status, str_of(&body, "error")), (400, "invalid_grant"));
        flow.verifier = right;
        let (status, _) = exchange_fake(&p, &http, &flow).await;
        assert_eq!(status, 400);

        // A different redirect_uri is refused.
        let mut flow = authorize_fake(&p, &http, "read write").await;
        flow.redirect_uri = "http://127.0.0.1:9/other".into();
        let (status, body) = exchange_fake(&p, &http, &flow).await;
        assert_eq!((status, str_of(&body, "error")), (400, "invalid_grant"));

        // A wrong client secret is refused.
        let flow = authorize_fake(&p, &http, "read").await;
        let (status, body) = json_of(
            http.post(p.token_url())
                .basic_auth(FAKE_CLIENT_ID, Some("not-the-secret"))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", flow.code.as_str()),
                    ("redirect_uri", REDIRECT_URI),
                    ("code_verifier", flow.verifier.as_str()),
                ])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, str_of(&body, "error")), (401, "invalid_client"));

        // The happy path (client_secret_basic).
        p.reset_counters();
        let flow = authorize_fake(&p, &http, "read write").await;
        let (status, tokens) = exchange_fake(&p, &http, &flow).await;
        assert_eq!(status, 200, "{tokens}");
        assert_eq!(tokens["token_type"], "Bearer");
        assert_eq!(tokens["expires_in"], 3600);
        assert_eq!(tokens["scope"], "read write");
        let access = str_of(&tokens, "access_token");
        assert!(access.starts_with("at_") && str_of(&tokens, "refresh_token").starts_with("rt_"));

        // What was recorded.
        let auth = &p.authorize_requests()[0];
        assert_eq!(
            auth.param("code_challenge"),
            Some(pkce_challenge(&flow.verifier).as_str())
        );
        assert_eq!(auth.param("code_challenge_method"), Some("S256"));
        assert_eq!(auth.param("redirect_uri"), Some(REDIRECT_URI));
        let req = &p.token_requests()[0];
        assert_eq!(req.client_auth, ClientAuth::Basic);
        assert_eq!(req.field("redirect_uri"), Some(REDIRECT_URI));
        assert_eq!(req.field("code_verifier"), Some(flow.verifier.as_str()));
        assert_eq!(req.status, Some(200));
        assert_eq!(req.response_json()["access_token"], access);
        assert_eq!(p.token_requests_by_grant("authorization_code"), 1);

        // The API knows the account and the scopes.
        let (status, body) = me(&p, &http, access).await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({ "id": "4242", "login": "fake-user", "email": "fake-user@example.test" })
        );
        let (status, body) = json_of(
            http.post(format!("{}/echo", p.api_url()))
                .bearer_auth(access)
                .json(&json!({ "x": [1, 2] }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({ "body": { "x": [1, 2] }, "scopes": ["read", "write"] })
        );
        let (status, body) = json_of(
            http.delete(format!("{}/repos/a/b?x=1", p.api_url()))
                .bearer_auth(access)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["ok"], true);
        assert_eq!(body["path"], "/api/repos/a/b");
        let api = p.api_requests();
        assert_eq!(p.api_calls(), 3);
        assert_eq!(
            api[0].authorization.as_deref(),
            Some(format!("Bearer {access}").as_str())
        );
        assert_eq!(api[2].uri, "/api/repos/a/b?x=1");

        // Replaying the code fails and revokes what it produced.
        let (status, _) = exchange_fake(&p, &http, &flow).await;
        assert_eq!(status, 400);
        assert!(!p.access_token_active(access));
        assert_eq!(me(&p, &http, access).await.0, 401);

        // client_secret_post works too, and a PKCE-less flow when allowed.
        p.set_require_pkce(false);
        let r = http
            .get(p.authorize_url())
            .query(&[
                ("response_type", "code"),
                ("client_id", FAKE_CLIENT_ID),
                ("redirect_uri", REDIRECT_URI),
                ("state", "s"),
            ])
            .send()
            .await
            .unwrap();
        let code = location_params(&r)["code"].clone();
        let (status, body) = json_of(
            http.post(p.token_url())
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", REDIRECT_URI),
                    ("client_id", FAKE_CLIENT_ID),
                    ("client_secret", FAKE_CLIENT_SECRET),
                ])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            p.token_requests().last().unwrap().client_auth,
            ClientAuth::Post
        );
    }

    #[tokio::test]
    async fn fake_authorize_checks_and_denial() {
        let p = FakeProvider::start().await;
        let http = http();
        let challenge = pkce_challenge(&pkce_verifier());
        let get = |extra: &[(&str, &str)], skip: &str| {
            let mut q: Vec<(&str, &str)> = vec![
                ("response_type", "code"),
                ("client_id", FAKE_CLIENT_ID),
                ("redirect_uri", REDIRECT_URI),
                ("state", "st"),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ];
            q.retain(|(k, _)| *k != skip && !extra.iter().any(|(e, _)| e == k));
            q.extend_from_slice(extra);
            http.get(p.authorize_url()).query(&q).send()
        };

        // Unknown client or unregistered redirect URI: a page, no redirect.
        assert_eq!(
            get(&[("client_id", "nope")], "").await.unwrap().status(),
            400
        );
        p.set_redirect_uris(&["http://127.0.0.1:9/registered"]);
        assert_eq!(get(&[], "").await.unwrap().status(), 400);
        p.set_redirect_uris(&[]);

        // Other problems redirect back with an error and the state.
        for (extra, skip, error) in [
            (
                &[("code_challenge_method", "plain")][..],
                "",
                "invalid_request",
            ),
            (&[][..], "code_challenge", "invalid_request"),
            (&[][..], "state", "invalid_request"),
            (
                &[("response_type", "token")][..],
                "",
                "unsupported_response_type",
            ),
        ] {
            let r = get(extra, skip).await.unwrap();
            assert_eq!(r.status(), 302, "{extra:?} {skip}");
            let params = location_params(&r);
            assert_eq!(params["error"], error, "{extra:?} {skip}");
            assert!(!params.contains_key("code"));
        }

        // Denied by the user.
        p.set_deny(true);
        let params = location_params(&get(&[], "").await.unwrap());
        assert_eq!(params["error"], "access_denied");
        assert_eq!(params["state"], "st");
        assert!(!params.contains_key("code"));
        p.set_deny(false);

        // Granted scopes can differ from the requested ones; the account too.
        p.set_granted_scopes(&["read"]);
        p.set_account(Account {
            id: "7".into(),
            login: "second".into(),
            email: "second@example.test".into(),
        });
        let tokens = connect(&p, &http, "read write admin").await;
        assert_eq!(tokens["scope"], "read");
        let (_, body) = me(&p, &http, str_of(&tokens, "access_token")).await;
        assert_eq!(body["login"], "second");
        assert_eq!(p.authorize_requests().len(), 8);
    }

    #[tokio::test]
    async fn fake_refresh_rotation_and_reuse_detection() {
        let p = FakeProvider::start().await;
        let http = http();
        let tokens = connect(&p, &http, "read").await;
        let access1 = str_of(&tokens, "access_token").to_string();
        let rt1 = str_of(&tokens, "refresh_token").to_string();

        // Each refresh rotates.
        let (status, second) = refresh_fake(&p, &http, &rt1).await;
        assert_eq!(status, 200, "{second}");
        let rt2 = str_of(&second, "refresh_token").to_string();
        let access2 = str_of(&second, "access_token").to_string();
        assert_ne!(rt1, rt2);
        assert_eq!(second["scope"], "read");
        assert!(!p.refresh_token_active(&rt1));
        assert!(p.refresh_token_active(&rt2));
        assert!(
            p.access_token_active(&access1),
            "old access tokens live until they expire"
        );
        assert_eq!(p.token_requests()[1].client_auth, ClientAuth::Post);
        assert_eq!(p.token_requests_by_grant("refresh_token"), 1);

        // A scope wider than the grant is refused.
        let (status, body) = json_of(
            http.post(p.token_url())
                .basic_auth(FAKE_CLIENT_ID, Some(FAKE_CLIENT_SECRET))
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt2.as_str()),
                    ("scope", "read write"),
                ])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, str_of(&body, "error")), (400, "invalid_scope"));
        assert!(p.refresh_token_active(&rt2));

        // Reusing rt1 revokes the whole grant.
        let (status, body) = refresh_fake(&p, &http, &rt1).await;
        assert_eq!((status, str_of(&body, "error")), (400, "invalid_grant"));
        assert!(!p.refresh_token_active(&rt2));
        assert!(!p.access_token_active(&access1));
        assert!(!p.access_token_active(&access2));
        assert_eq!(me(&p, &http, &access2).await.0, 401);
        let (status, body) = refresh_fake(&p, &http, &rt2).await;
        assert_eq!((status, str_of(&body, "error")), (400, "invalid_grant"));

        // Another grant is unaffected; revoke_all_grants ends it too.
        let other = connect(&p, &http, "read").await;
        assert_eq!(me(&p, &http, str_of(&other, "access_token")).await.0, 200);
        p.revoke_all_grants();
        assert_eq!(me(&p, &http, str_of(&other, "access_token")).await.0, 401);
        assert_eq!(
            refresh_fake(&p, &http, str_of(&other, "refresh_token"))
                .await
                .0,
            400
        );
    }

    #[tokio::test]
    async fn fake_token_fault_modes() {
        let p = FakeProvider::start().await;
        let http = http();
        let tokens = connect(&p, &http, "read").await;
        let rt = str_of(&tokens, "refresh_token").to_string();

        // InvalidGrant: refused, but nothing changes.
        p.set_token_mode(TokenMode::InvalidGrant);
        let (status, body) = refresh_fake(&p, &http, &rt).await;
        assert_eq!((status, str_of(&body, "error")), (400, "invalid_grant"));
        assert!(p.refresh_token_active(&rt));

        // ServerError: 503 with HTML.
        p.set_token_mode(TokenMode::ServerError);
        let r = http
            .post(p.token_url())
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert!(
            r.headers()[reqwest::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(r.text().await.unwrap().contains("<html>"));
        assert!(p.refresh_token_active(&rt));

        // Redirect: 302 elsewhere; a client that does not follow never gets there.
        p.set_token_mode(TokenMode::Redirect);
        let r = http
            .post(p.token_url())
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        assert_eq!(
            r.headers()[reqwest::header::LOCATION].to_str().unwrap(),
            p.redirected_token_url()
        );
        assert_eq!(p.redirect_followed(), 0);
        // (A following client would be counted.)
        reqwest::Client::new()
            .post(p.redirected_token_url())
            .send()
            .await
            .unwrap();
        assert_eq!(p.redirect_followed(), 1);

        // OmitRefreshToken: no refresh_token, and the old one stays valid.
        p.set_token_mode(TokenMode::OmitRefreshToken);
        let (status, body) = refresh_fake(&p, &http, &rt).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("refresh_token").is_none(), "{body}");
        assert_eq!(me(&p, &http, str_of(&body, "access_token")).await.0, 200);
        assert!(p.refresh_token_active(&rt));
        let (status, body) = refresh_fake(&p, &http, &rt).await;
        assert_eq!(status, 200, "{body}");

        // Slow: answers after the delay; a client that gives up first leaves
        // an unanswered record and no state change.
        p.set_token_mode(TokenMode::Slow(Duration::from_millis(300)));
        let started = Instant::now();
        let (status, body) = refresh_fake(&p, &http, &rt).await;
        assert_eq!(status, 200, "{body}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        let rt2 = str_of(&body, "refresh_token").to_string();
        let impatient = reqwest::Client::builder()
            .timeout(Duration::from_millis(50))
            .build()
            .unwrap();
        let err = impatient
            .post(p.token_url())
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt2.as_str()),
                ("client_id", FAKE_CLIENT_ID),
                ("client_secret", FAKE_CLIENT_SECRET),
            ])
            .send()
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(p.token_requests().last().unwrap().status, None);
        assert!(p.refresh_token_active(&rt2));

        // set_token_mode_once: one faulty answer, then Normal.
        p.set_token_mode_once(TokenMode::ServerError);
        assert_eq!(refresh_fake(&p, &http, &rt2).await.0, 503);
        assert_eq!(p.token_mode(), TokenMode::Normal);
        assert_eq!(refresh_fake(&p, &http, &rt2).await.0, 200);

        // Every request was recorded, with its answer.
        let statuses: Vec<Option<u16>> = p.token_requests().iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [200, 400, 503, 302, 200, 200, 200]
                .map(Some)
                .into_iter()
                .chain([None, Some(503), Some(200)])
                .collect::<Vec<_>>()
        );
        assert_eq!(p.token_requests_by_grant("refresh_token"), 9);
        p.reset_counters();
        assert!(p.token_requests().is_empty());
        assert_eq!(p.redirect_followed(), 0);
    }

    #[tokio::test]
    async fn fake_api_401s_and_revocation() {
        let p = FakeProvider::start().await;
        let http = http();
        let tokens = connect(&p, &http, "read").await;
        let access = str_of(&tokens, "access_token").to_string();
        let rt = str_of(&tokens, "refresh_token").to_string();

        // No token, unknown token, wrong scheme.
        let r = http
            .get(format!("{}/me", p.api_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(
            r.headers()[reqwest::header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
        assert_eq!(json_of(r).await.1, json!({ "error": "invalid_token" }));
        assert_eq!(me(&p, &http, "at_unknown").await.0, 401);

        // One-shot 401 with a valid token.
        p.fail_next_api_call();
        assert_eq!(me(&p, &http, &access).await.0, 401);
        assert_eq!(me(&p, &http, &access).await.0, 200);

        // Expired access tokens are refused; refreshing gives a working one.
        p.expire_access_tokens();
        assert_eq!(me(&p, &http, &access).await.0, 401);
        let (_, body) = refresh_fake(&p, &http, &rt).await;
        let access2 = str_of(&body, "access_token").to_string();
        let rt2 = str_of(&body, "refresh_token").to_string();
        assert_eq!(me(&p, &http, &access2).await.0, 200);
        p.set_expires_in(0);
        let (_, body) = refresh_fake(&p, &http, &rt2).await;
        assert_eq!(body["expires_in"], 0);
        assert_eq!(me(&p, &http, str_of(&body, "access_token")).await.0, 401);
        let rt3 = str_of(&body, "refresh_token").to_string();
        p.set_expires_in(3600);
        // An announced lifetime of 0 on a token that still works.
        p.announce_expires_in(Some(0));
        let (_, body) = refresh_fake(&p, &http, &rt3).await;
        assert_eq!(body["expires_in"], 0);
        assert_eq!(me(&p, &http, str_of(&body, "access_token")).await.0, 200);
        let rt3 = str_of(&body, "refresh_token").to_string();
        p.announce_expires_in(None);
        assert_eq!(p.api_calls(), 8);
        assert_eq!(p.api_requests()[0].authorization, None);

        // Revocation needs client auth; then 200, for unknown tokens too.
        let revoke = |token: &str, secret: &str| {
            http.post(p.revocation_url())
                .basic_auth(FAKE_CLIENT_ID, Some(secret))
                .form(&[("token", token), ("token_type_hint", "refresh_token")])
                .send()
        };
        assert_eq!(revoke(&rt3, "wrong").await.unwrap().status(), 401);
        assert!(p.refresh_token_active(&rt3));
        assert_eq!(
            revoke("rt_unknown", FAKE_CLIENT_SECRET)
                .await
                .unwrap()
                .status(),
            200
        );
        p.set_revocation_fails(true);
        assert_eq!(
            revoke(&rt3, FAKE_CLIENT_SECRET).await.unwrap().status(),
            503
        );
        assert!(p.refresh_token_active(&rt3));
        p.set_revocation_fails(false);
        assert_eq!(
            revoke(&rt3, FAKE_CLIENT_SECRET).await.unwrap().status(),
            200
        );
        assert!(!p.refresh_token_active(&rt3));
        assert!(
            !p.access_token_active(&access2),
            "the whole grant is revoked"
        );
        let revocations = p.revocations();
        let known: Vec<(bool, u16)> = revocations.iter().map(|r| (r.known, r.status)).collect();
        assert_eq!(
            known,
            [(false, 401), (false, 200), (false, 503), (true, 200)]
        );
        let last = revocations.last().unwrap();
        assert_eq!(last.token, rt3);
        assert_eq!(last.token_type_hint.as_deref(), Some("refresh_token"));
        assert_eq!(last.client_auth, ClientAuth::Basic);
    }
}
