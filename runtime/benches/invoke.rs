//! In-process latency of running the `hello` function, measured two ways in
//! the same run:
//!
//! * baseline: what `wasmtime serve` does per request — a fresh `Store`,
//!   `instantiate_async` from the cached `ProxyPre`, `incoming-handler.handle`;
//! * runtime: the full invocation path (`Invoker::invoke_http`): permits,
//!   identity, memory limiter, epoch deadline, integrations context, response
//!   collection.
//!
//! Run with `cargo bench -p runtime --bench invoke` after building the guests
//! (`scripts/bench.sh` does both). Prints p50/p99/mean and the ratio.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use host_api::broker::Principal;
use host_api::catalog::Catalog;
use host_api::crypto::{Keyring, MasterKey};
use host_api::egress::EgressPolicy;
use host_api::integrations::IntegrationsCtx;
use host_api::manifest::Manifest;
use host_api::store::{SledStore, Store};
use host_api::{Broker, Invocation};
use runtime::engine::{Engine, EngineSettings, HostState};
use runtime::invoke::Invoker;
use runtime::logs::FunctionOutput;
use runtime::registry::Registry;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

const ROUNDS: usize = 10;
const ITERATIONS: usize = 10_000;

fn request() -> http::Request<Bytes> {
    http::Request::get("http://localhost/")
        .body(Bytes::new())
        .unwrap()
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

fn bare_store(engine: &Engine, broker: &Arc<Broker>) -> wasmtime::Store<HostState> {
    let inv = Invocation {
        app: "bench".into(),
        function: None,
        principal: Principal::Anonymous,
        grants: None,
        allow_as_user: false,
        run_as: None,
    };
    let output = FunctionOutput::pair(Arc::from("bench"), Arc::from("hello"));
    let state = HostState::new(
        IntegrationsCtx::new(broker.clone(), Arc::new(inv)),
        output,
        usize::MAX,
        Duration::from_secs(30),
    );
    let mut store = wasmtime::Store::new(engine.wasmtime(), state);
    store.set_epoch_deadline(u64::MAX / 2);
    store
}

/// Store creation and instantiation alone, to split the cost.
async fn bare_instantiate(
    engine: &Engine,
    broker: &Arc<Broker>,
    pre: &wasmtime_wasi_http::p2::bindings::ProxyPre<HostState>,
) {
    let mut store = bare_store(engine, broker);
    let _ = pre.instantiate_async(&mut store).await.unwrap();
}

/// One request the way `wasmtime serve` handles it: fresh store,
/// instantiate from the cached pre-instance, call the handler, read the body.
async fn bare_call(
    engine: &Engine,
    broker: &Arc<Broker>,
    pre: &wasmtime_wasi_http::p2::bindings::ProxyPre<HostState>,
) {
    let mut store = bare_store(engine, broker);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let req = http::Request::get("http://localhost/")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .unwrap();
    let out = store.data_mut().http().new_response_outparam(tx).unwrap();
    let proxy = pre.instantiate_async(&mut store).await.unwrap();
    proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut store, req, out)
        .await
        .unwrap();
    let response = rx.await.unwrap().unwrap();
    let _ = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
}

fn main() {
    // BENCH_COMPONENT=path.wasm measures another component the same way.
    let wasm = std::env::var_os("BENCH_COMPONENT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/wasm32-wasip2/release/hello.wasm")
        });
    let component = std::fs::read(&wasm).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the examples first (scripts/bench.sh does)",
            wasm.display()
        )
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let key = Arc::new(Keyring::from(MasterKey::from_bytes(&[7; 32])));
        let broker = Arc::new(
            Broker::new(store.clone(), key, Arc::new(Catalog::builtin().unwrap()), EgressPolicy::default()).unwrap(),
        );
        let settings = EngineSettings { artifacts_dir: dir.path().join("artifacts"), max_instances: 64 };
        let engine = Arc::new(Engine::new(&settings).unwrap());
        let registry = Registry::new(engine.clone(), store.clone(), broker.clone());
        registry.deploy("bench", "hello", component, Manifest::default()).await.unwrap();
        let f = registry.get("bench", "hello").unwrap();
        let invoker = Invoker::new(engine.clone(), broker.clone(), 64, None);

        // The two variants alternate in rounds so that warm-up, slot reuse
        // and frequency changes affect both alike.
        let mut instantiate = Vec::with_capacity(ITERATIONS);
        let mut baseline = Vec::with_capacity(ITERATIONS);
        let mut ours = Vec::with_capacity(ITERATIONS);
        for round in 0..ROUNDS + 1 {
            let measured = round > 0; // round 0 warms both up
            for _ in 0..ITERATIONS / ROUNDS {
                let started = Instant::now();
                bare_instantiate(&engine, &broker, &f.pre).await;
                if measured {
                    instantiate.push(started.elapsed());
                }
            }
            for _ in 0..ITERATIONS / ROUNDS {
                let started = Instant::now();
                bare_call(&engine, &broker, &f.pre).await;
                if measured {
                    baseline.push(started.elapsed());
                }
            }
            for _ in 0..ITERATIONS / ROUNDS {
                let started = Instant::now();
                let response = invoker.invoke_http(f.clone(), Principal::Anonymous, request()).await.unwrap();
                assert_eq!(response.status(), 200);
                if measured {
                    ours.push(started.elapsed());
                }
            }
        }

        let i = stats(instantiate);
        let b = stats(baseline);
        let o = stats(ours);
        println!("in-process instantiate + call of {} ({ITERATIONS} iterations, fresh Store each, pooling: {})", wasm.display(), engine.pooling);
        println!("{:<34} {:>10} {:>10} {:>10}", "", "p50", "p99", "mean");
        println!("{:<34} {:>10.1?} {:>10.1?} {:>10.1?}", "  of which: instantiate only", i.p50, i.p99, i.mean);
        println!("{:<34} {:>10.1?} {:>10.1?} {:>10.1?}", "baseline (bare wasmtime)", b.p50, b.p99, b.mean);
        println!("{:<34} {:>10.1?} {:>10.1?} {:>10.1?}", "runtime (Invoker::invoke_http)", o.p50, o.p99, o.mean);
        println!(
            "ratio runtime/baseline: p50 {:.2}x, p99 {:.2}x (target: p50 <= 30us)",
            o.p50.as_secs_f64() / b.p50.as_secs_f64(),
            o.p99.as_secs_f64() / b.p99.as_secs_f64()
        );
    });
}
