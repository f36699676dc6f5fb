//! Verifying end users' JWTs.
//!
//! An app's admin configures how its users prove who they are: a shared
//! HS256 secret, or the JWKS URL of an identity provider (RS256, PS256,
//! ES256 or EdDSA keys), optionally with a required issuer and audience.
//! [`JwtVerifier::verify`] checks a token against those [`JwtRules`] and
//! returns the user id, the `sub` claim.
//!
//! The algorithm is decided by the configuration and the JWKS key, never by
//! the token: the token header's `alg` must match what the key allows, so a
//! token signed with HS256 "using" an RSA public key as the secret (the
//! algorithm-confusion attack), or with `alg: none`, is refused.
//!
//! JWKS documents are fetched under the [`EgressPolicy`], capped in size,
//! cached per URL for [`JWKS_TTL`], and refetched early only when a token
//! names an unknown `kid`, at most once per [`JWKS_MIN_REFETCH`] per URL, so
//! forged key ids cannot make us hammer the identity provider.
//!
//! Errors say what was wrong and how to fix it, and never contain the token,
//! the secret, or any claim other than issuer and audience.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse, RSAKeyParameters,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use tokio::time::Instant;
use tracing::instrument;
use url::Url;

use crate::Secret;
use crate::egress::EgressPolicy;

/// Longest token accepted. Real ID and access tokens are 1 to 2 KiB; the cap
/// bounds the base64, JSON and signature work an unauthenticated caller can
/// make us do.
pub const MAX_JWT_LEN: usize = 8 * 1024;
/// Longest `sub` accepted: it becomes a user id in our store and logs.
pub const MAX_SUBJECT_LEN: usize = 256;
/// Longest `kid` accepted in a token header; real ones are short ids or
/// thumbprints.
const MAX_KID_LEN: usize = 256;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Largest JWKS document read. Real ones hold a few keys in a few KiB; the
/// cap keeps a misbehaving or hostile URL from filling memory.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys a JWKS may hold; each one is parsed and, for tokens without a
/// `kid`, may be tried.
const MAX_JWKS_KEYS: usize = 100;
/// Smallest RSA modulus accepted (2048 bits); shorter keys are forgeable.
const MIN_RSA_MODULUS_BYTES: usize = 256;
/// How long a fetched JWKS is used before it is fetched again.
pub const JWKS_TTL: Duration = Duration::from_secs(10 * 60);
/// Shortest interval between two fetches of one JWKS URL, whatever the
/// reason (unknown `kid`, failed fetch): forged key ids cannot turn us into
/// a load generator against the identity provider.
pub const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
/// How long past [`JWKS_TTL`] the last good JWKS is still used while the
/// JWKS host is failing, so a short outage there does not log everyone out.
const JWKS_MAX_STALE: Duration = Duration::from_secs(60 * 60);
/// Time allowed for one JWKS fetch, connect to last byte.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Distinct JWKS URLs cached before idle entries are dropped; bounds memory
/// if many apps are configured.
const MAX_CACHED_JWKS_URLS: usize = 1024;

/// Where the keys that sign an app's user tokens come from.
#[derive(Debug, Clone)]
pub enum JwtKeys {
    /// A secret shared with the app's backend; tokens must be HS256.
    Hs256(Secret),
    /// An identity provider's JSON Web Key Set; tokens must be RS256, PS256,
    /// ES256 or EdDSA, as the key named by the token's `kid` allows.
    Jwks(Url),
}

/// An app's rules for end-user JWTs.
#[derive(Debug, Clone)]
pub struct JwtRules {
    /// The signing keys.
    pub keys: JwtKeys,
    /// If set, the `iss` claim must equal it.
    pub issuer: Option<String>,
    /// If set, the `aud` claim must be or contain it.
    pub audience: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The token is longer than [`MAX_JWT_LEN`].
    #[error(
        "the JWT is longer than {max} bytes; send only the token itself (no `Bearer ` prefix), and keep large data out of its claims"
    )]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// The token is not a well-formed signed JWT.
    #[error("the value is not a well-formed signed JWT ({0}); send the token exactly as issued")]
    Malformed(&'static str),
    /// The header names an algorithm this app does not accept.
    #[error(
        "the JWT is signed with {found}, but this app accepts only {expected}; sign tokens with the algorithm of the configured key"
    )]
    AlgorithmRefused {
        /// The header's `alg`, or `an unsupported algorithm`.
        found: String,
        /// What the configuration allows.
        expected: String,
    },
    /// The signature does not verify with the configured key.
    #[error(
        "the JWT's signature does not verify: it was signed with a different key than the app's configured secret or JWKS, or it was altered; check the app's JWT settings"
    )]
    BadSignature,
    /// `exp` is in the past.
    #[error("the JWT has expired; sign in again to get a fresh token")]
    Expired,
    /// `nbf` is in the future.
    #[error("the JWT is not valid yet (`nbf` is in the future); check the issuer's clock")]
    NotYetValid,
    /// A required claim is absent or has the wrong type.
    #[error(
        "the JWT lacks a valid `{0}` claim, which this app requires; have the issuer include it"
    )]
    MissingClaim(String),
    /// `sub` is unusable as a user id.
    #[error("the JWT's `sub` claim {0}; it must be a non-empty string of at most 256 bytes")]
    BadSubject(&'static str),
    /// `iss` is not the configured issuer.
    #[error(
        "the JWT's issuer {found} is not {expected}, the issuer this app requires; fix the app's JWT issuer setting or the identity provider"
    )]
    WrongIssuer {
        /// The configured issuer.
        expected: String,
        /// The token's `iss`, shortened.
        found: String,
    },
    /// `aud` does not contain the configured audience.
    #[error(
        "the JWT's audience {found} does not include {expected}, the audience this app requires; fix the app's JWT audience setting or request tokens for that audience"
    )]
    WrongAudience {
        /// The configured audience, or `none` when the app sets none.
        expected: String,
        /// The token's `aud`, shortened.
        found: String,
    },
    /// No key in the JWKS matches the token.
    #[error(
        "no key in the app's JWKS matches the JWT's `kid`; if the identity provider just rotated keys, retry in 30 seconds, otherwise check the app's JWKS URL"
    )]
    UnknownKey,
    /// The JWKS could not be fetched or used.
    #[error("the app's JWKS is unavailable: {0}; check the JWKS URL in the app's JWT settings")]
    JwksUnavailable(String),
    /// The app's JWT configuration cannot verify anything.
    #[error("the app's JWT settings are unusable: {0}")]
    Misconfigured(&'static str),
}

/// Verifies end-user JWTs; holds the JWKS cache. Build one per process and
/// share it.
pub struct JwtVerifier {
    /// Fetches JWKS documents; build it with [`EgressPolicy::client`] so
    /// redirects are not followed and private addresses are refused after
    /// DNS resolution.
    client: reqwest::Client,
    /// Checked before every JWKS fetch.
    policy: EgressPolicy,
    /// One slot per JWKS URL; the async mutex makes concurrent fetches of
    /// one URL coalesce into one.
    cache: std::sync::Mutex<HashMap<Url, Arc<tokio::sync::Mutex<JwksSlot>>>>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.cache.lock().map(|c| c.len()).unwrap_or_default();
        f.debug_struct("JwtVerifier")
            .field("policy", &self.policy)
            .field("cached_jwks_urls", &cached)
            .finish_non_exhaustive()
    }
}

/// What we know about one JWKS URL.
#[derive(Default)]
struct JwksSlot {
    /// The usable keys of the last good fetch.
    keys: Option<Arc<[JwksKey]>>,
    /// When the last good fetch happened.
    fetched_at: Option<Instant>,
    /// When the last fetch was attempted, good or not (for throttling).
    attempted_at: Option<Instant>,
    /// Why the last attempt failed, if it did.
    last_error: Option<String>,
}

/// One verification key from a JWKS, with the algorithms it may verify.
struct JwksKey {
    kid: Option<String>,
    algorithms: &'static [Algorithm],
    key: DecodingKey,
}

/// The part of the token header we act on.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

/// The claims we read after jsonwebtoken has checked signature and times.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<serde_json::Value>,
}

/// The claims named in issuer and audience errors.
#[derive(Deserialize)]
struct IssAud {
    #[serde(default)]
    iss: Option<serde_json::Value>,
    #[serde(default)]
    aud: Option<serde_json::Value>,
}

const RSA_ANY: &[Algorithm] = &[Algorithm::RS256, Algorithm::PS256];
const RS256: &[Algorithm] = &[Algorithm::RS256];
const PS256: &[Algorithm] = &[Algorithm::PS256];
const ES256: &[Algorithm] = &[Algorithm::ES256];
const EDDSA: &[Algorithm] = &[Algorithm::EdDSA];

impl JwtVerifier {
    /// A verifier fetching JWKS documents with `client` (build it with
    /// [`EgressPolicy::client`]) under `policy`.
    pub fn new(client: reqwest::Client, policy: EgressPolicy) -> Self {
        Self {
            client,
            policy,
            cache: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Verifies `token` under `rules` and returns its `sub`, the user id.
    #[instrument(skip_all)]
    pub async fn verify(&self, rules: &JwtRules, token: &str) -> Result<String, JwtError> {
        if token.len() > MAX_JWT_LEN {
            return Err(JwtError::TooLong { max: MAX_JWT_LEN });
        }
        let header = parse_header(token)?;
        let alg = header_algorithm(header.alg.as_deref(), &rules.keys)?;
        let validation = validation(rules, alg);
        let decoded = match &rules.keys {
            JwtKeys::Hs256(secret) => {
                if secret.is_empty() {
                    return Err(JwtError::Misconfigured(
                        "the HS256 secret is empty; set a long random secret",
                    ));
                }
                let key = DecodingKey::from_secret(secret.expose().as_bytes());
                jsonwebtoken::decode::<Claims>(token, &key, &validation)
                    .map_err(|e| map_error(&e, rules, token))?
            }
            JwtKeys::Jwks(url) => {
                let keys = self.keys_for(url, header.kid.as_deref()).await?;
                decode_with_jwks(token, &keys, header.kid.as_deref(), alg, &validation).map_err(
                    |e| match e {
                        Decode::Jwt(e) => map_error(&e, rules, token),
                        Decode::Ours(e) => e,
                    },
                )?
            }
        };
        subject(decoded.claims)
    }

    /// The keys of the JWKS at `url`: cached, fetched when stale, refetched
    /// (throttled) when `kid` is not among them.
    async fn keys_for(&self, url: &Url, kid: Option<&str>) -> Result<Arc<[JwksKey]>, JwtError> {
        let slot = self.slot(url);
        let mut slot = slot.lock().await;
        let now = Instant::now();
        let fresh = slot.keys.is_some()
            && slot
                .fetched_at
                .is_some_and(|t| now.duration_since(t) < JWKS_TTL);
        let kid_missing = kid.is_some_and(|kid| {
            slot.keys
                .as_ref()
                .is_none_or(|keys| !keys.iter().any(|k| k.kid.as_deref() == Some(kid)))
        });
        let may_fetch = slot
            .attempted_at
            .is_none_or(|t| now.duration_since(t) >= JWKS_MIN_REFETCH);
        if (!fresh || kid_missing) && may_fetch {
            slot.attempted_at = Some(now);
            tracing::debug!(url = %display_url(url), fresh, kid_missing, "fetching JWKS");
            match self.fetch(url).await {
                Ok(keys) => {
                    slot.keys = Some(keys.into());
                    slot.fetched_at = Some(now);
                    slot.last_error = None;
                }
                Err(e) => {
                    tracing::warn!(url = %display_url(url), error = %e, "JWKS fetch failed");
                    slot.last_error = Some(e);
                }
            }
        }
        let usable = slot
            .fetched_at
            .is_some_and(|t| now.duration_since(t) < JWKS_TTL + JWKS_MAX_STALE);
        match (&slot.keys, usable) {
            (Some(keys), true) => Ok(Arc::clone(keys)),
            _ => Err(JwtError::JwksUnavailable(slot.last_error.clone().unwrap_or_else(|| {
                format!(
                    "it could not be fetched recently; the next attempt is allowed {} seconds after the last",
                    JWKS_MIN_REFETCH.as_secs()
                )
            }))),
        }
    }

    /// The cache slot of `url`, created if needed.
    fn slot(&self, url: &Url) -> Arc<tokio::sync::Mutex<JwksSlot>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if !cache.contains_key(url) && cache.len() >= MAX_CACHED_JWKS_URLS {
            // Drop the slots nobody is using right now.
            cache.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        Arc::clone(cache.entry(url.clone()).or_default())
    }

    /// Fetches and parses the JWKS at `url`. The error says why, for
    /// [`JwtError::JwksUnavailable`].
    async fn fetch(&self, url: &Url) -> Result<Vec<JwksKey>, String> {
        self.policy.check_url(url)?;
        let body = tokio::time::timeout(JWKS_FETCH_TIMEOUT, self.fetch_body(url))
            .await
            .map_err(|_| {
                format!(
                    "{} did not answer within {} seconds",
                    display_url(url),
                    JWKS_FETCH_TIMEOUT.as_secs()
                )
            })??;
        parse_jwks(&body).map_err(|e| format!("{}: {e}", display_url(url)))
    }

    async fn fetch_body(&self, url: &Url) -> Result<Vec<u8>, String> {
        let shown = display_url(url);
        let mut response = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("fetching {shown} failed: {}", error_chain(&e.without_url())))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(format!(
                "{shown} answered HTTP {status}; redirects are not followed, configure the final URL"
            ));
        }
        if !status.is_success() {
            return Err(format!("{shown} answered HTTP {status}"));
        }
        let too_big = || format!("{shown} sent more than {MAX_JWKS_BYTES} bytes");
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading {shown} failed: {}", error_chain(&e.without_url())))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Decodes the token header, refusing what we will not handle.
fn parse_header(token: &str) -> Result<RawHeader, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "a signed JWT has three dot-separated parts; encrypted JWTs are not supported",
        ));
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwtError::Malformed("the header is not base64url"))?;
    let header: RawHeader = serde_json::from_slice(&header)
        .map_err(|_| JwtError::Malformed("the header is not a JSON object"))?;
    if header.crit.is_some() {
        return Err(JwtError::Malformed(
            "the header has `crit` extensions, which are not supported",
        ));
    }
    if header.kid.as_ref().is_some_and(|k| k.len() > MAX_KID_LEN) {
        return Err(JwtError::Malformed("the header's `kid` is too long"));
    }
    Ok(header)
}

/// The header's algorithm, if the configuration's key type can accept it at
/// all. The key itself narrows it further.
fn header_algorithm(alg: Option<&str>, keys: &JwtKeys) -> Result<Algorithm, JwtError> {
    let expected = match keys {
        JwtKeys::Hs256(_) => "HS256 (the app has a shared secret)",
        JwtKeys::Jwks(_) => "RS256, PS256, ES256 or EdDSA (the app uses a JWKS)",
    };
    let alg = match alg {
        Some("HS256") => Algorithm::HS256,
        Some("RS256") => Algorithm::RS256,
        Some("PS256") => Algorithm::PS256,
        Some("ES256") => Algorithm::ES256,
        Some("EdDSA") => Algorithm::EdDSA,
        Some(other) => return Err(refused(shown_alg(other), expected)),
        None => return Err(JwtError::Malformed("the header has no `alg`")),
    };
    match (keys, alg) {
        (JwtKeys::Hs256(_), Algorithm::HS256) => Ok(alg),
        // A shared secret with a JWKS would let anyone holding the public
        // key forge tokens.
        (JwtKeys::Jwks(_), Algorithm::HS256) | (JwtKeys::Hs256(_), _) => {
            Err(refused(alg_name(alg), expected))
        }
        (JwtKeys::Jwks(_), _) => Ok(alg),
    }
}

fn refused(found: impl Into<String>, expected: &str) -> JwtError {
    JwtError::AlgorithmRefused {
        found: found.into(),
        expected: expected.to_string(),
    }
}

/// An algorithm name from a token header, fit to print.
fn shown_alg(alg: &str) -> String {
    if !alg.is_empty() && alg.len() <= 16 && alg.bytes().all(|b| b.is_ascii_alphanumeric()) {
        format!("`{alg}`")
    } else {
        "an unrecognised algorithm".to_string()
    }
}

fn alg_name(alg: Algorithm) -> String {
    format!("`{alg:?}`")
}

/// The checks jsonwebtoken makes for us after the signature.
fn validation(rules: &JwtRules, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECS;
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if let Some(issuer) = &rules.issuer {
        v.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &rules.audience {
        Some(audience) => {
            v.set_audience(&[audience]);
            required.push("aud");
        }
        // No audience configured: tokens for any audience are accepted.
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

enum Decode {
    Jwt(jsonwebtoken::errors::Error),
    Ours(JwtError),
}

/// Verifies `token` with the JWKS key its `kid` names, or, without a `kid`,
/// with each key that allows its algorithm.
fn decode_with_jwks(
    token: &str,
    keys: &[JwksKey],
    kid: Option<&str>,
    alg: Algorithm,
    validation: &Validation,
) -> Result<jsonwebtoken::TokenData<Claims>, Decode> {
    let expected_for = |key: &JwksKey| {
        let names: Vec<String> = key.algorithms.iter().map(|a| format!("{a:?}")).collect();
        format!("{} (the JWKS key's algorithm)", names.join(" or "))
    };
    if let Some(kid) = kid {
        let key = keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .ok_or(Decode::Ours(JwtError::UnknownKey))?;
        if !key.algorithms.contains(&alg) {
            return Err(Decode::Ours(refused(alg_name(alg), &expected_for(key))));
        }
        return jsonwebtoken::decode::<Claims>(token, &key.key, validation).map_err(Decode::Jwt);
    }
    let mut candidates = keys
        .iter()
        .filter(|k| k.algorithms.contains(&alg))
        .peekable();
    if candidates.peek().is_none() {
        return Err(Decode::Ours(match keys.first() {
            Some(key) => refused(alg_name(alg), &expected_for(key)),
            None => JwtError::UnknownKey,
        }));
    }
    let mut last = Decode::Ours(JwtError::BadSignature);
    for key in candidates {
        match jsonwebtoken::decode::<Claims>(token, &key.key, validation) {
            Ok(data) => return Ok(data),
            // Signature good, claims bad: no other key will do better.
            Err(e) if !matches!(e.kind(), ErrorKind::InvalidSignature) => {
                return Err(Decode::Jwt(e));
            }
            Err(e) => last = Decode::Jwt(e),
        }
    }
    Err(last)
}

/// Our error for a jsonwebtoken one.
fn map_error(e: &jsonwebtoken::errors::Error, rules: &JwtRules, token: &str) -> JwtError {
    match e.kind() {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            JwtError::MissingClaim(claim.clone())
        }
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer {
            expected: rules.issuer.clone().unwrap_or_else(|| "none".into()),
            found: peek_iss_aud(token).0,
        },
        ErrorKind::InvalidAudience => JwtError::WrongAudience {
            expected: rules.audience.clone().unwrap_or_else(|| "none".into()),
            found: peek_iss_aud(token).1,
        },
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            JwtError::AlgorithmRefused {
                found: "an algorithm".into(),
                expected: "the configured key's algorithm".into(),
            }
        }
        ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => {
            JwtError::JwksUnavailable("the key for this token is not a valid public key".into())
        }
        _ => JwtError::Malformed("its parts do not decode"),
    }
}

/// The token's `iss` and `aud`, shortened and printable, for error messages.
/// Called only after the signature has verified.
fn peek_iss_aud(token: &str) -> (String, String) {
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|p| serde_json::from_slice::<IssAud>(&p).ok());
    match claims {
        Some(c) => (shown_claim(c.iss.as_ref()), shown_claim(c.aud.as_ref())),
        None => ("(unreadable)".into(), "(unreadable)".into()),
    }
}

/// A claim value, quoted, without control characters, at most 200 chars.
fn shown_claim(value: Option<&serde_json::Value>) -> String {
    const MAX: usize = 200;
    let text = match value {
        None => return "(absent)".into(),
        Some(serde_json::Value::String(s)) => format!("{s:?}"),
        Some(other) => other.to_string(),
    };
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(MAX).collect();
    if text.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// The user id from verified claims.
fn subject(claims: Claims) -> Result<String, JwtError> {
    match claims.sub {
        Some(serde_json::Value::String(sub)) if sub.is_empty() => {
            Err(JwtError::BadSubject("is empty"))
        }
        Some(serde_json::Value::String(sub)) if sub.len() > MAX_SUBJECT_LEN => {
            Err(JwtError::BadSubject("is longer than 256 bytes"))
        }
        Some(serde_json::Value::String(sub)) => Ok(sub),
        Some(_) => Err(JwtError::BadSubject("is not a string")),
        None => Err(JwtError::MissingClaim("sub".into())),
    }
}

/// The usable signature keys of a JWKS document; other keys are skipped.
fn parse_jwks(body: &[u8]) -> Result<Vec<JwksKey>, String> {
    #[derive(Deserialize)]
    struct RawJwks {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawJwks = serde_json::from_slice(body)
        .map_err(|e| format!("not a JWKS document (a JSON object with `keys`): {e}"))?;
    if raw.keys.len() > MAX_JWKS_KEYS {
        return Err(format!("it holds more than {MAX_JWKS_KEYS} keys"));
    }
    let keys: Vec<JwksKey> = raw
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| usable_key(&jwk))
        .collect();
    if keys.is_empty() {
        return Err(
            "it holds no usable signature key (RSA of at least 2048 bits, P-256 or Ed25519)".into(),
        );
    }
    Ok(keys)
}

/// A JWK as a verification key, with the algorithms the key itself allows,
/// or `None` for keys we never verify with (symmetric, encryption, weak,
/// unknown curves and algorithms).
fn usable_key(jwk: &Jwk) -> Option<JwksKey> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    let declared = jwk.common.key_algorithm;
    let algorithms = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            if !rsa_is_strong(rsa) {
                return None;
            }
            match declared {
                None => RSA_ANY,
                Some(KeyAlgorithm::RS256) => RS256,
                Some(KeyAlgorithm::PS256) => PS256,
                Some(_) => return None,
            }
        }
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => match declared
        {
            None | Some(KeyAlgorithm::ES256) => ES256,
            Some(_) => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            match declared {
                None | Some(KeyAlgorithm::EdDSA) => EDDSA,
                Some(_) => return None,
            }
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(JwksKey {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key,
    })
}

fn rsa_is_strong(rsa: &RSAKeyParameters) -> bool {
    URL_SAFE_NO_PAD
        .decode(rsa.n.trim_end_matches('='))
        .is_ok_and(|n| n.iter().skip_while(|b| **b == 0).count() >= MIN_RSA_MODULUS_BYTES)
}

/// A URL for messages and logs: origin and path, no userinfo or query.
fn display_url(url: &Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

/// An error and its sources, joined, so the root cause (a refused address,
/// a TLS failure) is visible.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::engine::general_purpose::STANDARD;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const SECRET: &str = "canary-secret-8f3a2c1e9d7b6a5f4e3d2c1b0a9f8e7d";

    /// A 2048-bit RSA private key (PKCS#1 DER), generated for these tests
    /// only; it protects nothing.
    const RSA_DER_B64: &str = "MIIEowIBAAKCAQEAsTpmq0Mc/RS10/qoirGznS/KdKQgt4thtLQM0aQrEHQ75RoDUGJ3nIgDlFWaS2MJY47ZLLAtumCa0VbaTXqhEzi7k5BTqH4iuNS+DWLGt7iL6rI78m4GzlDQs+XG/O/1awjYTbxIj5EQaXxGjGXrM0FeOlOMyXHcj0LXWuuOv+TDekgXtV9VvqdExtJ0Asnxrv/1LXacT2AklweNEfeVbRx84MSl1UY9cXsy8wPEUH+WsOQyZqzonjKNlRltg4XXIHjIoW9emNVSlTmEF8L6r3R3QRd4gp+6aCccfBEpV97D9Di0PXHvkESxfrGUcMISFNIDoBKBVFVLrS2brkNDxQIDAQABAoIBAAOZm1jKv/W/HDNuYcqRcgPVIvBsHhMEZItyZdlDU7GdntLYTK1vFp1qIOJ8O6pg3GG2luBCwucIi9SJRl1xCoEUs7C7a4ueZk+pWKP2d/Fm8QanMLMLu50oxJiG6BwetrZCI3yuwK2T5YizAs7ayiSMJSEbrd4wrymE0tGQu+FXeFIXeNbv/SWgBtitHA35b4WrsH7i0f9bORKMLwy4Nsv6SZZcAXV964hqzc/obiClgqOYEuNYQlcNG4rNji0ieXLcpuRuTQv7TDj5Mlph2gRVdGcJuKNVSZzZW+GbMGb8w2vCxe63Ac23vEuOndRS58w8QWGPdp+lNX2Q1+vzZTECgYEA7QIIbeLUwJmik4dKt9E1VOZwCfar0SVijJio/0WfLX2YbZTtr15LEIvt9FiE+HM79UvvdFrGnz4+psrN+ly4wpAICKc+DsHO1fBZqmY5lCxlSRin8ayNMCjCBpDQhLAkbKRy5p/FwtvjdBpn1cfauv6ijs859E5KqeYbPrHWD9UCgYEAv24MbbKnBt5Qgyc2cZzvI3gwHwZFjUHjvjWbQQp0q8fiwVaXM7aC+5pYdkgk45lCa/Z8jto1q9IwdU1UJ8gEHD1Y52ILuK99ShCgVBPb6q7QKA3HOt34lwJkm9Ca+YWcXB1N9ntoGMIfLp/ewFqXm7X6Eg6OYjdBK8vpQuu7TDECgYBQo3JuwNCWPy+bdlqrtBirLEROf4jx/gBLyd0mDXAdMDBeiF9eXXy4woNRsZR8W+i4iv+L3R7bK3hxk2sFleqe+BZjq1Nn/fT7wW0glutcSMalWig6B/V5v0RUq4zmuG+ML1+QrCfDJsF6zUkq6Xa4TM7OPB+ByemJaOs4J5WniQKBgQCvKcO1nQO5BTQmznrC+xbXHeLqgJKj7ua15ddqbGbVyNF0mAdDCn5QO6s2kE0w9cwRfjn7fTAfSPWOYHPg8uTP8lKnZs/S7sF2REBwrrtMwyk1fWYQN4yAoW/uI7OrHtc0cpwkLkfSX86omyD4YezYTmvEmg0vUeAQc0W+NnXsAQKBgEN0LbJidTLnQyqeVCPH5BNTvb0NMrLT9Ip8Xy74G4Nu9ebSyPX+/VuLzv/hTh6MJAB4Ch4xmsmhXzlcYd5blRJ/qa0IN/xuLBcOx9KdG/KFogGxg/oEO4+Cb5TU5QEQwh/51lZR+kvky4KE3KVOSbPFexxJa3nUVMyyl/i9a4EA";
    /// A P-256 private key (PKCS#8 DER), for these tests only.
    const EC_DER_B64: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgeyPzF+0gvaq7tOhyLDaTlk4TYFzEflnD+zcvk4f+3NehRANCAASBN5vkfqlsBIZXF0nNpNbwe4d/u6gP7Q+G79jLVCokm+Wo0ZW/6HkdMpUJsbSMM2cb4JpDN/n+nOJneNpt1FzF";
    /// An Ed25519 private key (PKCS#8 DER), for these tests only.
    const ED_DER_B64: &str = "MC4CAQAwBQYDK2VwBCIEIFY2WaACdWHKnQqQ+fhtX0YK867gUGQv0VDtDEaDyHKW";

    fn rsa_key() -> EncodingKey {
        EncodingKey::from_rsa_der(&STANDARD.decode(RSA_DER_B64).unwrap())
    }
    fn ec_key() -> EncodingKey {
        EncodingKey::from_ec_der(&STANDARD.decode(EC_DER_B64).unwrap())
    }
    fn ed_key() -> EncodingKey {
        EncodingKey::from_ed_der(&STANDARD.decode(ED_DER_B64).unwrap())
    }

    /// The public JWK of `key`, with `kid` and, if given, `alg`.
    fn public_jwk(
        key: &EncodingKey,
        sign_alg: Algorithm,
        kid: &str,
        alg: bool,
    ) -> serde_json::Value {
        let mut jwk = Jwk::from_encoding_key(key, sign_alg).unwrap();
        jwk.common.key_id = Some(kid.into());
        if !alg {
            jwk.common.key_algorithm = None;
        }
        serde_json::to_value(jwk).unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims() -> serde_json::Value {
        json!({ "sub": "user-42", "exp": now() + 600, "iat": now() })
    }

    fn sign(
        alg: Algorithm,
        kid: Option<&str>,
        claims: &serde_json::Value,
        key: &EncodingKey,
    ) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(Into::into);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn hs(claims: &serde_json::Value) -> String {
        sign(
            Algorithm::HS256,
            None,
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn hs_rules() -> JwtRules {
        JwtRules {
            keys: JwtKeys::Hs256(Secret::new(SECRET)),
            issuer: None,
            audience: None,
        }
    }

    fn verifier() -> JwtVerifier {
        let policy = EgressPolicy {
            allow_private: true,
        };
        JwtVerifier::new(policy.client().unwrap(), policy)
    }

    /// Checks an error's text for leaks and returns it.
    fn no_leak(e: JwtError, token: &str) -> JwtError {
        let text = format!("{e} {e:?}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains(token), "{text}");
        assert!(!text.contains("user-42"), "{text}");
        e
    }

    #[tokio::test]
    async fn hs256_valid_token_yields_sub() {
        let v = verifier();
        assert_eq!(
            v.verify(&hs_rules(), &hs(&claims())).await.unwrap(),
            "user-42"
        );
    }

    #[tokio::test]
    async fn hs256_bad_tokens_are_refused() {
        let v = verifier();
        let rules = hs_rules();
        let t = now();
        let other = EncodingKey::from_secret(b"some-other-secret-of-good-length");
        let good = hs(&claims());
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged_payload = b64(&json!({ "sub": "admin", "exp": t + 600 }));
        parts[1] = &forged_payload;
        let tampered = parts.join(".");
        let none = format!("{}.{}.", b64(&json!({ "alg": "none" })), b64(&claims()));
        let none_caps = format!("{}.{}.", b64(&json!({ "alg": "NONE" })), b64(&claims()));
        type Case = (&'static str, String, fn(&JwtError) -> bool);
        let cases: Vec<Case> = vec![
            (
                "expired",
                hs(&json!({ "sub": "user-42", "exp": t - 120 })),
                |e| matches!(e, JwtError::Expired),
            ),
            (
                "not yet valid",
                hs(&json!({ "sub": "user-42", "exp": t + 600, "nbf": t + 300 })),
                |e| matches!(e, JwtError::NotYetValid),
            ),
            (
                "no exp",
                hs(&json!({ "sub": "user-42" })),
                |e| matches!(e, JwtError::MissingClaim(c) if c == "exp"),
            ),
            (
                "wrong secret",
                sign(Algorithm::HS256, None, &claims(), &other),
                |e| matches!(e, JwtError::BadSignature),
            ),
            (
                "no sub",
                hs(&json!({ "exp": t + 600 })),
                |e| matches!(e, JwtError::MissingClaim(c) if c == "sub"),
            ),
            (
                "empty sub",
                hs(&json!({ "sub": "", "exp": t + 600 })),
                |e| matches!(e, JwtError::BadSubject(_)),
            ),
            (
                "long sub",
                hs(&json!({ "sub": "x".repeat(257), "exp": t + 600 })),
                |e| matches!(e, JwtError::BadSubject(_)),
            ),
            (
                "numeric sub",
                hs(&json!({ "sub": 42, "exp": t + 600 })),
                |e| matches!(e, JwtError::MissingClaim(_) | JwtError::BadSubject(_)),
            ),
            ("alg none", none, |e| {
                matches!(e, JwtError::AlgorithmRefused { .. })
            }),
            ("alg NONE", none_caps, |e| {
                matches!(e, JwtError::AlgorithmRefused { .. })
            }),
            (
                "HS384",
                sign(
                    Algorithm::HS384,
                    None,
                    &claims(),
                    &EncodingKey::from_secret(SECRET.as_bytes()),
                ),
                |e| matches!(e, JwtError::AlgorithmRefused { .. }),
            ),
            ("tampered payload", tampered, |e| {
                matches!(e, JwtError::BadSignature)
            }),
            ("two parts", "abc.def".into(), |e| {
                matches!(e, JwtError::Malformed(_))
            }),
            ("garbage header", "!!!.e30.sig".into(), |e| {
                matches!(e, JwtError::Malformed(_))
            }),
            ("five parts (JWE)", "a.b.c.d.e".into(), |e| {
                matches!(e, JwtError::Malformed(_))
            }),
            (
                "too long",
                format!("{}.{}.x", "a".repeat(MAX_JWT_LEN), "b"),
                |e| matches!(e, JwtError::TooLong { .. }),
            ),
            (
                "crit header",
                format!(
                    "{}.{}.x",
                    b64(&json!({ "alg": "HS256", "crit": ["exp"] })),
                    b64(&claims())
                ),
                |e| matches!(e, JwtError::Malformed(_)),
            ),
        ];
        for (name, token, expected) in cases {
            let e = v.verify(&rules, &token).await.expect_err(name);
            let e = no_leak(e, &token);
            assert!(expected(&e), "{name}: got {e:?}");
        }
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_when_configured() {
        let v = verifier();
        let rules = JwtRules {
            issuer: Some("https://id.example.com/".into()),
            audience: Some("my-app".into()),
            ..hs_rules()
        };
        let t = now() + 600;
        let ok = hs(
            &json!({ "sub": "user-42", "exp": t, "iss": "https://id.example.com/", "aud": ["other", "my-app"] }),
        );
        assert_eq!(v.verify(&rules, &ok).await.unwrap(), "user-42");

        let bad_iss = hs(
            &json!({ "sub": "user-42", "exp": t, "iss": "https://evil.test/", "aud": "my-app" }),
        );
        let e = no_leak(v.verify(&rules, &bad_iss).await.unwrap_err(), &bad_iss);
        assert!(
            matches!(&e, JwtError::WrongIssuer { expected, found }
            if expected == "https://id.example.com/" && found.contains("evil.test")),
            "{e:?}"
        );
        assert!(e.to_string().contains("https://id.example.com/"));

        let bad_aud = hs(
            &json!({ "sub": "user-42", "exp": t, "iss": "https://id.example.com/", "aud": "other" }),
        );
        let e = no_leak(v.verify(&rules, &bad_aud).await.unwrap_err(), &bad_aud);
        assert!(
            matches!(&e, JwtError::WrongAudience { expected, .. } if expected == "my-app"),
            "{e:?}"
        );

        let no_iss = hs(&json!({ "sub": "user-42", "exp": t, "aud": "my-app" }));
        let e = v.verify(&rules, &no_iss).await.unwrap_err();
        assert!(
            matches!(&e, JwtError::MissingClaim(c) if c == "iss"),
            "{e:?}"
        );

        let no_aud = hs(&json!({ "sub": "user-42", "exp": t, "iss": "https://id.example.com/" }));
        let e = v.verify(&rules, &no_aud).await.unwrap_err();
        assert!(
            matches!(&e, JwtError::MissingClaim(c) if c == "aud"),
            "{e:?}"
        );

        // Without configured rules, iss and aud are not checked.
        assert_eq!(v.verify(&hs_rules(), &bad_iss).await.unwrap(), "user-42");
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let text = format!("{:?} {:?}", hs_rules(), verifier());
        assert!(!text.contains(SECRET), "{text}");
    }

    /// A JWKS host on 127.0.0.1 that counts requests; `body` can change.
    struct JwksServer {
        url: Url,
        hits: Arc<AtomicUsize>,
        body: Arc<std::sync::Mutex<String>>,
    }

    impl JwksServer {
        async fn start(body: String) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!(
                "http://{}/.well-known/jwks.json",
                listener.local_addr().unwrap()
            )
            .parse()
            .unwrap();
            let hits = Arc::new(AtomicUsize::new(0));
            let body = Arc::new(std::sync::Mutex::new(body));
            let (h, b) = (Arc::clone(&hits), Arc::clone(&body));
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    let (hits, body) = (Arc::clone(&h), Arc::clone(&b));
                    tokio::spawn(async move {
                        let mut request = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => request.extend_from_slice(&buf[..n]),
                            }
                        }
                        hits.fetch_add(1, Ordering::SeqCst);
                        let body = body.lock().unwrap().clone();
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = socket.write_all(response.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    });
                }
            });
            Self { url, hits, body }
        }

        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }

        fn rules(&self) -> JwtRules {
            JwtRules {
                keys: JwtKeys::Jwks(self.url.clone()),
                issuer: None,
                audience: None,
            }
        }
    }

    fn jwks(keys: &[serde_json::Value]) -> String {
        json!({ "keys": keys }).to_string()
    }

    /// Moves the cache's clock for `url` back by `by`.
    async fn age(v: &JwtVerifier, url: &Url, by: Duration) {
        let slot = v.slot(url);
        let mut slot = slot.lock().await;
        slot.fetched_at = slot.fetched_at.and_then(|t| t.checked_sub(by));
        slot.attempted_at = slot.attempted_at.and_then(|t| t.checked_sub(by));
    }

    #[tokio::test]
    async fn jwks_tokens_verify_with_the_key_their_kid_names() {
        let server = JwksServer::start(jwks(&[
            public_jwk(&rsa_key(), Algorithm::RS256, "rsa-1", true),
            public_jwk(&ec_key(), Algorithm::ES256, "ec-1", true),
            public_jwk(&ed_key(), Algorithm::EdDSA, "ed-1", false),
        ]))
        .await;
        let v = verifier();
        let rules = server.rules();
        for token in [
            sign(Algorithm::RS256, Some("rsa-1"), &claims(), &rsa_key()),
            sign(Algorithm::ES256, Some("ec-1"), &claims(), &ec_key()),
            sign(Algorithm::EdDSA, Some("ed-1"), &claims(), &ed_key()),
        ] {
            assert_eq!(v.verify(&rules, &token).await.unwrap(), "user-42");
        }
        assert_eq!(server.hits(), 1, "the JWKS is cached");

        // The header must name the key's algorithm: PS256 with an RS256 key,
        // or the RSA key's kid on an ES256 token, is refused.
        let ps = sign(Algorithm::PS256, Some("rsa-1"), &claims(), &rsa_key());
        let e = v.verify(&rules, &ps).await.unwrap_err();
        assert!(matches!(e, JwtError::AlgorithmRefused { .. }), "{e:?}");
        let swapped = sign(Algorithm::ES256, Some("rsa-1"), &claims(), &ec_key());
        let e = v.verify(&rules, &swapped).await.unwrap_err();
        assert!(matches!(e, JwtError::AlgorithmRefused { .. }), "{e:?}");

        // Expired and tampered tokens fail as with secrets.
        let expired = sign(
            Algorithm::RS256,
            Some("rsa-1"),
            &json!({ "sub": "user-42", "exp": now() - 120 }),
            &rsa_key(),
        );
        assert!(matches!(
            v.verify(&rules, &expired).await.unwrap_err(),
            JwtError::Expired
        ));
        let good = sign(Algorithm::RS256, Some("rsa-1"), &claims(), &rsa_key());
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = b64(&json!({ "sub": "admin", "exp": now() + 600 }));
        parts[1] = &forged;
        let e = v.verify(&rules, &parts.join(".")).await.unwrap_err();
        assert!(matches!(e, JwtError::BadSignature), "{e:?}");

        // The cache expires after the TTL.
        age(&v, &server.url, JWKS_TTL).await;
        assert_eq!(v.verify(&rules, &good).await.unwrap(), "user-42");
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn rsa_key_without_alg_accepts_rs256_and_ps256_and_kidless_tokens() {
        let server = JwksServer::start(jwks(&[public_jwk(
            &rsa_key(),
            Algorithm::RS256,
            "k",
            false,
        )]))
        .await;
        let v = verifier();
        for alg in [Algorithm::RS256, Algorithm::PS256] {
            let token = sign(alg, None, &claims(), &rsa_key());
            assert_eq!(v.verify(&server.rules(), &token).await.unwrap(), "user-42");
        }
    }

    #[tokio::test]
    async fn hs256_tokens_are_refused_with_a_jwks() {
        // The classic confusion attack: HMAC keyed with the public key. And a
        // symmetric key published in the JWKS is never used.
        let rsa_jwk = public_jwk(&rsa_key(), Algorithm::RS256, "rsa-1", true);
        let n = rsa_jwk["n"].as_str().unwrap().to_string();
        let server = JwksServer::start(jwks(&[
            rsa_jwk,
            json!({ "kty": "oct", "kid": "sym", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(SECRET) }),
        ]))
        .await;
        let v = verifier();
        let rules = server.rules();
        for token in [
            sign(
                Algorithm::HS256,
                Some("rsa-1"),
                &claims(),
                &EncodingKey::from_secret(n.as_bytes()),
            ),
            sign(
                Algorithm::HS256,
                Some("sym"),
                &claims(),
                &EncodingKey::from_secret(SECRET.as_bytes()),
            ),
            sign(
                Algorithm::HS256,
                None,
                &claims(),
                &EncodingKey::from_secret(SECRET.as_bytes()),
            ),
        ] {
            let e = no_leak(v.verify(&rules, &token).await.unwrap_err(), &token);
            assert!(matches!(e, JwtError::AlgorithmRefused { .. }), "{e:?}");
        }
        let none = format!(
            "{}.{}.",
            b64(&json!({ "alg": "none", "kid": "rsa-1" })),
            b64(&claims())
        );
        let e = v.verify(&rules, &none).await.unwrap_err();
        assert!(matches!(e, JwtError::AlgorithmRefused { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn unknown_kids_refetch_at_most_once_per_interval() {
        let server = JwksServer::start(jwks(&[public_jwk(
            &rsa_key(),
            Algorithm::RS256,
            "old",
            true,
        )]))
        .await;
        let v = verifier();
        let rules = server.rules();
        let old = sign(Algorithm::RS256, Some("old"), &claims(), &rsa_key());
        assert_eq!(v.verify(&rules, &old).await.unwrap(), "user-42");
        assert_eq!(server.hits(), 1);

        // Forged kids: no refetch within the interval after the last fetch,
        // then one, then nothing until the interval passes again.
        let forge_many = async |expected_hits: usize| {
            for i in 0..20 {
                let kid = format!("forged-{i}");
                let forged = sign(Algorithm::RS256, Some(&kid), &claims(), &rsa_key());
                let e = v.verify(&rules, &forged).await.unwrap_err();
                assert!(matches!(e, JwtError::UnknownKey), "{e:?}");
            }
            assert_eq!(server.hits(), expected_hits);
        };
        forge_many(1).await;
        age(&v, &server.url, JWKS_MIN_REFETCH).await;
        forge_many(2).await;
        assert_eq!(v.verify(&rules, &old).await.unwrap(), "user-42");
        assert_eq!(server.hits(), 2);

        // Key rotation: after the interval, a new kid is found by a refetch.
        *server.body.lock().unwrap() = jwks(&[
            public_jwk(&rsa_key(), Algorithm::RS256, "old", true),
            public_jwk(&ec_key(), Algorithm::ES256, "new", true),
        ]);
        let new = sign(Algorithm::ES256, Some("new"), &claims(), &ec_key());
        assert!(matches!(
            v.verify(&rules, &new).await.unwrap_err(),
            JwtError::UnknownKey
        ));
        assert_eq!(server.hits(), 2);
        age(&v, &server.url, JWKS_MIN_REFETCH).await;
        assert_eq!(v.verify(&rules, &new).await.unwrap(), "user-42");
        assert_eq!(server.hits(), 3);
    }

    #[tokio::test]
    async fn concurrent_cold_fetches_coalesce() {
        let server =
            JwksServer::start(jwks(&[public_jwk(&rsa_key(), Algorithm::RS256, "k", true)])).await;
        let v = Arc::new(verifier());
        let token = sign(Algorithm::RS256, Some("k"), &claims(), &rsa_key());
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (v, rules, token) = (Arc::clone(&v), server.rules(), token.clone());
            tasks.push(tokio::spawn(async move { v.verify(&rules, &token).await }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), "user-42");
        }
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn bad_jwks_sources_are_refused_with_a_reason() {
        let token = sign(Algorithm::RS256, Some("k"), &claims(), &rsa_key());

        // Plain http and loopback are refused without the opt-in.
        let server =
            JwksServer::start(jwks(&[public_jwk(&rsa_key(), Algorithm::RS256, "k", true)])).await;
        let strict = EgressPolicy::default();
        let v = JwtVerifier::new(strict.client().unwrap(), strict);
        let e = v.verify(&server.rules(), &token).await.unwrap_err();
        assert!(
            matches!(&e, JwtError::JwksUnavailable(m) if m.contains("https")),
            "{e:?}"
        );
        assert_eq!(server.hits(), 0);

        // Oversized documents.
        let big = JwksServer::start(format!(
            "{{\"keys\":[],\"pad\":\"{}\"}}",
            "x".repeat(MAX_JWKS_BYTES)
        ))
        .await;
        let v = verifier();
        let e = v.verify(&big.rules(), &token).await.unwrap_err();
        assert!(
            matches!(&e, JwtError::JwksUnavailable(m) if m.contains("bytes")),
            "{e:?}"
        );

        // No usable keys (a 1024-bit RSA key is too weak; symmetric keys are
        // never used); the failure is throttled too.
        let weak = JwksServer::start(jwks(&[
            json!({ "kty": "RSA", "kid": "k", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB" }),
            json!({ "kty": "oct", "kid": "s", "k": "c2VjcmV0" }),
        ]))
        .await;
        let e = v.verify(&weak.rules(), &token).await.unwrap_err();
        assert!(
            matches!(&e, JwtError::JwksUnavailable(m) if m.contains("usable")),
            "{e:?}"
        );
        let e = v.verify(&weak.rules(), &token).await.unwrap_err();
        assert!(matches!(e, JwtError::JwksUnavailable(_)), "{e:?}");
        assert_eq!(weak.hits(), 1);
    }
}
