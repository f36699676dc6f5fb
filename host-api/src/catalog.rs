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
    /// HTTP Basic: the configured API key is `user:password`.
    Basic,
}

/// A data platform a connector queries with SQL.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DataPlatform {
    /// PostgreSQL through its wire protocol; the credential is a
    /// connection string.
    Postgres,
    /// Snowflake SQL API v2.
    Snowflake,
    /// Databricks SQL Statement Execution API.
    Databricks,
    /// BigQuery `jobs.query`.
    #[serde(rename = "bigquery")]
    BigQuery,
}

/// The data side of a connector.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataSpec {
    /// The platform.
    pub platform: DataPlatform,
    /// Scopes the generated tools need (e.g. BigQuery's read-only scope).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Each account has its own host (Snowflake accounts, Databricks
    /// workspaces): calls and connect flows are refused until the app's
    /// admin configured `apiBaseUrl` (and, for OAuth, the endpoints).
    #[serde(default)]
    pub per_app_host: bool,
}

/// What a generated data tool does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataTool {
    /// Run SQL with bound parameters.
    Query,
    /// List databases (projects, catalogs).
    ListDatabases,
    /// List schemas (datasets).
    ListSchemas,
    /// List tables of a schema.
    ListTables,
    /// Describe a table's columns.
    DescribeTable,
}

/// Which kind of connection a connector makes, by default.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorKind {
    /// Each end user connects their own account.
    #[default]
    AppUser,
    /// The builder's one account serves every caller.
    Shared,
    /// A data platform queried with SQL.
    Data,
}

/// How a provider reports failures inside a 2xx answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorsSpec {
    /// The answer failed when this member is `false` (Slack's `/ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok_pointer: Option<String>,
    /// The answer failed when this member is a non-empty array (GraphQL's
    /// `/errors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors_pointer: Option<String>,
    /// Where the message is (for `errorsPointer`, within the first error;
    /// `/message` when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_pointer: Option<String>,
    /// Messages that mean the credential was refused (treated as a 401).
    #[serde(default)]
    pub unauthorized: Vec<String>,
    /// Messages that mean "slow down" (treated as a 429).
    #[serde(default)]
    pub rate_limited: Vec<String>,
}

/// How a tool's request body is encoded.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// `application/json`.
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// The rendered string's UTF-8 bytes.
    Raw,
    /// The rendered base64 string, decoded.
    Base64,
    /// `multipart/related` parts (Google uploads).
    MultipartRelated,
    /// `multipart/form-data` parts.
    MultipartForm,
}

/// An explicit request shape: each part given is rendered from a template.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestSpec {
    /// Query parameters (values are templates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<serde_json::Map<String, Value>>,
    /// Request headers (values are templates; never credentials).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Value>,
    /// The body template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// How the body is encoded.
    #[serde(default)]
    pub encoding: Encoding,
}

/// Native encoders that derive template values from params.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Encoder {
    /// An RFC 2822 message, base64url (`$raw`).
    Rfc2822,
    /// A LinkedIn author URN (`$author`).
    LinkedinAuthor,
}

/// How a list tool's provider pages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Pagination {
    /// The answer carries a cursor sent back as a param.
    #[serde(rename_all = "camelCase")]
    Cursor {
        /// JSON pointer to the items.
        items: String,
        /// The param carrying the cursor.
        cursor_param: String,
        /// JSON pointer to the next cursor in the answer.
        next_cursor: String,
        /// Informational: where the tool sends the cursor param.
        #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
        location: Option<String>,
        /// JSON pointer to a boolean that is `false` on the last page
        /// (`/has_more`), for providers that hand out a cursor anyway.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        has_more: Option<String>,
    },
    /// RFC 8288 `Link: <…>; rel="next"` headers.
    Link {
        /// JSON pointer to the items.
        items: String,
    },
    /// Offset and limit params.
    #[serde(rename_all = "camelCase")]
    Offset {
        /// JSON pointer to the items.
        items: String,
        /// The offset param.
        offset_param: String,
        /// The limit param.
        limit_param: String,
        /// The provider's page size when the caller gives none.
        default_limit: u64,
    },
    /// A page-number param.
    #[serde(rename_all = "camelCase")]
    Page {
        /// JSON pointer to the items.
        items: String,
        /// The page param.
        page_param: String,
        /// The number of the first page (1 unless the provider counts from
        /// 0).
        #[serde(default = "one")]
        first_page: u64,
    },
    /// The answer holds the next page's URL.
    #[serde(rename_all = "camelCase")]
    NextUrl {
        /// JSON pointer to the items.
        items: String,
        /// JSON pointer to the next URL.
        next_url: String,
    },
}

impl Pagination {
    /// JSON pointer to the items of a page.
    pub fn items(&self) -> &str {
        match self {
            Pagination::Cursor { items, .. }
            | Pagination::Link { items }
            | Pagination::Offset { items, .. }
            | Pagination::Page { items, .. }
            | Pagination::NextUrl { items, .. } => items,
        }
    }
}

fn one() -> u64 {
    1
}

/// Most pages one call may collect with `maxPages`.
pub const MAX_PAGES: u64 = 20;

/// Where a connection's own API host comes from (Salesforce's
/// `instance_url`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceUrlSpec {
    /// The token answer's member naming the host.
    pub field: String,
    /// Host suffixes the named host must end with.
    pub host_suffixes: Vec<String>,
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
    /// Name of an `apiBaseUrls` entry to send to instead of `apiBaseUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// An explicit request shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestSpec>,
    /// A native encoder run on the params first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<Encoder>,
    /// How the provider pages this list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
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
    /// Search keywords.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Which kind of connection it makes by default.
    #[serde(default)]
    pub kind: ConnectorKind,
    /// The only host credentials for this connector are ever sent to
    /// (empty for PostgreSQL, whose connection string names the server).
    #[serde(default)]
    pub api_base_url: String,
    /// Further named hosts of the same provider (uploads, content).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub api_base_urls: BTreeMap<String, String>,
    /// How failures inside 2xx answers look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<ErrorsSpec>,
    /// For data platforms: which one, and the scopes its generated query
    /// and listing tools need. The tools `<SLUG>_QUERY`,
    /// `<SLUG>_LIST_DATABASES`, `<SLUG>_LIST_SCHEMAS`, `<SLUG>_LIST_TABLES`
    /// and `<SLUG>_DESCRIBE_TABLE` are generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataSpec>,
    /// Broad scopes that include narrower ones (Google's `calendar`
    /// includes `calendar.events`): a connection granted the broad scope
    /// can call tools that name a narrower one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub implied_scopes: BTreeMap<String, Vec<String>>,
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
    /// Name of the client id parameter (`client_key` at TikTok).
    #[serde(default = "default_client_id_param")]
    pub client_id_param: String,
    /// JSON pointer to the object holding the token, when it is not the
    /// token answer itself (Slack user tokens: `/authed_user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_pointer: Option<String>,
    /// The token answer names this connection's API host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_url: Option<InstanceUrlSpec>,
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

fn default_client_id_param() -> String {
    "client_id".into()
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
    /// The declaration (for paginated tools, `parameters` includes
    /// `maxPages`).
    pub spec: ToolSpec,
    /// Path parameters, in order of appearance.
    pub path_params: Vec<String>,
    /// Whether this is the connector's generic `<SLUG>_PROXY` tool.
    pub proxy: bool,
    /// For generated data tools: what it does.
    pub data: Option<DataTool>,
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
    /// Further named base URLs (`apiBaseUrls`).
    pub base_urls: BTreeMap<String, url::Url>,
    /// Tools by name, including the generated `<SLUG>_PROXY`.
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

    /// Whether `scope` is among `granted`, directly or through a broader
    /// granted scope (`impliedScopes`).
    pub fn scope_granted(&self, scope: &String, granted: &[String]) -> bool {
        granted.contains(scope)
            || granted.iter().any(|g| {
                self.spec
                    .implied_scopes
                    .get(g)
                    .is_some_and(|narrower| narrower.contains(scope))
            })
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
        let postgres = spec
            .data
            .as_ref()
            .is_some_and(|d| d.platform == DataPlatform::Postgres);
        let base_url = if postgres && spec.api_base_url.is_empty() {
            // The connection string names the server; nothing else is sent
            // anywhere.
            url::Url::parse("postgres://configured-connection-string/")
                .map_err(|e| fail(e.to_string()))?
        } else {
            base_url("apiBaseUrl", &spec.api_base_url).map_err(&fail)?
        };
        let mut base_urls = BTreeMap::new();
        for (name, text) in &spec.api_base_urls {
            let what = format!("apiBaseUrls.{name}");
            base_urls.insert(name.clone(), self::base_url(&what, text).map_err(&fail)?);
        }
        if let Some(errors) = &spec.errors {
            for p in [
                &errors.ok_pointer,
                &errors.errors_pointer,
                &errors.message_pointer,
            ]
            .into_iter()
            .flatten()
            {
                check_pointer(p).map_err(&fail)?;
            }
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
                if let Some(p) = &o.token_pointer {
                    check_pointer(p).map_err(&fail)?;
                }
                if o.client_id_param.is_empty() {
                    return Err(fail("oauth.clientIdParam must not be empty".into()));
                }
                if let Some(i) = &o.instance_url
                    && (i.field.is_empty()
                        || i.host_suffixes.is_empty()
                        || i.host_suffixes
                            .iter()
                            .any(|h| h.len() < 3 || !h.starts_with('.')))
                {
                    return Err(fail(
                        "oauth.instanceUrl needs a field and host suffixes starting with `.` (e.g. `.salesforce.com`)".into(),
                    ));
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
            if tool.name == format!("{prefix}PROXY") {
                return Err(tool_fail(
                    "`<SLUG>_PROXY` is generated for every connector; choose another name".into(),
                ));
            }
            let path_params = parse_path(&tool.path).map_err(&tool_fail)?;
            if let Some(base) = &tool.base
                && !base_urls.contains_key(base)
            {
                return Err(tool_fail(format!(
                    "base `{base}` is not declared in apiBaseUrls"
                )));
            }
            let mut spec = tool.clone();
            check_tool(&spec, &path_params).map_err(&tool_fail)?;
            if spec.pagination.is_some()
                && let Some(props) = spec
                    .parameters
                    .get_mut("properties")
                    .and_then(Value::as_object_mut)
            {
                props.insert(
                    "maxPages".into(),
                    serde_json::json!({
                        "type": "integer", "minimum": 1, "maximum": MAX_PAGES,
                        "description": "Fetch up to this many pages and return their items together (default 1: the provider's answer as it is)."
                    }),
                );
            }
            let validator = jsonschema::validator_for(&spec.parameters)
                .map_err(|e| tool_fail(format!("parameters is not a valid JSON Schema: {e}")))?;
            let compiled = Tool {
                spec,
                path_params,
                proxy: false,
                data: None,
                validator,
            };
            if tools
                .insert(tool.name.clone(), Arc::new(compiled))
                .is_some()
            {
                return Err(tool_fail("declared twice".into()));
            }
        }
        if let Some(data) = &spec.data {
            for tool in data_tools(&spec, data).map_err(&fail)? {
                let name = tool.spec.name.clone();
                if tools.insert(name.clone(), Arc::new(tool)).is_some() {
                    return Err(fail(format!(
                        "tool `{name}` is generated for data connectors; choose another name"
                    )));
                }
            }
        }
        if !postgres {
            let proxy = proxy_tool(&spec, &base_urls).map_err(&fail)?;
            tools.insert(proxy.spec.name.clone(), Arc::new(proxy));
        }
        Ok(Self {
            spec,
            base_url,
            base_urls,
            tools,
            oauth,
        })
    }

    /// The base URL a tool sends to, before per-app or per-connection
    /// overrides.
    pub fn tool_base(&self, tool: &Tool) -> &url::Url {
        tool.spec
            .base
            .as_ref()
            .and_then(|b| self.base_urls.get(b))
            .unwrap_or(&self.base_url)
    }
}

/// Parses a declared API base URL.
fn base_url(what: &str, text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{what} `{text}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(format!("{what} must be an absolute https URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{what} must not contain credentials; configure them instead"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{what} must not carry a query or fragment"));
    }
    Ok(url)
}

fn check_pointer(pointer: &str) -> Result<(), String> {
    if pointer.is_empty() || pointer.starts_with('/') {
        Ok(())
    } else {
        Err(format!(
            "`{pointer}` must be a JSON pointer (empty, or starting with `/`)"
        ))
    }
}

/// Checks a tool's request shape, pagination and that every declared
/// parameter is used somewhere.
fn check_tool(tool: &ToolSpec, path_params: &[String]) -> Result<(), String> {
    if tool.parameters.get("type").and_then(Value::as_str) != Some("object") {
        return Err("parameters must be an object schema (\"type\": \"object\")".into());
    }
    let mut used: std::collections::BTreeSet<String> = path_params.iter().cloned().collect();
    let mut leftovers_go_somewhere = true;
    if let Some(req) = &tool.request {
        if let Some(q) = &req.query {
            for v in q.values() {
                crate::template::check(v)?;
                crate::template::referenced(v, &mut used);
            }
        }
        for (name, v) in &req.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() || is_credential_header(name)
            {
                return Err(format!(
                    "request header `{name}` is not allowed (invalid, or a credential header)"
                ));
            }
            crate::template::check(v)?;
            crate::template::referenced(v, &mut used);
        }
        if let Some(b) = &req.body {
            crate::template::check(b)?;
            crate::template::referenced(b, &mut used);
            if tool.method.params_in_query() && tool.method != Method::Delete {
                return Err("a GET request cannot have a body".into());
            }
        }
        let query_given = req.query.is_some();
        let body_given = req.body.is_some();
        leftovers_go_somewhere = if tool.method.params_in_query() {
            !query_given
        } else {
            !body_given
        };
        if req.encoding != Encoding::Json && !body_given {
            return Err("a non-JSON encoding needs a body template".into());
        }
    }
    match tool.encoder {
        Some(Encoder::Rfc2822) => used.extend(
            crate::encoders::RFC2822_INPUTS
                .iter()
                .map(|s| (*s).to_string()),
        ),
        Some(Encoder::LinkedinAuthor) => {
            used.insert("author".into());
        }
        None => {}
    }
    if let Some(p) = &tool.pagination {
        check_pointer(p.items())?;
        match p {
            Pagination::Cursor {
                cursor_param,
                next_cursor,
                has_more,
                ..
            } => {
                check_pointer(next_cursor)?;
                if let Some(p) = has_more {
                    check_pointer(p)?;
                }
                used.insert(cursor_param.clone());
            }
            Pagination::Offset {
                offset_param,
                limit_param,
                ..
            } => {
                used.insert(offset_param.clone());
                used.insert(limit_param.clone());
            }
            Pagination::Page { page_param, .. } => {
                used.insert(page_param.clone());
            }
            Pagination::NextUrl { next_url, .. } => check_pointer(next_url)?,
            Pagination::Link { .. } => {}
        }
    }
    let props = tool
        .parameters
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    if !leftovers_go_somewhere {
        let unused: Vec<&String> = props.iter().filter(|p| !used.contains(*p)).collect();
        if !unused.is_empty() {
            return Err(format!(
                "parameters {unused:?} are declared but no path placeholder or template uses them"
            ));
        }
    }
    if props.iter().any(|p| p == "maxPages") {
        return Err("`maxPages` is reserved (added for paginated tools)".into());
    }
    Ok(())
}

/// The generic authenticated request tool every connector has.
fn proxy_tool(
    spec: &ConnectorSpec,
    base_urls: &BTreeMap<String, url::Url>,
) -> Result<Tool, String> {
    let mut properties = serde_json::json!({
        "method": { "enum": ["GET", "POST", "PUT", "PATCH", "DELETE"] },
        "path": {
            "type": "string", "pattern": "^/", "maxLength": 2048,
            "description": format!("Path below {} (no scheme or host: the host cannot be changed).", spec.api_base_url)
        },
        "query": {
            "type": "object",
            "additionalProperties": { "type": ["string", "number", "boolean", "array"] }
        },
        "body": { "description": "JSON body, for POST, PUT and PATCH." },
        "headers": {
            "type": "object", "additionalProperties": { "type": "string" },
            "description": "Extra headers; credential headers cannot be set."
        }
    });
    if !base_urls.is_empty()
        && let Some(props) = properties.as_object_mut()
    {
        let names: Vec<&String> = base_urls.keys().collect();
        props.insert(
            "base".into(),
            serde_json::json!({ "enum": names, "description": "Send to this named API host instead of the main one." }),
        );
    }
    let parameters = serde_json::json!({
        "type": "object",
        "required": ["method", "path"],
        "additionalProperties": false,
        "properties": properties,
    });
    let validator = jsonschema::validator_for(&parameters).map_err(|e| e.to_string())?;
    Ok(Tool {
        spec: ToolSpec {
            name: format!("{}_PROXY", spec.slug.to_ascii_uppercase()),
            description: format!(
                "Any {} API request with the connection's credential: method, path (below {}), query, JSON body. Prefer a specific tool when one exists.",
                spec.display_name, spec.api_base_url
            ),
            method: Method::Get,
            path: "/".into(),
            query: Vec::new(),
            parameters,
            scopes: Vec::new(),
            idempotent: false,
            base: None,
            request: None,
            encoder: None,
            pagination: None,
        },
        path_params: Vec::new(),
        proxy: true,
        data: None,
        validator,
    })
}

/// The query and listing tools of a data connector.
fn data_tools(spec: &ConnectorSpec, data: &DataSpec) -> Result<Vec<Tool>, String> {
    let upper = spec.slug.to_ascii_uppercase();
    let name = &spec.display_name;
    let identifier = |what: &str| serde_json::json!({"type": "string", "minLength": 1, "maxLength": 255, "description": what});
    let (database, schema) = match data.platform {
        DataPlatform::BigQuery => (
            "Project id (default: the configured projectId).",
            "Dataset.",
        ),
        DataPlatform::Databricks => ("Catalog (default: the configured catalog).", "Schema."),
        _ => ("Database (default: the connection's).", "Schema."),
    };
    let placeholders = match data.platform {
        DataPlatform::Postgres => "$1, $2, …",
        DataPlatform::Databricks => ":p1, :p2, …",
        DataPlatform::Snowflake | DataPlatform::BigQuery => "? (positional)",
    };
    let defs = [
        (
            DataTool::Query,
            "QUERY",
            format!(
                "Run SQL on {name} with bound parameters (placeholders {placeholders}); returns {{columns: [{{name, type}}], rows, truncated, elapsedMs}}. Read-only unless the admin allowed writes; rows, bytes and time are capped by the connection's policy."
            ),
            serde_json::json!({
                "type": "object", "required": ["sql"], "additionalProperties": false,
                "properties": {
                    "sql": {"type": "string", "minLength": 1, "maxLength": 100_000, "description": format!("One statement; parameters as {placeholders}, never pasted into the text.")},
                    "params": {"type": "array", "maxItems": 1000, "items": {"type": ["string", "number", "boolean", "null"]}, "description": "Values bound to the placeholders, in order."},
                    "maxRows": {"type": "integer", "minimum": 1, "maximum": 100_000, "description": "At most this many rows (the policy's cap applies too)."},
                    "timeoutMs": {"type": "integer", "minimum": 1, "maximum": 600_000, "description": "Cancel the statement after this long (the policy's timeout applies too)."}
                }
            }),
        ),
        (
            DataTool::ListDatabases,
            "LIST_DATABASES",
            format!("List the databases (projects, catalogs) this {name} connection can see."),
            serde_json::json!({"type": "object", "additionalProperties": false, "properties": {}}),
        ),
        (
            DataTool::ListSchemas,
            "LIST_SCHEMAS",
            format!("List the schemas (datasets) of a {name} database."),
            serde_json::json!({"type": "object", "additionalProperties": false, "properties": {"database": identifier(database)}}),
        ),
        (
            DataTool::ListTables,
            "LIST_TABLES",
            format!("List the tables and views of a {name} schema."),
            serde_json::json!({"type": "object", "additionalProperties": false, "properties": {"database": identifier(database), "schema": identifier(schema)}}),
        ),
        (
            DataTool::DescribeTable,
            "DESCRIBE_TABLE",
            format!("Describe a {name} table's columns: name, type, nullable."),
            serde_json::json!({"type": "object", "required": ["table"], "additionalProperties": false, "properties": {"database": identifier(database), "schema": identifier(schema), "table": identifier("Table or view name.")}}),
        ),
    ];
    let mut out = Vec::new();
    for (kind, suffix, description, parameters) in defs {
        let validator = jsonschema::validator_for(&parameters).map_err(|e| e.to_string())?;
        out.push(Tool {
            spec: ToolSpec {
                name: format!("{upper}_{suffix}"),
                description,
                method: Method::Post,
                path: "/".into(),
                query: Vec::new(),
                parameters,
                scopes: data.scopes.clone(),
                idempotent: kind != DataTool::Query,
                base: None,
                request: None,
                encoder: None,
                pagination: None,
            },
            path_params: Vec::new(),
            proxy: false,
            data: Some(kind),
            validator,
        });
    }
    Ok(out)
}

/// How well a connector matches a search: `None` when some word of the
/// query matches nothing; otherwise higher is better. Every word must match
/// the slug, name, categories, description or a tool's name or description.
pub fn search_score(spec: &ConnectorSpec, query: &str) -> Option<u32> {
    let words: Vec<String> = query
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.is_empty() {
        return Some(0);
    }
    let name = spec.display_name.to_lowercase();
    let description = spec.description.to_lowercase();
    let mut total = 0u32;
    for word in &words {
        let upper = word.to_uppercase();
        let mut score = 0u32;
        if spec.slug == *word || name == *word {
            score += 100;
        } else if spec.slug.starts_with(word.as_str()) || name.starts_with(word.as_str()) {
            score += 60;
        } else if spec.slug.contains(word.as_str()) || name.contains(word.as_str()) {
            score += 40;
        }
        if spec.categories.iter().any(|c| c.eq_ignore_ascii_case(word)) {
            score += 30;
        }
        if description.contains(word.as_str()) {
            score += 10;
        }
        let tool_hits = spec
            .tools
            .iter()
            .filter(|t| {
                t.name.contains(upper.as_str())
                    || t.description.to_lowercase().contains(word.as_str())
            })
            .count();
        score += u32::try_from(tool_hits.min(5)).unwrap_or(5) * 4;
        if score == 0 {
            return None;
        }
        total += score;
    }
    Some(total)
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

/// A deployment's replacement endpoints for one catalog connector
/// (`runtime serve --connector-overrides`): a self-hosted provider such as
/// GitHub Enterprise Server, a regional host, or a local fake in tests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectorOverride {
    /// Replaces `apiBaseUrl`.
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// Replaces named `apiBaseUrls` entries.
    #[serde(default)]
    pub api_base_urls: BTreeMap<String, String>,
    /// Replaces `oauth.authorizeUrl`.
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// Replaces `oauth.tokenUrl`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// Replaces `oauth.revocationUrl`.
    #[serde(default)]
    pub revocation_url: Option<String>,
}

impl ConnectorOverride {
    /// Applies the override to a definition (validated afterwards by
    /// [`Connector::compile`]).
    pub fn apply(&self, spec: &mut ConnectorSpec) -> Result<(), String> {
        if let Some(u) = &self.api_base_url {
            spec.api_base_url = u.clone();
        }
        for (name, u) in &self.api_base_urls {
            let slot = spec
                .api_base_urls
                .get_mut(name)
                .ok_or_else(|| format!("apiBaseUrls has no entry `{name}` to override"))?;
            *slot = u.clone();
        }
        let oauth_given = self.authorize_url.is_some()
            || self.token_url.is_some()
            || self.revocation_url.is_some();
        match &mut spec.oauth {
            None if oauth_given => {
                return Err("the connector has no oauth endpoints to override".into());
            }
            None => {}
            Some(o) => {
                if let Some(u) = &self.authorize_url {
                    o.authorize_url = u.clone();
                }
                if let Some(u) = &self.token_url {
                    o.token_url = u.clone();
                }
                if let Some(u) = &self.revocation_url {
                    o.revocation_url = Some(u.clone());
                }
            }
        }
        Ok(())
    }
}

impl Catalog {
    /// The connectors shipped with this build.
    pub fn builtin() -> Result<Self, CatalogError> {
        Self::builtin_with(&BTreeMap::new())
    }

    /// The connectors shipped with this build, with a deployment's
    /// overrides applied.
    pub fn builtin_with(
        overrides: &BTreeMap<String, ConnectorOverride>,
    ) -> Result<Self, CatalogError> {
        Self::from_files(
            BUILTIN_CONNECTORS
                .iter()
                .map(|(f, t)| ((*f).to_string(), (*t).to_string())),
            overrides,
        )
    }

    /// Loads every `*.json` connector file of a directory (the catalog's
    /// own test reads `host-api/catalog/` this way).
    pub fn from_dir(
        dir: &std::path::Path,
        overrides: &BTreeMap<String, ConnectorOverride>,
    ) -> Result<Self, CatalogError> {
        let fail = |message: String| CatalogError {
            connector: dir.display().to_string(),
            message,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| fail(e.to_string()))? {
            let path = entry.map_err(|e| fail(e.to_string()))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_string();
                let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
                files.push((name, text));
            }
        }
        files.sort();
        Self::from_files(files.into_iter(), overrides)
    }

    fn from_files(
        files: impl Iterator<Item = (String, String)>,
        overrides: &BTreeMap<String, ConnectorOverride>,
    ) -> Result<Self, CatalogError> {
        let mut catalog = Catalog::default();
        for (file, text) in files {
            let mut spec: ConnectorSpec =
                serde_json::from_str(&text).map_err(|e| CatalogError {
                    connector: file.clone(),
                    message: e.to_string(),
                })?;
            let expected = format!("{}.json", spec.slug);
            if file != expected {
                return Err(CatalogError {
                    connector: file,
                    message: format!("file must be named {expected}"),
                });
            }
            if let Some(o) = overrides.get(&spec.slug) {
                o.apply(&mut spec).map_err(|message| CatalogError {
                    connector: spec.slug.clone(),
                    message: format!("deployment override: {message}"),
                })?;
            }
            catalog.insert(Connector::compile(spec)?)?;
        }
        if let Some(unknown) = overrides.keys().find(|k| catalog.connector(k).is_none()) {
            return Err(CatalogError {
                connector: unknown.clone(),
                message: "deployment override names no built-in connector".into(),
            });
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
    fn broad_scopes_cover_narrower_ones() {
        let catalog = Catalog::builtin().unwrap();
        let calendar = catalog.connector("googlecalendar").unwrap();
        let g = |s: &str| format!("https://www.googleapis.com/auth/{s}");
        assert!(calendar.scope_granted(&g("calendar.events"), &[g("calendar")]));
        assert!(calendar.scope_granted(&g("calendar.events"), &[g("calendar.events")]));
        assert!(!calendar.scope_granted(&g("calendar.events"), &[g("calendar.readonly")]));
        let linear = catalog.connector("linear").unwrap();
        assert!(linear.scope_granted(&"issues:create".to_string(), &["write".into()]));
        assert!(!linear.scope_granted(&"write".to_string(), &["read".into()]));
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
        s.tools[0].parameters =
            serde_json::json!({"type": "object", "properties": {"a": {"type": 12}}});
        assert!(
            Connector::compile(s)
                .unwrap_err()
                .message
                .contains("JSON Schema")
        );
        // With an explicit request, a declared param nothing uses is a bug.
        let mut s = base();
        s.tools[0].parameters = serde_json::json!({"type": "object", "properties": {"id": {"type": "string"}, "q": {"type": "string"}}});
        s.tools[0].request = Some(RequestSpec {
            query: Some(serde_json::Map::new()),
            ..RequestSpec::default()
        });
        assert!(Connector::compile(s).unwrap_err().message.contains("\"q\""));
        // The proxy name is reserved, and generated.
        let mut s = base();
        s.tools[0].name = "ACME_PROXY".into();
        assert!(Connector::compile(s).is_err());
        let c = Connector::compile(base()).unwrap();
        assert!(c.tools.get("ACME_PROXY").is_some_and(|t| t.proxy));
    }
}
