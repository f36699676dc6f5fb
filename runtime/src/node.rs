//! This process's name among the nodes that share a store: in cron fire
//! claims and logs. Random per process, so a restarted node is a new one.

use std::sync::OnceLock;

use rand::RngCore;

/// `node_<pid>_<random>`, the same for the whole process.
pub fn name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let mut bytes = [0u8; 6];
        rand::rng().fill_bytes(&mut bytes);
        format!("node_{}_{}", std::process::id(), hex::encode(bytes))
    })
}
