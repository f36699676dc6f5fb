//! How long retention takes at the default bound (the README's figure).
//!
//! Ignored by default (it writes 200,000 records); run it with
//! `cargo test -p host-api --test retention -- --ignored --nocapture`.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use host_api::store::{AuditRecord, SledStore, Store};

const RECORDS: u64 = 100_000;

fn audit(app: &str, at_ms: u64) -> AuditRecord {
    serde_json::from_value(serde_json::json!({
        "logId": format!("log_{at_ms:012}"),
        "app": app,
        "function": "daily-digest",
        "identity": "cron",
        "connection": "conn_0123456789abcdef",
        "tool": "GITHUB_LIST_ISSUES",
        "outcome": "ok",
        "status": 200,
        "durationMs": 120,
        "atMs": at_ms,
    }))
    .unwrap()
}

#[tokio::test]
#[ignore = "a measurement: writes 200,000 records"]
async fn pruning_100000_audit_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    for at in 0..RECORDS {
        store.append_audit(&audit("a", at)).await.unwrap();
        // Another app's records, interleaved, which must stay.
        store.append_audit(&audit("b", at)).await.unwrap();
    }

    // Writes made durable first (`put_meta` flushes), so the figure is the
    // prune's own work and the sync of its removals.
    store.put_meta("measure", b"").await.unwrap();

    // By age: every record of app `a` is older than the cutoff.
    let started = Instant::now();
    let removed = store.prune_audit("a", RECORDS, 1_000_000).await.unwrap();
    let by_age = started.elapsed();
    assert_eq!(removed, 100_000);
    assert!(store.list_audit("a", 1).await.unwrap().is_empty());

    // By count: app `b` keeps its newest half (reads the 50,000 kept keys,
    // removes the 50,000 older ones).
    let started = Instant::now();
    let removed = store.prune_audit("b", 0, 50_000).await.unwrap();
    let by_count = started.elapsed();
    assert_eq!(removed, 50_000);
    let newest = store.list_audit("b", 1).await.unwrap();
    assert_eq!(newest.first().unwrap().at_ms, RECORDS - 1);

    println!(
        "pruned 100,000 audit records by age in {} ms; 50,000 of 100,000 by count in {} ms",
        by_age.as_millis(),
        by_count.as_millis()
    );
}
