//! The wasmtime side: engine configuration, the linker of everything a
//! function may import, compiled-artifact caching, and the per-invocation
//! store state.
//!
//! Built once per process: the `Engine` (pooling allocator when the address
//! space allows, epoch interruption driven by one ticker thread) and the
//! `Linker`. Built once per deployed version: the compiled component (kept on
//! disk as a `.cwasm` beside the original, so restarts do not recompile) and
//! its `InstancePre`. Built per invocation: a `Store` with [`HostState`].

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use host_api::integrations::{self, IntegrationsCtx, IntegrationsView};

use crate::logs::FunctionOutput;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// How often the epoch advances; the granularity of CPU deadlines and of
/// yielding between concurrently running guests.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Largest component accepted for deployment.
pub const MAX_COMPONENT_BYTES: usize = 64 * 1024 * 1024;
/// Table elements one instance may have (function tables of Rust programs
/// are a few thousand entries).
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Core instances, memories and tables per component instance; generous for
/// toolchain-produced components, small enough to bound a hostile one.
const MAX_INSTANCES: usize = 32;
const MAX_MEMORIES: usize = 8;
const MAX_TABLES: usize = 32;
/// Bytes of each pooled memory, table and async stack kept resident between
/// instances (the values Spin uses).
const KEEP_RESIDENT_MEMORY: usize = 2 * 1024 * 1024;
const KEEP_RESIDENT_TABLE: usize = 512 * 1024;
const KEEP_RESIDENT_STACK: usize = 64 * 1024;
/// Resources (streams, requests, user handles...) one instance may hold.
const MAX_RESOURCES: usize = 10_000;

/// Why a component cannot be deployed. Each message names the problem.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Not a WebAssembly component.
    #[error("{0}")]
    NotAComponent(String),
    /// Fails to compile.
    #[error("the component does not compile: {0}")]
    Invalid(String),
    /// Imports something the runtime does not provide.
    #[error(
        "the component imports something this runtime does not provide ({0}); functions may import wasi:cli, wasi:io, wasi:clocks, wasi:random, wasi:filesystem (no preopened directories), wasi:http and runtime:integrations"
    )]
    UnsupportedImport(String),
    /// Lacks the export its trigger needs.
    #[error(
        "the component exports no `wasi:http/incoming-handler@0.2.x` ({0}); an HTTP function must export it (guest-sdk's `http_handler!` does)"
    )]
    MissingExport(String),
}

/// Settings of the engine, from the command line.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Where compiled artifacts are kept.
    pub artifacts_dir: PathBuf,
    /// Concurrent instances across all functions (the pool size).
    pub max_instances: u32,
}

/// The process-wide engine and linker.
pub struct Engine {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
    artifacts_dir: PathBuf,
    /// Whether the pooling allocator could be used.
    pub pooling: bool,
    compat: String,
    ticker_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("pooling", &self.pooling)
            .finish_non_exhaustive()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Guests are untrusted: keep the defaults that bound them, and make
    // stack overflow a clean trap well before the host's own stack.
    config.max_wasm_stack(1024 * 1024);
    config
}

impl Engine {
    /// Builds the engine: pooling allocator if the address space allows it,
    /// on-demand allocation otherwise.
    pub fn new(settings: &EngineSettings) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        let n = settings.max_instances;
        pool.total_component_instances(n);
        pool.total_core_instances(n.saturating_mul(4));
        pool.total_memories(n.saturating_mul(2));
        pool.total_tables(n.saturating_mul(4));
        pool.max_memory_size(
            usize::try_from(host_api::manifest::MAX_MEMORY_MB * 1024 * 1024).unwrap_or(usize::MAX),
        );
        pool.max_core_instances_per_component(u32::try_from(MAX_INSTANCES).unwrap_or(u32::MAX));
        pool.max_memories_per_component(u32::try_from(MAX_MEMORIES).unwrap_or(u32::MAX));
        pool.max_tables_per_component(u32::try_from(MAX_TABLES).unwrap_or(u32::MAX));
        pool.table_elements(MAX_TABLE_ELEMENTS);
        // Keep the pages a request dirtied resident and reset them in place
        // (with `pagemap_scan`, only the dirty ones) instead of returning
        // them to the kernel and faulting them back in on the next request:
        // the dominant per-request cost for small functions.
        pool.linear_memory_keep_resident(KEEP_RESIDENT_MEMORY);
        pool.table_keep_resident(KEEP_RESIDENT_TABLE);
        pool.async_stack_keep_resident(KEEP_RESIDENT_STACK);
        pool.pagemap_scan(wasmtime::Enabled::Auto);
        let mut pooled = base_config();
        pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // Creating the engine reserves the pool's address space: it is the probe.
        let (engine, pooling) = match wasmtime::Engine::new(&pooled) {
            Ok(engine) => (engine, true),
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation");
                (wasmtime::Engine::new(&base_config())?, false)
            }
        };

        let mut linker = Linker::<HostState>::new(&engine);
        add_wasi_to_linker(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        integrations::add_to_linker(&mut linker, |s: &mut HostState| IntegrationsView {
            ctx: &mut s.integrations,
            table: &mut s.table,
        })?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat = format!("{:016x}", hasher.finish());

        std::fs::create_dir_all(&settings.artifacts_dir)
            .with_context(|| format!("creating {}", settings.artifacts_dir.display()))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let stop = ticker_stop.clone();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;

        Ok(Self {
            engine,
            linker,
            artifacts_dir: settings.artifacts_dir.clone(),
            pooling,
            compat,
            ticker_stop,
        })
    }

    /// The wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.engine
    }

    fn wasm_path(&self, sha: &str) -> PathBuf {
        self.artifacts_dir.join(format!("{sha}.wasm"))
    }

    fn cwasm_path(&self, sha: &str) -> PathBuf {
        self.artifacts_dir
            .join(format!("{sha}-{}.cwasm", self.compat))
    }

    /// Validates, compiles and stores a component; returns its SHA-256 and
    /// the ready-to-instantiate function. Blocking: call off the async pool.
    pub fn deploy(&self, bytes: &[u8]) -> Result<(String, ProxyPre<HostState>), DeployError> {
        check_magic(bytes)?;
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
        let pre = self.prepare(&component)?;
        let sha = hex::encode(Sha256::digest(bytes));
        let store_files = || -> anyhow::Result<()> {
            write_atomic(&self.wasm_path(&sha), bytes)?;
            let compiled = component.serialize()?;
            write_atomic(&self.cwasm_path(&sha), &compiled)?;
            write_atomic(
                &self.digest_path(&sha),
                hex::encode(Sha256::digest(&compiled)).as_bytes(),
            )?;
            Ok(())
        };
        store_files().map_err(|e| {
            DeployError::Invalid(format!("cannot store the compiled artifact: {e:#}"))
        })?;
        Ok((sha, pre))
    }

    fn digest_path(&self, sha: &str) -> PathBuf {
        self.artifacts_dir
            .join(format!("{sha}-{}.cwasm.sha256", self.compat))
    }

    /// Loads a deployed component: the cached artifact when it is intact and
    /// built by this engine, else a recompile from the stored original.
    pub fn load(&self, sha: &str) -> anyhow::Result<ProxyPre<HostState>> {
        match self.load_cached(sha) {
            Ok(component) => return Ok(self.prepare(&component)?),
            Err(e) => tracing::info!(component = sha, reason = %e, "recompiling component"),
        }
        let bytes = std::fs::read(self.wasm_path(sha))
            .with_context(|| format!("reading component {sha}"))?;
        let (_, pre) = self.deploy(&bytes)?;
        Ok(pre)
    }

    fn load_cached(&self, sha: &str) -> anyhow::Result<Component> {
        let path = self.cwasm_path(sha);
        let expected = std::fs::read_to_string(self.digest_path(sha)).context("no digest")?;
        let compiled = std::fs::read(&path).context("no artifact")?;
        if hex::encode(Sha256::digest(&compiled)) != expected.trim() {
            anyhow::bail!("artifact digest mismatch");
        }
        // SAFETY: `deserialize_file` trusts its input to be a wasmtime
        // artifact. This file was written by `deploy` into the runtime's own
        // data directory and its digest was just verified against the one
        // written beside it, so it is the artifact this engine produced.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize_file(&self.engine, &path)? };
        Ok(component)
    }

    fn prepare(&self, component: &Component) -> Result<ProxyPre<HostState>, DeployError> {
        let instance_pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| DeployError::UnsupportedImport(format!("{e:#}")))?;
        ProxyPre::new(instance_pre).map_err(|e| DeployError::MissingExport(format!("{e:#}")))
    }

    /// Deletes the files of a component no function uses any more.
    pub fn remove_artifacts(&self, sha: &str) {
        for path in [
            self.wasm_path(sha),
            self.cwasm_path(sha),
            self.digest_path(sha),
        ] {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn check_magic(bytes: &[u8]) -> Result<(), DeployError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(DeployError::NotAComponent(
            "this is a core WebAssembly module, not a component: build with `--target wasm32-wasip2` (or wrap it with `wasm-tools component new`)".into(),
        )),
        _ => Err(DeployError::NotAComponent(
            "this is not a WebAssembly component (no `\\0asm` component header); build the function with `cargo build --target wasm32-wasip2`".into(),
        )),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The WASI interfaces a function may import: io, clocks, random, the cli
/// interfaces a Rust std component brings, and filesystem without any
/// preopened directory (Rust's std always imports it; nothing is reachable).
/// No sockets.
fn add_wasi_to_linker(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView as _};
    use wasmtime_wasi::p2::bindings::{cli, filesystem, random};
    use wasmtime_wasi::random::WasiRandom;
    type T = HostState;

    wasmtime_wasi::p2::add_to_linker_proxy_interfaces_async(l)?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    Ok(())
}

/// Caps all linear memories of an instance together (wasmtime's own
/// `StoreLimits` caps each memory separately), plus tables and instances.
#[derive(Debug)]
pub struct InstanceLimiter {
    memory_cap: usize,
    memory_used: usize,
    /// Set when a growth was refused, so a later trap can be explained.
    pub memory_exhausted: bool,
}

impl InstanceLimiter {
    /// A limiter allowing `memory_cap` bytes in all.
    pub fn new(memory_cap: usize) -> Self {
        Self {
            memory_cap,
            memory_used: 0,
            memory_exhausted: false,
        }
    }
}

impl ResourceLimiter for InstanceLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let delta = desired.saturating_sub(current);
        let total = self.memory_used.saturating_add(delta);
        if total > self.memory_cap {
            self.memory_exhausted = true;
            return Ok(false);
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// Outbound `wasi:http` policy: no egress unless an admin allowlists hosts
/// (not yet configurable, so: none).
#[derive(Debug, Default)]
pub struct DenyEgress;

impl WasiHttpHooks for DenyEgress {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// The `T` of every `Store<T>`: one named context per interface and one
/// capped resource table.
pub struct HostState {
    /// WASI (no preopens, no inherited environment; output to the log).
    pub wasi: WasiCtx,
    /// `wasi:http` state.
    pub http: WasiHttpCtx,
    /// Outbound `wasi:http` policy.
    pub egress: DenyEgress,
    /// Brokered integrations for this invocation.
    pub integrations: IntegrationsCtx,
    /// Memory, table and instance caps.
    pub limiter: InstanceLimiter,
    /// Resources shared by all interfaces.
    pub table: ResourceTable,
    /// Epoch ticks left before the CPU deadline.
    pub ticks_left: u64,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl HostState {
    /// Fresh state for one invocation.
    pub fn new(
        integrations: IntegrationsCtx,
        output: (FunctionOutput, FunctionOutput),
        memory_cap: usize,
        deadline: Duration,
    ) -> Self {
        let ticks = u64::try_from(deadline.as_millis() / EPOCH_TICK.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            wasi: WasiCtx::builder().stdout(output.0).stderr(output.1).build(),
            http: WasiHttpCtx::new(),
            egress: DenyEgress,
            integrations,
            limiter: InstanceLimiter::new(memory_cap),
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_RESOURCES);
                table
            },
            ticks_left: ticks,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_explain_what_is_wrong() {
        assert!(check_magic(b"\0asm\x0d\0\x01\0rest").is_ok());
        assert!(
            check_magic(b"\0asm\x01\0\0\0")
                .unwrap_err()
                .to_string()
                .contains("core WebAssembly module")
        );
        assert!(
            check_magic(b"hello")
                .unwrap_err()
                .to_string()
                .contains("not a WebAssembly component")
        );
    }

    #[test]
    fn memory_cap_spans_all_memories() {
        let mut l = InstanceLimiter::new(100);
        assert!(l.memory_growing(0, 60, None).unwrap());
        assert!(!l.memory_growing(0, 60, None).unwrap());
        assert!(l.memory_exhausted);
        assert!(l.memory_growing(60, 100, None).unwrap());
    }
}
