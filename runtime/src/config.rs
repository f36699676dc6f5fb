//! `runtime serve` configuration and start-up: everything is validated and
//! opened before the port is bound, so a bad setting fails fast with a
//! message saying how to fix it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use host_api::catalog::Catalog;
use host_api::crypto::MasterKey;
use host_api::egress::EgressPolicy;
use host_api::store::{SledStore, Store};
use host_api::{Broker, Secret};

use crate::engine::{Engine, EngineSettings};
use crate::invoke::Invoker;
use crate::registry::Registry;
use crate::server::AppState;

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
    /// Where the store, keys and compiled artifacts live.
    pub data_dir: PathBuf,
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
    /// Admin key for those apps (`RUNTIME_ADMIN_KEY`).
    pub admin_key: Option<Secret>,
}

/// A started runtime, before it accepts connections.
#[derive(Debug)]
pub struct Started {
    /// Shared state for the server.
    pub state: Arc<AppState>,
    /// Admin keys generated for new apps, to print once.
    pub new_keys: Vec<(String, String)>,
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
        create_private_dir(&self.data_dir)?;

        let key = match &self.key {
            KeySource::Hex(h) => MasterKey::from_hex(h.expose()).context("RUNTIME_MASTER_KEY")?,
            KeySource::File(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading master key file {}", p.display()))?;
                MasterKey::from_hex(&text)
                    .with_context(|| format!("master key file {}", p.display()))?
            }
            KeySource::DevFile => {
                let path = self.data_dir.join("master.key");
                let (key, created) = MasterKey::load_or_create_file(&path)?;
                if created {
                    tracing::info!(path = %path.display(), "created a development master key (mode 0600)");
                }
                key
            }
            KeySource::Missing => bail!(
                "no master key: secrets are encrypted at rest and the runtime will not start without a key. \
                 Set RUNTIME_MASTER_KEY (create one with `runtime keygen`) or pass --master-key-file; \
                 for local development use --dev, which keeps a key in the data directory"
            ),
        };

        let store = SledStore::open(&self.data_dir).with_context(|| {
            format!(
                "opening the store in {} (is another runtime using it?)",
                self.data_dir.display()
            )
        })?;
        let store: Arc<dyn Store> = Arc::new(store);
        match store.get_meta("master-key-check").await? {
            Some(check) => key.verify_check(&check).map_err(|_| {
                anyhow::anyhow!(
                    "the master key is not the one this data directory was created with (key id {}); start with the original key",
                    key.id_hex()
                )
            })?,
            None => store.put_meta("master-key-check", &key.key_check()?).await?,
        }

        let catalog = Catalog::builtin().context("built-in connector catalog")?;
        let policy = EgressPolicy {
            allow_private: self.allow_insecure_upstreams,
        };
        let broker = Arc::new(
            Broker::new(store.clone(), Arc::new(key), Arc::new(catalog), policy)
                .map_err(anyhow::Error::msg)?,
        );

        let settings = EngineSettings {
            artifacts_dir: self.data_dir.join("artifacts"),
            max_instances: self.max_instances,
        };
        let engine = Arc::new(tokio::task::spawn_blocking(move || Engine::new(&settings)).await??);
        tracing::info!(pooling = engine.pooling, "engine ready");
        let registry = Arc::new(Registry::new(engine.clone(), store.clone()));
        let loaded = registry.load_all().await?;
        tracing::info!(functions = loaded, "functions loaded");

        let mut new_keys = Vec::new();
        for app in &self.apps {
            if let Some(k) = crate::apps::ensure_app(
                store.as_ref(),
                app,
                self.admin_key.as_ref().map(Secret::expose),
            )
            .await?
            {
                new_keys.push((app.clone(), k));
            }
        }

        let invoker = Arc::new(Invoker::new(engine, broker.clone(), self.max_instances));
        Ok(Started {
            state: Arc::new(AppState {
                store,
                broker,
                registry,
                invoker,
            }),
            new_keys,
        })
    }
}
