//! The glue between `wasi:http/incoming-handler` and a plain
//! `fn(Request) -> Response`: read the request fully (bounded), call the
//! handler, send the response.

use crate::http::{MAX_REQUEST_BODY, Request, Response};
use crate::wit::wasi::http::types::{
    ErrorCode, Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use crate::wit::wasi::io::streams::StreamError;

/// Bytes asked for per `blocking-read` of the request body. Large enough to
/// keep host calls few, small enough not to over-allocate for tiny bodies.
const READ_CHUNK: usize = 64 * 1024;

/// Bytes passed per `blocking-write-and-flush`: the most that call is
/// guaranteed to accept in one go (the WASI streams contract).
const WRITE_CHUNK: usize = 4096;

/// Serves one request with `handler`. Called by the code that
/// [`http_handler!`](crate::http_handler) generates; not for direct use.
///
/// A body over [`MAX_REQUEST_BODY`] gets `413` and a body that cannot be
/// read gets `400`, both without calling the handler.
#[doc(hidden)]
pub fn __serve(
    request: IncomingRequest,
    response_out: ResponseOutparam,
    handler: fn(Request) -> Response,
) {
    let read = read_request(&request);
    // The request's child resources are gone; release the request itself
    // before the handler runs for however long it runs.
    drop(request);
    let response = match read {
        Ok(request) => handler(request),
        Err(refusal) => refusal,
    };
    send_response(response_out, response);
}

/// Converts the WASI request into a [`Request`], reading the whole body.
///
/// `Err` carries the response to send instead of calling the handler.
fn read_request(request: &IncomingRequest) -> Result<Request, Response> {
    let method = match request.method() {
        Method::Get => "GET".to_owned(),
        Method::Head => "HEAD".to_owned(),
        Method::Post => "POST".to_owned(),
        Method::Put => "PUT".to_owned(),
        Method::Delete => "DELETE".to_owned(),
        Method::Connect => "CONNECT".to_owned(),
        Method::Options => "OPTIONS".to_owned(),
        Method::Trace => "TRACE".to_owned(),
        Method::Patch => "PATCH".to_owned(),
        Method::Other(other) => other,
    };
    let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_owned());
    let headers = request.headers().entries();

    let declared_length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| std::str::from_utf8(value).ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > MAX_REQUEST_BODY as u64) {
        return Err(too_large());
    }
    let capacity = declared_length
        .and_then(|length| usize::try_from(length).ok())
        .unwrap_or(0)
        .min(MAX_REQUEST_BODY);
    // Per RFC 9112 a request with neither Content-Length nor
    // Transfer-Encoding has no body, and this runtime always sends the exact
    // Content-Length of the body it buffered: an empty body needs no reads
    // (and no host calls) at all.
    let chunked = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("transfer-encoding"));
    let body = if declared_length == Some(0) || (declared_length.is_none() && !chunked) {
        Vec::new()
    } else {
        read_body(request, capacity)?
    };

    let mut built = Request::new(method, path_with_query).with_body(body);
    for (name, value) in headers {
        built = built.with_header(name, value);
    }
    Ok(built)
}

/// Reads the request body to its end, refusing more than
/// [`MAX_REQUEST_BODY`] bytes. Never holds more than `MAX_REQUEST_BODY + 1`
/// bytes.
fn read_body(request: &IncomingRequest, capacity: usize) -> Result<Vec<u8>, Response> {
    let Ok(incoming_body) = request.consume() else {
        return Err(Response::text(
            500,
            "the request body was already consumed\n",
        ));
    };
    let Ok(stream) = incoming_body.stream() else {
        return Err(Response::text(
            500,
            "the request body stream is unavailable\n",
        ));
    };
    let mut body = Vec::with_capacity(capacity);
    let outcome = loop {
        // Ask for at most one byte past the limit: enough to notice an
        // oversized body without buffering it.
        let allowance = (MAX_REQUEST_BODY + 1).saturating_sub(body.len());
        let ask = READ_CHUNK.min(allowance) as u64;
        match stream.blocking_read(ask) {
            Ok(chunk) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_REQUEST_BODY {
                    break Err(too_large());
                }
            }
            Err(StreamError::Closed) => break Ok(body),
            Err(StreamError::LastOperationFailed(error)) => {
                break Err(Response::text(
                    400,
                    format!(
                        "the request body could not be read: {}\n",
                        error.to_debug_string()
                    ),
                ));
            }
        }
    };
    // The stream is a child of the body: it must go first.
    drop(stream);
    drop(incoming_body);
    outcome
}

/// The `413` sent for a body over [`MAX_REQUEST_BODY`].
fn too_large() -> Response {
    Response::text(
        413,
        format!("the request body is larger than {MAX_REQUEST_BODY} bytes\n"),
    )
}

/// Sends `response`: status and headers first, then the body in
/// [`WRITE_CHUNK`]-sized writes, then `finish`.
fn send_response(response_out: ResponseOutparam, response: Response) {
    let (status, headers, body) = response.into_parts();
    let outgoing = match start_response(status, headers) {
        Ok(outgoing) => outgoing,
        Err(reason) => {
            eprintln!("guest-sdk: the handler's response cannot be sent: {reason}");
            let fallback = Response::text(500, "the function returned an invalid response\n");
            let (status, headers, fallback_body) = fallback.into_parts();
            match start_response(status, headers) {
                Ok(outgoing) => return send_body(response_out, outgoing, &fallback_body),
                Err(reason) => {
                    ResponseOutparam::set(
                        response_out,
                        Err(ErrorCode::InternalError(Some(reason))),
                    );
                    return;
                }
            }
        }
    };
    send_body(response_out, outgoing, &body);
}

/// Builds the WASI response head.
fn start_response(status: u16, headers: Vec<(String, String)>) -> Result<OutgoingResponse, String> {
    let entries: Vec<(String, Vec<u8>)> = headers
        .into_iter()
        .map(|(name, value)| (name, value.into_bytes()))
        .collect();
    let fields = Fields::from_list(&entries).map_err(|error| {
        let names: Vec<&str> = entries.iter().map(|(name, _)| name.as_str()).collect();
        format!(
            "the headers [{}] were refused ({error:?}): a name or value is invalid or forbidden",
            names.join(", ")
        )
    })?;
    let outgoing = OutgoingResponse::new(fields);
    outgoing
        .set_status_code(status)
        .map_err(|()| format!("{status} is not a valid HTTP status code"))?;
    Ok(outgoing)
}

/// Hands the response head to the host, then writes and finishes the body.
fn send_body(response_out: ResponseOutparam, outgoing: OutgoingResponse, body: &[u8]) {
    let outgoing_body = outgoing.body();
    // The head goes out first, so the host can start answering while the
    // body is written (and so a large body cannot fill a pipe nobody reads).
    ResponseOutparam::set(response_out, Ok(outgoing));
    let Ok(outgoing_body) = outgoing_body else {
        eprintln!("guest-sdk: the response body was unavailable");
        return;
    };
    if let Err(reason) = write_all(&outgoing_body, body) {
        // Dropping the body without `finish` tells the host it is incomplete.
        eprintln!("guest-sdk: the response body could not be written: {reason}");
        return;
    }
    if let Err(error) = OutgoingBody::finish(outgoing_body, None) {
        eprintln!("guest-sdk: the response body could not be finished: {error:?}");
    }
}

/// Writes `body` to the outgoing body's stream, [`WRITE_CHUNK`] bytes at a
/// time. The stream is dropped before returning, as `finish` requires.
fn write_all(outgoing_body: &OutgoingBody, body: &[u8]) -> Result<(), String> {
    if body.is_empty() {
        return Ok(());
    }
    let stream = outgoing_body
        .write()
        .map_err(|()| "the body stream was already taken".to_owned())?;
    for chunk in body.chunks(WRITE_CHUNK) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(|error| match error {
                StreamError::Closed => "the client closed the connection".to_owned(),
                StreamError::LastOperationFailed(error) => error.to_debug_string(),
            })?;
    }
    Ok(())
}
