//! The connector file format: what one JSON file in `host-api/catalog/` (or
//! an admin's posted definition) may say, as serde types with their defaults,
//! plus [`OAuthEndpoints`] (the parsed `oauth` URLs) and [`DataTool`] (what a
//! generated data tool does).
//!
//! Nothing here is validated beyond what serde checks: `Connector::compile`
//! (in `compile.rs`) turns a [`ConnectorSpec`] into something callable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::encoders::Encoder;

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
