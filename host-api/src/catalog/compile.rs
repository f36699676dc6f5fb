//! Turning a [`ConnectorSpec`] into a validated [`Connector`] with compiled
//! [`Tool`]s: every URL, pointer, header, path and template is checked and
//! every parameter schema compiled here, once, at load. The generated tools
//! (`<SLUG>_PROXY`, and the query and listing tools of data connectors) are
//! built here too.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::encoders::{Encoder, RFC2822_INPUTS};
use super::spec::{
    AuthScheme, ConnectorSpec, DataPlatform, DataSpec, DataTool, Encoding, MAX_PAGES, Method,
    OAuthEndpoints, Pagination, ToolSpec,
};
use super::template;

/// Longest connector slug.
const MAX_SLUG_LEN: usize = 48;
/// Most tools one connector may declare; bounds what an admin can post.
const MAX_TOOLS: usize = 256;

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
                template::check(v)?;
                template::referenced(v, &mut used);
            }
        }
        for (name, v) in &req.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() || is_credential_header(name)
            {
                return Err(format!(
                    "request header `{name}` is not allowed (invalid, or a credential header)"
                ));
            }
            template::check(v)?;
            template::referenced(v, &mut used);
        }
        if let Some(b) = &req.body {
            template::check(b)?;
            template::referenced(b, &mut used);
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
        Some(Encoder::Rfc2822) => used.extend(RFC2822_INPUTS.iter().map(|s| (*s).to_string())),
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::catalog::spec::RequestSpec;

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
