//! The connector catalog, checked file by file and tool by tool.
//!
//! 1. Every connector in `host-api/catalog/` loads and passes the catalog's
//!    own rules (https endpoints, scopes, valid schemas, unique names, every
//!    schema property used).
//! 2. Every tool has at least one case in `tests/catalog/<slug>.json`, and
//!    each case is executed through the real broker against a local fake of
//!    the provider: the exact request the provider receives (method, URL and
//!    query, headers, credential, body) and the value the function gets back
//!    are asserted.
//! 3. Where the provider's official API description ships in a registry
//!    package (GitHub's OpenAPI description, `@octokit/openapi` on npm,
//!    installed by `scripts/test.sh`), every tool's method and path must
//!    exist in it.
//!
//! `CATALOG_TOOLKITS=gmail,slack` limits 2. to some connectors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use host_api::broker::{Broker, ConfigureToolkit, Invocation, Principal};
use host_api::catalog::{AuthScheme, Catalog, ConnectorOverride, ConnectorSpec};
use host_api::crypto::{KeySet, Keyring, MasterKey};
use host_api::egress::EgressPolicy;
use host_api::store::{SledStore, Store};
use serde::Deserialize;
use serde_json::{Value, json};

const TOKEN: &str = "test-token";
const APP: &str = "catalog";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn catalog_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog")
}

fn specs() -> Vec<ConnectorSpec> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(catalog_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push(
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            );
        }
    }
    out.sort_by(|a: &ConnectorSpec, b| a.slug.cmp(&b.slug));
    out
}

/// Connectors whose providers have no OAuth scopes at all (permissions are
/// set on the provider's app, not requested per connection).
const SCOPELESS: &[&str] = &["clickup", "wix"];

#[test]
fn every_connector_file_is_valid() {
    let catalog =
        Catalog::from_dir(&catalog_dir(), &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
    let builtin = Catalog::builtin().unwrap();
    let mut tool_names = BTreeSet::new();
    for spec in specs() {
        let slug = &spec.slug;
        assert!(
            builtin.connector(slug).is_some(),
            "{slug} is not embedded in the binary (rebuild)"
        );
        let connector = catalog.connector(slug).unwrap();
        let postgres = spec
            .data
            .as_ref()
            .is_some_and(|d| d.platform == host_api::catalog::DataPlatform::Postgres);
        let mut urls = if postgres {
            vec![]
        } else {
            vec![spec.api_base_url.clone()]
        };
        urls.extend(spec.api_base_urls.values().cloned());
        if let Some(o) = &spec.oauth {
            urls.push(o.authorize_url.clone());
            urls.push(o.token_url.clone());
            urls.extend(o.revocation_url.clone());
        }
        for u in urls {
            assert!(u.starts_with("https://"), "{slug}: {u} is not https");
        }
        assert!(!spec.description.is_empty(), "{slug}: no description");
        assert!(!spec.categories.is_empty(), "{slug}: no categories");
        if spec.oauth.is_some() && !SCOPELESS.contains(&slug.as_str()) {
            assert!(
                !connector.scopes_for_tools().is_empty(),
                "{slug}: an OAuth connector asks for no scopes"
            );
        }
        for tool in &spec.tools {
            assert!(
                tool_names.insert(tool.name.clone()),
                "{} declared twice",
                tool.name
            );
            assert!(
                tool.description.len() >= 20,
                "{}: describe it for people and for an AI choosing tools",
                tool.name
            );
            if spec.oauth.is_some() && !SCOPELESS.contains(&slug.as_str()) && slug != "discord" {
                // Every OAuth tool names what it needs (GitHub's
                // /user is the one public-profile call).
                let scopeless_ok = tool.name == "GITHUB_GET_AUTHENTICATED_USER";
                assert!(
                    !tool.scopes.is_empty() || scopeless_ok,
                    "{}: no scopes",
                    tool.name
                );
            }
            for s in &tool.scopes {
                assert!(!s.trim().is_empty(), "{}: empty scope", tool.name);
            }
        }
        assert!(
            postgres
                || connector
                    .tools
                    .contains_key(&format!("{}_PROXY", slug.to_uppercase())),
            "{slug}: no proxy tool"
        );
    }
}

// ---------------------------------------------------------------------------
// The fake provider.

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    toolkit: String,
    cases: Vec<Case>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    tool: String,
    #[serde(default)]
    name: Option<String>,
    params: Value,
    #[serde(default)]
    expect: OneOrMany<Expect>,
    #[serde(default)]
    respond: OneOrMany<Respond>,
    /// `null` is a result too (a 204 answer): present, not missing.
    #[serde(default, deserialize_with = "present")]
    result: Option<Value>,
    #[serde(default)]
    error: Option<ExpectedError>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

impl<T: Clone> OneOrMany<T> {
    fn list(&self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    json: Option<Value>,
    #[serde(default)]
    form: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    base64: Option<String>,
    #[serde(default)]
    multipart: Option<Vec<ExpectedPart>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedPart {
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    json: Option<Value>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    base64: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Respond {
    #[serde(default = "ok")]
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    json: Option<Value>,
    #[serde(default)]
    text: Option<String>,
}

fn ok() -> u16 {
    200
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedError {
    kind: String,
    #[serde(default)]
    contains: Option<String>,
}

#[derive(Debug, Clone)]
struct Received {
    method: Method,
    /// As the real provider would have seen it (`https://host/path?query`).
    url: url::Url,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Fake {
    /// Answers for the current case, in order.
    answers: VecDeque<Respond>,
    received: Vec<Received>,
    /// Host of the current case's connector, for root-relative paths.
    default_host: String,
    /// `http://127.0.0.1:port`
    origin: String,
}

/// The fake serves `/__h/<host>/<path>` as `https://<host>/<path>`; other
/// paths as the current connector's main host.
fn real_url(fake: &Fake, uri: &Uri) -> url::Url {
    let path = uri.path();
    let (host, rest) = match path.strip_prefix("/__h/") {
        Some(after) => match after.split_once('/') {
            Some((h, r)) => (h.to_string(), format!("/{r}")),
            None => (after.to_string(), "/".to_string()),
        },
        None => (fake.default_host.clone(), path.to_string()),
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    url::Url::parse(&format!("https://{host}{rest}{query}")).unwrap()
}

/// Rewrites `https://<host>` to the fake (in answers) or back (in results).
fn rewrite(text: &str, hosts: &BTreeSet<String>, origin: &str, to_fake: bool) -> String {
    let mut out = text.to_string();
    for host in hosts {
        let real = format!("https://{host}");
        let fake = format!("{origin}/__h/{host}");
        out = if to_fake {
            out.replace(&real, &fake)
        } else {
            out.replace(&fake, &real)
        };
    }
    out
}

async fn serve(
    state: Arc<Mutex<Fake>>,
    hosts: Arc<BTreeSet<String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut fake = state.lock().unwrap();
    let url = real_url(&fake, &uri);
    fake.received.push(Received {
        method,
        url,
        headers,
        body,
    });
    let Some(answer) = fake.answers.pop_front() else {
        return (
            StatusCode::IM_A_TEAPOT,
            "no answer scripted for this request",
        )
            .into_response();
    };
    let origin = fake.origin.clone();
    let mut builder = Response::builder().status(answer.status);
    for (k, v) in &answer.headers {
        builder = builder.header(k, rewrite(v, &hosts, &origin, true));
    }
    let body = match (&answer.json, &answer.text) {
        (Some(j), _) => {
            builder = builder.header("content-type", "application/json");
            rewrite(&j.to_string(), &hosts, &origin, true)
        }
        (None, Some(t)) => t.clone(),
        (None, None) => String::new(),
    };
    builder.body(axum::body::Body::from(body)).unwrap()
}

fn host_of(u: &str) -> String {
    url::Url::parse(u).unwrap().host_str().unwrap().to_string()
}

/// Points a base URL at the fake, keeping its host in the path.
fn via_fake(origin: &str, u: &str) -> String {
    let parsed = url::Url::parse(u).unwrap();
    format!(
        "{origin}/__h/{}{}",
        parsed.host_str().unwrap(),
        parsed.path().trim_end_matches('/')
    )
}

// ---------------------------------------------------------------------------
// Assertions.

fn query_pairs(u: &url::Url) -> Vec<(String, String)> {
    u.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn boundary_of(content_type: &str) -> Option<String> {
    content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()
        .map(|b| b.trim_matches('"').to_string())
}

/// Splits a multipart body into (headers, body) parts.
fn parts(body: &[u8], boundary: &str) -> Vec<(BTreeMap<String, String>, Vec<u8>)> {
    let text = body.to_vec();
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    let mut chunks = Vec::new();
    let mut start = 0;
    let d = delimiter.as_bytes();
    let mut i = 0;
    while i + d.len() <= text.len() {
        if &text[i..i + d.len()] == d {
            chunks.push((start, i));
            start = i + d.len();
            i += d.len();
        } else {
            i += 1;
        }
    }
    for (a, b) in chunks.into_iter().skip(1) {
        let mut chunk = &text[a..b];
        chunk = chunk.strip_prefix(b"\r\n").unwrap_or(chunk);
        chunk = chunk.strip_suffix(b"\r\n").unwrap_or(chunk);
        let split = chunk
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("part without a header/body separator");
        let head = String::from_utf8_lossy(&chunk[..split]).to_string();
        let mut headers = BTreeMap::new();
        for line in head.split("\r\n") {
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        out.push((headers, chunk[split + 4..].to_vec()));
    }
    out
}

fn check_request(
    label: &str,
    got: &Received,
    want: &Expect,
    auth: &AuthScheme,
) -> Result<(), String> {
    let fail = |m: String| Err(format!("{label}: {m}"));
    if got.method.as_str() != want.method {
        return fail(format!("method {} != expected {}", got.method, want.method));
    }
    let expected =
        url::Url::parse(&want.url).map_err(|e| format!("{label}: bad expect.url: {e}"))?;
    let same_place = got.url.scheme() == expected.scheme()
        && got.url.host_str() == expected.host_str()
        && got.url.path() == expected.path();
    if !same_place {
        return fail(format!(
            "URL {} != expected {}",
            got.url.as_str().split('?').next().unwrap_or_default(),
            expected.as_str().split('?').next().unwrap_or_default()
        ));
    }
    if query_pairs(&got.url) != query_pairs(&expected) {
        return fail(format!(
            "query {:?} != expected {:?}",
            query_pairs(&got.url),
            query_pairs(&expected)
        ));
    }
    let header = |name: &str| {
        got.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let credential = match auth {
        AuthScheme::Bearer => ("authorization".to_string(), format!("Bearer {TOKEN}")),
        AuthScheme::Header { name, prefix } => {
            (name.to_ascii_lowercase(), format!("{prefix}{TOKEN}"))
        }
        AuthScheme::Basic => (
            "authorization".to_string(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{TOKEN}:"))
            ),
        ),
    };
    if header(&credential.0).as_deref() != Some(credential.1.as_str()) {
        return fail(format!(
            "credential header {} missing or wrong",
            credential.0
        ));
    }
    for (name, value) in &want.headers {
        let got_value = header(&name.to_ascii_lowercase());
        if got_value.as_deref() != Some(value.as_str()) {
            return fail(format!(
                "header {name}: {got_value:?} != expected {value:?}"
            ));
        }
    }
    let body = &got.body;
    if let Some(j) = &want.json {
        let parsed: Value = serde_json::from_slice(body).map_err(|_| {
            format!(
                "{label}: body is not JSON: {}",
                String::from_utf8_lossy(body)
            )
        })?;
        if &parsed != j {
            return fail(format!("JSON body\n  got      {parsed}\n  expected {j}"));
        }
        if !header("content-type").is_some_and(|c| c.starts_with("application/json")) {
            return fail("JSON body without a JSON content type".into());
        }
    } else if let Some(f) = &want.form {
        let got_pairs: BTreeMap<String, String> = url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let want_pairs: BTreeMap<String, String> = f
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    },
                )
            })
            .collect();
        if got_pairs != want_pairs {
            return fail(format!(
                "form body {got_pairs:?} != expected {want_pairs:?}"
            ));
        }
    } else if let Some(t) = &want.text {
        if body.as_ref() != t.as_bytes() {
            return fail(format!(
                "text body {:?} != expected {t:?}",
                String::from_utf8_lossy(body)
            ));
        }
    } else if let Some(b) = &want.base64 {
        let bytes = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
        if body.as_ref() != bytes.as_slice() {
            return fail("binary body differs".into());
        }
    } else if let Some(want_parts) = &want.multipart {
        let content_type = header("content-type").unwrap_or_default();
        let boundary = boundary_of(&content_type)
            .ok_or_else(|| format!("{label}: multipart without a boundary: {content_type}"))?;
        let got_parts = parts(body, &boundary);
        if got_parts.len() != want_parts.len() {
            return fail(format!(
                "{} parts != expected {}",
                got_parts.len(),
                want_parts.len()
            ));
        }
        for (i, ((headers, data), want)) in got_parts.iter().zip(want_parts).enumerate() {
            for (k, v) in &want.headers {
                if headers.get(&k.to_ascii_lowercase()) != Some(v) {
                    return fail(format!(
                        "part {i} header {k}: {:?} != expected {v:?}",
                        headers.get(&k.to_ascii_lowercase())
                    ));
                }
            }
            if let Some(j) = &want.json {
                let parsed: Value = serde_json::from_slice(data)
                    .map_err(|_| format!("{label}: part {i} is not JSON"))?;
                if &parsed != j {
                    return fail(format!("part {i}: {parsed} != expected {j}"));
                }
            }
            if let Some(t) = &want.text
                && data.as_slice() != t.as_bytes()
            {
                return fail(format!(
                    "part {i}: {:?} != expected {t:?}",
                    String::from_utf8_lossy(data)
                ));
            }
            if let Some(b) = &want.base64 {
                let bytes = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
                if data != &bytes {
                    return fail(format!("part {i}: binary content differs"));
                }
            }
        }
    } else if !body.is_empty() {
        return fail(format!(
            "unexpected body {:?} (declare json, form, text, base64 or multipart)",
            String::from_utf8_lossy(body)
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------

fn case_files() -> Vec<(PathBuf, CaseFile)> {
    let dir = repo().join("tests/catalog");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let file: CaseFile =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path, file));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_sends_the_exact_request() {
    let only: Option<BTreeSet<String>> = std::env::var("CATALOG_TOOLKITS")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.split(',').map(|t| t.trim().to_string()).collect());
    let specs = specs();

    // Every host of every connector is served by the fake.
    let mut hosts = BTreeSet::new();
    for spec in specs.iter().filter(|s| !s.api_base_url.is_empty()) {
        hosts.insert(host_of(&spec.api_base_url));
        for u in spec.api_base_urls.values() {
            hosts.insert(host_of(u));
        }
    }
    let hosts = Arc::new(hosts);
    let state = Arc::new(Mutex::new(Fake::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let origin = format!("http://{addr}");
    state.lock().unwrap().origin = origin.clone();
    let app = {
        let state = state.clone();
        let hosts = hosts.clone();
        axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                serve(state.clone(), hosts.clone(), method, uri, headers, body)
            },
        )
    };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The deployment's overrides point every connector at the fake.
    let mut overrides = BTreeMap::new();
    for spec in specs.iter().filter(|s| !s.api_base_url.is_empty()) {
        overrides.insert(
            spec.slug.clone(),
            ConnectorOverride {
                api_base_url: Some(via_fake(&origin, &spec.api_base_url)),
                api_base_urls: spec
                    .api_base_urls
                    .iter()
                    .map(|(k, u)| (k.clone(), via_fake(&origin, u)))
                    .collect(),
                ..ConnectorOverride::default()
            },
        );
    }
    let catalog = Catalog::from_dir(&catalog_dir(), &overrides).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let key = Arc::new(Keyring::new(KeySet::from(MasterKey::generate())));
    let broker = Broker::new(
        store,
        key,
        Arc::new(catalog),
        EgressPolicy {
            allow_private: true,
        },
    )
    .unwrap();
    broker.set_rate_limits(host_api::ratelimit::RateLimits::new(None, None));
    let inv = Invocation {
        app: APP.into(),
        function: None,
        principal: Principal::Admin,
        grants: None,
        allow_as_user: true,
        run_as: None,
    };

    let mut failures = Vec::new();
    let mut covered: BTreeSet<String> = BTreeSet::new();
    let files = case_files();
    for spec in &specs {
        if only.as_ref().is_some_and(|o| !o.contains(&spec.slug))
            || (spec.tools.is_empty() && spec.data.is_some())
        {
            // (Connectors with only generated data tools: see tests/data.rs.)
            continue;
        }
        let Some((path, file)) = files.iter().find(|(_, f)| f.toolkit == spec.slug) else {
            failures.push(format!(
                "{}: no tests/catalog/{}.json",
                spec.slug, spec.slug
            ));
            continue;
        };
        let configure: ConfigureToolkit = serde_json::from_value(json!({
            "toolkit": spec.slug, "apiKey": TOKEN
        }))
        .unwrap();
        broker.configure(APP, configure).await.unwrap();
        state.lock().unwrap().default_host = host_of(&spec.api_base_url);
        for (i, case) in file.cases.iter().enumerate() {
            let label = format!(
                "{} case {i} ({}{})",
                path.file_name().unwrap().to_string_lossy(),
                case.tool,
                case.name
                    .as_ref()
                    .map(|n| format!(": {n}"))
                    .unwrap_or_default()
            );
            covered.insert(case.tool.clone());
            {
                let mut fake = state.lock().unwrap();
                fake.answers = case.respond.list().into();
                fake.received.clear();
            }
            let outcome = broker
                .execute(&inv, &case.tool, &case.params.to_string(), None, None)
                .await;
            let received = std::mem::take(&mut state.lock().unwrap().received);
            let expected = case.expect.list();
            if received.len() != expected.len() {
                failures.push(format!(
                    "{label}: {} requests sent, {} expected (outcome: {:?}; sent: {:?})",
                    received.len(),
                    expected.len(),
                    outcome.result,
                    received
                        .iter()
                        .map(|r| format!("{} {}", r.method, r.url))
                        .collect::<Vec<_>>()
                ));
                continue;
            }
            let mut bad = false;
            for (n, (got, want)) in received.iter().zip(&expected).enumerate() {
                if let Err(e) =
                    check_request(&format!("{label} request {n}"), got, want, &spec.auth)
                {
                    failures.push(e);
                    bad = true;
                }
            }
            if bad {
                continue;
            }
            match (&outcome.result, &case.result, &case.error) {
                (Ok(v), Some(want), None) => {
                    let back: Value = serde_json::from_str(&rewrite(
                        &v.to_string(),
                        &hosts,
                        &origin,
                        false,
                    ))
                    .unwrap();
                    if &back != want {
                        failures.push(format!("{label}: result\n  got      {back}\n  expected {want}"));
                    }
                }
                (Err(e), None, Some(want)) => {
                    if e.kind() != want.kind {
                        failures.push(format!("{label}: error kind {} != expected {} ({e})", e.kind(), want.kind));
                    } else if let Some(c) = &want.contains {
                        let text = format!("{e} {e:?}");
                        if !text.contains(c.as_str()) {
                            failures.push(format!("{label}: error {text} does not contain {c:?}"));
                        }
                    }
                }
                (got, want_result, want_error) => failures.push(format!(
                    "{label}: outcome {got:?}, expected result {want_result:?} / error {want_error:?}"
                )),
            }
        }
        for tool in &spec.tools {
            if !covered.contains(&tool.name) {
                failures.push(format!("{}: no case in {}", tool.name, path.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Methods and paths of GitHub's official OpenAPI description.
fn github_operations(description: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in description["paths"].as_object().unwrap() {
        // Placeholder names differ between the description and our tools;
        // compare the shape.
        let shape = normalise(path);
        for method in item.as_object().unwrap().keys() {
            out.insert((method.to_uppercase(), shape.clone()));
        }
    }
    out
}

fn normalise(path: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in path.chars() {
        match c {
            '{' => {
                inside = true;
                out.push_str("{}");
            }
            '}' => inside = false,
            c if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

#[test]
fn github_tools_exist_in_the_official_openapi_description() {
    let path =
        repo().join("tests/openapi/node_modules/@octokit/openapi/generated/api.github.com.json");
    if !path.exists() {
        assert!(
            std::env::var("CATALOG_REQUIRE_OPENAPI").is_err(),
            "{} is missing: scripts/test.sh installs it (npm ci in tests/openapi)",
            path.display()
        );
        eprintln!(
            "skipped: {} not installed (scripts/test.sh installs it)",
            path.display()
        );
        return;
    }
    let description: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let operations = github_operations(&description);
    let catalog = Catalog::from_dir(&catalog_dir(), &BTreeMap::new()).unwrap();
    let github = catalog.connector("github").unwrap();
    let mut missing = Vec::new();
    for tool in github.tools.values().filter(|t| !t.proxy) {
        let key = (
            tool.spec.method.as_http().to_string(),
            normalise(&tool.spec.path),
        );
        if !operations.contains(&key) {
            missing.push(format!("{} {} {}", tool.spec.name, key.0, tool.spec.path));
        }
    }
    assert!(
        missing.is_empty(),
        "not in GitHub's OpenAPI description: {missing:?}"
    );
}
