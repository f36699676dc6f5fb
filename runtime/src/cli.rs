//! The command line: `serve` runs the server; the other verbs are clients of
//! a running server's management API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;

use host_api::Secret;

use crate::config::{KeySource, ServeConfig};

/// Serve backend functions compiled to WebAssembly components; they call
/// other people's APIs through credentials only this host holds.
#[derive(Debug, Parser)]
#[command(name = "runtime", version, after_help = EXAMPLES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "\
Examples:
  runtime serve --dev                                  local development: app `dev`, examples deployed
  runtime serve --listen 0.0.0.0:8080 --data-dir /var/lib/runtime --app myapp
  runtime deploy target/wasm32-wasip2/release/hello.wasm --name hello
  runtime deploy fn.wasm --name digest --manifest manifest.json --app myapp
  runtime functions list
  runtime functions rm hello
  runtime functions run daily-digest                   run a cron function now
  runtime logs bug-report                              recent invocations and their output
  runtime functions rollback hello 2                   serve version 2 again (see `functions versions hello`)
  runtime keygen                                       a master key for RUNTIME_MASTER_KEY
  runtime keys rotate --master-key-file /etc/runtime/master.key";

/// Connection to a running server, shared by the client verbs.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// Base URL of the running server.
    #[arg(long, env = "RUNTIME_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The app to act on.
    #[arg(long, env = "RUNTIME_APP", default_value = "dev")]
    pub app: String,
    /// The app's admin key.
    #[arg(long, env = "RUNTIME_ADMIN_KEY", hide_env_values = true)]
    pub key: Option<Secret>,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    #[command(after_help = "Example:\n  runtime serve --dev --listen 127.0.0.1:8080")]
    Serve(Box<ServeArgs>),
    /// Deploy a component (.wasm) as a function (a new version if it exists).
    #[command(
        after_help = "Example:\n  runtime deploy target/wasm32-wasip2/release/bug_report.wasm --name bug-report --manifest functions/bug-report/manifest.json"
    )]
    Deploy {
        /// The component file.
        file: PathBuf,
        /// Function name: it is served at /fn/{app}/{name}. Default: the
        /// manifest's "name".
        #[arg(long)]
        name: Option<String>,
        /// Manifest (JSON): triggers, grants, limits. Defaults to `{}`.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// The server and its admin key.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A function's recent invocations (HTTP and cron): trigger, status,
    /// duration, tool calls and what it printed.
    #[command(after_help = "Example:\n  runtime logs bug-report --limit 5")]
    Logs {
        /// Function name.
        name: String,
        /// How many invocations, newest first.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// The server and its admin key.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List, remove, run or roll back deployed functions.
    #[command(subcommand)]
    Functions(FunctionsCommand),
    /// Rotate or inspect the master key file.
    #[command(
        subcommand,
        after_help = "Examples:\n  runtime keys rotate --master-key-file /etc/runtime/master.key\n  runtime keys status --data-dir .runtime-data"
    )]
    Keys(KeysCommand),
    /// Print a new random master key (64 hex characters) for RUNTIME_MASTER_KEY.
    #[command(after_help = "Example:\n  export RUNTIME_MASTER_KEY=$(runtime keygen)")]
    Keygen,
}

/// `runtime functions ...`.
#[derive(Debug, Subcommand)]
pub enum FunctionsCommand {
    /// List the app's functions.
    #[command(after_help = "Example:\n  runtime functions list --app dev")]
    List {
        /// The server and its admin key.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a function.
    #[command(after_help = "Example:\n  runtime functions rm hello")]
    Rm {
        /// Function name.
        name: String,
        /// The server and its admin key.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a function's kept versions, newest first.
    #[command(after_help = "Example:\n  runtime functions versions hello")]
    Versions {
        /// Function name.
        name: String,
        /// The server and its admin key.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a cron function now (its first trigger) and wait for the outcome.
    #[command(after_help = "Example:\n  runtime functions run daily-digest")]
    Run {
        /// Function name.
        name: String,
        /// The server and its admin key.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A cron function's run history: trigger, outcome, tool calls.
    #[command(after_help = "Example:\n  runtime functions runs daily-digest --limit 20")]
    Runs {
        /// Function name.
        name: String,
        /// How many runs, newest first.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// The server and its admin key.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Serve a kept version again (its compiled artifact is reused).
    #[command(
        after_help = "Examples:\n  runtime functions rollback hello      the version before the current one\n  runtime functions rollback hello 3    version 3"
    )]
    Rollback {
        /// Function name.
        name: String,
        /// The version to serve; default: the one before the current.
        version: Option<u64>,
        /// The server and its admin key.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `runtime keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Put a new random key first in the key file, keeping the older keys
    /// below it; a running server picks it up and re-encrypts everything.
    Rotate(KeyFileArgs),
    /// Print the key ids in the key file (never the keys).
    Status(KeyFileArgs),
    /// Print the admin key of one of several apps served with one
    /// RUNTIME_ADMIN_KEY: each gets its own key derived from it, which
    /// `runtime serve` prints once.
    #[command(
        after_help = "Example:\n  RUNTIME_ADMIN_KEY=... runtime keys admin-key --app billing"
    )]
    AdminKey {
        /// The app.
        #[arg(long)]
        app: String,
        /// The RUNTIME_ADMIN_KEY the server runs with.
        #[arg(long = "from", env = "RUNTIME_ADMIN_KEY", hide_env_values = true)]
        operator_key: Secret,
    },
}

/// Which key file the key verbs act on.
#[derive(Debug, clap::Args)]
pub struct KeyFileArgs {
    /// Master key file. Default: dev mode's DATA_DIR/master.key.
    #[arg(long, env = "RUNTIME_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Data directory (for the dev-mode key file).
    #[arg(long, env = "RUNTIME_DATA_DIR", default_value = ".runtime-data")]
    pub data_dir: PathBuf,
}

/// `runtime serve` flags.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "RUNTIME_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory for the store, compiled artifacts and (dev) the key file.
    #[arg(long, env = "RUNTIME_DATA_DIR", default_value = ".runtime-data")]
    pub data_dir: PathBuf,
    /// The shared store for several nodes: a PostgreSQL URL
    /// (postgres://user:password@host:port/database, `sslmode=require` for
    /// TLS). Without it the embedded store in the data directory is used.
    #[arg(long = "store", env = "RUNTIME_STORE_URL", hide_env_values = true, value_parser = parse_secret)]
    pub store_url: Option<Secret>,
    /// Local development: serves app `dev`, keeps a master key in the data
    /// directory, allows local providers, deploys the examples.
    #[arg(long)]
    pub dev: bool,
    /// Folder of example functions deployed in dev mode.
    #[arg(long, default_value = "functions")]
    pub functions_dir: PathBuf,
    /// With --dev: rebuild (`cargo build --release -p NAME` in the functions
    /// folder) and redeploy an example whenever its files change.
    #[arg(long, requires = "dev")]
    pub watch: bool,
    /// Master key file (64 hex characters). Or set RUNTIME_MASTER_KEY.
    #[arg(long, env = "RUNTIME_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Allow provider endpoints over plain http or on private/loopback
    /// addresses (for tests and local providers; never in production).
    #[arg(long)]
    pub allow_insecure_upstreams: bool,
    /// Public base URL of this server, as browsers reach it; the OAuth
    /// redirect URI registered with providers is PUBLIC_URL/v1/integrations/callback.
    /// Default: http://LISTEN_ADDRESS.
    #[arg(long, env = "RUNTIME_PUBLIC_URL")]
    pub public_url: Option<url::Url>,
    /// Refresh OAuth connections whose tokens are older than this many
    /// seconds, so grants with rolling expiry survive idle users.
    #[arg(long, default_value_t = 7 * 24 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_alive_after_secs: u64,
    /// How often (seconds) to look for such connections.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_alive_every_secs: u64,
    /// Directory of custom connector definitions (one JSON file each, the
    /// same shape as POST /v1/{app}/integrations/connectors), installed for
    /// every served app at start.
    #[arg(long, env = "RUNTIME_CONNECTORS_DIR")]
    pub connectors_dir: Option<PathBuf>,
    /// File (JSON or TOML) pointing built-in connectors at other hosts for
    /// this deployment: `{"github": {"apiBaseUrl": "https://ghe.example.com/api/v3",
    /// "authorizeUrl": ..., "tokenUrl": ...}}` (GitHub Enterprise, regional
    /// hosts, local fakes). See docs/connectors.md.
    #[arg(long, env = "RUNTIME_CONNECTOR_OVERRIDES")]
    pub connector_overrides: Option<PathBuf>,
    /// Brokered tool calls per second per app, bursts of twice that
    /// (0: unlimited).
    #[arg(long, env = "RUNTIME_RATE_LIMIT_APP", default_value_t = 200)]
    pub rate_limit_app: u32,
    /// Brokered tool calls per second per end user, bursts of twice that
    /// (0: unlimited).
    #[arg(long, env = "RUNTIME_RATE_LIMIT_USER", default_value_t = 50)]
    pub rate_limit_user: u32,
    /// Brokered tool calls per second of an app's anonymous callers (HTTP
    /// functions called without a user token) together, bursts of twice
    /// that, so they cannot drain the app's quota. Default: the per-user
    /// figure; 0: they take from the app's quota.
    #[arg(long, env = "RUNTIME_RATE_LIMIT_ANONYMOUS")]
    pub rate_limit_anonymous: Option<u32>,
    /// HTTP proxy for calls to providers (http://[user:password@]host:port;
    /// https is tunnelled through it end to end). HTTP_PROXY, HTTPS_PROXY,
    /// ALL_PROXY and NO_PROXY are never read: a proxy must be named here.
    /// Private and loopback targets stay refused through it.
    #[arg(long, env = "RUNTIME_OUTBOUND_PROXY", value_parser = parse_outbound_proxy)]
    pub outbound_proxy: Option<host_api::egress::OutboundProxy>,
    /// Days each app keeps its audit trail and its run and invocation
    /// history; older records are removed in the background.
    #[arg(long, env = "RUNTIME_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub retention_days: u64,
    /// Records each app keeps of its audit trail, and of its run and
    /// invocation history; the oldest beyond are removed in the background.
    #[arg(long, env = "RUNTIME_RETENTION_MAX_RECORDS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub retention_max_records: u64,
    /// Concurrent function instances across all functions.
    #[arg(long, default_value_t = 256)]
    pub max_instances: u32,
    /// App to create if missing (repeatable). Default: `dev` with --dev,
    /// otherwise `default`. RUNTIME_ADMIN_KEY is the key of a single app;
    /// with several (outside --dev) each gets its own key derived from it,
    /// printed once (`runtime keys admin-key --app NAME` prints it again).
    #[arg(long = "app")]
    pub apps: Vec<String>,
    /// On SIGTERM or Ctrl-C: seconds to let requests and cron runs in
    /// progress finish before cutting them off (cut-off runs are recorded
    /// as interrupted). A second signal stops at once. Keep it below the
    /// supervisor's kill timeout (systemd: TimeoutStopSec; Kubernetes:
    /// terminationGracePeriodSeconds; `docker stop -t`).
    #[arg(long, env = "RUNTIME_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
}

fn parse_outbound_proxy(text: &str) -> Result<host_api::egress::OutboundProxy, String> {
    host_api::egress::OutboundProxy::parse(text)
}

fn client(args: &ClientArgs) -> anyhow::Result<(reqwest::Client, Secret)> {
    let key = args.key.clone().context(
        "no admin key: pass --key or set RUNTIME_ADMIN_KEY (printed once when the app was created)",
    )?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    Ok((client, key))
}

async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let message = body
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("no message");
    bail!("the server answered {status}: {message}")
}

impl Cli {
    /// Runs the chosen verb.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Serve(args) => serve(*args).await,
            Command::Deploy {
                file,
                name,
                manifest,
                client: c,
            } => {
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let manifest = match manifest {
                    Some(p) => std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?,
                    None => "{}".into(),
                };
                let name = match name {
                    Some(n) => n,
                    None => manifest_name(&manifest).context(
                        "give the function a name: --name NAME, or \"name\" in the manifest",
                    )?,
                };
                let (http, key) = client(&c)?;
                eprintln!(
                    "uploading {} ({} KiB) and compiling…",
                    file.display(),
                    bytes.len() / 1024
                );
                let form = reqwest::multipart::Form::new()
                    .part(
                        "component",
                        reqwest::multipart::Part::bytes(bytes).file_name("component.wasm"),
                    )
                    .text("manifest", manifest);
                let url = format!(
                    "{}/v1/{}/functions/{}",
                    c.url.trim_end_matches('/'),
                    c.app,
                    name
                );
                let started = std::time::Instant::now();
                let progress = tokio::spawn(show_progress(started));
                let sent = http
                    .put(url)
                    .bearer_auth(key.expose())
                    .multipart(form)
                    .send()
                    .await;
                progress.abort();
                let body = answer(sent?).await?;
                eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
                let field = |k: &str| body.get(k).cloned().unwrap_or(Value::Null);
                println!(
                    "deployed {} version {} -> {}{}",
                    name,
                    field("version"),
                    c.url.trim_end_matches('/'),
                    field("url").as_str().unwrap_or_default()
                );
                Ok(())
            }
            Command::Functions(FunctionsCommand::List { client: c }) => {
                let (http, key) = client(&c)?;
                let url = format!("{}/v1/{}/functions", c.url.trim_end_matches('/'), c.app);
                let body = answer(http.get(url).bearer_auth(key.expose()).send().await?).await?;
                println!("{:<24} {:>7}  {:<12} URL", "NAME", "VERSION", "SHA256");
                let functions = body
                    .get("functions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for f in &functions {
                    let text = |k: &str| {
                        f.get(k)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    let version = f.get("version").cloned().unwrap_or(Value::Null);
                    let sha: String = text("componentSha256").chars().take(12).collect();
                    println!(
                        "{:<24} {:>7}  {:<12} {}",
                        text("name"),
                        version,
                        sha,
                        text("url")
                    );
                }
                Ok(())
            }
            Command::Functions(FunctionsCommand::Rm { name, client: c }) => {
                let (http, key) = client(&c)?;
                let url = format!(
                    "{}/v1/{}/functions/{}",
                    c.url.trim_end_matches('/'),
                    c.app,
                    name
                );
                let response = http.delete(url).bearer_auth(key.expose()).send().await?;
                if !response.status().is_success() {
                    answer(response).await?;
                }
                println!("removed {name}");
                Ok(())
            }
            Command::Functions(FunctionsCommand::Versions { name, client: c }) => {
                let (http, key) = client(&c)?;
                let url = format!(
                    "{}/v1/{}/functions/{}/versions",
                    c.url.trim_end_matches('/'),
                    c.app,
                    name
                );
                let body = answer(http.get(url).bearer_auth(key.expose()).send().await?).await?;
                println!(
                    "{:>7}  {:<7}  {:<12} DEPLOYED",
                    "VERSION", "CURRENT", "SHA256"
                );
                let versions = body
                    .get("versions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for v in &versions {
                    let version = v.get("version").cloned().unwrap_or(Value::Null);
                    let current = v.get("current").and_then(Value::as_bool) == Some(true);
                    let sha: String = v
                        .get("componentSha256")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .chars()
                        .take(12)
                        .collect();
                    let deployed = v
                        .get("deployedAt")
                        .and_then(Value::as_i64)
                        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                        .unwrap_or_default();
                    println!(
                        "{:>7}  {:<7}  {:<12} {}",
                        version,
                        if current { "*" } else { "" },
                        sha,
                        deployed
                    );
                }
                Ok(())
            }
            Command::Functions(FunctionsCommand::Rollback {
                name,
                version,
                client: c,
            }) => {
                let (http, key) = client(&c)?;
                let url = format!(
                    "{}/v1/{}/functions/{}/rollback",
                    c.url.trim_end_matches('/'),
                    c.app,
                    name
                );
                let mut request = http.post(url).bearer_auth(key.expose());
                if let Some(v) = version {
                    request = request.json(&serde_json::json!({ "version": v }));
                }
                let body = answer(request.send().await?).await?;
                let field = |k: &str| body.get(k).cloned().unwrap_or(Value::Null);
                println!(
                    "{} is now at version {} -> {}{}",
                    name,
                    field("version"),
                    c.url.trim_end_matches('/'),
                    field("url").as_str().unwrap_or_default()
                );
                Ok(())
            }
            Command::Functions(FunctionsCommand::Run { name, client: c }) => {
                let (http, key) = client(&c)?;
                let base = format!(
                    "{}/v1/{}/functions/{}",
                    c.url.trim_end_matches('/'),
                    c.app,
                    name
                );
                let body = answer(
                    http.post(format!("{base}/run"))
                        .bearer_auth(key.expose())
                        .send()
                        .await?,
                )
                .await?;
                let run_id = body
                    .get("runId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                eprintln!("started run {run_id} of {name}; waiting for it to finish…");
                // Runs last at most their deadline (300 s) plus retries' waits.
                for _ in 0..1200 {
                    let runs = answer(
                        http.get(format!("{base}/runs?limit=20"))
                            .bearer_auth(key.expose())
                            .send()
                            .await?,
                    )
                    .await?;
                    let done = runs.get("runs").and_then(Value::as_array).and_then(|r| {
                        r.iter()
                            .find(|r| r.get("runId").and_then(Value::as_str) == Some(&run_id))
                            .cloned()
                    });
                    if let Some(run) = done {
                        print_run(&run);
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                bail!("run {run_id} has not finished; see `runtime functions runs {name}`")
            }
            Command::Functions(FunctionsCommand::Runs {
                name,
                limit,
                client: c,
            }) => {
                let (http, key) = client(&c)?;
                let url = format!(
                    "{}/v1/{}/functions/{}/runs?limit={limit}",
                    c.url.trim_end_matches('/'),
                    c.app,
                    name
                );
                let body = answer(http.get(url).bearer_auth(key.expose()).send().await?).await?;
                for run in body
                    .get("runs")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    print_run(&run);
                }
                Ok(())
            }
            Command::Logs {
                name,
                limit,
                client: c,
            } => {
                let (http, key) = client(&c)?;
                let url = format!(
                    "{}/v1/{}/functions/{}/logs?limit={limit}",
                    c.url.trim_end_matches('/'),
                    c.app,
                    name
                );
                let body = answer(http.get(url).bearer_auth(key.expose()).send().await?).await?;
                let list = body
                    .get("invocations")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                // Oldest first, like a log.
                for inv in list.iter().rev() {
                    let text = |k: &str| {
                        inv.get(k)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    let status = inv
                        .get("status")
                        .and_then(Value::as_u64)
                        .map_or_else(|| "error".to_string(), |s| s.to_string());
                    let at = inv
                        .get("startedAtMs")
                        .and_then(Value::as_i64)
                        .and_then(chrono::DateTime::from_timestamp_millis)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default();
                    println!(
                        "{at} {:<8} {} {} -> {status} in {} ms ({})",
                        text("trigger"),
                        text("method"),
                        text("path"),
                        inv.get("durationMs").cloned().unwrap_or(Value::Null),
                        text("principal"),
                    );
                    if let Some(e) = inv.get("error").and_then(Value::as_str) {
                        println!("    error: {e}");
                    }
                    for call in inv
                        .get("toolCalls")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                    {
                        println!("    tool  {}", call.as_str().unwrap_or_default());
                    }
                    for line in inv
                        .get("logLines")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                    {
                        println!("    {}", line.as_str().unwrap_or_default());
                    }
                }
                Ok(())
            }
            Command::Keys(KeysCommand::Rotate(a)) => {
                crate::keys::run_rotate(a.master_key_file.as_deref(), &a.data_dir)
            }
            Command::Keys(KeysCommand::Status(a)) => {
                crate::keys::run_status(a.master_key_file.as_deref(), &a.data_dir)
            }
            Command::Keys(KeysCommand::AdminKey { app, operator_key }) => {
                crate::registry::check_name("app", &app).map_err(anyhow::Error::msg)?;
                println!("{}", crate::apps::derive_key(operator_key.expose(), &app));
                Ok(())
            }
            Command::Keygen => {
                let mut bytes = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
                println!("{}", hex::encode(bytes));
                Ok(())
            }
        }
    }
}

/// While a deploy uploads and compiles: a line on a terminal showing the
/// time elapsed (compiling a large component takes a while).
async fn show_progress(started: std::time::Instant) {
    use std::io::{IsTerminal, Write};
    if !std::io::stderr().is_terminal() {
        return;
    }
    let frames = ['|', '/', '-', '\\'];
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    for i in 0usize.. {
        tick.tick().await;
        let frame = frames.get(i % frames.len()).copied().unwrap_or('.');
        eprint!(
            "\r{frame} uploading and compiling… {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    }
}

/// The `name` of a manifest in JSON or TOML, if it has one.
fn manifest_name(text: &str) -> Option<String> {
    let value: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).ok()?
    } else {
        toml::from_str(text).ok()?
    };
    value.get("name")?.as_str().map(str::to_string)
}

/// One run record as a line, with its tool calls below.
fn print_run(run: &Value) {
    let text = |k: &str| {
        run.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    println!(
        "{} {:<8} {:<9} attempt {} (for {}){}",
        text("startedAt"),
        text("trigger"),
        text("outcome"),
        run.get("attempt").cloned().unwrap_or(Value::Null),
        text("scheduledFor"),
        run.get("error")
            .and_then(Value::as_str)
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );
    for call in run
        .get("toolCalls")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        println!("    tool  {}", call.as_str().unwrap_or_default());
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let key = match (
        std::env::var("RUNTIME_MASTER_KEY").ok(),
        &args.master_key_file,
        args.dev,
    ) {
        (Some(hex), _, _) => KeySource::Hex(Secret::new(hex)),
        (None, Some(path), _) => KeySource::File(path.clone()),
        (None, None, true) => KeySource::DevFile,
        (None, None, false) => KeySource::Missing,
    };
    let apps = if !args.apps.is_empty() {
        args.apps.clone()
    } else if args.dev {
        vec!["dev".to_string()]
    } else {
        vec!["default".to_string()]
    };
    let config = ServeConfig {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        store_url: args.store_url.clone().filter(|u| !u.expose().is_empty()),
        dev: args.dev,
        key,
        allow_insecure_upstreams: args.allow_insecure_upstreams || args.dev,
        max_instances: args.max_instances,
        apps,
        admin_key: std::env::var("RUNTIME_ADMIN_KEY")
            .ok()
            .filter(|k| !k.is_empty())
            .map(Secret::new),
        public_url: args.public_url.clone(),
        keep_alive_after: Duration::from_secs(args.keep_alive_after_secs),
        keep_alive_every: Duration::from_secs(args.keep_alive_every_secs),
        connectors_dir: args.connectors_dir.clone(),
        connector_overrides: args.connector_overrides.clone(),
        rate_limit_app: args.rate_limit_app,
        rate_limit_user: args.rate_limit_user,
        rate_limit_anonymous: args.rate_limit_anonymous,
        outbound_proxy: args.outbound_proxy.clone(),
        retention: crate::invocations::Retention {
            max_age: Duration::from_secs(args.retention_days.saturating_mul(24 * 3600)),
            max_records: usize::try_from(args.retention_max_records).unwrap_or(usize::MAX),
        },
    };
    if let Some(u) = &config.public_url
        && (!matches!(u.scheme(), "http" | "https") || u.host_str().is_none())
    {
        bail!("--public-url must be an absolute http(s) URL, e.g. https://runtime.example.com");
    }
    if args.watch && !args.functions_dir.is_dir() {
        bail!(
            "--watch: no folder {} to watch; pass --functions-dir (the cargo workspace of the examples)",
            args.functions_dir.display()
        );
    }
    let started = config.start().await?;
    if config.dev && args.functions_dir.is_dir() {
        crate::dev::deploy_examples(&started.state.registry, "dev", &args.functions_dir).await?;
        started.state.cron.sync_all().await;
    }
    // Stops (with any build under way) when `serve` returns.
    let _watcher = args.watch.then(|| {
        crate::dev::watch(
            started.state.registry.clone(),
            started.state.cron.clone(),
            "dev".to_string(),
            args.functions_dir.clone(),
        )
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    if config.public_url.is_none() {
        // Browsers cannot go to 0.0.0.0: name the loopback address instead.
        let host = if addr.ip().is_unspecified() {
            tracing::warn!(
                "listening on all interfaces without --public-url; OAuth redirects will point at 127.0.0.1"
            );
            std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
        } else {
            addr
        };
        let url = url::Url::parse(&format!("http://{host}/"))?;
        started.state.broker.set_public_url(url);
    }
    for (app, key) in &started.new_keys {
        // Shown once, on the terminal, never logged: it is not stored in clear.
        if config.admin_key.is_some() {
            println!(
                "admin key for app `{app}` (its own, derived from RUNTIME_ADMIN_KEY; shown once, `runtime keys admin-key --app {app}` prints it again): {key}"
            );
        } else {
            println!(
                "admin key for app `{app}` (shown once; set RUNTIME_ADMIN_KEY to choose your own): {key}"
            );
        }
    }
    let mut signals = StopSignals::new().context("cannot listen for SIGTERM and Ctrl-C")?;
    println!("runtime listening on http://{addr}");
    let state = started.state;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(crate::server::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    let served = tokio::select! {
        served = &mut server => Some(served),
        () = signals.recv() => None,
    };
    // Retention stops first: nothing is pruned while stopping.
    drop(started.retention);
    if let Some(follower) = started.follower {
        follower.abort();
    }
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    let interrupted = match served {
        // The server failed on its own: nothing to wait for.
        Some(served) => {
            flush(&state).await;
            return Ok(served??);
        }
        None => {
            tracing::info!(
                grace_secs = grace.as_secs(),
                "stopping: no new requests or cron runs; waiting for those in progress"
            );
            let _ = stop.send(());
            // Resolves at the end of the grace period, or at a second signal.
            let (give_up, gave_up) = tokio::sync::watch::channel(false);
            let timer = tokio::spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(grace) => tracing::warn!("the shutdown grace period is over"),
                    () = signals.recv() => tracing::warn!("second stop signal: stopping now"),
                }
                let _ = give_up.send(true);
            });
            let until = |mut gave_up: tokio::sync::watch::Receiver<bool>| async move {
                let _ = gave_up.wait_for(|g| *g).await;
            };
            let cut_off = server.abort_handle();
            let requests = async {
                tokio::select! {
                    served = &mut server => served.map_err(anyhow::Error::from).and_then(|s| Ok(s?)),
                    () = until(gave_up.clone()) => {
                        cut_off.abort();
                        tracing::warn!("requests still in progress were cut off");
                        Ok(())
                    }
                }
            };
            let (served, interrupted) =
                tokio::join!(requests, state.cron.shutdown(until(gave_up.clone())));
            timer.abort();
            if let Err(e) = served {
                tracing::error!(error = %format!("{e:#}"), "the server failed while stopping");
            }
            interrupted
        }
    };
    flush(&state).await;
    tracing::info!(interrupted_runs = interrupted, "stopped");
    Ok(())
}

/// Writes what is buffered (audit trail, invocation records) to the store.
async fn flush(state: &crate::state::AppState) {
    state.broker.flush_audit().await;
    state.invocations.flush().await;
}

/// What asks `runtime serve` to stop: SIGTERM (`kill`, systemd, container
/// runtimes) or SIGINT (Ctrl-C).
struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Starts listening: from here on these signals no longer kill the
    /// process.
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next stop signal.
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM received"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT (Ctrl-C) received"),
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Reads a flag that carries a credential (a store URL with its password)
/// into a [`Secret`], so no `Debug` of the arguments prints it.
fn parse_secret(text: &str) -> Result<Secret, String> {
    Ok(Secret::new(text))
}
