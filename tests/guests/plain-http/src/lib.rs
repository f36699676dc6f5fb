//! An ordinary `wasi:http` component, written the way anyone would without
//! this project's SDK: the `wasi` crate's bindings and `proxy::export!`.
//! It proves that stock components deploy unchanged.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// The body every request gets.
const GREETING: &[u8] = b"plain wasi:http ok";

/// The component's `wasi:http/incoming-handler` implementation.
struct PlainHttp;

impl Guest for PlainHttp {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::new();
        // Header names and values here are constants known to be valid.
        let _ = headers.append("content-type", b"text/plain");
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(200);
        let Ok(body) = response.body() else {
            return;
        };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(stream) = body.write() {
            let _ = stream.blocking_write_and_flush(GREETING);
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

wasi::http::proxy::export!(PlainHttp);
