//! [`FakeProvider`](super::FakeProvider)'s HTTP endpoints: authorize,
//! token (code exchange and refresh with rotation and reuse detection),
//! revoke, the redirecting token endpoint, and the protected API, each
//! switching on the fault the test set.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use url::Url;

use super::{
    ApiRequest, AuthorizeRequest, CODE_LIFETIME, ClientAuth, Ctx, FAKE_CLIENT_ID,
    FAKE_CLIENT_SECRET, Grant, Inner, PendingCode, Revocation, TokenMode, TokenRequest, find,
    header_str, parse_form, pkce_challenge, random_token,
};

/// An RFC 6749 5.2 error answer: `{"error", "error_description"}`.
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: &str) -> Self {
        Self {
            status,
            error,
            description: description.to_string(),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "error_description": self.description });
        let mut response = (self.status, axum::Json(body)).into_response();
        let h = response.headers_mut();
        h.insert(header::CACHE_CONTROL, "no-store".parse().unwrap());
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"fake-provider\"".parse().unwrap(),
            );
        }
        response
    }
}

fn invalid_grant(description: &str) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn invalid_request(description: &str) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// A 503 as a proxy in front of a provider would answer it.
fn html_503() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><head><title>503 Service Temporarily Unavailable</title></head>\
         <body><h1>503 Service Temporarily Unavailable</h1></body></html>",
    )
        .into_response()
}

/// Decodes `application/x-www-form-urlencoded` (RFC 6749 2.3.1 encodes the
/// client id and secret this way inside Basic credentials).
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (b, escaped) {
            (_, Some(decoded)) => {
                out.push(decoded);
                i += 2;
            }
            (b'+', None) => out.push(b' '),
            (b, None) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Authenticates the client of a token or revocation request. Returns how it
/// authenticated, and the error answer if it failed.
fn authenticate_client(
    headers: &HeaderMap,
    form: &[(String, String)],
) -> (ClientAuth, Result<(), OAuthError>) {
    let invalid = |d: &str| {
        Err(OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            d,
        ))
    };
    let basic = header_str(headers, header::AUTHORIZATION).and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("basic")
            .then(|| rest.trim().to_string())
    });
    let post_secret = find(form, "client_secret");
    match (basic, post_secret) {
        (Some(_), Some(_)) => (
            ClientAuth::Basic,
            invalid("more than one client authentication method"),
        ),
        (Some(encoded), None) => {
            let decoded = STANDARD
                .decode(encoded)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                return (ClientAuth::Basic, invalid("malformed Basic credentials"));
            };
            let (id, secret) = (form_decode(id), form_decode(secret));
            let body_id_differs = find(form, "client_id").is_some_and(|b| b != id);
            if id != FAKE_CLIENT_ID || secret != FAKE_CLIENT_SECRET || body_id_differs {
                return (ClientAuth::Basic, invalid("client authentication failed"));
            }
            (ClientAuth::Basic, Ok(()))
        }
        (None, Some(secret)) => {
            if find(form, "client_id") != Some(FAKE_CLIENT_ID) || secret != FAKE_CLIENT_SECRET {
                return (ClientAuth::Post, invalid("client authentication failed"));
            }
            (ClientAuth::Post, Ok(()))
        }
        (None, None) => (ClientAuth::None, invalid("client authentication required")),
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    header_str(headers, header::CONTENT_TYPE).is_some_and(|v| {
        v.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    })
}

/// Names that occur more than once (RFC 6749 3.1/3.2: not allowed).
fn repeated(pairs: &[(String, String)]) -> Option<&str> {
    pairs
        .iter()
        .enumerate()
        .find_map(|(i, (n, _))| pairs[..i].iter().any(|(m, _)| m == n).then_some(n.as_str()))
}

fn scopes_of(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

pub(super) async fn authorize(State(ctx): State<Ctx>, RawQuery(query): RawQuery) -> Response {
    let params = parse_form(query.unwrap_or_default().as_bytes());
    let mut s = ctx.state.lock().unwrap();
    let (response, location) = authorize_answer(&mut s, &params);
    s.authorize_requests.push(AuthorizeRequest {
        params,
        status: response.status().as_u16(),
        location,
    });
    response
}

/// Decides `/oauth/authorize`; returns the answer and its `Location`.
fn authorize_answer(s: &mut Inner, params: &[(String, String)]) -> (Response, Option<String>) {
    let page = |msg: &str| {
        let body = format!("<html><body><h1>Authorization error</h1><p>{msg}</p></body></html>");
        (
            (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                body,
            )
                .into_response(),
            None,
        )
    };
    if let Some(name) = repeated(params) {
        return page(&format!("parameter {name} repeated"));
    }
    let get = |n: &str| find(params, n);
    // Without a trustworthy client and redirect URI, never redirect.
    if get("client_id") != Some(FAKE_CLIENT_ID) {
        return page("unknown client_id");
    }
    let Some(redirect_uri) = get("redirect_uri") else {
        return page("redirect_uri missing");
    };
    let Ok(mut target) = Url::parse(redirect_uri) else {
        return page("redirect_uri is not a URL");
    };
    if !matches!(target.scheme(), "http" | "https") || target.fragment().is_some() {
        return page("redirect_uri must be http(s) without a fragment");
    }
    if !s.redirect_uris.is_empty() && !s.redirect_uris.iter().any(|u| u == redirect_uri) {
        return page("redirect_uri is not registered for this client");
    }

    let state = get("state");
    let mut redirect = |pairs: &[(&str, &str)]| {
        {
            let mut q = target.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, v);
            }
            if let Some(state) = state {
                q.append_pair("state", state);
            }
        }
        let location = target.to_string();
        (
            (StatusCode::FOUND, [(header::LOCATION, location.clone())]).into_response(),
            Some(location),
        )
    };

    if get("response_type") != Some("code") {
        return redirect(&error_pairs(
            "unsupported_response_type",
            "only response_type=code",
        ));
    }
    if state.is_none_or(str::is_empty) {
        return redirect(&error_pairs("invalid_request", "state is required"));
    }
    let challenge = get("code_challenge");
    match (challenge, get("code_challenge_method")) {
        (None, _) if s.require_pkce => {
            return redirect(&error_pairs("invalid_request", "code_challenge required"));
        }
        (None, Some(_)) => {
            return redirect(&error_pairs(
                "invalid_request",
                "code_challenge_method without code_challenge",
            ));
        }
        (Some(_), m) if m != Some("S256") => {
            return redirect(&error_pairs(
                "invalid_request",
                "code_challenge_method must be S256",
            ));
        }
        (Some(c), _) if !is_pkce_value(c) => {
            return redirect(&error_pairs("invalid_request", "malformed code_challenge"));
        }
        _ => {}
    }
    if s.deny {
        return redirect(&error_pairs("access_denied", "the user denied access"));
    }

    let scopes = s
        .granted_scopes
        .clone()
        .unwrap_or_else(|| scopes_of(get("scope").unwrap_or_default()));
    let code = random_token("code_");
    s.codes.insert(
        code.clone(),
        PendingCode {
            client_id: FAKE_CLIENT_ID.to_string(),
            redirect_uri: redirect_uri.to_string(),
            challenge: challenge.map(str::to_string),
            scopes,
            account: s.account.clone(),
            issued: Instant::now(),
            used: false,
            grant: None,
        },
    );
    redirect(&[("code", code.as_str())])
}

fn error_pairs<'a>(error: &'a str, description: &'a str) -> [(&'static str, &'a str); 2] {
    [("error", error), ("error_description", description)]
}

/// RFC 7636 4.1 / 4.2 syntax: 43 to 128 unreserved characters.
fn is_pkce_value(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

pub(super) async fn token(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let form = parse_form(&body);
    let (seq, mode) = {
        let mut s = ctx.state.lock().unwrap();
        let seq = s.next_seq;
        s.next_seq += 1;
        s.token_requests.push(TokenRequest {
            form: form.clone(),
            authorization: header_str(&headers, header::AUTHORIZATION),
            client_auth: authenticate_client(&headers, &form).0,
            status: None,
            response: None,
            seq,
        });
        let mode = s.token_mode;
        if s.token_mode_once {
            s.token_mode = TokenMode::Normal;
            s.token_mode_once = false;
        }
        (seq, mode)
    };

    let response = match mode {
        TokenMode::InvalidGrant => invalid_grant("the provider refused the grant").into_response(),
        TokenMode::ServerError => html_503(),
        TokenMode::Redirect => (
            StatusCode::FOUND,
            [(header::LOCATION, format!("{}/redirected/token", ctx.base))],
        )
            .into_response(),
        TokenMode::Slow(delay) => {
            tokio::time::sleep(delay).await;
            token_answer(&mut ctx.state.lock().unwrap(), &headers, &form, false)
        }
        TokenMode::Normal => token_answer(&mut ctx.state.lock().unwrap(), &headers, &form, false),
        TokenMode::OmitRefreshToken => {
            token_answer(&mut ctx.state.lock().unwrap(), &headers, &form, true)
        }
    };

    // Record the answer (the body is small and already in memory).
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    {
        let mut s = ctx.state.lock().unwrap();
        if let Some(r) = s.token_requests.iter_mut().find(|r| r.seq == seq) {
            r.status = Some(parts.status.as_u16());
            r.response = Some(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// Decides a token request in `Normal` (or `OmitRefreshToken`) mode.
fn token_answer(
    s: &mut Inner,
    headers: &HeaderMap,
    form: &[(String, String)],
    omit_refresh: bool,
) -> Response {
    match token_result(s, headers, form, omit_refresh) {
        Ok(body) => (
            StatusCode::OK,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            axum::Json(body),
        )
            .into_response(),
        Err(error) => error.into_response(),
    }
}

fn token_result(
    s: &mut Inner,
    headers: &HeaderMap,
    form: &[(String, String)],
    omit_refresh: bool,
) -> Result<Value, OAuthError> {
    if !is_form(headers) {
        return Err(invalid_request(
            "content type must be application/x-www-form-urlencoded",
        ));
    }
    if let Some(name) = repeated(form) {
        return Err(invalid_request(&format!("parameter {name} repeated")));
    }
    authenticate_client(headers, form).1?;
    match find(form, "grant_type") {
        Some("authorization_code") => exchange_code(s, form),
        Some("refresh_token") => refresh(s, form, omit_refresh),
        Some(_) => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code and refresh_token",
        )),
        None => Err(invalid_request("grant_type missing")),
    }
}

fn exchange_code(s: &mut Inner, form: &[(String, String)]) -> Result<Value, OAuthError> {
    let code = find(form, "code").ok_or_else(|| invalid_request("code missing"))?;
    let Some(pending) = s.codes.get_mut(code) else {
        return Err(invalid_grant("unknown authorization code"));
    };
    if pending.used {
        // RFC 6749 4.1.2: a replayed code revokes what it produced.
        if let Some(grant) = pending.grant {
            s.revoke_grant(grant);
        }
        return Err(invalid_grant("authorization code already used"));
    }
    // Single use from the first attempt on, successful or not.
    pending.used = true;
    if pending.client_id != FAKE_CLIENT_ID {
        return Err(invalid_grant("code issued to another client"));
    }
    if pending.issued.elapsed() > CODE_LIFETIME {
        return Err(invalid_grant("authorization code expired"));
    }
    if find(form, "redirect_uri") != Some(pending.redirect_uri.as_str()) {
        return Err(invalid_grant(
            "redirect_uri differs from the authorization request",
        ));
    }
    match (&pending.challenge, find(form, "code_verifier")) {
        (Some(_), None) => return Err(invalid_grant("code_verifier required")),
        (None, Some(_)) => return Err(invalid_grant("no code_challenge was sent")),
        (Some(challenge), Some(verifier)) => {
            if !is_pkce_value(verifier) || pkce_challenge(verifier) != *challenge {
                return Err(invalid_grant("code_verifier does not match code_challenge"));
            }
        }
        (None, None) => {}
    }
    let grant = Grant {
        client_id: pending.client_id.clone(),
        account: pending.account.clone(),
        scopes: pending.scopes.clone(),
        revoked: false,
    };
    let scopes = grant.scopes.clone();
    let id = s.grants.len();
    pending.grant = Some(id);
    s.grants.push(grant);
    Ok(s.issue(id, scopes, true))
}

fn refresh(
    s: &mut Inner,
    form: &[(String, String)],
    omit_refresh: bool,
) -> Result<Value, OAuthError> {
    let presented =
        find(form, "refresh_token").ok_or_else(|| invalid_request("refresh_token missing"))?;
    let Some(rt) = s.refresh_tokens.get(presented) else {
        return Err(invalid_grant("unknown or revoked refresh token"));
    };
    let (grant_id, used) = (rt.grant, rt.used);
    let Some(grant) = s.grants.get(grant_id) else {
        return Err(invalid_grant("unknown grant"));
    };
    if grant.revoked || grant.client_id != FAKE_CLIENT_ID {
        return Err(invalid_grant("grant revoked"));
    }
    if used {
        // Reuse detection: someone holds an old token; kill the whole grant.
        s.revoke_grant(grant_id);
        return Err(invalid_grant("refresh token reused; grant revoked"));
    }
    let scopes = match find(form, "scope") {
        None => grant.scopes.clone(),
        Some(requested) => {
            let requested = scopes_of(requested);
            if !requested.iter().all(|r| grant.scopes.contains(r)) {
                return Err(OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "scope exceeds the grant",
                ));
            }
            requested
        }
    };
    if !omit_refresh && let Some(rt) = s.refresh_tokens.get_mut(presented) {
        rt.used = true;
    }
    Ok(s.issue(grant_id, scopes, !omit_refresh))
}

pub(super) async fn revoke(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let form = parse_form(&body);
    let mut s = ctx.state.lock().unwrap();
    let (client_auth, authenticated) = authenticate_client(&headers, &form);
    let token = find(&form, "token").unwrap_or_default().to_string();
    let mut known = false;
    let response = if s.revocation_fails {
        html_503()
    } else if !is_form(&headers) {
        invalid_request("content type must be application/x-www-form-urlencoded").into_response()
    } else if let Err(error) = authenticated {
        error.into_response()
    } else if token.is_empty() {
        invalid_request("token missing").into_response()
    } else {
        let grant = s
            .access_tokens
            .get(&token)
            .map(|t| t.grant)
            .or_else(|| s.refresh_tokens.get(&token).map(|t| t.grant));
        if let Some(grant) = grant
            && s.grants
                .get(grant)
                .is_some_and(|g| g.client_id == FAKE_CLIENT_ID)
        {
            known = true;
            s.revoke_grant(grant);
        }
        StatusCode::OK.into_response()
    };
    s.revocations.push(Revocation {
        token,
        token_type_hint: find(&form, "token_type_hint").map(str::to_string),
        authorization: header_str(&headers, header::AUTHORIZATION),
        form,
        client_auth,
        known,
        status: response.status().as_u16(),
    });
    response
}

pub(super) async fn redirected(State(ctx): State<Ctx>) -> Response {
    ctx.state.lock().unwrap().redirect_followed += 1;
    axum::Json(json!({
        "access_token": "at_followed_a_redirect",
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": "rt_followed_a_redirect",
    }))
    .into_response()
}

pub(super) async fn api(
    State(ctx): State<Ctx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let authorization = header_str(&headers, header::AUTHORIZATION);
    let mut s = ctx.state.lock().unwrap();
    let response = api_answer(&mut s, &method, uri.path(), authorization.as_deref(), &body);
    s.api_requests.push(ApiRequest {
        method: method.to_string(),
        uri: uri.to_string(),
        authorization,
        body,
        status: response.status().as_u16(),
    });
    response
}

fn api_answer(
    s: &mut Inner,
    method: &Method,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> Response {
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
            axum::Json(json!({ "error": "invalid_token" })),
        )
            .into_response()
    };
    if std::mem::take(&mut s.fail_next_api_call) {
        return unauthorized();
    }
    let token = authorization.and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let Some((scopes, account)) = token.and_then(|t| s.access(t)) else {
        return unauthorized();
    };
    match (method, path) {
        (&Method::GET, "/api/me") => axum::Json(json!({
            "id": account.id,
            "login": account.login,
            "email": account.email,
        }))
        .into_response(),
        (&Method::POST, "/api/echo") => match serde_json::from_str::<Value>(body) {
            Ok(json) => axum::Json(json!({ "body": json, "scopes": scopes })).into_response(),
            Err(_) => (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "error": "invalid_json" })),
            )
                .into_response(),
        },
        _ => axum::Json(json!({ "ok": true, "path": path, "method": method.as_str() }))
            .into_response(),
    }
}
