//! OAuth connections: the connect flow (authorization URL, callback, code
//! exchange), listing and disconnecting, and choosing the connection a tool
//! call uses.
//!
//! A connection belongs to an app and either to one end user (app-user
//! toolkits) or to the app itself (shared toolkits). Its tokens are sealed
//! with associated data naming (app, connection, field). A flow is stored
//! under the SHA-256 of its `state`, expires after [`FLOW_TTL`], and is
//! taken out of the store before anything else happens at the callback, so
//! a state can be redeemed once. Token refresh lives in [`super::refresh`].

use std::time::Duration;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::instrument;

use super::{AdminError, Broker, MAX_NAME_LEN};
use crate::catalog::Connector;
use crate::invocation::Principal;
use crate::oauth::{MAX_CALLBACK_PARAM, OAuthClient, Tokens};
use crate::redirect;
use crate::secret::Secret;
use crate::store::{AccountInfo, ConnectionRecord, ConnectionState, FlowRecord, ToolkitRecord};

/// How long a started connect flow may wait for its callback.
pub const FLOW_TTL: Duration = Duration::from_secs(15 * 60);
/// Pending flows one app may have at once; bounds what callers (and
/// step-up errors) can make the store hold.
pub const MAX_PENDING_FLOWS: usize = 1000;
/// Pending flows one owner (an end user, or the app's shared account) may
/// have at once, step-up links included, so that one user cannot fill the
/// app's [`MAX_PENDING_FLOWS`] and block everyone else's connect flows.
pub const MAX_PENDING_FLOWS_PER_OWNER: usize = 20;
/// The one redirect URI path of a deployment, registered with providers.
pub const CALLBACK_PATH: &str = "/v1/integrations/callback";
/// The connect page: every `authUrl` points here. It shows whose
/// connection a flow makes before the browser goes to the provider, and
/// binds the flow to the browser that confirmed it.
pub const CONNECT_PAGE_PATH: &str = "/v1/integrations/connect";
/// Name prefix of the cookie binding a flow to the browser that confirmed
/// it; the rest of the name comes from the flow, so parallel flows in one
/// browser do not overwrite each other's.
const BINDING_COOKIE_PREFIX: &str = "rt_connect_";
/// Most scopes one connection may ask for.
const MAX_SCOPES: usize = 256;

/// `POST /v1/{appId}/integrations/connect`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectRequest {
    /// Connector slug.
    pub toolkit: String,
    /// Where the browser goes afterwards; must be on the app's allowlist.
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// Admin only: connect the app's shared account.
    #[serde(default)]
    pub shared: bool,
    /// Admin only: connect on behalf of this end user.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Re-authorize this existing connection (reconnect or step-up).
    #[serde(default)]
    pub connection_id: Option<String>,
    /// Scopes to ask for in addition to the toolkit's.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Admin only, with `connectionId`: the reconnect may come back with a
    /// different upstream account, which then replaces the old one.
    /// Without it a reconnect must return the account the connection had.
    #[serde(default)]
    pub switch_account: bool,
}

/// The answer to a connect request.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectStart {
    /// Send the user's browser here: the connect page, which shows whose
    /// connection this is and then goes on to the provider.
    pub auth_url: String,
    /// Identifies this attempt in the final redirect.
    pub connection_request_id: String,
    /// The connection this flow creates or re-authorizes.
    pub connection_id: String,
    /// Unix ms after which the flow is refused.
    pub expires_at: u64,
}

/// What the callback answers with.
#[derive(Debug)]
pub enum CallbackOutcome {
    /// Send the browser to the app's redirect URL (status in its query).
    Redirect(url::Url),
    /// No usable redirect: show a short page with this status and text.
    Page {
        /// HTTP status.
        status: u16,
        /// What happened and what to do.
        message: String,
    },
}

/// What the connect page shows before the browser goes to the provider.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectPage {
    /// The app the connection will belong to.
    pub app: String,
    /// Connector slug.
    pub toolkit: String,
    /// The toolkit's name as the app's admin set it, or the connector's.
    pub toolkit_name: String,
    /// The end user the connection will belong to; `None` for the app's
    /// shared account.
    pub user_id: Option<String>,
    /// The scopes the provider will be asked for.
    pub scopes: Vec<String>,
    /// For a reconnect: the upstream account the connection has now (the
    /// provider must return the same one unless `switch_account`).
    pub reconnect_account: Option<AccountInfo>,
    /// An admin started it to move the connection to another account.
    pub switch_account: bool,
    /// `connectionRequestId`.
    pub request_id: String,
    /// Unix ms after which the flow is refused.
    pub expires_at_ms: u64,
}

/// A confirmed connect page: where the browser goes, and the cookie that
/// binds the flow to it.
#[derive(Debug)]
pub struct Confirmed {
    /// The provider's authorization URL.
    pub provider_url: Secret,
    /// Name of the binding cookie ([`Broker::binding_cookie_name`]).
    pub cookie_name: String,
    /// Its value; the store holds only its hash.
    pub cookie_value: Secret,
}

/// Query of the callback, as the provider sends it.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackParams {
    /// Authorization code.
    pub code: Option<Secret>,
    /// The state the flow was started with.
    pub state: Option<Secret>,
    /// Error code, when the user or provider refused.
    pub error: Option<String>,
}

fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

fn state_hash(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

/// Constant-time comparison of two hex digests.
fn same_digest(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Keeps an error code from a provider to a short token of safe characters.
fn safe_reason(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-' || *c == '.')
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "error".into()
    } else {
        cleaned
    }
}

/// Whose connection a flow makes, and how.
#[derive(Debug)]
/// What a new connect flow is for.
struct FlowTarget {
    user_id: Option<String>,
    connection_id: String,
    reconnect: bool,
    switch_account: bool,
    /// Where the browser goes after the callback.
    redirect_url: Option<String>,
    /// The scopes asked.
    scopes: Vec<String>,
}

fn union(mut a: Vec<String>, b: &[String]) -> Vec<String> {
    for s in b {
        if !a.contains(s) {
            a.push(s.clone());
        }
    }
    a
}

impl Broker {
    /// The redirect URI of this deployment, as registered with providers.
    pub fn callback_url(&self) -> url::Url {
        let mut url = self.public_url();
        url.set_path(CALLBACK_PATH);
        url.set_query(None);
        url
    }

    /// Starts a connect flow for `caller`.
    #[instrument(skip_all, fields(app, toolkit = %req.toolkit))]
    pub async fn connect(
        &self,
        app: &str,
        caller: &Principal,
        req: ConnectRequest,
    ) -> Result<ConnectStart, AdminError> {
        let slug = req.toolkit.as_str();
        let connector = self.find_connector(app, slug).await?.ok_or_else(|| {
            AdminError::NotFound(format!(
                "no connector `{slug}`; GET /v1/{app}/integrations/available lists them"
            ))
        })?;
        let record = self.store.get_toolkit(app, slug).await?.ok_or_else(|| {
            AdminError::Invalid(format!(
                "toolkit `{slug}` is not configured: an admin must POST /v1/{app}/integrations/configure with the app's clientId and clientSecret first"
            ))
        })?;
        if !record.enabled {
            return Err(AdminError::Invalid(format!(
                "toolkit `{slug}` is disabled; an admin can enable it again with POST /v1/{app}/integrations/configure"
            )));
        }
        let client = self
            .oauth_client(app, &connector, &record)
            .map_err(AdminError::Invalid)?;
        let Some(spec) = &connector.spec.oauth else {
            return Err(AdminError::Invalid(format!(
                "`{slug}` is not an OAuth connector"
            )));
        };

        // Whose connection.
        let user_id: Option<String> = match caller {
            Principal::User(u) => {
                if record.shared || req.shared {
                    return Err(AdminError::Forbidden(format!(
                        "`{slug}` is connected once for the whole app; only an admin can connect it"
                    )));
                }
                if req.user_id.as_deref().is_some_and(|id| id != u) {
                    return Err(AdminError::Forbidden(
                        "an end user can only connect their own account; leave userId out".into(),
                    ));
                }
                Some(u.clone())
            }
            Principal::Admin => match (req.shared, &req.user_id) {
                (true, Some(_)) => {
                    return Err(AdminError::Invalid(
                        "give either shared: true or userId, not both".into(),
                    ));
                }
                (true, None) if !record.shared => {
                    return Err(AdminError::Invalid(format!(
                        "`{slug}` is configured per user; configure it with \"shared\": true to connect one account for the whole app"
                    )));
                }
                (true, None) => None,
                (false, Some(u)) if record.shared => {
                    return Err(AdminError::Invalid(format!(
                        "`{slug}` is shared by the whole app; connect it with \"shared\": true instead of userId `{u}`"
                    )));
                }
                (false, Some(u)) => Some(u.clone()),
                (false, None) if record.shared => None,
                (false, None) => {
                    return Err(AdminError::Invalid(
                        "say whose account to connect: \"shared\": true for the app's own, or \"userId\"; end users connect themselves with their JWT".into(),
                    ));
                }
            },
            Principal::Anonymous | Principal::Cron => {
                return Err(AdminError::Forbidden(
                    "connecting needs an admin key or an end user's JWT".into(),
                ));
            }
        };
        if let Some(u) = &user_id
            && (u.is_empty() || u.len() > MAX_NAME_LEN)
        {
            return Err(AdminError::Invalid(format!(
                "userId must be 1 to {MAX_NAME_LEN} bytes"
            )));
        }

        let settings = self.app_settings(app).await?;
        let redirect_url = match &req.redirect_url {
            None => None,
            Some(u) => Some(
                redirect::check_redirect(u, &settings.redirect_urls)
                    .map_err(AdminError::Invalid)?
                    .to_string(),
            ),
        };

        let base_scopes = record
            .scopes
            .clone()
            .unwrap_or_else(|| connector.scopes_for_tools());
        if req.switch_account {
            if !matches!(caller, Principal::Admin) {
                return Err(AdminError::Forbidden(
                    "only an admin can switch a connection to another account; an end user connects the other account as a new connection instead".into(),
                ));
            }
            if req.connection_id.is_none() {
                return Err(AdminError::Invalid(
                    "switchAccount re-authorizes an existing connection: give its connectionId too"
                        .into(),
                ));
            }
        }
        let (connection_id, reconnect, scopes) = match &req.connection_id {
            Some(id) => {
                let existing = self
                    .store
                    .get_connection(app, id)
                    .await?
                    .filter(|c| c.toolkit == slug && c.user_id == user_id)
                    .ok_or_else(|| {
                        AdminError::NotFound(format!(
                            "no `{slug}` connection `{id}` for this caller; GET /v1/{app}/integrations/connections lists them"
                        ))
                    })?;
                let scopes = union(existing.scopes.clone(), &base_scopes);
                (existing.id, true, union(scopes, &req.scopes))
            }
            None => (random_id("conn_"), false, union(base_scopes, &req.scopes)),
        };
        if scopes.len() > MAX_SCOPES || scopes.iter().any(|s| s.len() > MAX_NAME_LEN) {
            return Err(AdminError::Invalid(format!(
                "at most {MAX_SCOPES} scopes of at most {MAX_NAME_LEN} bytes each"
            )));
        }
        self.start_flow(
            app,
            slug,
            spec,
            &client,
            FlowTarget {
                user_id,
                connection_id,
                reconnect,
                switch_account: req.switch_account,
                redirect_url,
                scopes,
            },
        )
        .await
    }

    /// Stores a flow and returns the connect page's URL for it.
    async fn start_flow(
        &self,
        app: &str,
        slug: &str,
        spec: &crate::catalog::OAuthSpec,
        client: &OAuthClient,
        target: FlowTarget,
    ) -> Result<ConnectStart, AdminError> {
        let FlowTarget {
            user_id,
            connection_id,
            reconnect,
            switch_account,
            redirect_url,
            scopes,
        } = target;
        let now = self.now_ms();
        let count = |flows: &[FlowRecord]| {
            let live = flows.iter().filter(|f| f.expires_at_ms > now);
            let owner = live.clone().filter(|f| f.user_id == user_id).count();
            (live.count(), owner)
        };
        let (all, owner) = count(&self.store.list_flows(app).await?);
        if all >= MAX_PENDING_FLOWS || owner >= MAX_PENDING_FLOWS_PER_OWNER {
            self.store.purge_flows(now).await?;
        }
        let whose = match &user_id {
            Some(u) => format!("user `{u}`"),
            None => format!("app `{app}`'s shared account"),
        };
        if owner >= MAX_PENDING_FLOWS_PER_OWNER {
            return Err(AdminError::Busy(format!(
                "{whose} has {MAX_PENDING_FLOWS_PER_OWNER} connect flows waiting for their callback; finish one in the browser or wait until they expire (15 min)"
            )));
        }
        if all >= MAX_PENDING_FLOWS {
            return Err(AdminError::Busy(format!(
                "app `{app}` has {MAX_PENDING_FLOWS} connect flows waiting for their callback; retry when some finish or expire (15 min)"
            )));
        }
        let redirect_uri = self.callback_url();
        let start = client.authorize(spec, &redirect_uri, &scopes);
        let request_id = random_id("cr_");
        let sealed_pkce_verifier = match &start.pkce_verifier {
            Some(v) => {
                Some(self.seal_hex(v, &crate::crypto::aad::flow_pkce_verifier(app, &request_id))?)
            }
            None => None,
        };
        // The provider's URL carries the state: sealed, so that the store
        // alone does not hand it out; the connect page opens it.
        let sealed_provider_url = self.seal_hex(
            &Secret::new(start.url.to_string()),
            &crate::crypto::aad::flow_provider_url(app, &request_id),
        )?;
        let expires_at_ms = now + u64::try_from(FLOW_TTL.as_millis()).unwrap_or(u64::MAX);
        let flow = FlowRecord {
            request_id: request_id.clone(),
            app: app.to_string(),
            toolkit: slug.to_string(),
            user_id,
            connection_id: connection_id.clone(),
            reconnect,
            redirect_url,
            scopes,
            sealed_pkce_verifier,
            token_url: client.token_url.to_string(),
            redirect_uri: redirect_uri.to_string(),
            created_at_ms: now,
            expires_at_ms,
            switch_account,
            browser_binding: None,
            sealed_provider_url: Some(sealed_provider_url),
        };
        self.store
            .put_flow(&state_hash(start.state.expose()), &flow)
            .await?;
        let mut page = self.public_url();
        page.set_path(CONNECT_PAGE_PATH);
        page.query_pairs_mut()
            .clear()
            .append_pair("state", start.state.expose());
        Ok(ConnectStart {
            auth_url: page.to_string(),
            connection_request_id: request_id,
            connection_id,
            expires_at: expires_at_ms,
        })
    }

    /// A step-up authorization URL that re-authorizes `connection` with the
    /// scopes it has plus `missing`; `None` when no flow can be started.
    pub(crate) async fn step_up_url(
        &self,
        connector: &Connector,
        record: &ToolkitRecord,
        connection: &ConnectionRecord,
        missing: &[String],
    ) -> Option<String> {
        let app = connection.app.as_str();
        let client = self.oauth_client(app, connector, record).ok()?;
        let spec = connector.spec.oauth.as_ref()?;
        let settings = self.app_settings(app).await.ok()?;
        let scopes = union(connection.scopes.clone(), missing);
        let start = self
            .start_flow(
                app,
                &connection.toolkit,
                spec,
                &client,
                FlowTarget {
                    user_id: connection.user_id.clone(),
                    connection_id: connection.id.clone(),
                    reconnect: true,
                    switch_account: false,
                    redirect_url: settings.redirect_urls.first().cloned(),
                    scopes,
                },
            )
            .await
            .ok()?;
        Some(start.auth_url)
    }

    /// The name of the cookie that binds the flow of `state` to a browser.
    pub fn binding_cookie_name(state: &str) -> String {
        let hash = state_hash(state);
        format!("{BINDING_COOKIE_PREFIX}{}", hash.get(..16).unwrap_or(&hash))
    }

    /// A pending flow, unexpired, looked up by its state without spending
    /// it.
    async fn pending_flow(&self, state: &Secret) -> Result<(String, FlowRecord), String> {
        const GONE: &str = "This connect link is unknown, already used or expired. Start connecting again from the app.";
        if state.expose().is_empty() || state.expose().len() > MAX_CALLBACK_PARAM {
            return Err(GONE.into());
        }
        let key = state_hash(state.expose());
        match self.store.get_flow(&key).await {
            Ok(Some(flow)) if flow.expires_at_ms > self.now_ms() => Ok((key, flow)),
            Ok(_) => Err(GONE.into()),
            Err(e) => {
                tracing::error!(error = %e, "store error on the connect page");
                Err("The connect page is unavailable (storage error). Try again later.".into())
            }
        }
    }

    /// What the connect page shows for the flow of `state`; the message
    /// to show instead when there is no such flow.
    pub async fn connect_page(&self, state: &Secret) -> Result<ConnectPage, String> {
        let (_, flow) = self.pending_flow(state).await?;
        let toolkit_name = match self.store.get_toolkit(&flow.app, &flow.toolkit).await {
            Ok(Some(ToolkitRecord {
                display_name: Some(name),
                ..
            })) => name,
            _ => match self.find_connector(&flow.app, &flow.toolkit).await {
                Ok(Some(c)) => c.spec.display_name.clone(),
                _ => flow.toolkit.clone(),
            },
        };
        let reconnect_account = if flow.reconnect {
            match self
                .store
                .get_connection(&flow.app, &flow.connection_id)
                .await
            {
                Ok(Some(c)) => Some(c.account),
                _ => None,
            }
        } else {
            None
        };
        Ok(ConnectPage {
            app: flow.app,
            toolkit: flow.toolkit,
            toolkit_name,
            user_id: flow.user_id,
            scopes: flow.scopes,
            reconnect_account,
            switch_account: flow.switch_account,
            request_id: flow.request_id,
            expires_at_ms: flow.expires_at_ms,
        })
    }

    /// The person on the connect page confirmed: binds the flow to this
    /// browser (the callback will require the cookie) and returns the
    /// provider's URL. A flow is bound to one browser only: `presented` is
    /// the binding cookie the browser already holds, which lets the same
    /// browser confirm again (a reload) and nobody else.
    pub async fn confirm_connect(
        &self,
        state: &Secret,
        presented: Option<&Secret>,
    ) -> Result<Confirmed, String> {
        let (key, mut flow) = self.pending_flow(state).await?;
        let cookie_name = Self::binding_cookie_name(state.expose());
        let cookie_value = match (&flow.browser_binding, presented) {
            (Some(bound), Some(p)) if same_digest(bound, &state_hash(p.expose())) => p.clone(),
            (Some(_), _) => {
                return Err("This connect link was already opened in another browser. Start connecting again from the app.".into());
            }
            (None, _) => {
                let mut bytes = [0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                let value = Secret::new(hex::encode(bytes));
                flow.browser_binding = Some(state_hash(value.expose()));
                if let Err(e) = self.store.put_flow(&key, &flow).await {
                    tracing::error!(error = %e, "cannot bind a connect flow");
                    return Err(
                        "The connect page is unavailable (storage error). Try again later.".into(),
                    );
                }
                value
            }
        };
        let provider_url = flow
            .sealed_provider_url
            .as_deref()
            .and_then(|sealed| {
                self.open_hex(
                    sealed,
                    &crate::crypto::aad::flow_provider_url(&flow.app, &flow.request_id),
                )
                .ok()
            })
            .ok_or_else(|| {
                "This connect link cannot be used any more. Start connecting again from the app."
                    .to_string()
            })?;
        Ok(Confirmed {
            provider_url,
            cookie_name,
            cookie_value,
        })
    }

    /// Completes a connect flow: the provider's redirect to
    /// [`CALLBACK_PATH`].
    /// `binding` is the browser's binding cookie for this flow
    /// ([`Broker::binding_cookie_name`]); without the one set when the
    /// connect page was confirmed, the flow is refused (`browser_mismatch`).
    #[instrument(skip_all)]
    pub async fn callback(
        &self,
        params: CallbackParams,
        binding: Option<&Secret>,
    ) -> CallbackOutcome {
        let page = |status: u16, message: &str| CallbackOutcome::Page {
            status,
            message: message.to_string(),
        };
        let Some(state) = params
            .state
            .filter(|s| s.expose().len() <= MAX_CALLBACK_PARAM)
        else {
            return page(
                400,
                "The sign-in link is incomplete (no state). Start connecting again from the app.",
            );
        };
        // Taken out first: whatever happens next, this state is spent.
        let flow = match self.store.take_flow(&state_hash(state.expose())).await {
            Ok(Some(flow)) => flow,
            Ok(None) => {
                return page(
                    400,
                    "This sign-in link is unknown, already used or expired. Start connecting again from the app.",
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "store error at callback");
                return page(
                    500,
                    "The connection could not be completed (storage error). Try again later.",
                );
            }
        };
        let now = self.now_ms();
        if flow.expires_at_ms <= now {
            return page(
                400,
                "This sign-in link expired (after 15 minutes). Start connecting again from the app.",
            );
        }
        // The redirect URL is checked again: the allowlist may have changed.
        let redirect = match &flow.redirect_url {
            None => None,
            Some(u) => match self.app_settings(&flow.app).await {
                Ok(settings) => match redirect::check_redirect(u, &settings.redirect_urls) {
                    Ok(url) => Some(url),
                    Err(_) => {
                        return page(
                            400,
                            "The app's return address is no longer allowed; the connection was not made. Ask the app's admin to allow it and connect again.",
                        );
                    }
                },
                Err(_) => {
                    return page(
                        500,
                        "The connection could not be completed (storage error).",
                    );
                }
            },
        };
        let finish = |status: &str, reason: Option<&str>, connection_id: Option<&str>| {
            let Some(mut url) = redirect.clone() else {
                return match status {
                    "connected" => page(
                        200,
                        "Connected. You can close this window and return to the app.",
                    ),
                    _ => page(
                        400,
                        &format!(
                            "The connection was not made ({}). Close this window and try again from the app.",
                            reason.unwrap_or("error")
                        ),
                    ),
                };
            };
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("status", status);
                q.append_pair("toolkit", &flow.toolkit);
                q.append_pair("connectionRequestId", &flow.request_id);
                if let Some(id) = connection_id {
                    q.append_pair("connectionId", id);
                }
                if let Some(r) = reason {
                    q.append_pair("reason", r);
                }
            }
            CallbackOutcome::Redirect(url)
        };

        // The browser coming back must be the one that confirmed the
        // connect page: a provider link forwarded to someone else cannot
        // attach their account to the flow's user.
        let bound = match (&flow.browser_binding, binding) {
            (Some(expected), Some(cookie)) => same_digest(expected, &state_hash(cookie.expose())),
            _ => false,
        };
        if !bound {
            tracing::warn!(app = %flow.app, toolkit = %flow.toolkit, request = %flow.request_id, "connect callback from a browser that did not confirm the connect page");
            return finish("error", Some("browser_mismatch"), None);
        }
        if let Some(error) = &params.error {
            tracing::info!(app = %flow.app, toolkit = %flow.toolkit, error = %safe_reason(error), "connect flow refused at the provider");
            return finish("error", Some(&safe_reason(error)), None);
        }
        let Some(code) = params
            .code
            .filter(|c| !c.is_empty() && c.expose().len() <= MAX_CALLBACK_PARAM)
        else {
            return finish("error", Some("missing_code"), None);
        };
        match self.complete_flow(&flow, &code).await {
            Ok(id) => finish("connected", None, Some(&id)),
            Err(reason) => finish("error", Some(reason), None),
        }
    }

    /// Exchanges the code and stores the connection; returns its id, or a
    /// short reason code.
    async fn complete_flow(
        &self,
        flow: &FlowRecord,
        code: &Secret,
    ) -> Result<String, &'static str> {
        let app = flow.app.as_str();
        let slug = flow.toolkit.as_str();
        let connector = match self.find_connector(app, slug).await {
            Ok(Some(c)) => c,
            _ => return Err("toolkit_unavailable"),
        };
        let Some(spec) = &connector.spec.oauth else {
            return Err("toolkit_unavailable");
        };
        let record = match self.store.get_toolkit(app, slug).await {
            Ok(Some(r)) if r.enabled => r,
            _ => return Err("toolkit_disabled"),
        };
        let mut client = self.oauth_client(app, &connector, &record).map_err(|e| {
            tracing::warn!(app, toolkit = slug, error = %e, "cannot complete connect flow");
            "toolkit_misconfigured"
        })?;
        // Security: the token endpoint and redirect URI are the ones fixed
        // when the flow started, never anything from the callback.
        client.token_url = url::Url::parse(&flow.token_url).map_err(|_| "toolkit_misconfigured")?;
        let redirect_uri =
            url::Url::parse(&flow.redirect_uri).map_err(|_| "toolkit_misconfigured")?;
        let verifier = match &flow.sealed_pkce_verifier {
            Some(sealed) => Some(
                self.open_hex(
                    sealed,
                    &crate::crypto::aad::flow_pkce_verifier(app, &flow.request_id),
                )
                .map_err(|_| "internal_error")?,
            ),
            None => None,
        };
        let tokens = client
            .exchange_code(
                &self.token_http,
                spec,
                &redirect_uri,
                code,
                verifier.as_ref(),
            )
            .await
            .map_err(|e| {
                tracing::warn!(app, toolkit = slug, error = %e, "code exchange failed");
                match e {
                    crate::oauth::TokenError::InvalidGrant => "invalid_grant",
                    _ => "token_exchange_failed",
                }
            })?;
        let account = self.fetch_account(app, &connector, &record, &tokens).await;
        if flow.reconnect && !flow.switch_account {
            self.check_same_account(flow, &connector, &account).await?;
        }
        self.store_new_tokens(flow, tokens, account)
            .await
            .map_err(|e| {
                tracing::error!(app, toolkit = slug, error = %e, "cannot store connection");
                "internal_error"
            })
    }
}

impl Broker {
    /// Stores the tokens of a completed flow: a new connection, or the
    /// reconnected one (keeping its id, default flag and, when the provider
    /// sends none, its refresh token and account).
    async fn store_new_tokens(
        &self,
        flow: &FlowRecord,
        tokens: Tokens,
        account: AccountInfo,
    ) -> Result<String, AdminError> {
        let app = flow.app.as_str();
        let id = flow.connection_id.clone();
        let now = self.now_ms();
        let existing = if flow.reconnect {
            self.store.get_connection(app, &id).await?
        } else {
            None
        };
        let mut record = match existing {
            Some(c) => c,
            None => ConnectionRecord {
                id: id.clone(),
                app: app.to_string(),
                toolkit: flow.toolkit.clone(),
                user_id: flow.user_id.clone(),
                state: ConnectionState::Active,
                reason: None,
                is_default: !self
                    .store
                    .list_connections_for(app, &flow.toolkit, flow.user_id.as_deref())
                    .await?
                    .iter()
                    .any(|c| c.is_default && c.id != id),
                account: AccountInfo::default(),
                scopes: Vec::new(),
                sealed_access_token: None,
                sealed_refresh_token: None,
                expires_at_ms: None,
                version: 0,
                created_at_ms: now,
                updated_at_ms: now,
                refreshed_at_ms: None,
                api_base_url: None,
            },
        };
        if account != AccountInfo::default() {
            record.account = account;
        }
        // Scopes as requested unless the provider says what it granted.
        record.scopes.clone_from(&flow.scopes);
        self.apply_tokens(&mut record, &tokens, now)?;
        self.store.put_connection(&record).await?;
        self.refresh.clear(&id);
        tracing::info!(app, toolkit = %flow.toolkit, connection = %id, reconnect = flow.reconnect, "connection made");
        Ok(id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn provider_error_codes_are_reduced_to_safe_tokens() {
        assert_eq!(safe_reason("access_denied"), "access_denied");
        assert_eq!(safe_reason("<script>x</script>&a=b"), "scriptxscriptab");
        assert_eq!(safe_reason(""), "error");
        assert_eq!(safe_reason(&"a".repeat(100)).len(), 64);
    }

    #[test]
    fn state_is_stored_only_as_a_hash() {
        let h = state_hash("abc");
        assert_eq!(h.len(), 64);
        assert!(!h.contains("abc"));
    }
}
