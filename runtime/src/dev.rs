//! Dev mode: deploy every example in `functions/` to app `dev` at start.

use std::path::{Path, PathBuf};

use host_api::manifest::Manifest;

use crate::registry::Registry;

/// Where cargo puts the examples' components: `CARGO_TARGET_DIR`, else the
/// workspace's `target/` beside `functions/` (see functions/.cargo/config.toml).
fn wasm_dir(functions_dir: &Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| functions_dir.join("..").join("target"));
    target.join("wasm32-wasip2").join("release")
}

/// Deploys each `functions/<name>/` whose component has been built, with its
/// `manifest.json` when present. Returns the names deployed.
pub async fn deploy_examples(
    registry: &Registry,
    app: &str,
    functions_dir: &Path,
) -> anyhow::Result<Vec<String>> {
    let mut deployed = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(functions_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    entries.sort();
    let wasm_dir = wasm_dir(functions_dir);
    for dir in entries {
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        let wasm = wasm_dir.join(format!("{}.wasm", name.replace('-', "_")));
        let Ok(component) = std::fs::read(&wasm) else {
            tracing::warn!(
                function = %name, path = %wasm.display(),
                "example not built; build it with `(cd functions && cargo build --release)`; scripts/dev.sh does"
            );
            continue;
        };
        let manifest = match std::fs::read(dir.join("manifest.json")) {
            Ok(bytes) => serde_json::from_slice::<Manifest>(&bytes)
                .map_err(|e| anyhow::anyhow!("{}/manifest.json: {e}", dir.display()))?,
            Err(_) => Manifest::default(),
        };
        match registry.deploy(app, &name, component, manifest).await {
            Ok(record) => {
                tracing::info!(function = %name, version = record.version, url = %format!("/fn/{app}/{name}"), "example deployed");
                deployed.push(name);
            }
            Err(e) => {
                tracing::error!(function = %name, error = %e, "example could not be deployed")
            }
        }
    }
    Ok(deployed)
}
