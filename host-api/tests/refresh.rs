//! Token expiry and refresh back-off on the broker's own clock: a
//! [`ManualClock`] moves time, so nothing here sleeps. The provider is a
//! small in-process OAuth server on 127.0.0.1 whose token endpoint can be
//! told to fail; the connection is made through the real connect flow
//! (connect, confirm, provider redirect, callback).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use host_api::broker::connect::{CallbackOutcome, CallbackParams, ConnectRequest};
use host_api::broker::connections::ConnectionFilter;
use host_api::broker::{ConfigureToolkit, Principal};
use host_api::catalog::{Catalog, ConnectorSpec};
use host_api::crypto::{Keyring, MasterKey};
use host_api::egress::EgressPolicy;
use host_api::error::ToolError;
use host_api::invocation::ManualClock;
use host_api::store::{AppRecord, ConnectionState, SledStore, Store};
use host_api::{Broker, Invocation, Secret};
use serde_json::json;

const APP: &str = "clock";
const USER: &str = "alice";

/// The provider's switches and counters.
#[derive(Debug, Default)]
struct Provider {
    expires_in: AtomicU64,
    issued: AtomicU64,
    refresh_grants: AtomicUsize,
    /// Token endpoint answers 503 while set.
    down: AtomicBool,
}

type Shared = Arc<Provider>;

async fn authorize(Query(q): Query<HashMap<String, String>>) -> Response {
    let mut to = url::Url::parse(&q["redirect_uri"]).unwrap();
    to.query_pairs_mut()
        .append_pair("code", "code-1")
        .append_pair("state", &q["state"]);
    (StatusCode::FOUND, [(header::LOCATION, to.to_string())]).into_response()
}

async fn token(State(p): State<Shared>, body: Bytes) -> Response {
    let refresh =
        url::form_urlencoded::parse(&body).any(|(k, v)| k == "grant_type" && v == "refresh_token");
    if refresh {
        p.refresh_grants.fetch_add(1, Ordering::SeqCst);
        if p.down.load(Ordering::SeqCst) {
            return (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response();
        }
    }
    let n = p.issued.fetch_add(1, Ordering::SeqCst) + 1;
    axum::Json(json!({
        "access_token": format!("at-{n}"),
        "token_type": "Bearer",
        "expires_in": p.expires_in.load(Ordering::SeqCst),
        "refresh_token": format!("rt-{n}"),
        "scope": "read",
    }))
    .into_response()
}

async fn echo(headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // The number of the token, never the token (the broker redacts that).
    axum::Json(json!({"token": bearer.trim_start_matches("Bearer at-")})).into_response()
}

struct World {
    broker: Arc<Broker>,
    clock: Arc<ManualClock>,
    provider: Shared,
    browser: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn world(expires_in: u64) -> World {
    let provider: Shared = Arc::default();
    provider.expires_in.store(expires_in, Ordering::SeqCst);
    let app = Router::new()
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .route("/api/echo", post(echo))
        .with_state(provider.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    store
        .put_app(&AppRecord {
            id: APP.into(),
            admin_key_hashes: vec![],
            created_at: 0,
            settings: Default::default(),
            version: 0,
        })
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let broker = Broker::new(
        store,
        Arc::new(Keyring::from(MasterKey::from_bytes(&[9; 32]))),
        Arc::new(Catalog::builtin().unwrap()),
        EgressPolicy {
            allow_private: true,
        },
    )
    .unwrap()
    .with_clock(clock.clone());
    broker.set_public_url(url::Url::parse("http://127.0.0.1:9/").unwrap());
    let spec: ConnectorSpec = serde_json::from_value(json!({
        "slug": "fake",
        "displayName": "Fake",
        "apiBaseUrl": format!("{base}/api"),
        "oauth": {"authorizeUrl": format!("{base}/authorize"), "tokenUrl": format!("{base}/token")},
        "tools": [{"name": "FAKE_ECHO", "description": "Echo", "method": "POST", "path": "/echo",
                   "scopes": ["read"], "parameters": {"type": "object"}}]
    }))
    .unwrap();
    broker.put_connector(APP, spec).await.unwrap();
    broker
        .configure(
            APP,
            ConfigureToolkit {
                toolkit: "fake".into(),
                client_id: Some("client".into()),
                client_secret: Some(Secret::new("client-secret")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let w = World {
        broker: Arc::new(broker),
        clock,
        provider,
        browser,
        _dir: dir,
    };
    w.connect().await;
    w
}

impl World {
    async fn connect(&self) {
        let req: ConnectRequest = serde_json::from_value(json!({"toolkit": "fake"})).unwrap();
        let start = self
            .broker
            .connect(APP, &Principal::User(USER.into()), req)
            .await
            .unwrap();
        let page = url::Url::parse(&start.auth_url).unwrap();
        let state = page
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| Secret::new(v.into_owned()))
            .unwrap();
        let confirmed = self.broker.confirm_connect(&state, None).await.unwrap();
        let r = self
            .browser
            .get(confirmed.provider_url.expose())
            .send()
            .await
            .unwrap();
        let location = url::Url::parse(r.headers()[header::LOCATION].to_str().unwrap()).unwrap();
        let q: HashMap<String, String> = location.query_pairs().into_owned().collect();
        let outcome = self
            .broker
            .callback(
                CallbackParams {
                    code: Some(Secret::new(q["code"].clone())),
                    state: Some(Secret::new(q["state"].clone())),
                    error: None,
                },
                Some(&confirmed.cookie_value),
            )
            .await;
        assert!(
            matches!(outcome, CallbackOutcome::Page { status: 200, .. }),
            "{outcome:?}"
        );
    }

    /// Calls the echo tool as the user; returns the number of the token the
    /// provider saw (`at-N` is token N).
    async fn call(&self) -> Result<String, ToolError> {
        let inv = Invocation {
            app: APP.into(),
            function: None,
            principal: Principal::User(USER.into()),
            grants: None,
            allow_as_user: false,
            run_as: None,
        };
        let out = self
            .broker
            .execute(&inv, "FAKE_ECHO", "{}", None, None)
            .await
            .result?;
        Ok(out["token"].as_str().unwrap().to_string())
    }

    fn refreshes(&self) -> usize {
        self.provider.refresh_grants.load(Ordering::SeqCst)
    }

    async fn state(&self) -> ConnectionState {
        let listed = self
            .broker
            .list_connections(
                APP,
                &Principal::User(USER.into()),
                &ConnectionFilter::default(),
            )
            .await
            .unwrap();
        listed[0].state
    }
}

#[tokio::test]
async fn a_token_is_refreshed_when_the_clock_reaches_its_margin_and_only_once() {
    // A 60 s token: the margin is half its lifetime, 30 s.
    let w = world(60).await;
    assert_eq!(w.call().await.unwrap(), "1");
    w.clock.advance(Duration::from_secs(29));
    assert_eq!(w.call().await.unwrap(), "1");
    assert_eq!(w.refreshes(), 0);

    // Inside the margin: fifty concurrent calls, one refresh.
    w.clock.advance(Duration::from_secs(2));
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let broker = w.broker.clone();
        calls.spawn(async move {
            let inv = Invocation {
                app: APP.into(),
                function: None,
                principal: Principal::User(USER.into()),
                grants: None,
                allow_as_user: false,
                run_as: None,
            };
            broker
                .execute(&inv, "FAKE_ECHO", "{}", None, None)
                .await
                .result
                .unwrap()["token"]
                .as_str()
                .unwrap()
                .to_string()
        });
    }
    for token in calls.join_all().await {
        assert_eq!(token, "2");
    }
    assert_eq!(w.refreshes(), 1);

    // The refreshed token's lifetime counts from the clock's time.
    w.clock.advance(Duration::from_secs(29));
    assert_eq!(w.call().await.unwrap(), "2");
    w.clock.advance(Duration::from_secs(2));
    assert_eq!(w.call().await.unwrap(), "3");
    assert_eq!(w.refreshes(), 2);
}

#[tokio::test]
async fn a_failed_refresh_backs_off_on_the_clock_keeps_the_tokens_and_recovers() {
    let w = world(10).await;
    w.clock.advance(Duration::from_secs(11));

    // Expired, and the token endpoint is down: unavailable, tokens kept.
    w.provider.down.store(true, Ordering::SeqCst);
    let err = w.call().await.unwrap_err();
    assert!(matches!(err, ToolError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("retry in 1 s"), "{err}");
    assert_eq!(w.state().await, ConnectionState::Active);
    assert_eq!(w.refreshes(), 1);

    // Within the 1 s back-off nothing is sent, even once the provider is back.
    w.provider.down.store(false, Ordering::SeqCst);
    w.clock.advance(Duration::from_millis(900));
    let err = w.call().await.unwrap_err();
    assert!(err.to_string().contains("failed recently"), "{err}");
    assert_eq!(w.refreshes(), 1);

    // After it, one refresh succeeds.
    w.clock.advance(Duration::from_millis(200));
    assert_eq!(w.call().await.unwrap(), "2");
    assert_eq!(w.refreshes(), 2);

    // Repeated failures double the pause: 1 s, then 2 s.
    w.clock.advance(Duration::from_secs(11));
    w.provider.down.store(true, Ordering::SeqCst);
    assert!(w.call().await.is_err());
    w.clock.advance(Duration::from_millis(1100));
    let err = w.call().await.unwrap_err();
    assert!(err.to_string().contains("retry in 2 s"), "{err}");
    assert_eq!(w.refreshes(), 4);
    w.provider.down.store(false, Ordering::SeqCst);
    w.clock.advance(Duration::from_millis(1100));
    assert!(w.call().await.is_err(), "still inside the 2 s pause");
    assert_eq!(w.refreshes(), 4);
    w.clock.advance(Duration::from_secs(1));
    assert_eq!(w.call().await.unwrap(), "3");
    assert_eq!(w.state().await, ConnectionState::Active);
}
