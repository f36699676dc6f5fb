//! Connectors and their tools, loaded from data.
//!
//! A connector is one JSON file (built-in ones live in `host-api/catalog/` and
//! are embedded at build time; custom ones are posted by an app's admin). It
//! declares the provider's API host, how the credential is presented, and the
//! tools: name, HTTP method and path, JSON Schema of the parameters and the
//! scopes each needs. Everything is validated and the schemas compiled once,
//! at load, so a bad file fails start-up (or the admin's request), not the
//! first call.
//!
//! The parts, in the order a connector goes through them:
//!
//! * `spec.rs`: the file format ([`ConnectorSpec`], [`ToolSpec`] and the
//!   types they are made of), as serde reads it.
//! * `compile.rs`: validation and schema compilation, turning a spec into a
//!   [`Connector`] with callable [`Tool`]s.
//! * [`template`]: the request templates tools may declare.
//! * [`encoders`]: native encoders for what a template cannot express
//!   (Gmail's MIME message, LinkedIn's author URN).
//! * This file: the [`Catalog`] itself (load, look up, search) and a
//!   deployment's [`ConnectorOverride`]s.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod compile;
pub mod encoders;
mod spec;
pub mod template;

pub use compile::{CatalogError, Connector, Tool, is_credential_header};
pub use encoders::Encoder;
pub use spec::{
    AuthScheme, ClientAuth, ConnectorKind, ConnectorSpec, DataPlatform, DataSpec, DataTool,
    Encoding, ErrorsSpec, InstanceUrlSpec, MAX_PAGES, Method, OAuthEndpoints, OAuthSpec,
    Pagination, RequestSpec, ToolSpec,
};

include!(concat!(env!("OUT_DIR"), "/catalog_files.rs"));

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
}
