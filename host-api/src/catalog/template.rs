//! Request templates of connector tools (see `docs/connectors.md`).
//!
//! A template is JSON in which `"{{name}}"` stands for a parameter's value.
//! Rendering never evaluates anything: it only copies parameter values into
//! places the catalog chose, so a parameter can fill a field but never add
//! one the template did not declare.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// What templates may refer to: the call's parameters and the values an
/// encoder derived from them (`{{$raw}}`).
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// The tool call's parameters.
    pub params: &'a Map<String, Value>,
    /// Encoder outputs, without the `$`.
    pub derived: &'a Map<String, Value>,
}

impl Vars<'_> {
    /// The value a reference names: `name`, `a/b` (a JSON pointer into the
    /// params) or `$name` (an encoder output).
    fn lookup(&self, reference: &str) -> Option<&Value> {
        let value = if let Some(derived) = reference.strip_prefix('$') {
            self.derived.get(derived)
        } else if let Some((first, rest)) = reference.split_once('/') {
            self.params.get(first)?.pointer(&format!("/{rest}"))
        } else {
            self.params.get(reference)
        };
        value.filter(|v| !v.is_null())
    }

    fn present(&self, reference: &str) -> bool {
        self.lookup(reference).is_some()
    }
}

/// Splits `name|default` into its parts.
fn reference_parts(inner: &str) -> (&str, Option<&str>) {
    match inner.split_once('|') {
        Some((name, default)) => (name.trim(), Some(default)),
        None => (inner.trim(), None),
    }
}

/// A value's text when it is placed inside a longer string.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders a template. `None` means "leave the member holding this out".
pub fn render(template: &Value, vars: &Vars<'_>) -> Option<Value> {
    match template {
        Value::String(s) => render_string(s, vars),
        Value::Array(items) => Some(Value::Array(
            items.iter().filter_map(|item| render(item, vars)).collect(),
        )),
        Value::Object(map) => {
            if let Some(condition) = map.get("$if") {
                let all = match condition {
                    Value::String(name) => vars.present(name),
                    Value::Array(names) => names
                        .iter()
                        .all(|n| n.as_str().is_some_and(|n| vars.present(n))),
                    _ => false,
                };
                return if all {
                    render(map.get("then").unwrap_or(&Value::Null), vars)
                } else {
                    None
                };
            }
            let mut out = Map::new();
            for (key, value) in map {
                if let Some(v) = render(value, vars) {
                    out.insert(key.clone(), v);
                }
            }
            Some(Value::Object(out))
        }
        other => Some(other.clone()),
    }
}

fn render_string(s: &str, vars: &Vars<'_>) -> Option<Value> {
    // The whole string is one reference: the value keeps its JSON type.
    if let Some(inner) = s.strip_prefix("{{").and_then(|r| r.strip_suffix("}}"))
        && !inner.contains("{{")
        && !inner.contains("}}")
    {
        let (name, default) = reference_parts(inner);
        return match vars.lookup(name) {
            Some(v) => Some(v.clone()),
            None => default.map(|d| Value::String(d.to_string())),
        };
    }
    if !s.contains("{{") {
        return Some(Value::String(s.to_string()));
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        out.push_str(rest.get(..open).unwrap_or_default());
        let after = rest.get(open + 2..).unwrap_or_default();
        let Some(close) = after.find("}}") else {
            out.push_str(rest.get(open..).unwrap_or_default());
            rest = "";
            break;
        };
        let (name, default) = reference_parts(after.get(..close).unwrap_or_default());
        match vars.lookup(name) {
            Some(v) => out.push_str(&value_text(v)),
            None => out.push_str(default?),
        }
        rest = after.get(close + 2..).unwrap_or_default();
    }
    out.push_str(rest);
    Some(Value::String(out))
}

/// Parameter names a template refers to (the first segment of pointers;
/// encoder outputs excluded), for the catalog's consistency check.
pub fn referenced(template: &Value, out: &mut BTreeSet<String>) {
    match template {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(open) = rest.find("{{") {
                let after = rest.get(open + 2..).unwrap_or_default();
                let Some(close) = after.find("}}") else { break };
                let (name, _) = reference_parts(after.get(..close).unwrap_or_default());
                if !name.starts_with('$') {
                    let first = name.split('/').next().unwrap_or_default();
                    out.insert(first.to_string());
                }
                rest = after.get(close + 2..).unwrap_or_default();
            }
        }
        Value::Array(items) => items.iter().for_each(|i| referenced(i, out)),
        Value::Object(map) => {
            if let Some(condition) = map.get("$if") {
                match condition {
                    Value::String(n) => {
                        out.insert(n.split('/').next().unwrap_or_default().to_string());
                    }
                    Value::Array(names) => {
                        for n in names.iter().filter_map(Value::as_str) {
                            out.insert(n.split('/').next().unwrap_or_default().to_string());
                        }
                    }
                    _ => {}
                }
            }
            map.values().for_each(|v| referenced(v, out));
        }
        _ => {}
    }
}

/// Checks a template's references are well formed.
pub fn check(template: &Value) -> Result<(), String> {
    match template {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(open) = rest.find("{{") {
                let after = rest.get(open + 2..).unwrap_or_default();
                let close = after
                    .find("}}")
                    .ok_or_else(|| format!("template `{s}` has an unclosed `{{{{`"))?;
                let (name, _) = reference_parts(after.get(..close).unwrap_or_default());
                let bare = name.strip_prefix('$').unwrap_or(name);
                if bare.is_empty()
                    || !bare
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'/' || b == b'-')
                {
                    return Err(format!("template `{s}` has a bad reference `{name}`"));
                }
                rest = after.get(close + 2..).unwrap_or_default();
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(check),
        Value::Object(map) => {
            if let Some(condition) = map.get("$if") {
                let ok = match condition {
                    Value::String(_) => true,
                    Value::Array(names) => names.iter().all(Value::is_string),
                    _ => false,
                };
                if !ok || !map.contains_key("then") || map.len() != 2 {
                    return Err(
                        "`$if` takes a param name (or an array of names) and `then`, nothing else"
                            .into(),
                    );
                }
            }
            map.values().try_for_each(check)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render_with(t: Value, params: Value) -> Option<Value> {
        let params = params.as_object().cloned().unwrap();
        let derived = Map::from_iter([("raw".to_string(), json!("UkFX"))]);
        render(
            &t,
            &Vars {
                params: &params,
                derived: &derived,
            },
        )
    }

    #[test]
    fn whole_references_keep_types_and_absent_members_are_dropped() {
        let t = json!({"values": "{{rows}}", "n": "{{n}}", "missing": "{{nope}}", "lit": 3, "raw": "{{$raw}}"});
        assert_eq!(
            render_with(t, json!({"rows": [[1, "a"]], "n": 5})).unwrap(),
            json!({"values": [[1, "a"]], "n": 5, "lit": 3, "raw": "UkFX"})
        );
    }

    #[test]
    fn interpolation_defaults_pointers_and_conditions() {
        let t = json!({
            "q": "in:{{box|inbox}} from:{{from}}",
            "start": "{{event/start}}",
            "mode": "{{mode|add}}",
            "filter": {"$if": "path", "then": {"value": "{{path}}", "type": "CONTAINS"}},
            "list": ["{{a}}", "{{b}}", "x"]
        });
        let out = render_with(
            t.clone(),
            json!({"from": "ann", "event": {"start": "2026-01-01"}, "a": 1}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"q": "in:inbox from:ann", "start": "2026-01-01", "mode": "add", "list": [1, "x"]})
        );
        let out = render_with(t, json!({"path": "/blog"})).unwrap();
        assert_eq!(
            out.get("filter"),
            Some(&json!({"value": "/blog", "type": "CONTAINS"}))
        );
        assert!(out.get("q").is_none());
    }

    #[test]
    fn references_are_listed_and_checked() {
        let mut names = BTreeSet::new();
        referenced(
            &json!({"a": "{{x}}", "b": "pre {{y/z|d}}", "c": {"$if": "w", "then": "{{$raw}}"}}),
            &mut names,
        );
        assert_eq!(names, BTreeSet::from(["w".into(), "x".into(), "y".into()]));
        assert!(check(&json!("{{ok}}")).is_ok());
        assert!(check(&json!("{{bad name}}")).is_err());
        assert!(check(&json!("{{open")).is_err());
        assert!(check(&json!({"$if": "a"})).is_err());
    }
}
