//! The token broker (`host_api::Broker::execute`) against a local fake
//! provider, measured two ways in the same run:
//!
//! 1. single-flight refresh: 100 concurrent executes on a connection whose
//!    access token has expired must make exactly one `refresh_token` request
//!    to the token endpoint (the others wait for it and reuse its result);
//! 2. added latency: sequential `FAKE_ECHO` calls through the broker (rate
//!    limits, parameter parsing and schema validation, toolkit and
//!    connection lookups in the store, token unsealing, egress check, the
//!    provider request, response mapping, audit record) against the same
//!    `POST /api/echo` made directly with a plain reqwest client (no
//!    redirects, keep-alive) and the same bearer token. Target: the broker
//!    adds at most 10% or 50 µs at p50, whichever is larger.
//!
//! The provider is an axum server on 127.0.0.1:0 in the same process
//! (`/authorize`, `/token`, `/api/echo`); the connection is made through the
//! real connect flow (`connect`, the provider's redirect, `callback`).
//!
//! Run with `cargo bench -p runtime --bench broker` (`scripts/bench.sh` does).
//! Prints p50/p99/mean of both variants, the difference and the ratio.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use host_api::broker::connect::{CallbackOutcome, CallbackParams, ConnectRequest};
use host_api::broker::{ConfigureToolkit, Principal};
use host_api::catalog::{Catalog, ConnectorSpec};
use host_api::crypto::{Keyring, MasterKey};
use host_api::egress::EgressPolicy;
use host_api::store::{AppRecord, SledStore, Store};
use host_api::{Broker, Invocation, Secret};
use serde_json::{Value, json};

const APP: &str = "bench";
const USER: &str = "u1";
const CONCURRENT: usize = 100;
const ROUNDS: usize = 10;
const ITERATIONS: usize = 10_000;

/// The fake provider's state: token lifetime to hand out, and what it saw.
#[derive(Debug, Default)]
struct Provider {
    expires_in: AtomicU64,
    issued: AtomicU64,
    code_grants: AtomicUsize,
    refresh_grants: AtomicUsize,
    api_calls: AtomicUsize,
    /// The access token issued last.
    last_access: Mutex<String>,
}

type Shared = Arc<Provider>;

async fn authorize(Query(q): Query<HashMap<String, String>>) -> Response {
    let (Some(redirect), Some(state)) = (q.get("redirect_uri"), q.get("state")) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri and state required").into_response();
    };
    let mut to = url::Url::parse(redirect).unwrap();
    to.query_pairs_mut()
        .append_pair("code", "c-1")
        .append_pair("state", state);
    (StatusCode::FOUND, [(header::LOCATION, to.to_string())]).into_response()
}

async fn token(State(p): State<Shared>, body: Bytes) -> Response {
    // Any client authentication is accepted.
    let grant = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v.into_owned());
    match grant.as_deref() {
        Some("authorization_code") => p.code_grants.fetch_add(1, Ordering::SeqCst),
        Some("refresh_token") => p.refresh_grants.fetch_add(1, Ordering::SeqCst),
        _ => return (StatusCode::BAD_REQUEST, "unsupported grant_type").into_response(),
    };
    let n = p.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let access = format!("at-{n}");
    *p.last_access.lock().unwrap() = access.clone();
    axum::Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": p.expires_in.load(Ordering::SeqCst),
        "refresh_token": format!("rt-{n}"),
        "scope": "read",
    }))
    .into_response()
}

async fn echo(State(p): State<Shared>, headers: HeaderMap) -> Response {
    p.api_calls.fetch_add(1, Ordering::Relaxed);
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer at-"));
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_token"})),
        )
            .into_response();
    }
    axum::Json(json!({"ok": true})).into_response()
}

async fn start_provider(p: Shared) -> SocketAddr {
    let app = Router::new()
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .route("/api/echo", post(echo))
        .with_state(p);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / u32::try_from(samples.len()).unwrap();
    Stats {
        p50: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
        mean,
    }
}

fn invocation() -> Invocation {
    Invocation {
        app: APP.into(),
        function: None,
        principal: Principal::User(USER.into()),
        grants: None,
        allow_as_user: false,
        run_as: None,
    }
}

/// Connects `USER` through the connect flow, as a browser would.
async fn connect(broker: &Broker, browser: &reqwest::Client) {
    let req: ConnectRequest = serde_json::from_value(json!({"toolkit": "fake"})).unwrap();
    let start = broker
        .connect(APP, &Principal::User(USER.into()), req)
        .await
        .unwrap();
    // The connect page: confirmed by this browser, which is then bound.
    let page = url::Url::parse(&start.auth_url).unwrap();
    let state = page
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| Secret::new(v.into_owned()))
        .unwrap();
    let confirmed = broker.confirm_connect(&state, None).await.unwrap();
    let r = browser
        .get(confirmed.provider_url.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302, "provider did not redirect");
    let location = url::Url::parse(r.headers()[header::LOCATION].to_str().unwrap()).unwrap();
    let q: HashMap<String, String> = location.query_pairs().into_owned().collect();
    let outcome = broker
        .callback(
            CallbackParams {
                code: Some(Secret::new(q["code"].clone())),
                state: Some(Secret::new(q["state"].clone())),
                error: None,
            },
            Some(&confirmed.cookie_value),
        )
        .await;
    match outcome {
        CallbackOutcome::Page { status: 200, .. } => {}
        other => panic!("connect flow did not complete: {other:?}"),
    }
}

async fn direct_call(client: &reqwest::Client, url: &str, token: &str) -> Value {
    let r = client
        .post(url)
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let provider: Shared = Arc::default();
        provider.expires_in.store(3600, Ordering::SeqCst);
        let addr = start_provider(provider.clone()).await;
        let base = format!("http://{addr}");

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
        let key = Arc::new(Keyring::from(MasterKey::from_bytes(&[7; 32])));
        let broker = Arc::new(
            Broker::new(
                store.clone(),
                key,
                Arc::new(Catalog::builtin().unwrap()),
                EgressPolicy { allow_private: true },
            )
            .unwrap(),
        );
        broker.set_public_url(url::Url::parse("http://127.0.0.1:9/").unwrap());
        let spec: ConnectorSpec = serde_json::from_value(json!({
            "slug": "fake",
            "displayName": "Fake",
            "apiBaseUrl": format!("{base}/api"),
            "oauth": {
                "authorizeUrl": format!("{base}/authorize"),
                "tokenUrl": format!("{base}/token"),
            },
            "tools": [
                {"name": "FAKE_ECHO", "description": "Echo", "method": "POST", "path": "/echo",
                 "scopes": ["read"], "parameters": {"type": "object"}}
            ]
        }))
        .unwrap();
        broker.put_connector(APP, spec).await.unwrap();
        broker
            .configure(
                APP,
                ConfigureToolkit {
                    toolkit: "fake".into(),
                    client_id: Some("bench-client".into()),
                    client_secret: Some(Secret::new("bench-secret")),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        // A browser, and the baseline's client: no redirects, keep-alive.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();

        // (1) The first token lives 1 s; the refreshed one an hour.
        provider.expires_in.store(1, Ordering::SeqCst);
        connect(&broker, &client).await;
        provider.expires_in.store(3600, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let inv = Arc::new(invocation());
        let started = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..CONCURRENT {
            let broker = broker.clone();
            let inv = inv.clone();
            set.spawn(async move { broker.execute(&inv, "FAKE_ECHO", "{}", None, None).await });
        }
        let mut ok = 0;
        while let Some(outcome) = set.join_next().await {
            let outcome = outcome.unwrap();
            assert_eq!(outcome.result.unwrap(), json!({"ok": true}));
            ok += 1;
        }
        let burst = started.elapsed();
        let refreshes = provider.refresh_grants.load(Ordering::SeqCst);
        let codes = provider.code_grants.load(Ordering::SeqCst);
        println!("(1) {CONCURRENT} concurrent executes on an expired token ({ok} succeeded, {burst:.1?} in all)");
        println!(
            "token endpoint calls: refresh_token {refreshes} (target: 1, {}), authorization_code {codes} (the connect)",
            if refreshes == 1 { "met" } else { "NOT met" }
        );
        assert_eq!(refreshes, 1, "refresh was not single-flight");

        // (2) Added latency, same token, same API, same run.
        let token = provider.last_access.lock().unwrap().clone();
        let echo_url = format!("{base}/api/echo");
        // The two variants alternate in rounds so that warm-up, connection
        // reuse and frequency changes affect both alike.
        let per_round = ITERATIONS / ROUNDS;
        let mut direct = Vec::with_capacity(ITERATIONS);
        let mut brokered = Vec::with_capacity(ITERATIONS);
        for round in 0..ROUNDS + 1 {
            let measured = round > 0; // round 0 warms both up
            for _ in 0..per_round {
                let started = Instant::now();
                let v = direct_call(&client, &echo_url, &token).await;
                let elapsed = started.elapsed();
                assert_eq!(v["ok"], true);
                if measured {
                    direct.push(elapsed);
                }
            }
            for _ in 0..per_round {
                let started = Instant::now();
                let outcome = broker.execute(&inv, "FAKE_ECHO", "{}", None, None).await;
                let elapsed = started.elapsed();
                assert_eq!(outcome.result.unwrap()["ok"], true);
                if measured {
                    brokered.push(elapsed);
                }
            }
        }
        assert_eq!(
            provider.refresh_grants.load(Ordering::SeqCst),
            1,
            "no refresh expected during the latency runs"
        );

        let d = stats(direct);
        let b = stats(brokered);
        println!("\n(2) FAKE_ECHO through the broker vs direct POST /api/echo ({ITERATIONS} sequential calls each, {ROUNDS} interleaved rounds, 127.0.0.1)");
        println!("{:<34} {:>10} {:>10} {:>10}", "", "p50", "p99", "mean");
        println!("{:<34} {:>10.1?} {:>10.1?} {:>10.1?}", "direct (reqwest)", d.p50, d.p99, d.mean);
        println!("{:<34} {:>10.1?} {:>10.1?} {:>10.1?}", "broker (Broker::execute)", b.p50, b.p99, b.mean);
        let added_us = (b.p50.as_secs_f64() - d.p50.as_secs_f64()) * 1e6;
        let allowed_us = (d.p50.as_secs_f64() * 0.10 * 1e6).max(50.0);
        println!(
            "added at p50: {added_us:.1} us; ratio broker/direct: p50 {:.2}x, p99 {:.2}x (target: added <= max(10%, 50 us) = {allowed_us:.1} us: {})",
            b.p50.as_secs_f64() / d.p50.as_secs_f64(),
            b.p99.as_secs_f64() / d.p99.as_secs_f64(),
            if added_us <= allowed_us { "met" } else { "NOT met" }
        );
    });
}
