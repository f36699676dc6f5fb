//! The smallest useful function: answers every request with a fixed greeting.
//!
//! Used by the throughput benchmark, so it does nothing else: no integrations,
//! no parsing, one short body.

use guest_sdk::http::{Request, Response};

/// Greets the caller; the request itself is not looked at.
fn hello(_request: Request) -> Response {
    Response::text(200, "Hello from runtime!\n")
}

guest_sdk::http_handler!(hello);
