//! Bounds on what a caller may send: parameter size and depth, name and
//! credential lengths.

use serde_json::Value;

use crate::error::ToolError;

/// Largest parameters document a tool call may carry.
pub const MAX_PARAMS_BYTES: usize = 256 * 1024;

/// Deepest nesting accepted in parameters; bounds recursion in validation.
pub const MAX_PARAMS_DEPTH: usize = 32;

/// Longest tool name or user id accepted from a guest.
pub const MAX_NAME_LEN: usize = 256;

/// Longest credential an admin may store.
pub const MAX_CREDENTIAL_LEN: usize = 16 * 1024;

/// Depth of a JSON value, iteratively (no recursion on hostile input).
fn json_depth(value: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    max
}

/// Parses a guest's parameters within the size and depth bounds.
pub fn parse_params(params_json: &str) -> Result<serde_json::Map<String, Value>, ToolError> {
    if params_json.len() > MAX_PARAMS_BYTES {
        return Err(ToolError::InvalidParams(format!(
            "params are {} bytes; the limit is {MAX_PARAMS_BYTES}",
            params_json.len()
        )));
    }
    let text = if params_json.trim().is_empty() {
        "{}"
    } else {
        params_json
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ToolError::InvalidParams(format!("params are not valid JSON: {e}")))?;
    if json_depth(&value) > MAX_PARAMS_DEPTH {
        return Err(ToolError::InvalidParams(format!(
            "params nest deeper than {MAX_PARAMS_DEPTH} levels"
        )));
    }
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ToolError::InvalidParams(
            "params must be a JSON object".into(),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn params_are_bounded() {
        assert!(parse_params("").unwrap().is_empty());
        assert!(matches!(
            parse_params("[1]"),
            Err(ToolError::InvalidParams(_))
        ));
        assert!(matches!(
            parse_params("{"),
            Err(ToolError::InvalidParams(_))
        ));
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(40), "]".repeat(40));
        assert!(
            parse_params(&deep)
                .unwrap_err()
                .to_string()
                .contains("deeper")
        );
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_PARAMS_BYTES));
        assert!(
            parse_params(&big)
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
    }
}
