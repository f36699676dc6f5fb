//! Write runtime functions in Rust: an HTTP handler entry point and brokered
//! integrations.
//!
//! A function is a `cdylib` crate built for `wasm32-wasip2`. It declares one
//! handler with [`http_handler!`]; the handler receives a fully read
//! [`http::Request`] and returns an [`http::Response`]. Calls to third-party
//! APIs go through [`integrations()`]: the function names a tool and passes
//! JSON parameters, the host injects the credential and returns the result.
//! The function never sees a token.
//!
//! The component this produces targets the `runtime:integrations/http-function`
//! world, which is the standard `wasi:http/proxy` world plus the
//! `runtime:integrations/integrations` import.
//!
//! # Example
//!
//! ```no_run
//! use guest_sdk::http::{Request, Response};
//! use guest_sdk::{Error, integrations};
//! use serde_json::json;
//!
//! fn handle(req: Request) -> Response {
//!     if req.method() != "POST" {
//!         return Response::text(405, "use POST\n").with_header("allow", "POST");
//!     }
//!     let Some(channel) = req.query_param("channel") else {
//!         return Response::text(400, "missing ?channel=\n");
//!     };
//!     let params = json!({ "channel": channel, "text": req.text().unwrap_or_default() });
//!     match integrations().execute("SLACK_SEND_MESSAGE", &params) {
//!         Ok(result) => Response::json(200, &result),
//!         Err(Error::RateLimited { retry_after_ms }) => Response::text(429, "slow down\n")
//!             .with_header("retry-after", (retry_after_ms.div_ceil(1000)).to_string()),
//!         Err(err) => Response::json(502, &json!({ "error": err.kind(), "message": err.to_string() })),
//!     }
//! }
//!
//! guest_sdk::http_handler!(handle);
//! ```
#![deny(missing_docs)]

// Lets the generated export macro name this crate as `guest_sdk::...` both
// from user crates and from inside this one.
extern crate self as guest_sdk;

pub mod http;
mod integrations;
mod serve;

pub use integrations::{Error, Integrations, ToolInfo, User, integrations};

#[doc(hidden)]
pub use serve::__serve;

/// Raw bindings generated from `wit/` for the `http-function` world.
///
/// Hidden: functions should use the wrappers in this crate. It stays public
/// because [`http_handler!`] expands to code that names it, and because a
/// function that needs something the wrappers do not offer (outbound
/// `wasi:http`, for example) can still reach the generated API.
#[doc(hidden)]
// The generated code is FFI glue and necessarily uses `unsafe`.
#[allow(unsafe_code, missing_debug_implementations)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "http-function",
        pub_export_macro: true,
        default_bindings_module: "guest_sdk::wit",
        generate_all,
    });
}

/// Declares the function's HTTP handler.
///
/// Takes the path of a function with the signature
/// `fn(guest_sdk::http::Request) -> guest_sdk::http::Response` and exports it
/// as the component's `wasi:http/incoming-handler`. Use it exactly once per
/// crate.
///
/// The request body is read completely (up to
/// [`http::MAX_REQUEST_BODY`]; larger bodies get `413` without calling the
/// handler) before the handler runs, and the response body is written after
/// it returns.
///
/// ```no_run
/// use guest_sdk::http::{Request, Response};
///
/// fn hello(req: Request) -> Response {
///     Response::text(200, format!("hello from {}\n", req.path()))
/// }
///
/// guest_sdk::http_handler!(hello);
/// ```
#[macro_export]
macro_rules! http_handler {
    ($handler:path) => {
        #[doc(hidden)]
        struct __GuestSdkHttpHandler;

        impl $crate::wit::exports::wasi::http::incoming_handler::Guest for __GuestSdkHttpHandler {
            fn handle(
                request: $crate::wit::wasi::http::types::IncomingRequest,
                response_out: $crate::wit::wasi::http::types::ResponseOutparam,
            ) {
                $crate::__serve(request, response_out, $handler);
            }
        }

        $crate::wit::export!(__GuestSdkHttpHandler with_types_in $crate::wit);
    };
}
