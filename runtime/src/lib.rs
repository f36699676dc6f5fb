//! The `runtime` binary's library: CLI, configuration and start-up, the
//! wasmtime engine, the one invocation path for functions, the management
//! API and the HTTP server. `main.rs` only parses arguments and calls in.
//!
//! Modules: [`cli`] (verbs), [`config`] (validated start-up), [`engine`]
//! (wasmtime `Engine`, linker, artifacts, per-invocation state), [`invoke`]
//! (running a function within its limits), [`invocations`] (the log of
//! runs behind `runtime logs`), [`keys`] (master key rotation),
//! [`logs`] (function output as attributed log lines), [`registry`] (deployed
//! functions), [`scheduler`] (cron schedules, retries, catch-up), [`cron`]
//! (functions' cron triggers run through [`invoke`]), [`api`] (management endpoints),
//! [`connect`] (the connect page and the OAuth callback),
//! [`server`] (router and `serve(listener, shutdown)`), [`apps`] (admin keys),
//! [`dev`] (dev mode).

pub mod api;
pub mod apps;
pub mod cli;
pub mod config;
pub mod connect;
pub mod cron;
pub mod dev;
pub mod engine;
pub mod invocations;
pub mod invoke;
pub mod keys;
pub mod logs;
pub mod registry;
pub mod scheduler;
pub mod server;
