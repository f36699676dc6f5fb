//! Harness for end-to-end tests: runs the real `runtime` binary on port 0
//! with a temporary data directory, deploys real components built from
//! source (see `scripts/test.sh`), and provides a local upstream that
//! records what the runtime sent it.
#![deny(missing_docs)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod oauth;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The admin key the tests start apps with.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";
/// A master key for tests (not secret).
pub const MASTER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// The app the tests use.
pub const APP: &str = "test";

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `runtime` binary built for this test run.
pub fn runtime_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/runtime
    let bin = exe.parent().unwrap().parent().unwrap().join("runtime");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with scripts/test.sh (or `cargo build -p runtime` first)",
        bin.display()
    );
    bin
}

/// A guest component built from source by `scripts/test.sh`.
pub fn guest(name: &str) -> Vec<u8> {
    let path = root()
        .join("target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; build the guests first: scripts/test.sh does it (cargo build --release in functions/ and tests/guests/)", path.display())
    })
}

/// Options for starting the runtime.
#[derive(Debug, Clone)]
pub struct Options {
    /// Extra arguments after `serve`.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            args: vec![
                "--allow-insecure-upstreams".into(),
                "--app".into(),
                APP.into(),
            ],
            env: vec![
                ("RUNTIME_ADMIN_KEY".into(), ADMIN_KEY.into()),
                ("RUNTIME_MASTER_KEY".into(), MASTER_KEY.into()),
            ],
        }
    }
}

/// A running `runtime serve`.
#[derive(Debug)]
pub struct Runtime {
    child: Child,
    /// Base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    /// Everything the process printed (stdout and stderr).
    pub output: Arc<Mutex<String>>,
    /// HTTP client.
    pub http: reqwest::Client,
}

fn collect<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: R,
    output: Arc<Mutex<String>>,
    tx: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            output.lock().unwrap().push_str(&line);
            output.lock().unwrap().push('\n');
            if let Some(tx) = &tx {
                let _ = tx.send(line);
            }
        }
    });
}

impl Runtime {
    /// Starts the runtime on `data_dir` and waits until it listens.
    pub async fn start(data_dir: &Path, options: Options) -> Runtime {
        match Self::try_start(data_dir, options).await {
            Ok(rt) => rt,
            Err(output) => panic!("runtime did not start:\n{output}"),
        }
    }

    /// Starts the runtime; on failure returns what it printed.
    pub async fn try_start(data_dir: &Path, options: Options) -> Result<Runtime, String> {
        let mut cmd = Command::new(runtime_bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir);
        cmd.args(&options.args);
        cmd.env_remove("RUNTIME_ADMIN_KEY")
            .env_remove("RUNTIME_MASTER_KEY")
            .env("RUST_LOG", "info");
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        cmd.current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn runtime");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        collect(child.stdout.take().unwrap(), output.clone(), Some(tx));
        collect(child.stderr.take().unwrap(), output.clone(), None);
        let url = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = rx.recv().await {
                if let Some(url) = line.strip_prefix("runtime listening on ") {
                    return Some(url.trim().to_string());
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(url) = url else {
            let _ = child.kill().await;
            let _ = child.wait().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Err(output.lock().unwrap().clone());
        };
        Ok(Runtime {
            child,
            url,
            output,
            http: reqwest::Client::new(),
        })
    }

    /// Stops the process and waits for it.
    pub async fn stop(mut self) -> String {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
        self.output.lock().unwrap().clone()
    }

    /// Sends SIGTERM, as `kill`, systemd and container runtimes do, and
    /// waits (at most `within`) for the process to exit. Returns whether it
    /// exited successfully, and everything it printed.
    pub async fn terminate(mut self, within: Duration) -> (bool, String) {
        let pid = self.child.id().expect("the runtime is running");
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let exited = tokio::time::timeout(within, self.child.wait()).await;
        let output = || self.output.lock().unwrap().clone();
        match exited {
            Ok(status) => {
                // Let the output readers drain the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                (status.expect("wait for the runtime").success(), output())
            }
            Err(_) => panic!(
                "the runtime did not exit within {within:?} of SIGTERM:\n{}",
                output()
            ),
        }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// `PUT /v1/{app}/functions/{name}` with a component and manifest.
    pub async fn deploy(
        &self,
        name: &str,
        component: Vec<u8>,
        manifest: &str,
    ) -> reqwest::Response {
        let form = reqwest::multipart::Form::new()
            .part(
                "component",
                reqwest::multipart::Part::bytes(component).file_name("c.wasm"),
            )
            .text("manifest", manifest.to_string());
        self.http
            .put(format!("{}/v1/{APP}/functions/{name}", self.url))
            .bearer_auth(ADMIN_KEY)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Deploys and asserts success.
    pub async fn deploy_ok(&self, name: &str, component: Vec<u8>, manifest: &str) -> Value {
        let r = self.deploy(name, component, manifest).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "deploy {name}: {body}");
        body
    }

    /// An admin JSON call.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api(ADMIN_KEY, method, path, body).await
    }

    /// A JSON call with a bearer (an admin key or an end user's JWT).
    pub async fn api(
        &self,
        bearer: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(bearer);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Calls a function.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, String) {
        let mut req = self
            .http
            .request(method, format!("{}/fn/{APP}/{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

/// One request an [`Upstream`] received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Headers as (lower-case name, value).
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
}

impl Recorded {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What an [`Upstream`] answers.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: Value,
}

#[derive(Clone)]
struct UpstreamState {
    requests: Arc<Mutex<Vec<Recorded>>>,
    reply: Arc<Mutex<Reply>>,
    delay: Arc<Mutex<Duration>>,
}

/// A local HTTP server standing in for a provider's API: records every
/// request and answers with a configurable reply.
#[derive(Debug)]
pub struct Upstream {
    /// Base URL.
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    reply: Arc<Mutex<Reply>>,
    delay: Arc<Mutex<Duration>>,
}

impl Upstream {
    /// Starts on 127.0.0.1, answering `reply`.
    pub async fn start(reply: Reply) -> Upstream {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reply = Arc::new(Mutex::new(reply));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let state = UpstreamState {
            requests: requests.clone(),
            reply: reply.clone(),
            delay: delay.clone(),
        };
        let app = Router::new().fallback(record).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Upstream {
            url,
            requests,
            reply,
            delay,
        }
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Changes the reply.
    pub fn set_reply(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    /// Makes every later request wait `delay` (after being recorded)
    /// before it is answered: a slow provider.
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }
}

async fn record(
    State(state): State<UpstreamState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    state.requests.lock().unwrap().push(Recorded {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body,
    });
    let reply = state.reply.lock().unwrap().clone();
    let delay = *state.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        axum::Json(reply.body),
    )
        .into_response();
    for (n, v) in reply.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    response
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(path);
            }
        }
    }
    hits
}

/// An end user's JWT for `sub`, signed HS256 with `secret`, expiring in
/// `exp_in` seconds (negative: already expired).
pub fn user_jwt(sub: &str, secret: &str, exp_in: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": sub, "iat": now, "exp": now + exp_in}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A browser for the connect flow: follows no redirects, so each hop can be
/// checked.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The query of a URL as a map.
pub fn query(url: &url::Url) -> std::collections::HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// A browser with the cookies of one origin (the runtime's), for the
/// connect flow: the connect page sets a form token and, once confirmed, a
/// cookie binding the flow to this browser, which the callback requires.
/// Follows no redirects, so each hop can be checked.
#[derive(Debug)]
pub struct ConnectBrowser {
    client: reqwest::Client,
    /// (origin, name, value) of the cookies set so far.
    cookies: std::sync::Mutex<Vec<(String, String, String)>>,
}

impl Default for ConnectBrowser {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnectBrowser {
    /// A browser with no cookies.
    pub fn new() -> Self {
        ConnectBrowser {
            client: browser(),
            cookies: Default::default(),
        }
    }

    fn origin(url: &url::Url) -> String {
        url.origin().ascii_serialization()
    }

    fn keep_cookies(&self, url: &url::Url, response: &reqwest::Response) {
        let origin = Self::origin(url);
        let mut jar = self.cookies.lock().unwrap();
        for v in response.headers().get_all("set-cookie") {
            let text = v.to_str().unwrap();
            let (pair, attrs) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            jar.retain(|(o, n, _)| !(o == &origin && n == name));
            if !attrs.contains("Max-Age=0") {
                jar.push((origin.clone(), name.to_string(), value.to_string()));
            }
        }
    }

    fn cookie_header(&self, url: &url::Url) -> Option<String> {
        let origin = Self::origin(url);
        let jar = self.cookies.lock().unwrap();
        let pairs: Vec<String> = jar
            .iter()
            .filter(|(o, _, _)| o == &origin)
            .map(|(_, n, v)| format!("{n}={v}"))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    /// The names of the cookies this browser holds for `url`'s origin.
    pub fn cookie_names(&self, url: &str) -> Vec<String> {
        let origin = Self::origin(&url::Url::parse(url).unwrap());
        let jar = self.cookies.lock().unwrap();
        jar.iter()
            .filter(|(o, _, _)| o == &origin)
            .map(|(_, n, _)| n.clone())
            .collect()
    }

    /// GET with this browser's cookies.
    pub async fn get(&self, url: &str) -> reqwest::Response {
        let parsed = url::Url::parse(url).unwrap();
        let mut request = self.client.get(url);
        if let Some(c) = self.cookie_header(&parsed) {
            request = request.header("cookie", c);
        }
        let response = request.send().await.unwrap();
        self.keep_cookies(&parsed, &response);
        response
    }

    /// GET `url` as if it were on `public`'s origin: what a browser does
    /// behind a load balancer, whose one public origin fronts several
    /// nodes (each of which listens on its own port here).
    pub async fn get_via(&self, public: &str, url: &str) -> reqwest::Response {
        let origin = url::Url::parse(public).unwrap();
        let mut request = self.client.get(url);
        if let Some(c) = self.cookie_header(&origin) {
            request = request.header("cookie", c);
        }
        let response = request.send().await.unwrap();
        self.keep_cookies(&origin, &response);
        response
    }

    /// POSTs a form with this browser's cookies.
    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let parsed = url::Url::parse(url).unwrap();
        let mut request = self.client.post(url).form(form);
        if let Some(c) = self.cookie_header(&parsed) {
            request = request.header("cookie", c);
        }
        let response = request.send().await.unwrap();
        self.keep_cookies(&parsed, &response);
        response
    }

    /// Opens a connect page (an `authUrl`), returns its HTML.
    pub async fn open_page(&self, auth_url: &str) -> String {
        let r = self.get(auth_url).await;
        assert_eq!(r.status().as_u16(), 200, "connect page {auth_url}");
        r.text().await.unwrap()
    }

    /// Opens a connect page and presses Continue: returns the provider's
    /// authorization URL the runtime sends the browser to.
    pub async fn confirm(&self, auth_url: &str) -> String {
        let page = self.open_page(auth_url).await;
        let (status, location) = self.submit(auth_url, &page).await;
        assert_eq!(status, 303, "confirming the connect page");
        location.unwrap()
    }

    /// Submits the connect page's form as shown: (status, Location).
    pub async fn submit(&self, auth_url: &str, page: &str) -> (u16, Option<String>) {
        let field = |name: &str| {
            let marker = format!("name=\"{name}\" value=\"");
            let start = page.find(&marker).unwrap() + marker.len();
            let end = start + page[start..].find('"').unwrap();
            page[start..end]
                .replace("&quot;", "\"")
                .replace("&amp;", "&")
        };
        let (state, csrf) = (field("state"), field("csrf"));
        let mut action = url::Url::parse(auth_url).unwrap();
        action.set_query(None);
        let r = self
            .post_form(action.as_str(), &[("state", &state), ("csrf", &csrf)])
            .await;
        let location = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        (r.status().as_u16(), location)
    }
}
