//! Everything a function can reach, and the credential broker behind it.
//!
//! Interfaces implemented for guests:
//!
//! * `runtime:integrations/integrations` ([`integrations`]): `execute`,
//!   `as-user`, `list-tools`, brokered through [`broker::Broker`], which holds
//!   the credentials; functions never see them.
//!
//! The services behind it are plain Rust, testable without wasm. Where
//! things live:
//!
//! - Who and when: [`invocation`] ([`Principal`], [`Invocation`], the
//!   [`invocation::Clock`] the broker reads).
//! - The broker: [`broker`], whose `mod.rs` is the execute pipeline
//!   (resolve, check, dispatch, audit); [`broker::connect`] (the connect
//!   flow and callback), [`broker::refresh`] (where a token is refreshed,
//!   single-flight), [`broker::connections`] (listing, disconnecting,
//!   picking a call's connection), [`broker::admin`] (configure, disable,
//!   custom connectors), [`broker::settings`] (an app's JWT and redirect
//!   settings), [`broker::rekey`] (re-encrypting after a key rotation).
//! - Where a connector is defined: [`catalog`] (the file format in
//!   `catalog/spec.rs`, validation in `catalog/compile.rs`).
//! - Going out: [`tools`] (a tool call as the provider's HTTP request),
//!   [`data`] (SQL platforms), both sending through [`outbound`] (the one
//!   sender: egress check, credential, caps, scrubbing); [`oauth`] (token
//!   endpoint requests), [`egress`] (where credentials may go).
//! - At rest: [`store`] (the [`store::Store`] trait; the sled backend, and
//!   where another backend goes), [`crypto`] (sealing secrets, the keyring,
//!   one table of every sealed field's associated data).
//! - Rules: [`manifest`] (a function's grants and limits), [`jwt`]
//!   (verifying end users' JWTs), [`ratelimit`] (per app and user),
//!   [`redirect`] (the allowlist for post-connect redirect URLs).
//!
//! Imports run one way: [`integrations`] → [`broker`] → [`catalog`],
//! [`tools`], [`data`], [`oauth`] → [`outbound`] → [`egress`]; everything
//! may use [`store`], [`crypto`], [`invocation`], [`error`] and [`secret`],
//! which import none of the services. Inside [`broker`], the files add
//! methods to the one [`Broker`] and reach each other only through it.
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
mod pg_tls;
pub mod ratelimit;
pub mod redirect;
pub mod secret;
pub mod store;
pub mod tools;

pub use broker::{Broker, Invocation, Principal};
pub use error::ToolError;
pub use secret::Secret;
