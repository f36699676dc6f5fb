//! Fresh access tokens for tool calls: refresh before expiry, one refresh
//! at a time per connection, durable before use.
//!
//! Two locks make a refresh single-flight:
//!
//! * in the process, a `tokio` mutex per connection: N concurrent calls on
//!   an expired token wait for one refresh and then read its result;
//! * across processes, a lease in the store ([`Store::acquire_lease`]) with
//!   a fencing version: the new tokens are written with a compare-and-swap
//!   on the connection's `version`, so a refresh that lost its lease (or
//!   raced a reconnect) cannot overwrite newer tokens. The embedded store
//!   is single-process, but the protocol is the one a shared PostgreSQL
//!   store needs.
//!
//! After each lock the connection is read again: whoever waited may find
//! the work done. Providers that rotate refresh tokens may revoke the whole
//! grant when an old refresh token is presented twice, which is what this
//! prevents.
//!
//! [`Store::acquire_lease`]: crate::store::Store::acquire_lease

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::instrument;

use super::Broker;
use crate::error::ToolError;
use crate::oauth::TokenError;
use crate::secret::Secret;
use crate::store::{ConnectionRecord, ConnectionState};

/// Refresh this long before the provider's expiry, so a token does not
/// expire in flight.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// How long a refresh lease is held at most; longer than a token request
/// may take ([`crate::oauth::TOKEN_TIMEOUT`]).
const LEASE_TTL: Duration = Duration::from_secs(30);
/// How long a caller waits for another process's refresh before giving up.
const LEASE_WAIT: Duration = Duration::from_secs(20);
/// Poll interval while another process holds the lease.
const LEASE_POLL: Duration = Duration::from_millis(50);
/// First and longest pause after a failed refresh (network, 5xx).
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Why a refresh is wanted.
#[derive(Debug, Clone, Copy)]
enum Why {
    /// The token seen at `version` is about to expire.
    Expiring { version: u64 },
    /// The provider rejected the token of `version` (401).
    Rejected { version: u64 },
}

/// In-process refresh state shared by all calls.
#[derive(Debug, Default)]
pub(super) struct RefreshState {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    backoff: Mutex<HashMap<String, Backoff>>,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    /// The broker clock's time at which a refresh may be tried again.
    until_ms: u64,
}

/// Whether the access token is within its refresh margin: [`REFRESH_MARGIN`],
/// or half its lifetime for short-lived tokens (so a provider that issues
/// 30-second tokens is not refreshed on every call).
fn needs_refresh(c: &ConnectionRecord, now: u64) -> bool {
    let Some(exp) = c.expires_at_ms else {
        return false;
    };
    let issued = c.refreshed_at_ms.unwrap_or(c.created_at_ms);
    let lifetime = exp.saturating_sub(issued);
    let margin = u64::try_from(REFRESH_MARGIN.as_millis())
        .unwrap_or(0)
        .min(lifetime / 2);
    exp <= now.saturating_add(margin)
}

fn expired(c: &ConnectionRecord, now: u64) -> bool {
    c.expires_at_ms.is_some_and(|exp| exp <= now)
}

impl RefreshState {
    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.locks.lock() {
            Ok(mut map) => map.entry(id.to_string()).or_default().clone(),
            // A poisoned map only loses sharing; never the call.
            Err(_) => Arc::default(),
        }
    }

    fn release(&self, id: &str) {
        if let Ok(mut map) = self.locks.lock()
            && map.get(id).is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(id);
        }
    }

    fn backoff_left(&self, id: &str, now_ms: u64) -> Option<Duration> {
        let map = self.backoff.lock().ok()?;
        let b = map.get(id)?;
        (b.until_ms > now_ms).then(|| Duration::from_millis(b.until_ms - now_ms))
    }

    fn failed(&self, id: &str, now_ms: u64) -> Duration {
        let Ok(mut map) = self.backoff.lock() else {
            return BACKOFF_MIN;
        };
        let failures = map.get(id).map_or(0, |b| b.failures) + 1;
        let pause = BACKOFF_MIN
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(BACKOFF_MAX);
        map.insert(
            id.to_string(),
            Backoff {
                failures,
                until_ms: now_ms
                    .saturating_add(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX)),
            },
        );
        pause
    }

    pub(super) fn clear(&self, id: &str) {
        if let Ok(mut map) = self.backoff.lock() {
            map.remove(id);
        }
    }
}

impl Broker {
    fn open_access(&self, c: &ConnectionRecord) -> Result<Secret, ToolError> {
        let sealed = c.sealed_access_token.as_deref().ok_or_else(|| {
            ToolError::NeedsReconnect(format!("connection `{}` holds no access token", c.id))
        })?;
        self.open_hex(
            sealed,
            &crate::crypto::aad::connection(&c.app, &c.id, "access_token"),
        )
        .map_err(|_| {
            tracing::error!(connection = %c.id, "cannot unseal access token");
            ToolError::Unavailable(format!(
                "the stored token of connection `{}` cannot be unsealed",
                c.id
            ))
        })
    }

    /// A usable access token for `c`, refreshing first if it is about to
    /// expire. Returns the connection as it was when the token was read.
    #[instrument(skip_all, fields(connection = %c.id))]
    pub(super) async fn access_token(
        &self,
        c: ConnectionRecord,
    ) -> Result<(Secret, ConnectionRecord), ToolError> {
        if !needs_refresh(&c, self.now_ms()) {
            let token = self.open_access(&c)?;
            return Ok((token, c));
        }
        self.refresh(&c.app, &c.id, Why::Expiring { version: c.version })
            .await
    }

    /// After the provider rejected the token of `used` (401): refresh once
    /// unless someone already did, and return the token to retry with.
    #[instrument(skip_all, fields(connection = %used.id))]
    pub(super) async fn force_refresh(
        &self,
        used: &ConnectionRecord,
    ) -> Result<(Secret, ConnectionRecord), ToolError> {
        self.refresh(
            &used.app,
            &used.id,
            Why::Rejected {
                version: used.version,
            },
        )
        .await
    }

    /// Refreshes every active connection whose tokens were issued more than
    /// `idle` ago, so grants whose refresh tokens expire when unused (rolling
    /// expiry) stay alive for users who call rarely. Returns how many were
    /// refreshed.
    pub async fn keep_alive_idle(&self, idle: Duration) -> usize {
        let cutoff = self
            .now_ms()
            .saturating_sub(u64::try_from(idle.as_millis()).unwrap_or(u64::MAX));
        let apps = match self.store.list_apps().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "keep-alive sweep: cannot list apps");
                return 0;
            }
        };
        let mut refreshed = 0;
        for app in apps {
            let Ok(connections) = self.store.list_connections(&app.id).await else {
                continue;
            };
            for c in connections {
                let issued = c.refreshed_at_ms.unwrap_or(c.created_at_ms);
                if c.state != ConnectionState::Active
                    || c.sealed_refresh_token.is_none()
                    || issued > cutoff
                {
                    continue;
                }
                match self.force_refresh(&c).await {
                    Ok(_) => refreshed += 1,
                    Err(e) => {
                        tracing::info!(connection = %c.id, error = %e, "keep-alive refresh failed")
                    }
                }
            }
        }
        refreshed
    }

    async fn reread(&self, app: &str, id: &str) -> Result<ConnectionRecord, ToolError> {
        self.store
            .get_connection(app, id)
            .await
            .map_err(|e| ToolError::Unavailable(format!("store: {e}")))?
            .ok_or_else(|| ToolError::NotConnected(format!("connection `{id}` was deleted")))
    }

    async fn refresh(
        &self,
        app: &str,
        id: &str,
        why: Why,
    ) -> Result<(Secret, ConnectionRecord), ToolError> {
        let lock = self.refresh.lock_for(id);
        let result = {
            let _guard = lock.lock().await;
            self.refresh_locked(app, id, why).await
        };
        drop(lock);
        self.refresh.release(id);
        result
    }

    /// Whether `current` already answers `why` (someone else refreshed).
    fn settled(current: &ConnectionRecord, why: Why, now: u64) -> bool {
        match why {
            Why::Expiring { version } => current.version != version || !needs_refresh(current, now),
            Why::Rejected { version } => current.version != version,
        }
    }

    async fn refresh_locked(
        &self,
        app: &str,
        id: &str,
        why: Why,
    ) -> Result<(Secret, ConnectionRecord), ToolError> {
        let mut current = self.reread(app, id).await?;
        if Self::settled(&current, why, self.now_ms()) && current.state == ConnectionState::Active {
            return Ok((self.open_access(&current)?, current));
        }
        if current.state != ConnectionState::Active {
            return Err(ToolError::NeedsReconnect(
                current
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("connection `{id}` must be connected again")),
            ));
        }
        let token_still_valid =
            matches!(why, Why::Expiring { .. }) && !expired(&current, self.now_ms());
        if let Some(left) = self.refresh.backoff_left(id, self.now_ms()) {
            if token_still_valid {
                return Ok((self.open_access(&current)?, current));
            }
            return Err(ToolError::Unavailable(format!(
                "refreshing the token of connection `{id}` failed recently; retry in {} s",
                left.as_secs().max(1)
            )));
        }
        let Some(sealed_refresh) = current.sealed_refresh_token.clone() else {
            if token_still_valid {
                return Ok((self.open_access(&current)?, current));
            }
            let reason =
                "the access token expired and the provider gave no refresh token: connect again";
            self.mark_needs_reconnect(&current, reason).await;
            return Err(ToolError::NeedsReconnect(reason.into()));
        };

        // Across processes: take the lease, or wait for its holder's result.
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        loop {
            match self
                .store
                .acquire_lease(
                    id,
                    &self.node_id,
                    self.now_ms(),
                    u64::try_from(LEASE_TTL.as_millis()).unwrap_or(30_000),
                )
                .await
            {
                Ok(Some(_lease)) => break,
                Ok(None) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ToolError::Unavailable(format!(
                            "another node is refreshing connection `{id}`; retry shortly"
                        )));
                    }
                    tokio::time::sleep(LEASE_POLL).await;
                    let seen = self.reread(app, id).await?;
                    if seen.version != current.version {
                        return Ok((self.open_access(&seen)?, seen));
                    }
                }
                Err(e) => return Err(ToolError::Unavailable(format!("store: {e}"))),
            }
        }
        let outcome = async {
            // Re-read under the lease: a holder before us may have finished.
            let latest = self.reread(app, id).await?;
            if latest.version != current.version {
                return Ok((self.open_access(&latest)?, latest));
            }
            current = latest;
            self.refresh_with_provider(current.clone(), &sealed_refresh, token_still_valid)
                .await
        }
        .await;
        if let Err(e) = self.store.release_lease(id, &self.node_id).await {
            tracing::warn!(connection = id, error = %e, "could not release refresh lease; it expires by itself");
        }
        outcome
    }

    /// Calls the token endpoint and stores the answer (under the lease).
    async fn refresh_with_provider(
        &self,
        current: ConnectionRecord,
        sealed_refresh: &str,
        token_still_valid: bool,
    ) -> Result<(Secret, ConnectionRecord), ToolError> {
        let app = current.app.as_str();
        let id = current.id.as_str();
        let slug = current.toolkit.as_str();
        let unavailable = |m: String| ToolError::Unavailable(m);
        let connector = self
            .find_connector(app, slug)
            .await
            .map_err(|e| unavailable(format!("store: {e}")))?
            .ok_or_else(|| unavailable(format!("connector `{slug}` no longer exists")))?;
        let spec = connector
            .spec
            .oauth
            .clone()
            .ok_or_else(|| unavailable(format!("`{slug}` is no longer an OAuth connector")))?;
        let record = self
            .store
            .get_toolkit(app, slug)
            .await
            .map_err(|e| unavailable(format!("store: {e}")))?
            .ok_or_else(|| {
                ToolError::NotConnected(format!("toolkit `{slug}` is not configured"))
            })?;
        let client = self
            .oauth_client(app, &connector, &record)
            .map_err(unavailable)?;
        let refresh_token = self
            .open_hex(
                sealed_refresh,
                &crate::crypto::aad::connection(app, id, "refresh_token"),
            )
            .map_err(|_| {
                unavailable(format!(
                    "the stored refresh token of `{id}` cannot be unsealed"
                ))
            })?;

        match client
            .refresh(&self.token_http, &spec, &refresh_token)
            .await
        {
            Ok(tokens) => {
                let mut next = current.clone();
                self.apply_tokens(&mut next, &tokens, self.now_ms())
                    .map_err(|e| unavailable(e.to_string()))?;
                // Durable before use, and only over the version we read.
                let stored = self
                    .store
                    .put_connection_if_version(&next, current.version)
                    .await
                    .map_err(|e| unavailable(format!("store: {e}")))?;
                self.refresh.clear(id);
                if stored {
                    tracing::info!(connection = id, "token refreshed");
                    Ok((tokens.access_token, next))
                } else {
                    // Someone wrote newer tokens (a reconnect): use theirs.
                    let latest = self.reread(app, id).await?;
                    Ok((self.open_access(&latest)?, latest))
                }
            }
            Err(TokenError::InvalidGrant) => {
                // A lost race looks like invalid_grant too: read again.
                let latest = self.reread(app, id).await?;
                if latest.version != current.version {
                    return Ok((self.open_access(&latest)?, latest));
                }
                let reason = "the provider no longer accepts this connection's grant (invalid_grant): the user must connect again";
                self.mark_needs_reconnect(&current, reason).await;
                Err(ToolError::NeedsReconnect(reason.into()))
            }
            Err(e) => {
                let pause = self.refresh.failed(id, self.now_ms());
                tracing::warn!(connection = id, error = %e, retry_in_s = pause.as_secs(), "token refresh failed; tokens kept");
                if token_still_valid {
                    return Ok((self.open_access(&current)?, current));
                }
                Err(ToolError::Unavailable(format!(
                    "{} could not refresh the token ({e}); retry in {} s",
                    connector.spec.display_name,
                    pause.as_secs().max(1)
                )))
            }
        }
    }

    async fn mark_needs_reconnect(&self, current: &ConnectionRecord, reason: &str) {
        let mut next = current.clone();
        next.state = ConnectionState::NeedsReconnect;
        next.reason = Some(reason.to_string());
        next.version = current.version + 1;
        next.updated_at_ms = self.now_ms();
        match self
            .store
            .put_connection_if_version(&next, current.version)
            .await
        {
            Ok(true) => tracing::warn!(connection = %current.id, "connection needs reconnect"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(connection = %current.id, error = %e, "could not mark connection")
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn connection(created: u64, expires: Option<u64>) -> ConnectionRecord {
        ConnectionRecord {
            id: "c".into(),
            app: "a".into(),
            toolkit: "t".into(),
            user_id: None,
            state: ConnectionState::Active,
            reason: None,
            is_default: true,
            account: Default::default(),
            scopes: vec![],
            sealed_access_token: None,
            sealed_refresh_token: None,
            expires_at_ms: expires,
            version: 1,
            created_at_ms: created,
            updated_at_ms: created,
            refreshed_at_ms: Some(created),
            api_base_url: None,
        }
    }

    #[test]
    fn tokens_refresh_within_a_margin_scaled_to_their_lifetime() {
        // One hour tokens: refreshed in the last minute.
        let c = connection(0, Some(3_600_000));
        assert!(!needs_refresh(&c, 3_539_000));
        assert!(needs_refresh(&c, 3_541_000));
        // Thirty-second tokens: refreshed in the last fifteen seconds.
        let c = connection(0, Some(30_000));
        assert!(!needs_refresh(&c, 14_000));
        assert!(needs_refresh(&c, 16_000));
        // No expiry: used until the provider rejects it.
        assert!(!needs_refresh(&connection(0, None), u64::MAX));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let s = RefreshState::default();
        let now = 1_000_000;
        let first = s.failed("c", now);
        let second = s.failed("c", now);
        assert_eq!(first, BACKOFF_MIN);
        assert_eq!(second, BACKOFF_MIN * 2);
        assert_eq!(s.backoff_left("c", now), Some(BACKOFF_MIN * 2));
        assert_eq!(s.backoff_left("c", now + 2_000), None);
        for _ in 0..40 {
            s.failed("c", now);
        }
        assert_eq!(s.failed("c", now), BACKOFF_MAX);
        assert!(s.backoff_left("c", now).is_some());
        s.clear("c");
        assert!(s.backoff_left("c", now).is_none());
    }

    #[test]
    fn locks_are_shared_while_held_and_dropped_after() {
        let s = RefreshState::default();
        let a = s.lock_for("x");
        let b = s.lock_for("x");
        assert!(Arc::ptr_eq(&a, &b));
        drop(a);
        drop(b);
        s.release("x");
        assert!(s.locks.lock().unwrap().is_empty());
    }
}
