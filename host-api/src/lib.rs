//! Everything a function can reach, and the credential broker behind it.
//!
//! Interfaces implemented for guests:
//!
//! * `runtime:integrations/integrations` ([`integrations`]): `execute`,
//!   `as-user`, `list-tools`, brokered through [`broker::Broker`], which holds
//!   the credentials; functions never see them.
//!
//! The services behind it are plain Rust, testable without wasm:
//! [`catalog`] (connectors and tools, loaded from data), [`broker`] (resolve,
//! check, dispatch, audit), [`connections`] (the connect flow and choosing a
//! connection), [`oauth`] (authorization code + PKCE, refresh, revocation),
//! [`tokens`] (single-flight refresh), [`ratelimit`] (per app and user), [`tools`] (the provider HTTP request),
//! [`egress`] (where credentials may go), [`store`] (durable state),
//! [`crypto`] (sealing secrets at rest, key rotation), [`rekey`] (re-encrypting
//! after a rotation), [`manifest`] (a function's grants and
//! limits), [`jwt`] (verifying end users' JWTs), [`redirect`] (the allowlist
//! for post-connect redirect URLs), [`settings`] (an app's JWT and redirect
//! settings).
//!
//! Wiring it into a wasmtime linker:
//!
//! ```
//! use host_api::integrations::{self, IntegrationsCtx, IntegrationsView};
//! use wasmtime::component::{Linker, ResourceTable};
//!
//! struct State {
//!     integrations: IntegrationsCtx,
//!     table: ResourceTable,
//! }
//!
//! fn view(s: &mut State) -> IntegrationsView<'_> {
//!     IntegrationsView { ctx: &mut s.integrations, table: &mut s.table }
//! }
//!
//! let engine = wasmtime::Engine::default();
//! let mut linker = Linker::<State>::new(&engine);
//! integrations::add_to_linker(&mut linker, view)?;
//! # Ok::<(), wasmtime::Error>(())
//! ```
#![deny(missing_docs)]

pub mod broker;
pub mod catalog;
pub mod crypto;
pub mod data;
pub mod egress;
pub mod error;
pub mod integrations;
pub mod invocation;
pub mod jwt;
pub mod manifest;
pub mod oauth;
pub mod outbound;
pub mod ratelimit;
pub mod redirect;
pub mod secret;
pub mod store;
pub mod tools;

pub use broker::{Broker, Invocation, Principal};
pub use error::ToolError;
pub use secret::Secret;
