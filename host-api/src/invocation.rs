//! Who a call runs as and when: the host-established facts of one
//! invocation ([`Principal`], [`Invocation`]) and the clock the broker reads
//! ([`Clock`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::manifest::Grants;

/// Who an invocation runs as, established by the host, never by the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An unauthenticated HTTP request.
    Anonymous,
    /// A caller holding the app's admin key.
    Admin,
    /// A verified end user of the app.
    User(String),
    /// A scheduled run.
    Cron,
}

/// The host-established facts of one invocation that the broker acts on.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The app whose connections may be used.
    pub app: String,
    /// The calling function, or `None` for API calls.
    pub function: Option<String>,
    /// Who the caller is.
    pub principal: Principal,
    /// What the function may call; `None` for admin API calls (everything).
    pub grants: Option<Grants>,
    /// Whether the function's manifest allows `as-user`.
    pub allow_as_user: bool,
    /// The end user whose connections calls use when the caller is not an
    /// end user (cron runs with `runAs: {"user": ...}`).
    pub run_as: Option<String>,
}

/// Where the host reads the time. The broker takes one, so token expiry,
/// refresh back-off and leases can be tested on a [`ManualClock`] instead of
/// by sleeping.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

/// A clock that moves only when told to (for tests and simulations).
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self(AtomicU64::new(start_ms))
    }

    /// A clock starting at the current wall-clock time.
    pub fn starting_now() -> Self {
        Self::new(now_ms())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(
            u64::try_from(by.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Milliseconds since the Unix epoch, from the wall clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0)
}
