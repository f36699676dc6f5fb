//! The OAuth 2.0 client side of a connection: the authorization request
//! (state + PKCE S256), the code exchange and refresh (RFC 6749, through the
//! `oauth2` crate), and revocation (RFC 7009).
//!
//! Every request goes through [`TokenHttp`]: the egress policy's client (no
//! redirects, guarded DNS), a bounded answer, and a status classification
//! that tells a refused grant from a provider that is down. Nothing here
//! stores anything; the broker (`broker/grant.rs`) decides what to keep.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use oauth2::basic::{BasicErrorResponseType, BasicTokenType};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, ExtraTokenFields,
    HttpRequest, HttpResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    RequestTokenError, StandardErrorResponse, StandardTokenResponse, TokenResponse, TokenUrl,
};
use tracing::instrument;

use crate::catalog::{ClientAuth, OAuthSpec};
use crate::egress::EgressPolicy;
use crate::secret::Secret;

/// Largest token endpoint answer read; token responses are small.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// How long one token endpoint request may take. Shorter than a provider
/// call: callers wait on it behind the refresh lock.
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest authorization code or state accepted from a callback.
pub const MAX_CALLBACK_PARAM: usize = 4096;

/// The app's OAuth client at one provider, with the endpoints in force.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: Secret,
    /// Authorization endpoint.
    pub authorize_url: url::Url,
    /// Token endpoint.
    pub token_url: url::Url,
    /// Revocation endpoint.
    pub revocation_url: Option<url::Url>,
    /// How the client authenticates at the token endpoint.
    pub client_auth: ClientAuth,
    /// Name of the client id parameter (`client_id`, or TikTok's
    /// `client_key`).
    pub client_id_param: String,
}

/// A started authorization request.
#[derive(Debug)]
pub struct AuthorizationStart {
    /// Where to send the user's browser.
    pub url: url::Url,
    /// The `state` value (random, 128+ bits); the flow is stored under its hash.
    pub state: Secret,
    /// The PKCE verifier, when PKCE is on.
    pub pkce_verifier: Option<Secret>,
}

/// Tokens from a code exchange or refresh.
#[derive(Debug)]
pub struct Tokens {
    /// Access token.
    pub access_token: Secret,
    /// New refresh token, if the provider sent one.
    pub refresh_token: Option<Secret>,
    /// Lifetime of the access token.
    pub expires_in: Option<Duration>,
    /// Scopes granted, if the provider said (otherwise: as requested).
    pub scopes: Option<Vec<String>>,
    /// The connection's own API host, for connectors whose token answer
    /// names one (Salesforce `instance_url`, Wrike `host`).
    pub instance_url: Option<url::Url>,
}

/// Why a token request failed, classified for what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The grant is no longer valid (`invalid_grant`): the user must connect
    /// again.
    #[error("the provider refused the grant (invalid_grant)")]
    InvalidGrant,
    /// The provider refused the request for another reason (bad client
    /// credentials, bad request); retrying will not help.
    #[error("the token endpoint refused the request: {0}")]
    Refused(String),
    /// The provider could not be reached, answered 5xx, 429 or a redirect,
    /// or sent something unreadable: keep the tokens and try later.
    #[error("the token endpoint is unavailable: {0}")]
    Transient(String),
}

/// Transport failure of [`TokenHttp`]. Never carries a body or header.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The URL is not allowed by the egress policy.
    #[error("{0}")]
    Policy(String),
    /// Connecting, sending or reading failed.
    #[error("{0}")]
    Io(&'static str),
    /// A status that means "not now" (5xx, 429) or a redirect, which is
    /// never followed.
    #[error("status {0}")]
    Status(u16),
    /// The answer exceeded [`MAX_TOKEN_RESPONSE`].
    #[error("answer larger than {MAX_TOKEN_RESPONSE} bytes")]
    TooLarge,
}

/// The HTTP client used for token, revocation and account requests.
#[derive(Debug, Clone)]
pub struct TokenHttp {
    client: reqwest::Client,
    policy: EgressPolicy,
}

/// Members of a token answer beyond RFC 6749's, kept only long enough to
/// read the declared instance URL.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ProviderExtras {
    #[serde(flatten)]
    rest: std::collections::BTreeMap<String, serde_json::Value>,
}

impl ExtraTokenFields for ProviderExtras {}

type ProviderTokenResponse = StandardTokenResponse<ProviderExtras, BasicTokenType>;
/// `oauth2::basic::BasicClient`, keeping the token answer's extra members.
type ProviderClient = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    ProviderTokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
>;
type ProviderError =
    RequestTokenError<TransportError, StandardErrorResponse<BasicErrorResponseType>>;

impl TokenHttp {
    /// A client under `policy`, sharing `client`'s connection pool.
    pub fn new(client: reqwest::Client, policy: EgressPolicy) -> Self {
        Self { client, policy }
    }

    /// Sends one request; answers that must not be parsed as OAuth errors
    /// (5xx, 429, 3xx) become [`TransportError::Status`].
    pub async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let url = url::Url::parse(&request.uri().to_string())
            .map_err(|_| TransportError::Policy("malformed URL".into()))?;
        self.policy
            .check_url(&url)
            .map_err(TransportError::Policy)?;
        let (parts, body) = request.into_parts();
        let mut response = self
            .client
            .request(parts.method, url)
            .headers(parts.headers)
            .body(body)
            .timeout(TOKEN_TIMEOUT)
            .send()
            .await
            .map_err(|e| {
                if let Some(refused) = crate::egress::refusal(&e) {
                    return TransportError::Policy(refused.to_string());
                }
                TransportError::Io(if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                })
            })?;
        let status = response.status();
        if status.is_server_error()
            || status.is_redirection()
            || status == http::StatusCode::TOO_MANY_REQUESTS
        {
            return Err(TransportError::Status(status.as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|_| TransportError::Io("answer was cut off"))?
        {
            if body.len() + chunk.len() > MAX_TOKEN_RESPONSE {
                return Err(TransportError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        // Some providers (GitHub, Slack) answer token errors with 200 and an
        // `error` field: report them as the 400 they mean, so they are parsed
        // as OAuth errors rather than as a token response.
        let mut status = status;
        if status.is_success()
            && let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(&body)
            && map.get("error").is_some_and(serde_json::Value::is_string)
            && !map.contains_key("access_token")
        {
            status = http::StatusCode::BAD_REQUEST;
        }
        let mut out = http::Response::builder().status(status);
        if let Some(headers) = out.headers_mut() {
            *headers = response.headers().clone();
        }
        out.body(body)
            .map_err(|_| TransportError::Io("malformed answer"))
    }
}

impl<'c> oauth2::AsyncHttpClient<'c> for TokenHttp {
    type Error = TransportError;
    type Future =
        Pin<Box<dyn Future<Output = Result<HttpResponse, TransportError>> + Send + Sync + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// A provider's token endpoint dialect: the client id under another name
/// (TikTok's `client_key`) and the token nested in the answer (Slack's
/// `authed_user`), translated so the `oauth2` crate sees RFC 6749.
struct Shaped<'a> {
    http: &'a TokenHttp,
    spec: &'a OAuthSpec,
}

impl Shaped<'_> {
    async fn send(&self, mut request: HttpRequest) -> Result<HttpResponse, TransportError> {
        if self.spec.client_id_param != "client_id" {
            let pairs: Vec<(String, String)> = url::form_urlencoded::parse(request.body())
                .map(|(k, v)| {
                    let k = if k == "client_id" {
                        self.spec.client_id_param.clone()
                    } else {
                        k.into_owned()
                    };
                    (k, v.into_owned())
                })
                .collect();
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            *request.body_mut() = body.into_bytes();
        }
        let mut response = self.http.send(request).await?;
        if let Some(pointer) = &self.spec.token_pointer
            && response.status().is_success()
            && let Ok(serde_json::Value::Object(mut top)) =
                serde_json::from_slice::<serde_json::Value>(response.body())
        {
            let nested = serde_json::Value::Object(top.clone());
            if let Some(serde_json::Value::Object(inner)) = nested.pointer(pointer) {
                for (k, v) in inner {
                    top.insert(k.clone(), v.clone());
                }
                // The nested token's own type, scope and expiry win.
                *response.body_mut() = serde_json::to_vec(&top).unwrap_or_default();
            }
        }
        Ok(response)
    }
}

impl<'c> oauth2::AsyncHttpClient<'c> for Shaped<'_> {
    type Error = TransportError;
    type Future =
        Pin<Box<dyn Future<Output = Result<HttpResponse, TransportError>> + Send + Sync + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// The connection's API host from a token answer, when the connector
/// declares one and it is acceptable.
fn instance_url(spec: &OAuthSpec, response: &ProviderTokenResponse) -> Option<url::Url> {
    let declared = spec.instance_url.as_ref()?;
    let raw = response
        .extra_fields()
        .rest
        .get(&declared.field)?
        .as_str()?;
    let url = if raw.contains("://") {
        url::Url::parse(raw).ok()?
    } else {
        url::Url::parse(&format!("https://{raw}")).ok()?
    };
    let host = url.host_str()?.to_ascii_lowercase();
    let suffix_ok = declared
        .host_suffixes
        .iter()
        .any(|s| host.ends_with(&s.to_ascii_lowercase()));
    // A loopback instance is only accepted where the egress policy would
    // allow it anyway (tests against local fakes); `check_url` still runs
    // on every call.
    let local = matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback());
    if !(suffix_ok || local)
        || !url.username().is_empty()
        || url.password().is_some()
        || !matches!(url.scheme(), "https" | "http")
    {
        tracing::warn!(field = %declared.field, "token answer named an instance host outside the declared suffixes; ignored");
        return None;
    }
    Some(url)
}

/// Provider-specific error codes that mean what `invalid_grant` means: the
/// code or refresh token is no longer valid (GitHub, Slack).
const GRANT_GONE: &[&str] = &[
    "bad_refresh_token",
    "bad_verification_code",
    "invalid_refresh_token",
];

fn classify(e: ProviderError) -> TokenError {
    match e {
        RequestTokenError::ServerResponse(r) => match r.error() {
            BasicErrorResponseType::InvalidGrant => TokenError::InvalidGrant,
            BasicErrorResponseType::Extension(code) if GRANT_GONE.contains(&code.as_str()) => {
                TokenError::InvalidGrant
            }
            other => TokenError::Refused(other.to_string()),
        },
        RequestTokenError::Request(TransportError::Policy(m)) => TokenError::Refused(m),
        RequestTokenError::Request(t) => TokenError::Transient(t.to_string()),
        // The body of an unparsable answer may hold a token: never shown.
        RequestTokenError::Parse(..) => TokenError::Transient("unreadable answer".into()),
        RequestTokenError::Other(m) => TokenError::Transient(m),
    }
}

/// Splits a granted-scope string on spaces and the connector's separator.
fn split_scopes(raw: &[String], separator: &str) -> Vec<String> {
    raw.iter()
        .flat_map(|s| s.split(separator))
        .flat_map(|s| s.split(' '))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl OAuthClient {
    fn base(&self) -> ProviderClient {
        ProviderClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.expose().to_string()))
            .set_auth_type(match self.client_auth {
                ClientAuth::ClientSecretBasic => AuthType::BasicAuth,
                ClientAuth::ClientSecretPost => AuthType::RequestBody,
            })
    }

    /// Builds the authorization request: a fresh `state`, PKCE S256 when
    /// the connector supports it, the scopes joined the provider's way.
    pub fn authorize(
        &self,
        spec: &OAuthSpec,
        redirect_uri: &url::Url,
        scopes: &[String],
    ) -> AuthorizationStart {
        let client = self
            .base()
            .set_auth_uri(AuthUrl::from_url(self.authorize_url.clone()))
            .set_redirect_uri(RedirectUrl::from_url(redirect_uri.clone()));
        let mut request = client.authorize_url(CsrfToken::new_random);
        if !scopes.is_empty() {
            request = request
                .add_extra_param(spec.scope_param.clone(), scopes.join(&spec.scope_separator));
        }
        for (k, v) in &spec.authorize_params {
            request = request.add_extra_param(k.clone(), v.clone());
        }
        let mut pkce_verifier = None;
        if spec.pkce {
            let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
            request = request.set_pkce_challenge(challenge);
            pkce_verifier = Some(Secret::new(verifier.secret().clone()));
        }
        let (mut url, state) = request.url();
        if spec.client_id_param != "client_id" {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let k = if k == "client_id" {
                        spec.client_id_param.clone()
                    } else {
                        k.into_owned()
                    };
                    (k, v.into_owned())
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        AuthorizationStart {
            url,
            state: Secret::new(state.secret().clone()),
            pkce_verifier,
        }
    }

    /// Exchanges an authorization code for tokens.
    #[instrument(skip_all, fields(token_url = %self.token_url))]
    pub async fn exchange_code(
        &self,
        http: &TokenHttp,
        spec: &OAuthSpec,
        redirect_uri: &url::Url,
        code: &Secret,
        pkce_verifier: Option<&Secret>,
    ) -> Result<Tokens, TokenError> {
        let client = self
            .base()
            .set_token_uri(TokenUrl::from_url(self.token_url.clone()))
            .set_redirect_uri(RedirectUrl::from_url(redirect_uri.clone()));
        let mut request = client.exchange_code(AuthorizationCode::new(code.expose().to_string()));
        if let Some(v) = pkce_verifier {
            request = request.set_pkce_verifier(PkceCodeVerifier::new(v.expose().to_string()));
        }
        let response: ProviderTokenResponse = request
            .request_async(&Shaped { http, spec })
            .await
            .map_err(classify)?;
        Ok(Self::tokens(response, spec))
    }

    /// Trades a refresh token for new tokens.
    #[instrument(skip_all, fields(token_url = %self.token_url))]
    pub async fn refresh(
        &self,
        http: &TokenHttp,
        spec: &OAuthSpec,
        refresh_token: &Secret,
    ) -> Result<Tokens, TokenError> {
        let client = self
            .base()
            .set_token_uri(TokenUrl::from_url(self.token_url.clone()));
        let token = RefreshToken::new(refresh_token.expose().to_string());
        let response: ProviderTokenResponse = client
            .exchange_refresh_token(&token)
            .request_async(&Shaped { http, spec })
            .await
            .map_err(classify)?;
        Ok(Self::tokens(response, spec))
    }

    fn tokens(response: ProviderTokenResponse, spec: &OAuthSpec) -> Tokens {
        let scopes = response.scopes().map(|s| {
            let raw: Vec<String> = s.iter().map(|s| s.to_string()).collect();
            split_scopes(&raw, &spec.scope_separator)
        });
        Tokens {
            access_token: Secret::new(response.access_token().secret().clone()),
            refresh_token: response
                .refresh_token()
                .map(|t| Secret::new(t.secret().clone())),
            expires_in: response.expires_in(),
            instance_url: instance_url(spec, &response),
            scopes,
        }
    }

    /// Revokes a token (RFC 7009). The outcome is reported, but callers
    /// delete their copy whatever it is.
    #[instrument(skip_all)]
    pub async fn revoke(
        &self,
        http: &TokenHttp,
        token: &Secret,
        hint: &str,
    ) -> Result<(), TokenError> {
        let Some(url) = &self.revocation_url else {
            return Ok(());
        };
        let mut builder = http::Request::builder()
            .method(http::Method::POST)
            .uri(url.as_str())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        // The serializer is not `Send`; the body is finished before any await.
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("token", token.expose());
            form.append_pair("token_type_hint", hint);
            match self.client_auth {
                ClientAuth::ClientSecretBasic => {
                    use base64::Engine as _;
                    let enc = |s: &str| {
                        url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                    };
                    let pair = format!(
                        "{}:{}",
                        enc(&self.client_id),
                        enc(self.client_secret.expose())
                    );
                    let basic = base64::engine::general_purpose::STANDARD.encode(pair);
                    builder = builder.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
                }
                ClientAuth::ClientSecretPost => {
                    form.append_pair(&self.client_id_param, &self.client_id);
                    form.append_pair("client_secret", self.client_secret.expose());
                }
            }
            form.finish().into_bytes()
        };
        let request = builder
            .body(body)
            .map_err(|_| TokenError::Refused("malformed revocation request".into()))?;
        let response = http.send(request).await.map_err(|e| match e {
            TransportError::Policy(m) => TokenError::Refused(m),
            other => TokenError::Transient(other.to_string()),
        })?;
        // RFC 7009: 200 whether or not the token was valid.
        if response.status().is_success() {
            Ok(())
        } else {
            Err(TokenError::Refused(format!(
                "revocation endpoint answered {}",
                response.status()
            )))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn spec() -> OAuthSpec {
        serde_json::from_value(serde_json::json!({
            "authorizeUrl": "https://auth.example.com/authorize",
            "tokenUrl": "https://auth.example.com/token",
            "scopeSeparator": ",",
            "authorizeParams": {"access_type": "offline"}
        }))
        .unwrap()
    }

    fn client() -> OAuthClient {
        OAuthClient {
            client_id: "cid".into(),
            client_secret: Secret::new("csecret"),
            authorize_url: "https://auth.example.com/authorize?tenant=x"
                .parse()
                .unwrap(),
            token_url: "https://auth.example.com/token".parse().unwrap(),
            revocation_url: None,
            client_auth: ClientAuth::ClientSecretBasic,
            client_id_param: "client_id".into(),
        }
    }

    #[test]
    fn authorization_requests_carry_state_pkce_and_joined_scopes() {
        let redirect: url::Url = "https://rt.example.com/v1/integrations/callback"
            .parse()
            .unwrap();
        let start = client().authorize(&spec(), &redirect, &["a".into(), "b".into()]);
        let q: std::collections::HashMap<String, String> =
            start.url.query_pairs().into_owned().collect();
        assert_eq!(q["tenant"], "x");
        assert_eq!(q["client_id"], "cid");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["scope"], "a,b");
        assert_eq!(q["access_type"], "offline");
        assert_eq!(q["redirect_uri"], redirect.as_str());
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["state"], start.state.expose());
        assert!(
            start.state.expose().len() >= 22,
            "state carries >= 128 bits"
        );
        assert!(!start.url.as_str().contains("csecret"));
        let verifier = start.pkce_verifier.unwrap();
        assert_ne!(q["code_challenge"], verifier.expose());
        let again = client().authorize(&spec(), &redirect, &[]);
        assert_ne!(again.state.expose(), start.state.expose());
    }

    #[test]
    fn granted_scopes_split_on_the_separator() {
        assert_eq!(
            split_scopes(&["a,b".into(), "c".into()], ","),
            ["a", "b", "c"]
        );
    }

    /// Serves one canned HTTP answer per connection on 127.0.0.1.
    async fn canned(status: &'static str, body: &'static str) -> url::Url {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = vec![0u8; 16 * 1024];
                let _ = socket.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        format!("http://{addr}/token").parse().unwrap()
    }

    async fn refresh_against(
        status: &'static str,
        body: &'static str,
    ) -> Result<Tokens, TokenError> {
        let policy = EgressPolicy {
            allow_private: true,
        };
        let http = TokenHttp::new(policy.client().unwrap(), policy);
        let mut c = client();
        c.token_url = canned(status, body).await;
        c.refresh(&http, &spec(), &Secret::new("rt")).await
    }

    /// A token endpoint that answers `body` and keeps what it was sent.
    async fn capturing(body: &'static str) -> (url::Url, Arc<Mutex<Vec<u8>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keep = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = vec![0u8; 16 * 1024];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                keep.lock().unwrap().extend_from_slice(&buf[..n]);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (format!("http://{addr}/token").parse().unwrap(), seen)
    }

    fn dialect_spec(pointer: Option<&str>) -> OAuthSpec {
        let mut spec = spec();
        spec.client_id_param = "client_key".into();
        spec.scope_separator = ",".into();
        spec.token_pointer = pointer.map(str::to_string);
        spec.instance_url = Some(crate::catalog::InstanceUrlSpec {
            field: "instance_url".into(),
            host_suffixes: vec![".salesforce.com".into()],
        });
        spec
    }

    #[tokio::test]
    async fn provider_dialects_are_translated() {
        let policy = EgressPolicy {
            allow_private: true,
        };
        let http = TokenHttp::new(policy.client().unwrap(), policy);
        // Slack's user token sits under `authed_user`; the client id goes
        // as `client_key` (TikTok); Salesforce names its instance host.
        let (url, seen) = capturing(
            r#"{"ok":true,"instance_url":"https://acme.my.salesforce.com","authed_user":{"access_token":"xoxp-1","token_type":"bearer","scope":"chat:write,users:read"}}"#,
        )
        .await;
        let mut c = client();
        c.client_auth = ClientAuth::ClientSecretPost;
        c.client_id_param = "client_key".into();
        c.token_url = url;
        let spec = dialect_spec(Some("/authed_user"));
        let tokens = c.refresh(&http, &spec, &Secret::new("rt")).await.unwrap();
        assert_eq!(tokens.access_token.expose(), "xoxp-1");
        assert_eq!(
            tokens.scopes.unwrap(),
            vec!["chat:write".to_string(), "users:read".to_string()]
        );
        assert_eq!(
            tokens.instance_url.unwrap().as_str(),
            "https://acme.my.salesforce.com/"
        );
        let sent = String::from_utf8_lossy(&seen.lock().unwrap()).to_string();
        assert!(sent.contains("client_key=cid"), "{sent}");
        assert!(!sent.contains("client_id="), "{sent}");

        // An instance host outside the declared suffixes is ignored.
        let (url, _) = capturing(
            r#"{"access_token":"a","token_type":"bearer","instance_url":"https://evil.example.com"}"#,
        )
        .await;
        c.token_url = url;
        let tokens = c.refresh(&http, &spec, &Secret::new("rt")).await.unwrap();
        assert!(tokens.instance_url.is_none());

        let redirect: url::Url = "https://rt.example.com/cb".parse().unwrap();
        let start = c.authorize(&spec, &redirect, &["a".into(), "b".into()]);
        let pairs: Vec<(String, String)> = start.url.query_pairs().into_owned().collect();
        assert!(pairs.contains(&("client_key".into(), "cid".into())));
        assert!(pairs.contains(&("scope".into(), "a,b".into())));
        assert!(!pairs.iter().any(|(k, _)| k == "client_id"));
    }

    #[tokio::test]
    async fn token_answers_are_classified() {
        assert!(matches!(
            refresh_against("400 Bad Request", r#"{"error":"invalid_grant"}"#).await,
            Err(TokenError::InvalidGrant)
        ));
        // GitHub's way: 200 with an error field.
        assert!(matches!(
            refresh_against("200 OK", r#"{"error":"bad_refresh_token"}"#).await,
            Err(TokenError::InvalidGrant)
        ));
        assert!(matches!(
            refresh_against("401 Unauthorized", r#"{"error":"invalid_client"}"#).await,
            Err(TokenError::Refused(_))
        ));
        assert!(matches!(
            refresh_against("503 Service Unavailable", "down").await,
            Err(TokenError::Transient(_))
        ));
        assert!(matches!(
            refresh_against("302 Found", "").await,
            Err(TokenError::Transient(_))
        ));
        let ok = refresh_against(
            "200 OK",
            r#"{"access_token":"at","token_type":"bearer","expires_in":60,"scope":"a,b"}"#,
        )
        .await
        .unwrap();
        assert_eq!(ok.access_token.expose(), "at");
        assert!(ok.refresh_token.is_none());
        assert_eq!(ok.scopes.unwrap(), ["a", "b"]);
        // The policy is applied before connecting.
        let strict = EgressPolicy::default();
        let http = TokenHttp::new(strict.client().unwrap(), strict);
        let mut c = client();
        c.token_url = "http://127.0.0.1:9/token".parse().unwrap();
        assert!(matches!(
            c.refresh(&http, &spec(), &Secret::new("rt")).await,
            Err(TokenError::Refused(_))
        ));
    }
}
