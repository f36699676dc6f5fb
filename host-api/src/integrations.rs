//! The `runtime:integrations/integrations` interface, host side.
//!
//! Follows the shape of wasmtime's WASI crates: a private `bindgen!`, a
//! long-lived [`IntegrationsCtx`] per invocation, a short-lived
//! [`IntegrationsView`] borrowing it and the store's `ResourceTable`, the
//! [`Integrations`] `HasData` marker, and [`add_to_linker`]. The trait impls
//! are thin: each call goes to the [`Broker`].

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::broker::{Broker, Invocation, MAX_NAME_LEN};
use crate::error::ToolError;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "runtime:integrations/host",
        imports: { default: async | trappable },
        with: {
            "runtime:integrations/integrations.user": super::UserHandle,
        },
    });
}

use bindings::runtime::integrations::integrations as wit;

/// Most live `user` handles one instance may hold; a guest that leaks more
/// is stopped instead of growing host memory without bound.
pub const MAX_USER_HANDLES: usize = 1024;

/// The host side of a guest's `user` resource.
#[derive(Debug)]
pub struct UserHandle {
    user_id: String,
}

/// Most tool calls recorded per invocation for run history; later calls
/// still run, only their record is dropped.
pub const MAX_RECORDED_CALLS: usize = 256;

/// Per-invocation state of the interface.
#[derive(Debug)]
pub struct IntegrationsCtx {
    broker: Arc<Broker>,
    invocation: Arc<Invocation>,
    live_users: usize,
    /// `TOOL_NAME: outcome (logId)` of each call made, for run history.
    calls: Vec<String>,
}

impl IntegrationsCtx {
    /// State for one invocation acting as `invocation`.
    pub fn new(broker: Arc<Broker>, invocation: Arc<Invocation>) -> Self {
        Self {
            broker,
            invocation,
            live_users: 0,
            calls: Vec::new(),
        }
    }

    /// The calls this invocation made, as `TOOL: outcome (logId)`.
    pub fn calls(&self) -> &[String] {
        &self.calls
    }
}

/// A borrow of the ctx and the store's resource table.
#[derive(Debug)]
pub struct IntegrationsView<'a> {
    /// The invocation's state.
    pub ctx: &'a mut IntegrationsCtx,
    /// The store's resource table.
    pub table: &'a mut ResourceTable,
}

/// `HasData` marker for [`add_to_linker`].
#[derive(Debug)]
pub struct Integrations;

impl HasData for Integrations {
    type Data<'a> = IntegrationsView<'a>;
}

/// Adds the interface to `linker`; `view` borrows it out of the store data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> IntegrationsView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, Integrations>(linker, view)
}

impl From<ToolError> for wit::Error {
    fn from(e: ToolError) -> Self {
        match e {
            ToolError::NotConnected(m) => wit::Error::NotConnected(m),
            ToolError::NeedsReconnect(m) => wit::Error::NeedsReconnect(m),
            ToolError::InsufficientScope {
                missing, auth_url, ..
            } => wit::Error::InsufficientScope(wit::ScopeError { missing, auth_url }),
            ToolError::RateLimited { retry_after_ms } => wit::Error::RateLimited(retry_after_ms),
            ToolError::Denied(m) => wit::Error::Denied(m),
            ToolError::InvalidParams(m) => wit::Error::InvalidParams(m),
            ToolError::Upstream { status, body } => {
                wit::Error::Upstream(wit::UpstreamError { status, body })
            }
            ToolError::Unavailable(m) => wit::Error::Unavailable(m),
        }
    }
}

impl IntegrationsView<'_> {
    async fn run(
        &mut self,
        tool: &str,
        params: &str,
        as_user: Option<&str>,
    ) -> Result<String, wit::Error> {
        let outcome = self
            .ctx
            .broker
            .execute(&self.ctx.invocation, tool, params, as_user, None)
            .await;
        if self.ctx.calls.len() < MAX_RECORDED_CALLS {
            let kind = match &outcome.result {
                Ok(_) => "ok",
                Err(e) => e.kind(),
            };
            let name: String = tool.chars().take(MAX_NAME_LEN).collect();
            self.ctx
                .calls
                .push(format!("{name}: {kind} ({})", outcome.log_id));
        }
        let value = outcome.result?;
        serde_json::to_string(&value)
            .map_err(|e| wit::Error::Unavailable(format!("result encoding: {e}")))
    }
}

impl wit::Host for IntegrationsView<'_> {
    async fn execute(
        &mut self,
        tool: String,
        params_json: String,
    ) -> wasmtime::Result<Result<String, wit::Error>> {
        Ok(self.run(&tool, &params_json, None).await)
    }

    async fn as_user(&mut self, user_id: String) -> wasmtime::Result<Resource<UserHandle>> {
        if self.ctx.live_users >= MAX_USER_HANDLES {
            wasmtime::bail!("guest limit: more than {MAX_USER_HANDLES} live as-user handles");
        }
        let user_id: String = user_id.chars().take(MAX_NAME_LEN + 1).collect();
        let handle = self.table.push(UserHandle { user_id })?;
        self.ctx.live_users += 1;
        Ok(handle)
    }

    async fn list_tools(&mut self) -> wasmtime::Result<Vec<wit::ToolInfo>> {
        let tools = self
            .ctx
            .broker
            .list_tools(&self.ctx.invocation)
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "list-tools failed");
                Vec::new()
            });
        Ok(tools
            .into_iter()
            .map(|t| wit::ToolInfo {
                name: t.name,
                toolkit: t.toolkit,
                description: t.description,
            })
            .collect())
    }
}

impl wit::HostUser for IntegrationsView<'_> {
    async fn execute(
        &mut self,
        user: Resource<UserHandle>,
        tool: String,
        params_json: String,
    ) -> wasmtime::Result<Result<String, wit::Error>> {
        let user_id = self.table.get(&user)?.user_id.clone();
        Ok(self.run(&tool, &params_json, Some(&user_id)).await)
    }

    async fn drop(&mut self, user: Resource<UserHandle>) -> wasmtime::Result<()> {
        self.table.delete(user)?;
        self.ctx.live_users = self.ctx.live_users.saturating_sub(1);
        Ok(())
    }
}
