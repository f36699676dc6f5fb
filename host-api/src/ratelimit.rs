//! Rate limits on brokered tool calls, per app, per end user, and for
//! anonymous callers of an app's functions.
//!
//! A token bucket per key: `rate` calls a second on average, bursts up to
//! `burst`. Anonymous calls (a function called with no credential) take
//! from a bucket of their own instead of the app's, so anonymous traffic
//! cannot drain the quota the app's users and cron runs live on. A call over the limit gets the WIT `rate-limited` error with the
//! time until a token is available, before anything else is done, so a
//! runaway function (or an abusive user) cannot exhaust an app's provider
//! quota or the host.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept before idle (full) ones are dropped; bounds memory when
/// many users call.
const MAX_BUCKETS: usize = 100_000;

/// A rate: `per_second` on average, bursts of `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// Sustained calls per second.
    pub per_second: f64,
    /// Calls allowed at once after an idle period.
    pub burst: f64,
}

impl Quota {
    /// `per_second` sustained, bursts of twice that (at least 1).
    pub fn per_second(per_second: u32) -> Self {
        let rate = f64::from(per_second);
        Self {
            per_second: rate,
            burst: (rate * 2.0).max(1.0),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The limits in force; `None` means unlimited.
#[derive(Debug, Default)]
pub struct RateLimits {
    app: Option<Quota>,
    user: Option<Quota>,
    /// All anonymous calls of one app together; `None`: they share the
    /// app's bucket.
    anonymous: Option<Quota>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimits {
    /// Limits per app and per (app, user); anonymous calls of an app get
    /// one user's quota between them (see [`RateLimits::with_anonymous`]).
    pub fn new(app: Option<Quota>, user: Option<Quota>) -> Self {
        Self {
            app,
            user,
            anonymous: user,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the quota of an app's anonymous calls together; `None` makes
    /// them take from the app's bucket.
    pub fn with_anonymous(mut self, anonymous: Option<Quota>) -> Self {
        self.anonymous = anonymous;
        self
    }

    /// The longest time (s) any bucket needs to fill up from empty.
    fn refill_secs(&self) -> f64 {
        [self.app, self.user, self.anonymous]
            .into_iter()
            .flatten()
            .map(|q| q.burst / q.per_second.max(f64::MIN_POSITIVE))
            .fold(0.0, f64::max)
    }

    /// Takes one call from the app's bucket and, with a user, from the
    /// user's; an `anonymous` call takes from the app's anonymous bucket
    /// instead. On refusal returns how long to wait.
    pub fn check(&self, app: &str, user: Option<&str>, anonymous: bool) -> Result<(), Duration> {
        self.check_at(app, user, anonymous, Instant::now())
    }

    fn check_at(
        &self,
        app: &str,
        user: Option<&str>,
        anonymous: bool,
        now: Instant,
    ) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock must not stop every call.
            return Ok(());
        };
        let mut keys: Vec<(String, Quota)> = Vec::with_capacity(2);
        match (anonymous, self.anonymous, self.app) {
            (true, Some(q), _) => keys.push((format!("n\0{app}"), q)),
            (_, _, Some(q)) => keys.push((format!("a\0{app}"), q)),
            _ => {}
        }
        if let (Some(q), Some(u)) = (self.user, user) {
            keys.push((format!("u\0{app}\0{u}"), q));
        }
        if keys.is_empty() {
            return Ok(());
        }
        if buckets.len() >= MAX_BUCKETS {
            prune(&mut buckets, now, self.refill_secs());
        }
        // Refill every bucket first; take from all only if all have a token,
        // so a refused call costs nothing.
        let mut wait = Duration::ZERO;
        for (key, q) in &keys {
            let b = buckets.entry(key.clone()).or_insert(Bucket {
                tokens: q.burst,
                at: now,
            });
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens = (b.tokens + elapsed * q.per_second).min(q.burst);
            b.at = now;
            if b.tokens < 1.0 {
                let need = (1.0 - b.tokens) / q.per_second.max(f64::MIN_POSITIVE);
                wait = wait.max(Duration::from_secs_f64(need.min(3600.0)));
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for (key, _) in &keys {
            if let Some(b) = buckets.get_mut(key) {
                b.tokens -= 1.0;
            }
        }
        Ok(())
    }
}

/// Drops buckets idle long enough to be full again (they carry no state).
fn prune(buckets: &mut HashMap<String, Bucket>, now: Instant, refill_secs: f64) {
    buckets.retain(|_, b| now.saturating_duration_since(b.at).as_secs_f64() < refill_secs);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_with_the_wait_then_refills() {
        let limits = RateLimits::new(None, Some(Quota::per_second(2)));
        let t0 = Instant::now();
        for _ in 0..4 {
            limits.check_at("app", Some("alice"), false, t0).unwrap();
        }
        let wait = limits
            .check_at("app", Some("alice"), false, t0)
            .unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        // Another user has their own bucket; calls without a user are not
        // limited per user.
        limits.check_at("app", Some("bob"), false, t0).unwrap();
        limits.check_at("app", None, false, t0).unwrap();
        limits
            .check_at("app", Some("alice"), false, t0 + Duration::from_millis(500))
            .unwrap();
    }

    #[test]
    fn the_app_limit_covers_all_its_users_and_refusals_cost_nothing() {
        let limits = RateLimits::new(Some(Quota::per_second(1)), Some(Quota::per_second(100)));
        let t0 = Instant::now();
        limits.check_at("app", Some("a"), false, t0).unwrap();
        limits.check_at("app", Some("b"), false, t0).unwrap();
        assert!(limits.check_at("app", Some("c"), false, t0).is_err());
        assert!(limits.check_at("other", Some("c"), false, t0).is_ok());
        // The refused call did not spend c's user token.
        let buckets = limits.buckets.lock().unwrap();
        assert_eq!(buckets["u\0app\0c"].tokens, 200.0);
    }

    #[test]
    fn anonymous_calls_have_their_own_bucket_and_cannot_drain_the_apps() {
        let limits = RateLimits::new(Some(Quota::per_second(2)), Some(Quota::per_second(100)))
            .with_anonymous(Some(Quota::per_second(1)));
        let t0 = Instant::now();
        // Anonymous traffic spends its own burst of 2, then is refused...
        limits.check_at("app", None, true, t0).unwrap();
        limits.check_at("app", None, true, t0).unwrap();
        assert!(limits.check_at("app", None, true, t0).is_err());
        // ...while the app's bucket is untouched: its whole burst of 4 is
        // still there for users and cron runs.
        for _ in 0..4 {
            limits.check_at("app", Some("alice"), false, t0).unwrap();
        }
        assert!(limits.check_at("app", Some("alice"), false, t0).is_err());
        // Another app's anonymous callers are separate.
        limits.check_at("other", None, true, t0).unwrap();
        // Without an anonymous quota they share the app's bucket.
        let shared = RateLimits::new(Some(Quota::per_second(1)), None).with_anonymous(None);
        shared.check_at("app", None, true, t0).unwrap();
        shared.check_at("app", None, true, t0).unwrap();
        assert!(shared.check_at("app", Some("bob"), false, t0).is_err());
    }
}
