//! Dev mode: deploy every example in `functions/` to app `dev` at start and,
//! with `--watch`, rebuild and redeploy an example when its source changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use host_api::manifest::Manifest;
use host_api::store::FunctionRecord;

use crate::registry::{Registry, RegistryError};

/// How often the watcher looks at the examples' files. A change is built
/// once it has been seen unchanged for one more interval, so an editor
/// saving several files at once causes one build.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Files looked at per example: a source tree is far smaller; past this the
/// directory holds something else (a stray build output) and the rest is
/// ignored rather than walked every half second.
const MAX_WATCHED_FILES: usize = 10_000;
/// Compiler lines logged for a failed build: enough for the first errors,
/// which are the ones to fix; `cargo build` in `functions/` shows them all.
const MAX_ERROR_LINES: usize = 40;

/// Where cargo puts the examples' components: `CARGO_TARGET_DIR`, else the
/// workspace's `target/` beside `functions/` (see functions/.cargo/config.toml).
fn wasm_dir(functions_dir: &Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| functions_dir.join("..").join("target"));
    target.join("wasm32-wasip2").join("release")
}

/// Why one example was not deployed.
#[derive(Debug, thiserror::Error)]
pub enum ExampleError {
    /// Its component has not been built.
    #[error(
        "{} is not built; build it with `(cd functions && cargo build --release)` (scripts/dev.sh does)",
        .0.display()
    )]
    NotBuilt(PathBuf),
    /// Its manifest does not parse, or names another function.
    #[error("{0}")]
    Manifest(String),
    /// The registry refused it (invalid manifest or grants, bad component,
    /// storage).
    #[error(transparent)]
    Deploy(#[from] RegistryError),
}

/// The example directories of `functions_dir` (those with a `Cargo.toml`),
/// sorted.
fn example_dirs(functions_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(functions_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// The function name of an example: its directory's name.
fn function_name(dir: &Path) -> Option<String> {
    dir.file_name().and_then(|n| n.to_str()).map(str::to_string)
}

/// The cargo package of an example: `package.name` in its `Cargo.toml`,
/// else the directory's name.
fn package_name(dir: &Path) -> Option<String> {
    let from_manifest = std::fs::read_to_string(dir.join("Cargo.toml"))
        .ok()
        .and_then(|text| package_name_in(&text));
    from_manifest.or_else(|| function_name(dir))
}

fn package_name_in(cargo_toml: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct CargoToml {
        package: Option<Package>,
    }
    #[derive(serde::Deserialize)]
    struct Package {
        name: String,
    }
    toml::from_str::<CargoToml>(cargo_toml)
        .ok()?
        .package
        .map(|p| p.name)
}

/// An example's manifest: `manifest.json`, else `manifest.toml`, else the
/// defaults. One that names its function must live in a directory of that
/// name, as a deploy under another name is refused.
fn read_manifest(dir: &Path, name: &str) -> Result<Manifest, ExampleError> {
    let json = dir.join("manifest.json");
    let toml_path = dir.join("manifest.toml");
    let manifest = if let Ok(bytes) = std::fs::read(&json) {
        serde_json::from_slice::<Manifest>(&bytes)
            .map_err(|e| ExampleError::Manifest(format!("{}: {e}", json.display())))?
    } else if let Ok(text) = std::fs::read_to_string(&toml_path) {
        toml::from_str::<Manifest>(&text)
            .map_err(|e| ExampleError::Manifest(format!("{}: {e}", toml_path.display())))?
    } else {
        Manifest::default()
    };
    match &manifest.name {
        Some(n) if n != name => Err(ExampleError::Manifest(format!(
            "{}: the manifest names the function `{n}` but its directory is `{name}`; rename one of them",
            dir.display()
        ))),
        _ => Ok(manifest),
    }
}

/// The component cargo builds for the example in `dir`.
fn component_path(dir: &Path) -> Option<PathBuf> {
    let functions_dir = dir.parent()?;
    let package = package_name(dir)?;
    Some(wasm_dir(functions_dir).join(format!("{}.wasm", package.replace('-', "_"))))
}

/// Deploys the example in `dir` (the component cargo built for it, with its
/// manifest when present) as function `<dir name>` of `app`. Deploying
/// an unchanged component and manifest keeps the current version.
pub async fn deploy_example(
    registry: &Registry,
    app: &str,
    dir: &Path,
) -> Result<FunctionRecord, ExampleError> {
    let name = function_name(dir)
        .ok_or_else(|| ExampleError::Manifest(format!("{}: not a UTF-8 name", dir.display())))?;
    let wasm = component_path(dir).unwrap_or_else(|| dir.join("missing.wasm"));
    let component = std::fs::read(&wasm).map_err(|_| ExampleError::NotBuilt(wasm.clone()))?;
    let manifest = read_manifest(dir, &name)?;
    Ok(registry.deploy(app, &name, component, manifest).await?)
}

/// Deploys each `functions/<name>/` whose component has been built, with its
/// manifest (`manifest.json` or `manifest.toml`) when present. Returns the names deployed.
pub async fn deploy_examples(
    registry: &Registry,
    app: &str,
    functions_dir: &Path,
) -> anyhow::Result<Vec<String>> {
    let mut deployed = Vec::new();
    for dir in example_dirs(functions_dir)? {
        let Some(name) = function_name(&dir) else {
            continue;
        };
        match deploy_example(registry, app, &dir).await {
            Ok(record) => {
                tracing::info!(function = %name, version = record.version, url = %format!("/fn/{app}/{name}"), "example deployed");
                deployed.push(name);
            }
            Err(ExampleError::NotBuilt(path)) => tracing::warn!(
                function = %name, path = %path.display(),
                "example not built; build it with `(cd functions && cargo build --release)`; scripts/dev.sh does"
            ),
            Err(ExampleError::Manifest(message)) => anyhow::bail!(message),
            Err(ExampleError::Deploy(e)) => {
                tracing::error!(function = %name, error = %e, "example could not be deployed")
            }
        }
    }
    Ok(deployed)
}

/// Rebuilds and redeploys examples while it lives (`runtime serve --dev
/// --watch`); dropping it stops the watcher and any build under way.
#[derive(Debug)]
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches `functions_dir`: when the files of an example change (or a new
/// example appears, or one's component is missing or older than its
/// sources), runs `cargo build --release -p <package>` in `functions_dir`
/// and redeploys it to `app` as [`deploy_examples`] does, then updates its
/// cron jobs. A failed build is logged with the compiler's errors and the
/// previous version keeps serving.
pub fn watch(
    registry: Arc<Registry>,
    cron: Arc<crate::triggers::cron::Cron>,
    app: String,
    functions_dir: PathBuf,
) -> Watcher {
    let task = tokio::spawn(async move {
        tracing::info!(dir = %functions_dir.display(), "watching the examples; saving a change rebuilds and redeploys it");
        let mut tracked: HashMap<PathBuf, Tracked> = HashMap::new();
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(dirs) = example_dirs(&functions_dir) else {
                continue;
            };
            tracked.retain(|dir, _| dirs.contains(dir));
            for dir in dirs {
                let now = Fingerprint::of(&dir);
                let due = match tracked.get_mut(&dir) {
                    Some(t) => t.observe(now),
                    None => {
                        let t = Tracked::first(&dir, now);
                        let due = t.observe_first();
                        tracked.insert(dir.clone(), t);
                        due
                    }
                };
                if due {
                    rebuild(&registry, &cron, &app, &functions_dir, &dir).await;
                }
            }
        }
    });
    Watcher { task }
}

/// Builds the example in `dir` and redeploys it, logging the outcome.
async fn rebuild(
    registry: &Registry,
    cron: &crate::triggers::cron::Cron,
    app: &str,
    functions_dir: &Path,
    dir: &Path,
) {
    let (Some(name), Some(package)) = (function_name(dir), package_name(dir)) else {
        return;
    };
    let started = Instant::now();
    tracing::info!(function = %name, "rebuilding {name}…");
    if let Err(errors) = cargo_build(functions_dir, &package).await {
        tracing::warn!(
            function = %name,
            "{name} did not build; the previous version keeps serving:\n{errors}"
        );
        return;
    }
    let previous = registry.get(app, &name).map(|f| f.record.version);
    match deploy_example(registry, app, dir).await {
        Ok(record) => {
            cron.sync(app, &name).await;
            let ms = started.elapsed().as_millis();
            if previous == Some(record.version) {
                tracing::info!(function = %name, version = record.version, "{name} unchanged, still version {} ({ms} ms)", record.version);
            } else {
                tracing::info!(
                    function = %name, version = record.version, url = %format!("/fn/{app}/{name}"),
                    "redeployed {name} version {} in {ms} ms", record.version
                );
            }
        }
        Err(e) => tracing::warn!(
            function = %name,
            "{name} built but could not be deployed; the previous version keeps serving: {e}"
        ),
    }
}

/// Runs `cargo build --release -p <package>` in `functions_dir`. On failure
/// returns the compiler's error lines (or cargo's last lines).
async fn cargo_build(functions_dir: &Path, package: &str) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = tokio::process::Command::new(&cargo)
        .current_dir(functions_dir)
        .args(["build", "--release", "--message-format", "short"])
        .args(["--color", "never", "-p", package])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            format!(
                "cannot run {}: {e}; is Rust installed (rustup)?",
                cargo.to_string_lossy()
            )
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(error_lines(&String::from_utf8_lossy(&output.stderr)))
}

/// The error lines of cargo's `--message-format short` output; when there
/// are none (cargo itself failed oddly), its last lines.
fn error_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("error") || l.contains(": error"))
        .take(MAX_ERROR_LINES)
        .collect();
    if errors.is_empty() {
        let skip = lines.len().saturating_sub(MAX_ERROR_LINES);
        return lines.get(skip..).unwrap_or_default().join("\n");
    }
    errors.join("\n")
}

/// What an example's files looked like at one poll: every file (but
/// `target/` and hidden or backup files) with its size and modification time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Fingerprint {
    files: Vec<(PathBuf, u64, Option<SystemTime>)>,
}

impl Fingerprint {
    fn of(dir: &Path) -> Fingerprint {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') || name.ends_with('~') || name == "target" {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    stack.push(entry.path());
                } else if files.len() < MAX_WATCHED_FILES {
                    files.push((entry.path(), meta.len(), meta.modified().ok()));
                }
            }
        }
        files.sort();
        Fingerprint { files }
    }

    /// The newest modification among the files cargo reads (not the
    /// manifest, which only the deploy reads).
    fn newest_source(&self) -> Option<SystemTime> {
        self.files
            .iter()
            .filter(|(p, _, _)| {
                p.file_name()
                    .is_none_or(|n| n != "manifest.json" && n != "manifest.toml")
            })
            .filter_map(|(_, _, t)| *t)
            .max()
    }
}

/// The watcher's view of one example.
#[derive(Debug)]
struct Tracked {
    /// What the last build (or the start) saw.
    built: Fingerprint,
    /// What the previous poll saw.
    seen: Fingerprint,
    /// When the component was last written, if it exists.
    component: Option<SystemTime>,
}

impl Tracked {
    fn first(dir: &Path, now: Fingerprint) -> Tracked {
        let component = component_path(dir)
            .and_then(|p| std::fs::metadata(p).ok())
            .and_then(|m| m.modified().ok());
        Tracked {
            built: now.clone(),
            seen: now,
            component,
        }
    }

    /// On first sight, an example is built if its component is missing or
    /// older than its sources (a new example, or edits made while the
    /// server was down).
    fn observe_first(&self) -> bool {
        match (self.component, self.seen.newest_source()) {
            (None, _) => true,
            (Some(built), Some(source)) => source > built,
            (Some(_), None) => false,
        }
    }

    /// Records one poll; true when the files differ from the last build and
    /// have not changed since the previous poll (the edit has settled).
    fn observe(&mut self, now: Fingerprint) -> bool {
        let settled = now == self.seen;
        self.seen = now;
        if settled && self.seen != self.built {
            self.built = self.seen.clone();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn fp(len: u64) -> Fingerprint {
        Fingerprint {
            files: vec![(PathBuf::from("src/lib.rs"), len, None)],
        }
    }

    #[test]
    fn a_change_is_built_once_it_has_settled_and_only_once() {
        let mut t = Tracked {
            built: fp(1),
            seen: fp(1),
            component: None,
        };
        assert!(!t.observe(fp(1)), "nothing changed");
        assert!(!t.observe(fp(2)), "still being written");
        assert!(!t.observe(fp(3)), "still being written");
        assert!(t.observe(fp(3)), "settled");
        assert!(!t.observe(fp(3)), "already built");
        assert!(!t.observe(fp(1)));
        assert!(t.observe(fp(1)), "a change back is a change too");
    }

    #[test]
    fn a_missing_or_stale_component_is_built_on_first_sight() {
        let old = SystemTime::UNIX_EPOCH;
        let new = old + Duration::from_secs(60);
        let at = |t| Fingerprint {
            files: vec![
                (PathBuf::from("src/lib.rs"), 1, Some(old)),
                (PathBuf::from("manifest.json"), 1, Some(t)),
            ],
        };
        let tracked = |component| Tracked {
            built: at(old),
            seen: at(old),
            component,
        };
        assert!(tracked(None).observe_first());
        assert!(!tracked(Some(new)).observe_first());
        let mut stale = tracked(Some(old - Duration::from_secs(1)));
        assert!(stale.observe_first());
        // manifest.json is not a cargo input: a newer one builds nothing.
        stale.seen = at(new);
        stale.component = Some(old);
        assert!(!stale.observe_first());
    }

    #[test]
    fn the_package_name_comes_from_the_package_section() {
        let toml =
            "[lib]\nname = \"x\"\n\n[package]\nversion.workspace = true\nname = \"bug-report\"\n";
        assert_eq!(package_name_in(toml).as_deref(), Some("bug-report"));
        assert_eq!(package_name_in("[workspace]\nmembers = []\n"), None);
    }

    #[test]
    fn the_manifest_is_json_or_toml_and_names_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let example = dir.path().join("digest");
        std::fs::create_dir(&example).unwrap();
        assert_eq!(
            read_manifest(&example, "digest").unwrap(),
            Manifest::default()
        );
        std::fs::write(example.join("manifest.toml"), "name = \"digest\"\n").unwrap();
        assert_eq!(
            read_manifest(&example, "digest").unwrap().name.as_deref(),
            Some("digest")
        );
        std::fs::write(example.join("manifest.json"), r#"{"name": "other"}"#).unwrap();
        let e = read_manifest(&example, "digest").unwrap_err().to_string();
        assert!(e.contains("`other`") && e.contains("rename"), "{e}");
    }

    #[test]
    fn only_the_compiler_errors_are_kept() {
        let stderr = "   Compiling hello v0.1.0\n\
            hello/src/lib.rs:3:5: warning: unused import\n\
            hello/src/lib.rs:10:5: error[E0425]: cannot find value `x` in this scope\n\
            error: could not compile `hello` (lib) due to 1 previous error\n";
        assert_eq!(
            error_lines(stderr),
            "hello/src/lib.rs:10:5: error[E0425]: cannot find value `x` in this scope\n\
             error: could not compile `hello` (lib) due to 1 previous error"
        );
        assert_eq!(error_lines("a\nb\n"), "a\nb");
    }
}
