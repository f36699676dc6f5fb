//! OAuth connections: the connect flow (authorization URL, callback, code
//! exchange), listing and disconnecting, and choosing the connection a tool
//! call uses.
//!
//! A connection belongs to an app and either to one end user (app-user
//! toolkits) or to the app itself (shared toolkits). Its tokens are sealed
//! with associated data naming (app, connection, field). A flow is stored
//! under the SHA-256 of its `state`, expires after [`FLOW_TTL`], and is
//! taken out of the store before anything else happens at the callback, so
//! a state can be redeemed once. Token refresh lives in [`crate::tokens`].

use std::time::Duration;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::instrument;

use crate::broker::{AdminError, Broker, MAX_NAME_LEN, Principal, now_ms};
use crate::catalog::Connector;
use crate::error::ToolError;
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

/// A connection as shown to callers: never a token.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionView {
    /// Connection id.
    pub id: String,
    /// Connector slug.
    pub toolkit: String,
    /// End user, or null for the shared connection.
    pub user_id: Option<String>,
    /// `pending`, `active`, `needs_reconnect`, `revoked`, `disabled`.
    pub state: ConnectionState,
    /// Why.
    pub reason: Option<String>,
    /// Whether calls use it when the owner has several.
    pub is_default: bool,
    /// The upstream account.
    pub account: AccountInfo,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// When the access token expires (Unix ms).
    pub expires_at: Option<u64>,
    /// For pending flows: the request id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_request_id: Option<String>,
    /// Unix ms.
    pub created_at: u64,
    /// Unix ms.
    pub updated_at: u64,
}

/// Filters of `GET .../connections` (admins; users always see their own).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionFilter {
    /// Only this toolkit.
    pub toolkit: Option<String>,
    /// Only this end user.
    pub user_id: Option<String>,
    /// Only this state.
    pub state: Option<ConnectionState>,
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

    /// The OAuth client of a configured toolkit, endpoints overridden where
    /// the admin said so.
    pub(crate) fn oauth_client(
        &self,
        app: &str,
        connector: &Connector,
        record: &ToolkitRecord,
    ) -> Result<OAuthClient, String> {
        let slug = &connector.spec.slug;
        let (Some(spec), Some(endpoints)) = (&connector.spec.oauth, &connector.oauth) else {
            return Err(format!(
                "`{slug}` is not an OAuth connector; configure an apiKey instead"
            ));
        };
        let (Some(client_id), Some(sealed)) = (&record.client_id, &record.sealed_client_secret)
        else {
            return Err(format!(
                "toolkit `{slug}` has no OAuth client: an admin must POST /v1/{app}/integrations/configure with clientId and clientSecret"
            ));
        };
        if connector.spec.data.as_ref().is_some_and(|d| d.per_app_host)
            && (record.oauth_overrides.authorize_url.is_none()
                || record.oauth_overrides.token_url.is_none()
                || record.api_base_url.is_none())
        {
            return Err(format!(
                "every `{slug}` account has its own host: an admin must configure apiBaseUrl, authorizeUrl and tokenUrl on it first (see the connector's description)"
            ));
        }
        let client_secret = self
            .open_hex(sealed, &crate::crypto::aad::client_secret(app, slug))
            .map_err(|_| format!("the stored client secret of `{slug}` cannot be unsealed"))?;
        let pick = |over: &Option<String>, default: &url::Url| -> Result<url::Url, String> {
            match over {
                Some(u) => url::Url::parse(u)
                    .map_err(|_| format!("configured endpoint `{u}` of `{slug}` is not a URL")),
                None => Ok(default.clone()),
            }
        };
        let o = &record.oauth_overrides;
        Ok(OAuthClient {
            client_id: client_id.clone(),
            client_secret,
            authorize_url: pick(&o.authorize_url, &endpoints.authorize)?,
            token_url: pick(&o.token_url, &endpoints.token)?,
            revocation_url: match (&o.revocation_url, &endpoints.revocation) {
                (Some(u), _) => Some(pick(&Some(u.clone()), &endpoints.token)?),
                (None, r) => r.clone(),
            },
            client_auth: spec.client_auth,
            client_id_param: spec.client_id_param.clone(),
        })
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
        let now = now_ms();
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
            Ok(Some(flow)) if flow.expires_at_ms > now_ms() => Ok((key, flow)),
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
        let now = now_ms();
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

    /// A reconnect or step-up must come back with the account the
    /// connection had (where the connector can read it): otherwise anyone
    /// completing the link with their own account would silently replace
    /// it. An admin's `switchAccount` flow skips this.
    async fn check_same_account(
        &self,
        flow: &FlowRecord,
        connector: &Connector,
        account: &AccountInfo,
    ) -> Result<(), &'static str> {
        let readable = connector
            .spec
            .oauth
            .as_ref()
            .is_some_and(|o| o.account_path.is_some() && o.account_id_pointer.is_some());
        if !readable {
            return Ok(());
        }
        let existing = match self
            .store
            .get_connection(&flow.app, &flow.connection_id)
            .await
        {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(()),
            Err(_) => return Err("internal_error"),
        };
        let Some(before) = existing.account.id.as_deref() else {
            return Ok(());
        };
        match account.id.as_deref() {
            Some(now) if now == before => Ok(()),
            now => {
                tracing::warn!(
                    app = %flow.app,
                    toolkit = %flow.toolkit,
                    connection = %flow.connection_id,
                    returned_account = now.is_some(),
                    "reconnect came back with another upstream account; the old grant is kept"
                );
                Err(if now.is_some() {
                    "account_mismatch"
                } else {
                    "account_unverified"
                })
            }
        }
    }

    async fn fetch_account(
        &self,
        app: &str,
        connector: &Connector,
        record: &ToolkitRecord,
        tokens: &Tokens,
    ) -> AccountInfo {
        let Some(spec) = &connector.spec.oauth else {
            return AccountInfo::default();
        };
        let Some(path) = &spec.account_path else {
            return AccountInfo::default();
        };
        let Ok(mut base) = self.api_base_url(connector, record) else {
            return AccountInfo::default();
        };
        if let Some(instance) = &tokens.instance_url {
            let _ = base.set_scheme(instance.scheme());
            let _ = base.set_host(instance.host_str());
            let _ = base.set_port(instance.port());
        }
        let mut url = base.clone();
        url.set_path(&format!("{}{}", base.path().trim_end_matches('/'), path));
        // Sent like a tool call: the connector's credential form and headers
        // (Notion-Version, ClickUp's bare token), under the egress policy.
        let request = crate::tools::PreparedRequest {
            method: http::Method::GET,
            url,
            headers: vec![("Accept".into(), "application/json".into())],
            body: None,
            idempotent: true,
        };
        // Tried twice: a reconnect whose account cannot be read is refused
        // (see `check_same_account`), so one transient failure should not
        // cost the user the flow.
        let mut answer = None;
        for _ in 0..2 {
            match crate::tools::send(
                &self.client,
                &self.policy,
                connector,
                &request,
                &tokens.access_token,
            )
            .await
            {
                Ok(a) if a.value.is_object() || a.value.is_array() => {
                    answer = Some(a.value);
                    break;
                }
                _ => {}
            }
        }
        let Some(answer) = answer else {
            tracing::info!(app, toolkit = %connector.spec.slug, "account description unavailable");
            return AccountInfo::default();
        };
        let text = |pointer: &Option<String>| {
            pointer
                .as_ref()
                .and_then(|p| answer.pointer(p))
                .and_then(|v| match v {
                    serde_json::Value::String(s) => Some(s.chars().take(MAX_NAME_LEN).collect()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
        };
        AccountInfo {
            id: text(&spec.account_id_pointer),
            name: text(&spec.account_name_pointer),
        }
    }

    async fn store_new_tokens(
        &self,
        flow: &FlowRecord,
        tokens: Tokens,
        account: AccountInfo,
    ) -> Result<String, AdminError> {
        let app = flow.app.as_str();
        let id = flow.connection_id.clone();
        let now = now_ms();
        let existing = if flow.reconnect {
            self.store.get_connection(app, &id).await?
        } else {
            None
        };
        let is_default = match &existing {
            Some(c) => c.is_default,
            None => !self
                .store
                .list_connections_for(app, &flow.toolkit, flow.user_id.as_deref())
                .await?
                .iter()
                .any(|c| c.is_default && c.id != id),
        };
        let aad_access = crate::crypto::aad::connection(app, &id, "access_token");
        let aad_refresh = crate::crypto::aad::connection(app, &id, "refresh_token");
        let sealed_refresh = match &tokens.refresh_token {
            Some(t) => Some(self.seal_hex(t, &aad_refresh)?),
            // A reconnect without a new refresh token keeps the old one.
            None => existing
                .as_ref()
                .and_then(|c| c.sealed_refresh_token.clone()),
        };
        let record = ConnectionRecord {
            id: id.clone(),
            app: app.to_string(),
            toolkit: flow.toolkit.clone(),
            user_id: flow.user_id.clone(),
            state: ConnectionState::Active,
            reason: None,
            is_default,
            account: if account == AccountInfo::default() {
                existing
                    .as_ref()
                    .map(|c| c.account.clone())
                    .unwrap_or_default()
            } else {
                account
            },
            scopes: tokens.scopes.clone().unwrap_or_else(|| flow.scopes.clone()),
            sealed_access_token: Some(self.seal_hex(&tokens.access_token, &aad_access)?),
            sealed_refresh_token: sealed_refresh,
            expires_at_ms: tokens
                .expires_in
                .map(|d| now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
            version: existing.as_ref().map_or(1, |c| c.version + 1),
            created_at_ms: existing.as_ref().map_or(now, |c| c.created_at_ms),
            updated_at_ms: now,
            refreshed_at_ms: Some(now),
            api_base_url: tokens
                .instance_url
                .as_ref()
                .map(url::Url::to_string)
                .or_else(|| existing.as_ref().and_then(|c| c.api_base_url.clone())),
        };
        self.store.put_connection(&record).await?;
        self.clear_backoff(&id);
        tracing::info!(app, toolkit = %flow.toolkit, connection = %id, reconnect = flow.reconnect, "connection made");
        Ok(id)
    }

    /// Connections visible to `caller`, pending flows included.
    pub async fn list_connections(
        &self,
        app: &str,
        caller: &Principal,
        filter: &ConnectionFilter,
    ) -> Result<Vec<ConnectionView>, AdminError> {
        let only_user = match caller {
            Principal::User(u) => Some(u.as_str()),
            Principal::Admin => None,
            _ => {
                return Err(AdminError::Forbidden(
                    "listing connections needs an admin key or an end user's JWT".into(),
                ));
            }
        };
        let disabled: Vec<String> = self
            .store
            .list_toolkits(app)
            .await?
            .into_iter()
            .filter(|t| !t.enabled)
            .map(|t| t.toolkit)
            .collect();
        let visible = |toolkit: &str, user: Option<&str>| {
            only_user.is_none_or(|u| user == Some(u))
                && filter.toolkit.as_deref().is_none_or(|t| t == toolkit)
                && filter.user_id.as_deref().is_none_or(|u| user == Some(u))
        };
        let mut out = Vec::new();
        for c in self.store.list_connections(app).await? {
            if !visible(&c.toolkit, c.user_id.as_deref()) {
                continue;
            }
            let (state, reason) =
                if disabled.contains(&c.toolkit) && c.state == ConnectionState::Active {
                    (
                        ConnectionState::Disabled,
                        Some("the toolkit is disabled by the app's admin".to_string()),
                    )
                } else {
                    (c.state, c.reason.clone())
                };
            out.push(ConnectionView {
                id: c.id,
                toolkit: c.toolkit,
                user_id: c.user_id,
                state,
                reason,
                is_default: c.is_default,
                account: c.account,
                scopes: c.scopes,
                expires_at: c.expires_at_ms,
                connection_request_id: None,
                created_at: c.created_at_ms,
                updated_at: c.updated_at_ms,
            });
        }
        let now = now_ms();
        for f in self.store.list_flows(app).await? {
            if f.reconnect || f.expires_at_ms <= now || !visible(&f.toolkit, f.user_id.as_deref()) {
                continue;
            }
            out.push(ConnectionView {
                id: f.connection_id,
                toolkit: f.toolkit,
                user_id: f.user_id,
                state: ConnectionState::Pending,
                reason: Some("waiting for the user to finish connecting".into()),
                is_default: false,
                account: AccountInfo::default(),
                scopes: f.scopes,
                expires_at: None,
                connection_request_id: Some(f.request_id),
                created_at: f.created_at_ms,
                updated_at: f.created_at_ms,
            });
        }
        out.retain(|v| filter.state.is_none_or(|s| s == v.state));
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn owned_connection(
        &self,
        app: &str,
        caller: &Principal,
        id: &str,
    ) -> Result<ConnectionRecord, AdminError> {
        let c = self.store.get_connection(app, id).await?;
        match (c, caller) {
            (Some(c), Principal::Admin) => Ok(c),
            (Some(c), Principal::User(u)) if c.user_id.as_deref() == Some(u.as_str()) => Ok(c),
            // Another user's connection is reported as missing.
            _ => Err(AdminError::NotFound(format!(
                "no connection `{id}` visible to this caller in app `{app}`"
            ))),
        }
    }

    /// Makes a connection the one its owner's calls use for its toolkit.
    pub async fn set_default_connection(
        &self,
        app: &str,
        caller: &Principal,
        id: &str,
    ) -> Result<(), AdminError> {
        let target = self.owned_connection(app, caller, id).await?;
        for mut c in self
            .store
            .list_connections_for(app, &target.toolkit, target.user_id.as_deref())
            .await?
        {
            let want = c.id == target.id;
            if c.is_default != want {
                c.is_default = want;
                c.updated_at_ms = now_ms();
                self.store.put_connection(&c).await?;
            }
        }
        Ok(())
    }

    /// Disconnects: revokes upstream where the connector can, then deletes
    /// the connection whatever the provider said.
    #[instrument(skip_all, fields(app, connection = id))]
    pub async fn disconnect(
        &self,
        app: &str,
        caller: &Principal,
        id: &str,
    ) -> Result<bool, AdminError> {
        let c = self.owned_connection(app, caller, id).await?;
        let mut revoked = false;
        if let Ok(Some(connector)) = self.find_connector(app, &c.toolkit).await
            && let Ok(Some(record)) = self.store.get_toolkit(app, &c.toolkit).await
            && let Ok(client) = self.oauth_client(app, &connector, &record)
            && client.revocation_url.is_some()
        {
            let (sealed, field, hint) = match (&c.sealed_refresh_token, &c.sealed_access_token) {
                (Some(r), _) => (Some(r), "refresh_token", "refresh_token"),
                (None, a) => (a.as_ref(), "access_token", "access_token"),
            };
            if let Some(sealed) = sealed
                && let Ok(token) =
                    self.open_hex(sealed, &crate::crypto::aad::connection(app, id, field))
            {
                match client.revoke(&self.token_http, &token, hint).await {
                    Ok(()) => revoked = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "upstream revocation failed; deleting locally anyway")
                    }
                }
            }
        }
        self.store.delete_connection(app, id).await?;
        self.clear_backoff(id);
        // If the default went and one connection is left, it becomes the
        // default; with several left, the owner chooses.
        if c.is_default {
            let rest = self
                .store
                .list_connections_for(app, &c.toolkit, c.user_id.as_deref())
                .await?;
            if let [only] = rest.as_slice() {
                let mut only = only.clone();
                only.is_default = true;
                self.store.put_connection(&only).await?;
            }
        }
        tracing::info!(revoked_upstream = revoked, "connection deleted");
        Ok(revoked)
    }

    /// The connection a call uses: the shared one for shared toolkits,
    /// otherwise `user`'s default (or only) connection; `explicit` names
    /// one directly.
    pub(crate) async fn resolve_connection(
        &self,
        app: &str,
        record: &ToolkitRecord,
        user: Option<&str>,
        explicit: Option<&str>,
    ) -> Result<ConnectionRecord, ToolError> {
        let slug = record.toolkit.as_str();
        let unavailable =
            |e: crate::store::StoreError| ToolError::Unavailable(format!("store: {e}"));
        let owner: Option<&str> = if record.shared {
            None
        } else {
            Some(user.ok_or_else(|| {
                ToolError::NotConnected(format!(
                    "`{slug}` uses each end user's own account and this call has no end user: call the function with the user's JWT, or use as-user(id) from a cron run or an admin call"
                ))
            })?)
        };
        let whose = || match owner {
            None => format!("app `{app}`'s shared `{slug}` account"),
            Some(u) => format!("user `{u}`"),
        };
        if let Some(id) = explicit {
            return self
                .store
                .get_connection(app, id)
                .await
                .map_err(unavailable)?
                .filter(|c| c.toolkit == slug && c.user_id.as_deref() == owner)
                .ok_or_else(|| {
                    ToolError::NotConnected(format!(
                        "connection `{id}` is not a `{slug}` connection of {}",
                        whose()
                    ))
                });
        }
        let candidates: Vec<ConnectionRecord> = self
            .store
            .list_connections_for(app, slug, owner)
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|c| c.state != ConnectionState::Revoked)
            .collect();
        if let Some(c) = candidates.iter().find(|c| c.is_default) {
            return Ok(c.clone());
        }
        match candidates.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ToolError::NotConnected(match owner {
                None => format!(
                    "`{slug}` has no shared connection: an admin must POST /v1/{app}/integrations/connect with {{\"toolkit\": \"{slug}\", \"shared\": true}}"
                ),
                Some(u) => format!(
                    "user `{u}` has not connected `{slug}`: start the connect flow with POST /v1/{app}/integrations/connect {{\"toolkit\": \"{slug}\"}} using the user's JWT"
                ),
            })),
            several => Err(ToolError::Denied(format!(
                "{} has {} `{slug}` connections and none is the default: choose one with PATCH /v1/{app}/integrations/connections/{{id}} {{\"default\": true}}",
                whose(),
                several.len()
            ))),
        }
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
