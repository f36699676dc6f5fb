//! Connectors and their tools, loaded from data.
//!
//! A connector is one JSON file (built-in ones live in `host-api/catalog/` and
//! are embedded at build time; custom ones are posted by an app's admin). It
//! declares the provider's API host, how the credential is presented, and the
//! tools: name, HTTP method and path, JSON Schema of the parameters and the
//! scopes each needs. Everything is validated and the schemas compiled once,
//! at load, so a bad file fails start-up (or the admin's request), not the
//! first call.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

include!(concat!(env!("OUT_DIR"), "/catalog_files.rs"));

/// Longest connector slug.
const MAX_SLUG_LEN: usize = 48;
/// Most tools one connector may declare; bounds what an admin can post.
const MAX_TOOLS: usize = 256;

/// How the host presents a connector's credential to the provider.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum AuthScheme {
    /// `Authorization: Bearer <credential>` (the default, and what OAuth
    /// access tokens use).
    #[default]
    Bearer,
    /// A named header, with an optional prefix before the credential
    /// (e.g. `{"name": "Authorization", "prefix": "Token "}`).
    Header {
        /// The header name.
        name: String,
        /// Text placed before the credential.
        #[serde(default)]
        prefix: String,
    },
}

/// HTTP methods a tool may use.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET: parameters not in the path go to the query string.
    Get,
    /// POST: parameters not in the path or `query` go to a JSON body.
    Post,
    /// PUT: as POST.
    Put,
    /// PATCH: as POST.
    Patch,
    /// DELETE: parameters not in the path go to the query string.
    Delete,
}

impl Method {
    /// Whether parameters travel in the query string rather than a body.
    pub fn params_in_query(self) -> bool {
        matches!(self, Method::Get | Method::Delete)
    }

    /// The method as `http` knows it.
    pub fn as_http(self) -> http::Method {
        match self {
            Method::Get => http::Method::GET,
            Method::Post => http::Method::POST,
            Method::Put => http::Method::PUT,
            Method::Patch => http::Method::PATCH,
            Method::Delete => http::Method::DELETE,
        }
    }
}

/// One callable action of a connector.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolSpec {
    /// Stable name, `TOOLKIT_ACTION` in upper case, prefixed by the slug.
    pub name: String,
    /// What the tool does.
    pub description: String,
    /// HTTP method of the provider's API.
    pub method: Method,
    /// Path below the API base URL; `{param}` segments are filled from the
    /// parameters (percent-encoded) and removed from the rest.
    pub path: String,
    /// Parameters sent in the query string even for body methods.
    #[serde(default)]
    pub query: Vec<String>,
    /// JSON Schema of the parameters (an object schema).
    #[serde(default = "empty_object_schema")]
    pub parameters: Value,
    /// Scopes the connection must have been granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Whether repeating the call is harmless (only such calls are retried).
    #[serde(default)]
    pub idempotent: bool,
}

fn empty_object_schema() -> Value {
    serde_json::json!({ "type": "object" })
}

/// A connector definition as stored and served.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectorSpec {
    /// Lower-case identifier, also the toolkit name (`github`).
    pub slug: String,
    /// Name shown to people.
    pub display_name: String,
    /// What the connector reaches.
    #[serde(default)]
    pub description: String,
    /// The only host credentials for this connector are ever sent to.
    pub api_base_url: String,
    /// How the credential (API key or OAuth access token) is presented.
    #[serde(default)]
    pub auth: AuthScheme,
    /// The provider's OAuth 2.0 authorization server, for connectors whose
    /// connections are made through the connect flow. Without it the
    /// connector takes an API key configured by the admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthSpec>,
    /// Headers sent with every request (never credentials).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The connector's tools.
    pub tools: Vec<ToolSpec>,
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (`client_secret_basic`).
    #[default]
    ClientSecretBasic,
    /// Client id and secret in the form body (`client_secret_post`).
    ClientSecretPost,
}

/// A provider's OAuth 2.0 authorization server (RFC 6749), as declared by a
/// connector.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OAuthSpec {
    /// Where the user's browser is sent to consent.
    pub authorize_url: String,
    /// Where codes and refresh tokens are exchanged.
    pub token_url: String,
    /// RFC 7009 revocation endpoint, where the provider has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_url: Option<String>,
    /// PKCE S256 on the authorization request (on unless the provider
    /// rejects it).
    #[serde(default = "default_true")]
    pub pkce: bool,
    /// How scopes are joined in the authorization request (`" "` per RFC
    /// 6749; some providers use `","`).
    #[serde(default = "default_scope_separator")]
    pub scope_separator: String,
    /// The authorization request parameter carrying scopes (`scope`).
    #[serde(default = "default_scope_param")]
    pub scope_param: String,
    /// Scopes asked for on every connection (e.g. `offline_access`), in
    /// addition to the tools' scopes.
    #[serde(default)]
    pub default_scopes: Vec<String>,
    /// Extra authorization request parameters (e.g. Google's
    /// `access_type=offline`).
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    /// Client authentication at the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Path (below the API base URL) of an endpoint that describes the
    /// connected account, fetched once after connecting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_path: Option<String>,
    /// JSON pointer to the account's id in that answer (e.g. `/id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id_pointer: Option<String>,
    /// JSON pointer to a human-readable account name (e.g. `/login`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_name_pointer: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_scope_separator() -> String {
    " ".into()
}

fn default_scope_param() -> String {
    "scope".into()
}

/// The parsed OAuth endpoints of a connector.
#[derive(Debug, Clone)]
pub struct OAuthEndpoints {
    /// Authorization endpoint.
    pub authorize: url::Url,
    /// Token endpoint.
    pub token: url::Url,
    /// Revocation endpoint.
    pub revocation: Option<url::Url>,
}

impl OAuthEndpoints {
    /// Every endpoint, for policy checks.
    pub fn all(&self) -> impl Iterator<Item = &url::Url> {
        [&self.authorize, &self.token]
            .into_iter()
            .chain(self.revocation.as_ref())
    }
}

/// Parses an absolute http(s) URL without credentials or fragment.
fn endpoint_url(what: &str, text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{what} `{text}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(format!("{what} must be an absolute https URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{what} must not contain credentials or a fragment; client credentials are configured, not declared"
        ));
    }
    Ok(url)
}

/// Why a connector definition was refused.
#[derive(Debug, thiserror::Error)]
#[error("connector `{connector}`: {message}")]
pub struct CatalogError {
    /// The connector (slug or file name).
    pub connector: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// A tool ready to run: its spec plus its compiled parameter schema.
#[derive(Debug)]
pub struct Tool {
    /// The declaration.
    pub spec: ToolSpec,
    /// Path parameters, in order of appearance.
    pub path_params: Vec<String>,
    validator: jsonschema::Validator,
}

impl Tool {
    /// Checks `params` against the tool's schema; the error names the field.
    pub fn validate(&self, params: &Value) -> Result<(), String> {
        match self.validator.iter_errors(params).next() {
            None => Ok(()),
            Some(err) => {
                let at = err.instance_path().to_string();
                let at = if at.is_empty() {
                    "params".to_string()
                } else {
                    format!("params{at}")
                };
                Err(format!("{at}: {err}"))
            }
        }
    }
}

/// A validated connector with compiled tools.
#[derive(Debug)]
pub struct Connector {
    /// The declaration.
    pub spec: ConnectorSpec,
    /// Parsed base URL.
    pub base_url: url::Url,
    /// Tools by name.
    pub tools: BTreeMap<String, Arc<Tool>>,
    /// OAuth endpoints, for connectors connected through the connect flow.
    pub oauth: Option<OAuthEndpoints>,
}

impl Connector {
    /// Scopes a new connection asks for when the admin configured none:
    /// the connector's default scopes plus every tool's, each once.
    pub fn scopes_for_tools(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let declared = self.spec.oauth.iter().flat_map(|o| o.default_scopes.iter());
        let tools = self.tools.values().flat_map(|t| t.spec.scopes.iter());
        for scope in declared.chain(tools) {
            if !out.contains(scope) {
                out.push(scope.clone());
            }
        }
        out
    }

    /// Validates a definition and compiles its schemas.
    pub fn compile(spec: ConnectorSpec) -> Result<Self, CatalogError> {
        let fail = |message: String| CatalogError {
            connector: spec.slug.clone(),
            message,
        };
        let slug_ok = !spec.slug.is_empty()
            && spec.slug.len() <= MAX_SLUG_LEN
            && spec
                .slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && spec
                .slug
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase());
        if !slug_ok {
            return Err(fail(format!(
                "slug must be 1-{MAX_SLUG_LEN} characters of a-z, 0-9 and _, starting with a letter"
            )));
        }
        let base_url = url::Url::parse(&spec.api_base_url).map_err(|e| {
            fail(format!(
                "apiBaseUrl `{}` is not a URL: {e}",
                spec.api_base_url
            ))
        })?;
        if !matches!(base_url.scheme(), "https" | "http") || base_url.host_str().is_none() {
            return Err(fail(
                "apiBaseUrl must be an absolute https URL with a host".into(),
            ));
        }
        if !base_url.username().is_empty() || base_url.password().is_some() {
            return Err(fail(
                "apiBaseUrl must not contain credentials; configure them instead".into(),
            ));
        }
        let oauth = match &spec.oauth {
            None => None,
            Some(o) => {
                if o.scope_separator.is_empty() || o.scope_param.is_empty() {
                    return Err(fail(
                        "oauth.scopeSeparator and oauth.scopeParam must not be empty".into(),
                    ));
                }
                for pointer in [&o.account_id_pointer, &o.account_name_pointer]
                    .into_iter()
                    .flatten()
                {
                    if !pointer.starts_with('/') {
                        return Err(fail(format!(
                            "account pointer `{pointer}` must be a JSON pointer starting with `/`"
                        )));
                    }
                }
                if let Some(path) = &o.account_path {
                    parse_path(path).map_err(&fail)?;
                }
                Some(OAuthEndpoints {
                    authorize: endpoint_url("oauth.authorizeUrl", &o.authorize_url)
                        .map_err(&fail)?,
                    token: endpoint_url("oauth.tokenUrl", &o.token_url).map_err(&fail)?,
                    revocation: o
                        .revocation_url
                        .as_deref()
                        .map(|u| endpoint_url("oauth.revocationUrl", u))
                        .transpose()
                        .map_err(&fail)?,
                })
            }
        };
        if let AuthScheme::Header { name, .. } = &spec.auth
            && http::HeaderName::from_bytes(name.as_bytes()).is_err()
        {
            return Err(fail(format!(
                "auth header name `{name}` is not a valid header name"
            )));
        }
        for (name, value) in &spec.headers {
            let bad_name = http::HeaderName::from_bytes(name.as_bytes()).is_err();
            let bad_value = http::HeaderValue::from_str(value).is_err();
            if bad_name || bad_value || is_credential_header(name) {
                return Err(fail(format!(
                    "header `{name}` is not allowed (invalid, or a credential header: credentials are configured, not declared)"
                )));
            }
        }
        if spec.tools.len() > MAX_TOOLS {
            return Err(fail(format!("at most {MAX_TOOLS} tools per connector")));
        }
        let prefix = format!("{}_", spec.slug.to_ascii_uppercase());
        let mut tools = BTreeMap::new();
        for tool in &spec.tools {
            let tool_fail = |m: String| fail(format!("tool `{}`: {m}", tool.name));
            let name_ok = tool.name.starts_with(&prefix)
                && tool.name.len() > prefix.len()
                && tool
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !name_ok {
                return Err(tool_fail(format!(
                    "name must be upper case A-Z, 0-9, _ and start with `{prefix}`"
                )));
            }
            let path_params = parse_path(&tool.path).map_err(&tool_fail)?;
            let validator = jsonschema::validator_for(&tool.parameters)
                .map_err(|e| tool_fail(format!("parameters is not a valid JSON Schema: {e}")))?;
            let compiled = Tool {
                spec: tool.clone(),
                path_params,
                validator,
            };
            if tools
                .insert(tool.name.clone(), Arc::new(compiled))
                .is_some()
            {
                return Err(tool_fail("declared twice".into()));
            }
        }
        Ok(Self {
            spec,
            base_url,
            tools,
            oauth,
        })
    }
}

/// Headers that carry credentials: never declared in a catalog, never set by
/// a guest.
pub fn is_credential_header(name: &str) -> bool {
    [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "host",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Extracts `{name}` placeholders from a tool path and checks its shape.
fn parse_path(path: &str) -> Result<Vec<String>, String> {
    if !path.starts_with('/')
        || path.contains("://")
        || path.contains("..")
        || path.contains('?')
        || path.contains('#')
    {
        return Err(format!(
            "path `{path}` must start with `/` and contain no scheme, `..`, query or fragment"
        ));
    }
    let mut params = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let after = rest.get(open + 1..).unwrap_or_default();
        let close = after
            .find('}')
            .ok_or_else(|| format!("path `{path}` has an unclosed `{{`"))?;
        let name = after.get(..close).unwrap_or_default();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("path `{path}` has a bad placeholder `{{{name}}}`"));
        }
        params.push(name.to_string());
        rest = after.get(close + 1..).unwrap_or_default();
    }
    if rest.contains('}') {
        return Err(format!("path `{path}` has an unmatched `}}`"));
    }
    Ok(params)
}

/// A set of connectors with an index from tool name to connector.
#[derive(Debug, Default)]
pub struct Catalog {
    connectors: BTreeMap<String, Arc<Connector>>,
    tool_index: HashMap<String, String>,
}

impl Catalog {
    /// The connectors shipped with this build.
    pub fn builtin() -> Result<Self, CatalogError> {
        let mut catalog = Catalog::default();
        for (file, text) in BUILTIN_CONNECTORS {
            let spec: ConnectorSpec = serde_json::from_str(text).map_err(|e| CatalogError {
                connector: (*file).to_string(),
                message: e.to_string(),
            })?;
            let expected = format!("{}.json", spec.slug);
            if *file != expected {
                return Err(CatalogError {
                    connector: (*file).to_string(),
                    message: format!("file must be named {expected}"),
                });
            }
            catalog.insert(Connector::compile(spec)?)?;
        }
        Ok(catalog)
    }

    /// Adds a connector; its slug and tool names must be new.
    pub fn insert(&mut self, connector: Connector) -> Result<(), CatalogError> {
        let slug = connector.spec.slug.clone();
        if self.connectors.contains_key(&slug) {
            return Err(CatalogError {
                connector: slug,
                message: "a connector with this slug already exists".into(),
            });
        }
        for name in connector.tools.keys() {
            if self.tool_index.contains_key(name) {
                return Err(CatalogError {
                    connector: slug,
                    message: format!("tool `{name}` already exists"),
                });
            }
        }
        for name in connector.tools.keys() {
            self.tool_index.insert(name.clone(), slug.clone());
        }
        self.connectors.insert(slug, Arc::new(connector));
        Ok(())
    }

    /// A connector by slug.
    pub fn connector(&self, slug: &str) -> Option<&Arc<Connector>> {
        self.connectors.get(slug)
    }

    /// A tool and its connector, by tool name.
    pub fn tool(&self, name: &str) -> Option<(&Arc<Connector>, &Arc<Tool>)> {
        let connector = self.connectors.get(self.tool_index.get(name)?)?;
        Some((connector, connector.tools.get(name)?))
    }

    /// All connectors, by slug.
    pub fn connectors(&self) -> impl Iterator<Item = &Arc<Connector>> {
        self.connectors.values()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_connector_loads() {
        let catalog = Catalog::builtin().unwrap();
        assert!(catalog.connector("github").is_some());
        let (c, t) = catalog.tool("GITHUB_CREATE_ISSUE").unwrap();
        assert_eq!(c.spec.slug, "github");
        assert_eq!(t.path_params, ["owner", "repo"]);
    }

    #[test]
    fn validation_names_the_field() {
        let catalog = Catalog::builtin().unwrap();
        let (_, t) = catalog.tool("GITHUB_CREATE_ISSUE").unwrap();
        let err = t
            .validate(&serde_json::json!({"owner": "o", "repo": "r", "title": 5}))
            .unwrap_err();
        assert!(err.contains("/title"), "{err}");
        let err = t
            .validate(&serde_json::json!({"owner": "o", "repo": "r"}))
            .unwrap_err();
        assert!(err.contains("title"), "{err}");
        t.validate(&serde_json::json!({"owner": "o", "repo": "r", "title": "t"}))
            .unwrap();
    }

    #[test]
    fn bad_definitions_are_refused_with_reasons() {
        let base = || -> ConnectorSpec {
            serde_json::from_value(serde_json::json!({
                "slug": "acme", "displayName": "Acme", "apiBaseUrl": "https://api.acme.test",
                "auth": {"type": "bearer"},
                "tools": [{"name": "ACME_GET", "description": "d", "method": "GET", "path": "/things/{id}"}]
            }))
            .unwrap()
        };
        Connector::compile(base()).unwrap();
        let mut s = base();
        s.tools[0].name = "OTHER_GET".into();
        assert!(Connector::compile(s).unwrap_err().message.contains("ACME_"));
        let mut s = base();
        s.tools[0].path = "https://evil.test/x".into();
        assert!(Connector::compile(s).is_err());
        let mut s = base();
        s.headers.insert("Authorization".into(), "Bearer x".into());
        assert!(Connector::compile(s).is_err());
        let mut s = base();
        s.slug = "Bad Slug".into();
        assert!(Connector::compile(s).is_err());
        let mut s = base();
        s.tools[0].parameters = serde_json::json!({"type": 12});
        assert!(
            Connector::compile(s)
                .unwrap_err()
                .message
                .contains("JSON Schema")
        );
    }
}
