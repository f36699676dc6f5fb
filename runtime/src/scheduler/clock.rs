//! Wall-clock time for the scheduler: the system clock in the server, and
//! one that follows tokio's clock so tests run on `tokio::time::pause`.

use chrono::{DateTime, TimeDelta, Utc};

/// Wall-clock time for the scheduler.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock: what the server uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A wall clock that moves with tokio's clock: a fixed start plus the tokio
/// time elapsed since. Under `tokio::time::pause` it stands still until the
/// test advances time, so fire times are exact.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall_at_start: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `wall` now.
    pub fn starting_at(wall: DateTime<Utc>) -> Self {
        Self {
            wall_at_start: wall,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        TimeDelta::from_std(self.start.elapsed())
            .ok()
            .and_then(|elapsed| self.wall_at_start.checked_add_signed(elapsed))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}
