//! End-to-end: `runtime serve --dev --watch` rebuilds and redeploys an
//! example when its source changes, and keeps the previous version serving
//! when the new source does not build.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::time::{Duration, Instant};

use e2e_tests::{ADMIN_KEY, Options, Runtime, root};

/// The example under watch: a copy of `functions/hello` under another name,
/// so its component (`watch_hello.wasm`) never replaces `hello.wasm`.
const NAME: &str = "watch-hello";
/// Each wait runs cargo; on 2 cores a cold build of the guest SDK takes well
/// under this.
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);

/// A `functions/` workspace in `dir` holding a copy of `functions/hello` as
/// `watch-hello`. It builds into the repository's own target directory, so
/// the guest SDK and its dependencies, already built for wasm32-wasip2,
/// are reused.
fn examples_workspace(dir: &Path) -> std::path::PathBuf {
    let root = root();
    let functions = dir.join("functions");
    let example = functions.join(NAME);
    std::fs::create_dir_all(example.join("src")).unwrap();
    std::fs::create_dir_all(functions.join(".cargo")).unwrap();

    let workspace = std::fs::read_to_string(root.join("functions/Cargo.toml")).unwrap();
    let members = workspace
        .lines()
        .find(|l| l.starts_with("members"))
        .unwrap();
    let workspace = workspace
        .replace(members, &format!("members = [\"{NAME}\"]"))
        .replace(
            "path = \"../guest-sdk\"",
            &format!("path = {:?}", root.join("guest-sdk").display().to_string()),
        );
    assert!(workspace.contains(&format!("members = [\"{NAME}\"]")));
    std::fs::write(functions.join("Cargo.toml"), workspace).unwrap();
    // The same versions as the real examples: nothing new to fetch or build.
    std::fs::copy(
        root.join("functions/Cargo.lock"),
        functions.join("Cargo.lock"),
    )
    .unwrap();
    std::fs::write(
        functions.join(".cargo/config.toml"),
        "[build]\ntarget = \"wasm32-wasip2\"\n",
    )
    .unwrap();

    let package = std::fs::read_to_string(root.join("functions/hello/Cargo.toml")).unwrap();
    let package = package.replace("name = \"hello\"", &format!("name = \"{NAME}\""));
    std::fs::write(example.join("Cargo.toml"), package).unwrap();
    for file in ["src/lib.rs", "manifest.json"] {
        std::fs::copy(root.join("functions/hello").join(file), example.join(file)).unwrap();
    }
    functions
}

/// Polls `GET /fn/dev/watch-hello` until `done` accepts the answer.
async fn wait_for(rt: &Runtime, what: &str, done: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + BUILD_TIMEOUT;
    loop {
        let r = rt
            .http
            .get(format!("{}/fn/dev/{NAME}", rt.url))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        if done(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {status} {body:?} after {BUILD_TIMEOUT:?}; output:\n{}",
            rt.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the output mentions any of `needles` `count` times in all.
async fn wait_for_log(rt: &Runtime, needles: &[&str], count: usize) {
    let deadline = Instant::now() + BUILD_TIMEOUT;
    let seen = |output: &str| -> usize { needles.iter().map(|n| output.matches(n).count()).sum() };
    while seen(&rt.output()) < count {
        assert!(
            Instant::now() < deadline,
            "no {needles:?} after {BUILD_TIMEOUT:?}; output:\n{}",
            rt.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn watch_rebuilds_and_redeploys_a_changed_example() {
    let tmp = tempfile::tempdir().unwrap();
    let functions = examples_workspace(tmp.path());
    let data = tmp.path().join("data");
    let options = Options {
        args: vec![
            "--dev".into(),
            "--watch".into(),
            "--functions-dir".into(),
            functions.display().to_string(),
        ],
        env: vec![
            ("RUNTIME_ADMIN_KEY".into(), ADMIN_KEY.into()),
            // Where both cargo and the runtime find the components.
            (
                "CARGO_TARGET_DIR".into(),
                root().join("target").display().to_string(),
            ),
        ],
    };
    let started = Instant::now();
    let rt = Runtime::start(&data, options).await;

    // The copied sources are newer than any component: built at start.
    let done = [
        format!("redeployed {NAME} version"),
        format!("{NAME} unchanged"),
    ];
    wait_for_log(&rt, &[&done[0], &done[1]], 1).await;
    wait_for(&rt, "first build", |status, body| {
        status == 200 && body == "Hello from runtime!\n"
    })
    .await;
    let first = started.elapsed();

    // An edit is rebuilt and served.
    let changed = Instant::now();
    let lib = functions.join(NAME).join("src/lib.rs");
    let tag = format!("{:x}", nonce());
    let source = std::fs::read_to_string(&lib).unwrap();
    let edited = source.replace("Hello from runtime!", &format!("Hello again {tag}!"));
    assert_ne!(source, edited);
    std::fs::write(&lib, &edited).unwrap();
    wait_for(&rt, "rebuild after an edit", |status, body| {
        status == 200 && body == format!("Hello again {tag}!\n")
    })
    .await;
    let rebuilt = changed.elapsed();
    assert!(
        rt.output().contains(&format!("redeployed {NAME} version")),
        "{}",
        rt.output()
    );

    // A broken edit is reported with the compiler's error; the last good
    // version keeps serving.
    std::fs::write(&lib, edited.replace("fn hello(", "fn hello(,")).unwrap();
    wait_for_log(&rt, &[&format!("{NAME} did not build")], 1).await;
    let output = rt.output();
    assert!(
        output.contains(&format!("{NAME}/src/lib.rs:")) && output.contains(": error"),
        "the compiler's error is logged: {output}"
    );
    wait_for(&rt, "the previous version", |status, body| {
        status == 200 && body == format!("Hello again {tag}!\n")
    })
    .await;

    rt.stop().await;
    eprintln!("watch: first build {first:?}, edit to served {rebuilt:?}");
}

#[tokio::test]
async fn watch_needs_dev_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let mut options = Options::default();
    options.args.push("--watch".into());
    let out = Runtime::try_start(tmp.path(), options).await.unwrap_err();
    assert!(out.contains("--dev"), "{out}");
}

/// A value that differs between runs, so a component left by an earlier run
/// cannot pass for this run's rebuild.
fn nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
