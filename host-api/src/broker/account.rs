//! Which upstream account a grant belongs to: read from the provider after
//! a code exchange, and checked on a reconnect so it cannot silently come
//! back as someone else's account.

use super::{Broker, MAX_NAME_LEN};
use crate::catalog::Connector;
use crate::oauth::Tokens;
use crate::store::{AccountInfo, FlowRecord, ToolkitRecord};

impl Broker {
    /// A reconnect or step-up must come back with the account the
    /// connection had (where the connector can read it): otherwise anyone
    /// completing the link with their own account would silently replace
    /// it. An admin's `switchAccount` flow skips this.
    pub(super) async fn check_same_account(
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

    pub(super) async fn fetch_account(
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
}
