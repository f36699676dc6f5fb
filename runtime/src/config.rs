//! `runtime serve` configuration and start-up: everything is validated and
//! opened before the port is bound, so a bad setting fails fast with a
//! message saying how to fix it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use host_api::catalog::{Catalog, ConnectorOverride};
use host_api::crypto::Keyring;
use host_api::egress::EgressPolicy;
use host_api::ratelimit::{Quota, RateLimits};
use host_api::store::{PostgresStore, SledStore, Store};
use host_api::{Broker, Secret};

use crate::engine::{Engine, EngineSettings};
use crate::invoke::Invoker;
use crate::registry::Registry;
use crate::state::AppState;

/// Where the master key sealing secrets at rest comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `RUNTIME_MASTER_KEY` (64 hex characters).
    Hex(Secret),
    /// A file holding 64 hex characters.
    File(PathBuf),
    /// Dev mode: `<data-dir>/master.key`, created on first start.
    DevFile,
    /// Nothing given.
    Missing,
}

/// Settings of `runtime serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the embedded store, keys and compiled artifacts live.
    pub data_dir: PathBuf,
    /// The shared PostgreSQL store (`--store`), instead of the embedded one.
    pub store_url: Option<Secret>,
    /// Local development: app `dev`, key file created, examples deployed.
    pub dev: bool,
    /// The master key.
    pub key: KeySource,
    /// Allow plain-http and private/loopback provider endpoints.
    pub allow_insecure_upstreams: bool,
    /// Concurrent function instances in all (pool size).
    pub max_instances: u32,
    /// Apps to make sure exist.
    pub apps: Vec<String>,
    /// `RUNTIME_ADMIN_KEY`: the admin key of the one app served, or, with
    /// several apps outside dev mode, the seed of a distinct key for each
    /// ([`crate::apps::derive_key`]).
    pub admin_key: Option<Secret>,
    /// Public base URL (OAuth redirect URI host); default: the bound
    /// address.
    pub public_url: Option<url::Url>,
    /// Refresh connections whose tokens are older than this, so rarely used
    /// grants stay alive.
    pub keep_alive_after: std::time::Duration,
    /// How often to look for such connections.
    pub keep_alive_every: std::time::Duration,
    /// Custom connector definitions (`*.json`) installed for every app at
    /// start.
    pub connectors_dir: Option<PathBuf>,
    /// Deployment overrides of built-in connectors' endpoints (JSON or
    /// TOML file).
    pub connector_overrides: Option<PathBuf>,
    /// Tool calls per second per app (0: unlimited).
    pub rate_limit_app: u32,
    /// Tool calls per second per end user (0: unlimited).
    pub rate_limit_user: u32,
    /// Tool calls per second of an app's anonymous callers together
    /// (0: they take from the app's quota). Default: the user quota.
    pub rate_limit_anonymous: Option<u32>,
    /// The operator's HTTP proxy for provider calls; the environment's
    /// `HTTP_PROXY` and friends are never read.
    pub outbound_proxy: Option<host_api::egress::OutboundProxy>,
    /// How long, and how many records, each app keeps of its audit trail
    /// and of its run and invocation history.
    pub retention: crate::invocations::Retention,
}

/// A started runtime, before it accepts connections.
#[derive(Debug)]
pub struct Started {
    /// Shared state for the server.
    pub state: Arc<AppState>,
    /// Admin keys to print once: generated for new apps, or derived from
    /// `RUNTIME_ADMIN_KEY` for each of several apps.
    pub new_keys: Vec<(String, String)>,
    /// The retention task; dropping it (at shutdown) stops it.
    pub retention: crate::invocations::RetentionTask,
    /// Following other nodes' changes on a shared store ([`crate::cluster`]).
    pub follower: Option<tokio::task::JoinHandle<()>>,
}

fn create_private_dir(path: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path)
        .with_context(|| format!("cannot create data directory {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict permissions of {}", path.display()))?;
    }
    Ok(())
}

/// Meta key of the stored master key check value.
const KEY_CHECK: &str = host_api::broker::rekey::KEY_CHECK_META;

/// What the key-file watcher needs to re-encrypt.
#[derive(Debug, Clone)]
struct Rekeyer {
    broker: Arc<Broker>,
    running: Arc<tokio::sync::Mutex<()>>,
}

/// Re-encrypts every secret under the active key ([`Broker::rekey`]: while
/// it runs, the stored key check names every key of the set, so a restart
/// or reload without one of them is refused; once every secret moved, it
/// names only the active key and older keys may leave the file).
async fn rekey(broker: &Broker) -> anyhow::Result<()> {
    let report = broker.rekey().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if report.finished {
        tracing::info!(
            key_id = %broker.key().active_id_hex(),
            rewrapped = report.rewrapped,
            "re-encryption finished: every stored secret is sealed with the active key; older keys can leave the key file after 15 minutes (pending connect flows)"
        );
    } else if report.failed > 0 {
        tracing::error!(
            rewrapped = report.rewrapped,
            failed = report.failed,
            "re-encryption left secrets it could not open; keep the older keys"
        );
    } else {
        tracing::info!(
            rewrapped = report.rewrapped,
            "the key file changed during re-encryption; another pass follows"
        );
    }
    Ok(())
}

/// Installs every `*.json` connector definition in `dir` for each app; a bad
/// file stops start-up with its name and the reason.
async fn install_connectors(
    broker: &Broker,
    dir: &std::path::Path,
    apps: &[String],
) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading connectors directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let spec: host_api::catalog::ConnectorSpec = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a connector definition", path.display()))?;
        for app in apps {
            broker
                .put_connector(app, spec.clone())
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
        tracing::info!(connector = %spec.slug, file = %path.display(), "custom connector installed");
    }
    Ok(())
}

impl ServeConfig {
    /// Validates the settings and opens everything the server needs.
    pub async fn start(&self) -> anyhow::Result<Started> {
        for app in &self.apps {
            crate::registry::check_name("app", app).map_err(anyhow::Error::msg)?;
        }
        if let Some(k) = &self.admin_key
            && k.expose().len() < 16
        {
            bail!(
                "RUNTIME_ADMIN_KEY must be at least 16 characters; generate one with `runtime keygen`"
            );
        }
        if self.max_instances == 0 {
            bail!("--max-instances must be at least 1");
        }
        if self.retention.max_age < std::time::Duration::from_secs(24 * 3600) {
            bail!("--retention-days must be at least 1");
        }
        if self.retention.max_records == 0 {
            bail!(
                "--retention-max-records must be at least 1 (the default, 100000, keeps about 30 MB of audit records per app)"
            );
        }
        create_private_dir(&self.data_dir)?;

        let (key, key_file) = match &self.key {
            KeySource::Hex(h) => (
                Keyring::from_hex(h.expose()).context("RUNTIME_MASTER_KEY")?,
                None,
            ),
            KeySource::File(p) => (
                Keyring::load_file(p)
                    .with_context(|| format!("master key file {}", p.display()))?,
                Some(p.clone()),
            ),
            KeySource::DevFile => {
                let path = self.data_dir.join(crate::keys::DEV_KEY_FILE);
                let (key, created) = Keyring::load_or_create_file(&path)?;
                if created {
                    tracing::info!(path = %path.display(), "created a development master key (mode 0600)");
                }
                (key, Some(path))
            }
            KeySource::Missing => bail!(
                "no master key: secrets are encrypted at rest and the runtime will not start without a key. \
                 Set RUNTIME_MASTER_KEY (create one with `runtime keygen`) or pass --master-key-file; \
                 for local development use --dev, which keeps a key in the data directory"
            ),
        };
        let key = Arc::new(key);

        let store: Arc<dyn Store> = match &self.store_url {
            Some(url) => {
                let store = PostgresStore::connect(url.expose())
                    .await
                    .context("opening the PostgreSQL store (--store / RUNTIME_STORE_URL)")?;
                tracing::info!(store = %store.place(), "using the PostgreSQL store");
                Arc::new(store)
            }
            None => Arc::new(SledStore::open(&self.data_dir).with_context(|| {
                format!(
                    "opening the store in {} (is another runtime using it?)",
                    self.data_dir.display()
                )
            })?),
        };
        match store.get_meta(KEY_CHECK).await? {
            Some(check) => key.verify_check(&check).map_err(|e| {
                anyhow::anyhow!(
                    "the master key (active key id {}) is not the one this data directory was created with ({e}). Start with the original key; after a rotation, keep the older keys in the key file until the server logs that re-encryption finished",
                    key.active_id_hex()
                )
            })?,
            None => store.put_meta(KEY_CHECK, &key.key_check()?).await?,
        }

        let policy = EgressPolicy {
            allow_private: self.allow_insecure_upstreams,
        };
        let overrides = match &self.connector_overrides {
            Some(path) => load_overrides(path)?,
            None => BTreeMap::new(),
        };
        let catalog = Catalog::builtin_with(&overrides).context("built-in connector catalog")?;
        for slug in overrides.keys() {
            let Some(connector) = catalog.connector(slug) else {
                continue;
            };
            let urls = std::iter::once(&connector.base_url)
                .chain(connector.base_urls.values())
                .chain(connector.oauth.iter().flat_map(|o| o.all()));
            for url in urls {
                policy.check_url(url).map_err(|e| {
                    anyhow::anyhow!("connector overrides: `{slug}` endpoint {url}: {e}")
                })?;
            }
        }
        let broker = Arc::new(
            Broker::new(
                store.clone(),
                key.clone(),
                Arc::new(catalog),
                host_api::egress::Egress {
                    policy,
                    proxy: self.outbound_proxy.clone(),
                },
            )
            .map_err(anyhow::Error::msg)?,
        );
        if let Some(url) = &self.public_url {
            broker.set_public_url(url.clone());
        }
        let quota = |n: u32| (n > 0).then(|| Quota::per_second(n));
        let limits = RateLimits::new(quota(self.rate_limit_app), quota(self.rate_limit_user));
        broker.set_rate_limits(match self.rate_limit_anonymous {
            Some(n) => limits.with_anonymous(quota(n)),
            None => limits,
        });
        {
            let broker = broker.clone();
            let (after, every) = (self.keep_alive_after, self.keep_alive_every);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let n = broker.keep_alive_idle(after).await;
                    if n > 0 {
                        tracing::info!(
                            refreshed = n,
                            "keep-alive sweep refreshed idle connections"
                        );
                    }
                }
            });
        }
        // Older keys in the set: a rotation happened (perhaps while the
        // server was down, or a pass was interrupted): finish it first.
        if key.current().ids_hex().len() > 1 {
            rekey(&broker).await?;
        }
        if let Some(path) = key_file {
            let rekeyer = Rekeyer {
                broker: broker.clone(),
                running: Arc::new(tokio::sync::Mutex::new(())),
            };
            let watcher = crate::keys::watch_key_file(
                path,
                key.clone(),
                store.clone(),
                move || {
                    let r = rekeyer.clone();
                    tokio::spawn(async move {
                        let _one_at_a_time = r.running.lock().await;
                        if let Err(e) = rekey(&r.broker).await {
                            tracing::error!(error = %e, "re-encryption after key rotation failed; it is retried at the next start");
                        }
                    });
                },
            );
            tokio::spawn(watcher);
        }

        let settings = EngineSettings {
            artifacts_dir: self.data_dir.join("artifacts"),
            max_instances: self.max_instances,
        };
        let engine = Arc::new(tokio::task::spawn_blocking(move || Engine::new(&settings)).await??);
        tracing::info!(pooling = engine.pooling, "engine ready");
        let registry = Arc::new(Registry::new(engine.clone(), store.clone(), broker.clone()));
        let loaded = registry.load_all().await?;
        tracing::info!(functions = loaded, "functions loaded");

        // One admin key per app: with several apps (outside dev mode),
        // RUNTIME_ADMIN_KEY only seeds a distinct key for each.
        let derive = self.apps.len() > 1 && !self.dev;
        let mut new_keys = Vec::new();
        for app in &self.apps {
            let derived = self
                .admin_key
                .as_ref()
                .filter(|_| derive)
                .map(|k| crate::apps::derive_key(k.expose(), app));
            let choice = match (&derived, &self.admin_key) {
                (Some(d), _) => crate::apps::KeyChoice::Derived(d),
                (None, Some(k)) => crate::apps::KeyChoice::Given(k.expose()),
                (None, None) => crate::apps::KeyChoice::KeepOrGenerate,
            };
            if let Some(k) = crate::apps::ensure_app(store.as_ref(), app, choice).await? {
                new_keys.push((app.clone(), k));
            }
        }
        if let Some(dir) = &self.connectors_dir {
            install_connectors(&broker, dir, &self.apps).await?;
        }

        let invocations = Arc::new(crate::invocations::InvocationLog::new(store.clone()));
        let invoker = Arc::new(Invoker::new(
            engine,
            broker.clone(),
            self.max_instances,
            Some(invocations.clone()),
        ));
        let cron = Arc::new(crate::triggers::cron::Cron::new(
            store.clone(),
            registry.clone(),
            invoker.clone(),
        ));
        cron.sync_all().await;
        let follower = crate::cluster::follow(
            store.clone(),
            registry.clone(),
            cron.clone(),
            broker.clone(),
        )
        .await;
        let retention = crate::invocations::spawn_retention(
            store.clone(),
            self.retention,
            crate::invocations::RETENTION_EVERY,
        );
        Ok(Started {
            state: Arc::new(AppState {
                store,
                broker,
                registry,
                invoker,
                cron,
                invocations,
            }),
            new_keys,
            retention,
            follower,
        })
    }
}

/// Reads `--connector-overrides`: a map from connector slug to replacement
/// endpoints, in JSON or (by the `.toml` extension) TOML.
fn load_overrides(path: &Path) -> anyhow::Result<BTreeMap<String, ConnectorOverride>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading connector overrides {}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    } else {
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    };
    Ok(parsed)
}
