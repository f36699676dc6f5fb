//! The browser's side of the connect flow: the connect page every
//! `authUrl` points at, and the OAuth callback.
//!
//! The page (`GET /v1/integrations/connect?state=…`) shows the person who
//! opened the link which app and which end user the connection will belong
//! to and which scopes the provider will be asked for, before anything
//! goes to the provider. Confirming it (`POST`, same path) binds the flow
//! to that browser with an HttpOnly, SameSite=Lax cookie and sends the
//! browser on to the provider; the callback refuses a flow whose browser
//! does not present that cookie. So a link forwarded to someone else, or a
//! provider URL lifted from the page, cannot attach their account to the
//! sender's user id.
//!
//! The confirm form is protected against cross-site submission by a
//! double-submit token: the page sets a SameSite=Strict cookie that a
//! cross-site POST does not carry, and the form repeats its value. The
//! page cannot be framed (`frame-ancestors 'none'`), so the button cannot
//! be clickjacked.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use host_api::Broker;
use host_api::broker::connect::{
    CALLBACK_PATH, CONNECT_PAGE_PATH, CallbackOutcome, CallbackParams, ConnectPage, FLOW_TTL,
};
use host_api::secret::Secret;
use rand::RngCore;
use serde::Deserialize;

use crate::state::AppState;

/// Prefix of the confirm form's double-submit cookie (the rest of the
/// name is the flow's, as for the binding cookie).
const CSRF_COOKIE_PREFIX: &str = "rt_csrf_";
/// Longest `Cookie` header value read.
const MAX_COOKIE_HEADER: usize = 8 * 1024;
/// What every page of the flow says about itself: nothing may frame,
/// script or embed it, and it is never cached or referred.
const PAGE_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'";

/// Query of the connect page.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    state: Option<Secret>,
}

/// The confirm form.
#[derive(Debug, Deserialize)]
pub struct ConfirmForm {
    state: Secret,
    csrf: Secret,
}

/// `GET /v1/integrations/connect?state=…`: the confirmation page.
pub async fn page(State(state): State<Arc<AppState>>, Query(q): Query<PageQuery>) -> Response {
    let Some(flow_state) = q.state else {
        return message_page(
            StatusCode::BAD_REQUEST,
            "The connect link is incomplete. Start connecting again from the app.",
        );
    };
    let view = match state.broker.connect_page(&flow_state).await {
        Ok(view) => view,
        Err(message) => return message_page(StatusCode::BAD_REQUEST, &message),
    };
    let mut token = [0u8; 32];
    rand::rng().fill_bytes(&mut token);
    let token = hex::encode(token);
    let name = csrf_cookie_name(flow_state.expose());
    let cookie = cookie(
        &name,
        &token,
        CONNECT_PAGE_PATH,
        "Strict",
        secure(&state.broker),
    );
    let mut response = html(StatusCode::OK, render(&view, flow_state.expose(), &token));
    append_cookie(&mut response, &cookie);
    response
}

/// `POST /v1/integrations/connect`: the person confirmed; bind the flow to
/// this browser and go to the provider.
pub async fn confirm(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(form): Form<ConfirmForm>,
) -> Response {
    let csrf = cookie_value(&headers, &csrf_cookie_name(form.state.expose()));
    let csrf_ok = csrf.is_some_and(|c| {
        use subtle::ConstantTimeEq;
        let (a, b) = (c.as_bytes(), form.csrf.expose().as_bytes());
        !a.is_empty() && a.len() == b.len() && bool::from(a.ct_eq(b))
    });
    if !csrf_ok {
        return message_page(
            StatusCode::FORBIDDEN,
            "This confirmation did not come from the connect page in this browser. Open the connect link again and press Continue there.",
        );
    }
    let name = Broker::binding_cookie_name(form.state.expose());
    let presented = cookie_value(&headers, &name).map(|v| Secret::new(v.to_string()));
    match state
        .broker
        .confirm_connect(&form.state, presented.as_ref())
        .await
    {
        Ok(confirmed) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(confirmed.provider_url.expose()) {
                response.headers_mut().insert(header::LOCATION, v);
            }
            no_store(&mut response);
            let binding = cookie(
                &confirmed.cookie_name,
                confirmed.cookie_value.expose(),
                CALLBACK_PATH,
                "Lax",
                secure(&state.broker),
            );
            append_cookie(&mut response, &binding);
            response
        }
        Err(message) => message_page(StatusCode::BAD_REQUEST, &message),
    }
}

/// `GET /v1/integrations/callback`: where providers send the browser back.
pub async fn callback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Query<CallbackParams>,
) -> Response {
    let name = params
        .state
        .as_ref()
        .map(|s| Broker::binding_cookie_name(s.expose()));
    let binding = name
        .as_deref()
        .and_then(|n| cookie_value(&headers, n))
        .map(|v| Secret::new(v.to_string()));
    let mut response = match state.broker.callback(params, binding.as_ref()).await {
        CallbackOutcome::Redirect(url) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(url.as_str()) {
                response.headers_mut().insert(header::LOCATION, v);
            }
            no_store(&mut response);
            response
        }
        CallbackOutcome::Page { status, message } => message_page(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            &message,
        ),
    };
    // The flow is spent either way: its binding cookie is of no more use.
    if let Some(name) = name {
        append_cookie(
            &mut response,
            &format!("{name}=; Path={CALLBACK_PATH}; Max-Age=0; HttpOnly; SameSite=Lax"),
        );
    }
    response
}

fn csrf_cookie_name(state: &str) -> String {
    let binding = Broker::binding_cookie_name(state);
    let suffix = binding.rsplit('_').next().unwrap_or_default();
    format!("{CSRF_COOKIE_PREFIX}{suffix}")
}

/// Cookies are `Secure` wherever browsers reach the server over https.
fn secure(broker: &Broker) -> bool {
    broker.public_url().scheme() == "https"
}

fn cookie(name: &str, value: &str, path: &str, same_site: &str, secure: bool) -> String {
    let max_age = FLOW_TTL.as_secs();
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}"
    )
}

fn append_cookie(response: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The value of cookie `name` in the request, if any.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.len() <= MAX_COOKIE_HEADER)
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn no_store(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response();
    no_store(&mut response);
    response
}

fn message_page(status: StatusCode, message: &str) -> Response {
    html(
        status,
        layout("Connect an account", &format!("<p>{}</p>", escape(message))),
    )
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta name=\"referrer\" content=\"no-referrer\"><title>{}</title><style>body{{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#1a1a1a}}.who{{background:#f3f4f6;border-radius:.5rem;padding:.75rem 1rem}}code{{font-size:.95em}}button{{font-size:1rem;padding:.6rem 1.2rem;border-radius:.4rem;border:0;background:#1f4fd1;color:#fff;cursor:pointer}}.note{{color:#555;font-size:.9rem}}</style></head><body>{}</body></html>",
        escape(title),
        body
    )
}

/// The confirmation page of one flow.
fn render(view: &ConnectPage, state: &str, csrf: &str) -> String {
    let name = escape(&view.toolkit_name);
    let owner = match &view.user_id {
        Some(user) => format!(
            "the end user <code>{}</code> of the app <code>{}</code>",
            escape(user),
            escape(&view.app)
        ),
        None => format!(
            "the app <code>{}</code> itself: its shared account, used for every user of the app",
            escape(&view.app)
        ),
    };
    let account = |a: &host_api::store::AccountInfo| {
        a.name
            .as_deref()
            .or(a.id.as_deref())
            .map(escape)
            .unwrap_or_else(|| "the account it has now".into())
    };
    let reconnect = match (&view.reconnect_account, view.switch_account) {
        (Some(a), false) => format!(
            "<p>This re-authorizes the existing connection to <strong>{}</strong>. Sign in to that same {name} account: another account is refused.</p>",
            account(a)
        ),
        (Some(a), true) => format!(
            "<p>An admin asked to <strong>switch</strong> this connection from <strong>{}</strong> to the account you sign in with.</p>",
            account(a)
        ),
        (None, _) => String::new(),
    };
    let scopes = if view.scopes.is_empty() {
        "<p>No specific permissions are requested.</p>".to_string()
    } else {
        let items: String = view
            .scopes
            .iter()
            .map(|s| format!("<li><code>{}</code></li>", escape(s)))
            .collect();
        format!("<p>{name} will be asked for these permissions:</p><ul>{items}</ul>")
    };
    let body = format!(
        "<h1>Connect {name}</h1><div class=\"who\"><p>The {name} account you sign in with next will be connected to {owner}.</p></div>{reconnect}{scopes}<form method=\"post\" action=\"{CONNECT_PAGE_PATH}\"><input type=\"hidden\" name=\"state\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Continue to {name}</button></form><p class=\"note\">If you did not ask for this, or the user named above is not you, close this page: nothing has been shared. This link works in one browser only and expires 15 minutes after it was made (request <code>{}</code>).</p>",
        escape(state),
        escape(csrf),
        escape(&view.request_id)
    );
    layout(&format!("Connect {}", view.toolkit_name), &body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("rt_connect_ab=1; rt_connect_abc=2;x=3"),
        );
        assert_eq!(cookie_value(&h, "rt_connect_abc"), Some("2"));
        assert_eq!(cookie_value(&h, "x"), Some("3"));
        assert_eq!(cookie_value(&h, "rt_connect_a"), None);
    }

    #[test]
    fn the_page_escapes_everything_it_shows() {
        let view = ConnectPage {
            app: "a<b".into(),
            toolkit: "fake".into(),
            toolkit_name: "<script>".into(),
            user_id: Some("\"><img src=x>".into()),
            scopes: vec!["read&write".into()],
            reconnect_account: None,
            switch_account: false,
            request_id: "cr_1".into(),
            expires_at_ms: 0,
        };
        let page = render(&view, "st\"ate", "tok");
        assert!(!page.contains("<script>"));
        assert!(!page.contains("<img"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("read&amp;write"));
        assert!(page.contains("value=\"st&quot;ate\""));
    }
}
