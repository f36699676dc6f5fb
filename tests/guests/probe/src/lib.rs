//! A deliberately hostile and curious guest for the host's component tests.
//!
//! Each path exercises one thing the host must survive or police:
//!
//! | path       | does                                                      |
//! |------------|-----------------------------------------------------------|
//! | `/ok`      | `200 ok`                                                  |
//! | `/loop`    | spins forever (the host's deadline must stop it)          |
//! | `/alloc`   | allocates 1 MiB chunks until allocation fails (trap)      |
//! | `/trap`    | executes `unreachable`                                    |
//! | `/panic`   | panics                                                    |
//! | `/recurse` | recurses without bound (stack overflow)                   |
//! | `/call`    | calls a tool: `{"tool", "params", "asUser"?}`             |
//! | `/tools`   | lists the granted tools                                   |
//! | `/egress`  | tries outbound HTTP to `127.0.0.1:9`                      |
//! | `/env`     | counts environment variables, tries to list `/`           |

// Hostile on purpose: these are the behaviours under test.
#![allow(unconditional_recursion, clippy::panic, clippy::infinite_loop)]

use std::hint::black_box;

use guest_sdk::http::{Request, Response};
use guest_sdk::wit::wasi::http::outgoing_handler;
use guest_sdk::wit::wasi::http::types::{Fields, OutgoingRequest, Scheme};
use guest_sdk::{Error, integrations};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The size of each allocation `/alloc` makes and keeps.
const CHUNK: usize = 1024 * 1024;

/// Routes by path; the method is ignored.
fn handle(request: Request) -> Response {
    match request.path() {
        "/ok" => Response::text(200, "ok"),
        "/loop" => spin(),
        "/alloc" => exhaust_memory(),
        "/trap" => core::arch::wasm32::unreachable(),
        "/panic" => panic!("probe panicked on purpose"),
        "/recurse" => Response::text(200, recurse(0).to_string()),
        "/call" => call(&request),
        "/tools" => Response::json(200, &integrations().list_tools()),
        "/egress" => egress(),
        "/env" => environment(),
        other => Response::text(404, format!("no probe at {other}\n")),
    }
}

guest_sdk::http_handler!(handle);

/// Never returns and never yields; only an epoch or fuel limit stops it.
fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Allocates and fills 1 MiB chunks, keeping them all, until an allocation
/// fails (which aborts: a trap the host must contain).
fn exhaust_memory() -> ! {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        // A non-zero fill writes every page, so the memory is really used.
        kept.push(black_box(vec![0xa5; CHUNK]));
        black_box(&kept);
    }
}

/// Recurses until the stack runs out. The work after the call keeps it from
/// becoming a loop.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let next = black_box(depth.wrapping_add(1));
    recurse(next).wrapping_add(black_box(depth))
}

/// The `/call` request body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Call {
    /// The tool to call.
    tool: String,
    /// Passed through as given, so hosts can be fed bad parameters too.
    #[serde(default = "empty_object")]
    params: Value,
    /// Call through `as-user` with this id.
    as_user: Option<String>,
}

/// The default `params`: `{}`.
fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// Calls a tool and reports the outcome as JSON with every structured field.
fn call(request: &Request) -> Response {
    let call: Call = match request.json() {
        Ok(call) => call,
        Err(err) => return Response::text(400, format!("bad /call body: {err}\n")),
    };
    let outcome = match &call.as_user {
        Some(user) => integrations()
            .as_user(user)
            .execute(&call.tool, &call.params),
        None => integrations().execute(&call.tool, &call.params),
    };
    match outcome {
        Ok(value) => Response::json(200, &json!({ "ok": value })),
        Err(err) => Response::json(200, &json!({ "error": describe(&err) })),
    }
}

/// The error as JSON: kind, message and the case's fields.
fn describe(err: &Error) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), err.kind().into());
    out.insert("message".into(), err.to_string().into());
    match err {
        Error::InsufficientScope { missing, auth_url } => {
            out.insert("missing".into(), json!(missing));
            out.insert("authUrl".into(), json!(auth_url));
        }
        Error::RateLimited { retry_after_ms } => {
            out.insert("retryAfterMs".into(), json!(retry_after_ms));
        }
        Error::Upstream { status, body } => {
            out.insert("status".into(), json!(status));
            out.insert("body".into(), json!(body));
        }
        _ => {}
    }
    Value::Object(out)
}

/// Tries `GET http://127.0.0.1:9/` (the discard port) through outbound
/// `wasi:http`, which the host should deny by default.
fn egress() -> Response {
    let request = OutgoingRequest::new(Fields::new());
    let configured = request.set_scheme(Some(&Scheme::Http)).is_ok()
        && request.set_authority(Some("127.0.0.1:9")).is_ok()
        && request.set_path_with_query(Some("/")).is_ok();
    if !configured {
        return Response::text(500, "could not build the outbound request\n");
    }
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(code) => return refused(format!("{code:?}")),
    };
    let outcome = loop {
        match future.get() {
            Some(outcome) => break outcome,
            None => future.subscribe().block(),
        }
    };
    match outcome {
        Ok(Ok(_response)) => Response::json(200, &json!({ "denied": false })),
        Ok(Err(code)) => refused(format!("{code:?}")),
        Err(()) => refused("the response was already taken".to_owned()),
    }
}

/// The `/egress` answer when no response came back.
fn refused(error: String) -> Response {
    Response::json(200, &json!({ "denied": true, "error": error }))
}

/// What ambient authority the guest has: environment variables and a
/// filesystem (expected: `{"fs": false}`).
fn environment() -> Response {
    let vars = std::env::vars().count();
    let fs = std::fs::read_dir("/").is_ok();
    Response::json(200, &json!({ "vars": vars, "fs": fs }))
}
