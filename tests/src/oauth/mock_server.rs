//! The independent OAuth peer: the npm package `oauth2-mock-server`
//! (pinned in `tests/oauth-peer/package.json`), run by node through
//! `tests/oauth-peer/serve.mjs`.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use url::Url;

/// The line `tests/oauth-peer/serve.mjs` prints once it listens, before the URL.
pub(super) const MOCK_LISTENING_PREFIX: &str = "oauth2-mock-server listening on ";

/// How long [`MockOAuthServer::start`] waits for the listening line.
const MOCK_START_TIMEOUT: Duration = Duration::from_secs(30);

/// `oauth2-mock-server` 9.3.0 running in a `node` child process.
///
/// Endpoints (all relative to [`MockOAuthServer::base`]): `GET /authorize`
/// (redirects at once with `code` and `state`), `POST /token`,
/// `POST /revoke`, `GET /userinfo`, `GET /jwks`,
/// `GET /.well-known/openid-configuration`. It validates PKCE when a
/// `code_verifier` is sent, and nothing else: see `tests/oauth-peer/serve.mjs`.
///
/// The process is killed when this value is dropped (and exits by itself
/// when its stdin, held here, closes).
#[derive(Debug)]
pub struct MockOAuthServer {
    /// Base URL with a trailing slash, `http://127.0.0.1:PORT/`; it is also
    /// the issuer (`iss` of its tokens, minus the slash).
    pub base: Url,
    child: Child,
    /// Held open: `serve.mjs` exits when its stdin closes.
    _stdin: ChildStdin,
    output: Arc<Mutex<String>>,
}

impl MockOAuthServer {
    /// Starts `node tests/oauth-peer/serve.mjs` on a free port and waits (at
    /// most 30 s) until it listens. Panics with a hint when node or the npm
    /// packages are missing.
    pub async fn start() -> MockOAuthServer {
        const HINT: &str = "run scripts/test.sh (it installs the npm packages), \
             or `npm ci` in tests/oauth-peer; Node.js 20 or newer is needed";
        let script = crate::root().join("tests/oauth-peer/serve.mjs");
        let mut child = Command::new("node")
            .arg(&script)
            .current_dir(crate::root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `node {}`: {e}; {HINT}", script.display()));
        let stdin = child.stdin.take().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        read_lines(child.stdout.take().unwrap(), output.clone(), Some(tx));
        read_lines(child.stderr.take().unwrap(), output.clone(), None);

        let waited = tokio::time::timeout(MOCK_START_TIMEOUT, async {
            while let Some(line) = rx.recv().await {
                if let Some(url) = line.strip_prefix(MOCK_LISTENING_PREFIX) {
                    return Some(url.trim().to_string());
                }
            }
            None
        })
        .await;
        let url = match waited {
            Ok(Some(url)) => url,
            Ok(None) => {
                // Exited: let the stderr reader catch up before reporting.
                let _ = child.wait().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "oauth2-mock-server (node {}) exited before listening; {HINT}. Output:\n{}",
                    script.display(),
                    output.lock().unwrap()
                );
            }
            Err(_) => {
                let _ = child.kill().await;
                panic!(
                    "oauth2-mock-server (node {}) did not print `{MOCK_LISTENING_PREFIX}...` \
                     within {} s; {HINT}. Output:\n{}",
                    script.display(),
                    MOCK_START_TIMEOUT.as_secs(),
                    output.lock().unwrap()
                );
            }
        };
        let base = Url::parse(&url)
            .unwrap_or_else(|e| panic!("oauth2-mock-server printed a bad URL {url:?}: {e}"));
        MockOAuthServer {
            base,
            child,
            _stdin: stdin,
            output,
        }
    }

    fn endpoint(&self, path: &str) -> String {
        self.base.join(path).unwrap().to_string()
    }

    /// `GET /authorize`: answers 302 to `redirect_uri?code=...&state=...`.
    pub fn authorize_url(&self) -> String {
        self.endpoint("authorize")
    }

    /// `POST /token`.
    pub fn token_url(&self) -> String {
        self.endpoint("token")
    }

    /// `POST /revoke` (RFC 7009; always 200, revokes nothing).
    pub fn revocation_url(&self) -> String {
        self.endpoint("revoke")
    }

    /// `GET /userinfo` (`{"sub":"johndoe"}`, token not checked).
    pub fn userinfo_url(&self) -> String {
        self.endpoint("userinfo")
    }

    /// `GET /jwks`: the public keys its JWTs are signed with.
    pub fn jwks_url(&self) -> String {
        self.endpoint("jwks")
    }

    /// `GET /.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        self.endpoint(".well-known/openid-configuration")
    }

    /// Everything the process printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Kills the process and waits for it; returns its output.
    pub async fn stop(mut self) -> String {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
        self.output()
    }
}

/// Appends every line of `reader` to `output`, forwarding it to `tx` if given.
fn read_lines<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: R,
    output: Arc<Mutex<String>>,
    tx: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            {
                let mut out = output.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
            if let Some(tx) = &tx {
                let _ = tx.send(line);
            }
        }
    });
}
