//! The audit trail of tool calls: records are buffered and written in
//! batches by a background task, so a call costs a push, not a store insert.

use std::sync::{Arc, Mutex};

use rand::RngCore;

use super::Broker;
use crate::store::{AuditRecord, Store, StoreError};

/// How often buffered audit records are written.
const AUDIT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Buffered records at which the calling task writes the batch itself.
const AUDIT_BATCH: usize = 4096;

async fn write_audit(store: &dyn Store, batch: &Mutex<Vec<AuditRecord>>) {
    let records = match batch.lock() {
        Ok(mut b) => std::mem::take(&mut *b),
        Err(p) => std::mem::take(&mut *p.into_inner()),
    };
    for r in &records {
        if let Err(e) = store.append_audit(r).await {
            tracing::error!(error = %e, log_id = %r.log_id, "could not write audit record");
        }
    }
}

pub(super) fn new_log_id() -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    format!("log_{}", hex::encode(bytes))
}

impl Broker {
    /// Buffers an audit record; the writer task stores it within
    /// [`AUDIT_INTERVAL`], or this call does when the buffer is full.
    pub(super) async fn record_audit(&self, record: AuditRecord) {
        self.audit_writer.get_or_init(|| {
            let store = self.store.clone();
            let batch = Arc::downgrade(&self.audit_batch);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(AUDIT_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    // The broker is gone: nothing more will come.
                    let Some(batch) = batch.upgrade() else { break };
                    write_audit(store.as_ref(), &batch).await;
                }
            });
        });
        let full = match self.audit_batch.lock() {
            Ok(mut b) => {
                b.push(record);
                b.len() >= AUDIT_BATCH
            }
            Err(p) => {
                p.into_inner().push(record);
                true
            }
        };
        if full {
            write_audit(self.store.as_ref(), &self.audit_batch).await;
        }
    }

    /// Writes buffered audit records now (at shutdown).
    pub async fn flush_audit(&self) {
        write_audit(self.store.as_ref(), &self.audit_batch).await;
    }

    /// The newest audit records of an app, including every call that has
    /// returned before this one was made.
    pub async fn audit_log(&self, app: &str, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        write_audit(self.store.as_ref(), &self.audit_batch).await;
        self.store.list_audit(app, limit).await
    }
}
