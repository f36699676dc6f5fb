//! A component that imports an interface the host does not provide
//! (`example:bad/secrets`, from `wit/world.wit`). It calls the import on
//! every request so the import cannot be dropped as unused.

mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "bad",
        generate_all,
    });
}

use bindings::exports::wasi::http::incoming_handler::Guest;
use bindings::wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// The component's `wasi:http/incoming-handler` implementation.
struct BadImport;

impl Guest for BadImport {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let secret = bindings::example::bad::secrets::get("api-key");
        let response = OutgoingResponse::new(Fields::new());
        let Ok(body) = response.body() else {
            return;
        };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(stream) = body.write() {
            let _ = stream.blocking_write_and_flush(secret.as_bytes());
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

bindings::export!(BadImport with_types_in bindings);
