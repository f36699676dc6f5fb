//! The `runtime` binary's library: CLI, configuration and start-up, the
//! wasmtime engine, the one invocation path for functions, the triggers
//! that start them, the management API and the HTTP server. `main.rs`
//! only parses arguments and calls in.
//!
//! Where things live:
//!
//! - Start-up: [`cli`] (verbs), [`config`] (validated start-up, builds the
//!   [`state::AppState`]), [`keys`] (master key rotation), [`apps`] (admin
//!   keys), [`dev`] (dev mode: deploy and watch the examples).
//! - Functions: [`engine`] (wasmtime `Engine`, linker, artifacts,
//!   per-invocation state; where a function is instantiated), [`registry`]
//!   (deployed functions; deploy validation: name, manifest, cron, grants,
//!   exports), [`invoke`] (running a function within its limits, for any
//!   [`invoke::Trigger`]), [`invocations`] (the log of runs behind
//!   `runtime logs`), [`logs`] (function output as attributed log lines).
//! - What starts a function: [`triggers`] ([`triggers::http`],
//!   [`triggers::cron`], and [`triggers::headers`], every `x-runtime-*`
//!   header), on top of [`scheduler`] (cron schedules, retries, catch-up).
//! - HTTP: [`server`] (the router and `serve(listener, shutdown)`),
//!   [`state`] (what handlers share), [`auth`] (who is calling), [`api`]
//!   (the `/v1` management endpoints, one file per resource), [`connect`]
//!   (the connect page and the OAuth callback).
//!
//! Imports run one way, so no file imports one that imports it back:
//! [`server`] → [`api`], [`triggers::http`], [`connect`] → [`auth`] →
//! [`state`] → the services ([`triggers::cron`], [`invoke`], [`registry`],
//! [`engine`]) → [`scheduler`], which imports nothing of the crate.

#![deny(missing_docs)]

pub mod api;
pub mod apps;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod connect;
pub mod dev;
pub mod engine;
pub mod invocations;
pub mod invoke;
pub mod keys;
pub mod logs;
pub mod node;
pub mod registry;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod triggers;
