//! Where a user's browser may be sent after connecting an account.
//!
//! A caller starting an OAuth flow names a post-connect `redirectUrl`; it
//! must match one of the app's allowlist entries (security.md item 4), when
//! the flow starts and again at the callback. Both sides are parsed with the
//! WHATWG URL parser browsers use, and compared on scheme, host, port and
//! path, so the host the check sees is the host the browser will visit.
//! Forms that browsers and servers read differently are refused before
//! parsing: backslashes, whitespace and control characters, userinfo,
//! protocol-relative and non-http(s) URLs, fragments, and encoded dots or
//! slashes in the path.
//!
//! Redirect to the returned [`Url`] (its normalised serialisation), never to
//! the caller's original string.

use url::{Host, Url};

/// Longest redirect URL or allowlist entry accepted. Browsers handle more,
/// but a post-connect landing page needs far less, and the URL is stored in
/// every flow record.
pub const MAX_REDIRECT_URL_LEN: usize = 2048;

/// Where the fix for a refused redirect is made.
const HOW_TO_ALLOW: &str = "the app's redirectUrls with PATCH /v1/{app}/settings";

/// Checks `url` against the app's `allowlist` (entries as returned by
/// [`validate_allowlist_entry`]) and returns it parsed and normalised.
///
/// It matches an entry when scheme, host and effective port are equal and
/// its path equals the entry's, or the entry's path ends in `/` and starts
/// the URL's path. The URL may carry a query string; it may not carry a
/// fragment or userinfo.
pub fn check_redirect(url: &str, allowlist: &[String]) -> Result<Url, String> {
    let parsed = parse_checked(url, "redirectUrl")?;
    let allowed = allowlist
        .iter()
        .filter_map(|entry| parse_entry(entry, "entry").ok())
        .any(|entry| matches(&parsed, &entry));
    if allowed {
        return Ok(parsed);
    }
    // Origin and path only: the query may carry the caller's own secrets.
    let shown = format!("{}{}", parsed.origin().ascii_serialization(), parsed.path());
    if allowlist.is_empty() {
        Err(format!(
            "redirectUrl {shown} is refused because this app allows no redirect URLs yet; add {shown} to {HOW_TO_ALLOW}"
        ))
    } else {
        Err(format!(
            "redirectUrl {shown} is not in this app's redirect allowlist; add {shown} (or a prefix of its path ending in `/`) to {HOW_TO_ALLOW}"
        ))
    }
}

/// Validates an allowlist entry and returns it normalised: an absolute
/// http(s) URL without userinfo, query or fragment. Plain `http://` is
/// accepted only for loopback hosts (`localhost`, `127.0.0.1`, `[::1]`)
/// unless `allow_insecure`.
pub fn validate_allowlist_entry(entry: &str, allow_insecure: bool) -> Result<String, String> {
    let url = parse_entry(entry, "redirectUrls entry")?;
    if url.scheme() == "http" && !allow_insecure && !is_loopback(&url) {
        return Err(format!(
            "redirectUrls entry {} uses plain http, which is allowed only for localhost; use https",
            url.origin().ascii_serialization()
        ));
    }
    Ok(url.to_string())
}

/// Parses an allowlist entry with the same checks as a redirect URL, plus
/// the entry-only ones.
fn parse_entry(entry: &str, what: &str) -> Result<Url, String> {
    let url = parse_checked(entry, what)?;
    if url.query().is_some() {
        return Err(format!(
            "{what} has a query string; list the URL without `?…` (redirects may add their own query)"
        ));
    }
    if url.host_str().is_some_and(|h| h.contains('*')) {
        return Err(format!(
            "{what} has a `*` in its host; wildcards are not supported, list each host"
        ));
    }
    Ok(url)
}

/// The checks shared by redirect URLs and allowlist entries: refusals on the
/// raw text, then on the parsed URL.
fn parse_checked(input: &str, what: &str) -> Result<Url, String> {
    check_text(input, what)?;
    let url = Url::parse(input).map_err(|e| {
        format!("{what} is not a valid absolute URL ({e}); send a full https:// URL")
    })?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("{what} must be an https:// URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{what} must not contain a user name or password (`user@`)"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!("{what} must not contain a `#` fragment"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{what} has no host; send a full https:// URL"));
    }
    check_path(url.path(), what)?;
    Ok(url)
}

/// Refusals on the raw text, before any parser can interpret it.
fn check_text(input: &str, what: &str) -> Result<(), String> {
    if input.is_empty() {
        return Err(format!("{what} is empty; send a full https:// URL"));
    }
    if input.len() > MAX_REDIRECT_URL_LEN {
        return Err(format!(
            "{what} is longer than {MAX_REDIRECT_URL_LEN} bytes; use a shorter URL and keep state server-side"
        ));
    }
    if input.chars().any(is_invisible) {
        return Err(format!(
            "{what} contains whitespace, control or invisible characters (a space, tab or newline?); percent-encode them or remove them"
        ));
    }
    if input.contains('\\') {
        return Err(format!(
            "{what} contains a backslash, which browsers read as `/` and which can change the host; remove it or percent-encode it as %5C"
        ));
    }
    if input.starts_with("//") {
        return Err(format!(
            "{what} is protocol-relative (`//host`); send a full https:// URL"
        ));
    }
    let rest = if has_prefix(input, "https://") {
        input.get("https://".len()..)
    } else if has_prefix(input, "http://") {
        input.get("http://".len()..)
    } else {
        None
    };
    let Some(rest) = rest else {
        return Err(format!(
            "{what} must start with https:// (javascript:, data: and other schemes are refused)"
        ));
    };
    if input.contains('#') {
        return Err(format!("{what} must not contain a `#` fragment"));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!(
            "{what} must not contain a user name or password (`user@`) before the host"
        ));
    }
    if authority.contains('%') {
        return Err(format!(
            "{what} has a percent-encoded host; write the host plainly"
        ));
    }
    Ok(())
}

/// Characters that make a URL read differently to people, browsers and
/// servers: whitespace, controls, zero-width and direction marks.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

fn has_prefix(input: &str, prefix: &str) -> bool {
    input
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// Refuses paths a server might resolve differently from the URL parser:
/// encoded dots, slashes, backslashes and NULs, empty segments, and dot
/// segments with `;` parameters (`..;`), which some servers treat as `..`.
fn check_path(path: &str, what: &str) -> Result<(), String> {
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "%00"]
        .iter()
        .any(|p| lower.contains(p))
    {
        return Err(format!(
            "{what} has an encoded `.`, `/`, `\\` or NUL in its path (%2E, %2F, %5C, %00); write the path plainly"
        ));
    }
    if path.contains("//") {
        return Err(format!(
            "{what} has an empty segment (`//`) in its path; remove it"
        ));
    }
    let dotted = path
        .split('/')
        .any(|seg| matches!(seg.split(';').next(), Some("." | "..")));
    if dotted {
        return Err(format!(
            "{what} has a `.` or `..` path segment; send the resolved path"
        ));
    }
    Ok(())
}

/// Whether `url` is allowed by `entry`.
fn matches(url: &Url, entry: &Url) -> bool {
    url.scheme() == entry.scheme()
        && url.host_str() == entry.host_str()
        && url.port_or_known_default() == entry.port_or_known_default()
        && (url.path() == entry.path()
            || (entry.path().ends_with('/') && url.path().starts_with(entry.path())))
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d == "localhost",
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn allowlist() -> Vec<String> {
        [
            "https://good.example.com/done",
            "https://good.example.com/done/",
            "https://good.example.com/app/",
            "http://localhost:3000/cb",
            "https://bücher.example/done",
        ]
        .iter()
        .map(|e| validate_allowlist_entry(e, false).unwrap())
        .collect()
    }

    #[test]
    fn allowed_redirects_come_back_normalised() {
        let list = allowlist();
        for (input, normalised) in [
            (
                "https://good.example.com/done",
                "https://good.example.com/done",
            ),
            (
                "https://good.example.com/done?x=1&y=2",
                "https://good.example.com/done?x=1&y=2",
            ),
            (
                "HTTPS://GOOD.EXAMPLE.COM/done",
                "https://good.example.com/done",
            ),
            (
                "https://good.example.com:443/done",
                "https://good.example.com/done",
            ),
            (
                "https://good.example.com/done/",
                "https://good.example.com/done/",
            ),
            (
                "https://good.example.com/done/step/2",
                "https://good.example.com/done/step/2",
            ),
            (
                "https://good.example.com/app/settings",
                "https://good.example.com/app/settings",
            ),
            (
                "http://localhost:3000/cb?state=ok",
                "http://localhost:3000/cb?state=ok",
            ),
            (
                "https://BÜCHER.example/done",
                "https://xn--bcher-kva.example/done",
            ),
            (
                "https://good.example.com/app/caf%C3%A9",
                "https://good.example.com/app/caf%C3%A9",
            ),
        ] {
            let url = check_redirect(input, &list).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(url.as_str(), normalised, "{input}");
        }
    }

    #[test]
    fn bypass_forms_are_refused() {
        let list = allowlist();
        let long = format!(
            "https://good.example.com/app/{}",
            "a".repeat(MAX_REDIRECT_URL_LEN)
        );
        for input in [
            "",
            long.as_str(),
            // Other hosts that merely contain the good one.
            "https://good.example.com.evil.test/",
            "https://good.example.com.evil.test/done",
            "https://evil.test/https://good.example.com/done",
            "https://evil.test/?https://good.example.com/done",
            "https://good.example.com./done",
            "https://good.example.com%2eevil.test/done",
            // Userinfo.
            "https://good.example.com@evil.test/",
            "https://good.example.com:443@evil.test/done",
            "https://user:pw@good.example.com/done",
            "https://@good.example.com/done",
            // Backslashes.
            "https://evil.test\\@good.example.com/",
            "https://good.example.com\\@evil.test/done",
            "https:\\\\evil.test/done",
            "/\\evil.test",
            // Protocol-relative, relative and missing slashes.
            "//evil.test",
            "//good.example.com/done",
            "/done",
            "https:/good.example.com/done",
            "https:good.example.com/done",
            // Other schemes.
            "javascript:alert(1)//https://good.example.com/",
            "JavaScript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:msgbox(1)",
            "ftp://good.example.com/done",
            "http://good.example.com/done",
            // Ports.
            "https://good.example.com:8443/",
            "https://good.example.com:8443/done",
            "http://localhost:3001/cb",
            "http://127.0.0.1:3000/cb",
            // Paths escaping a prefix or near-misses.
            "https://good.example.com/done/../admin",
            "https://good.example.com/app/../admin",
            "https://good.example.com/done/%2e%2e/admin",
            "https://good.example.com/done/.%2E/admin",
            "https://good.example.com/done/..%2fadmin",
            "https://good.example.com/done/..%5cadmin",
            "https://good.example.com/done/..;/admin",
            "https://good.example.com/done/%00",
            "https://good.example.com/app//evil.test",
            "https://good.example.com/donex",
            "https://good.example.com/app",
            "https://good.example.com/Done",
            "https://good.example.com/",
            // Fragments.
            "https://good.example.com/done#x",
            "https://good.example.com/done#",
            // Whitespace and control characters.
            "https://good.example.com/do\tne",
            "https://good.exam\tple.com/done",
            "https://good.example.com/done\n",
            "https://good.example.com/done\r\nSet-Cookie: a=b",
            " https://good.example.com/done",
            "https://good.example.com/done ",
            "\thttps://good.example.com/done",
            "java\nscript:alert(1)",
            "https://good.example.com/done\u{0}",
            "https://good.example.com/app/\u{202E}gpj.exe",
            "https://good.example.com/app/\u{200B}",
            "https://good.example.com\u{3000}/done",
        ] {
            assert!(check_redirect(input, &list).is_err(), "accepted {input:?}");
        }
    }

    #[test]
    fn refusals_say_how_to_fix_without_echoing_the_query() {
        let e = check_redirect(
            "https://other.example.com/cb?token=canary-123",
            &allowlist(),
        )
        .unwrap_err();
        assert!(e.contains("add https://other.example.com/cb "), "{e}");
        assert!(e.contains("PATCH /v1/{app}/settings"), "{e}");
        assert!(!e.contains("canary"), "{e}");

        let e = check_redirect("https://app.example.com/done", &[]).unwrap_err();
        assert!(e.contains("allows no redirect URLs"), "{e}");
        assert!(e.contains("add https://app.example.com/done"), "{e}");

        let e = check_redirect("https://evil.test\\@good.example.com/", &allowlist()).unwrap_err();
        assert!(e.contains("backslash"), "{e}");
        let e = check_redirect("javascript:alert(1)", &allowlist()).unwrap_err();
        assert!(e.contains("https://"), "{e}");
    }

    #[test]
    fn allowlist_entries_are_validated_and_normalised() {
        for (entry, insecure, normalised) in [
            (
                "https://App.Example.com/done",
                false,
                "https://app.example.com/done",
            ),
            ("https://app.example.com", false, "https://app.example.com/"),
            (
                "https://app.example.com:443/x/",
                false,
                "https://app.example.com/x/",
            ),
            (
                "https://app.example.com:8443/x",
                false,
                "https://app.example.com:8443/x",
            ),
            (
                "http://localhost:3000/cb",
                false,
                "http://localhost:3000/cb",
            ),
            ("http://127.0.0.1:8080/", false, "http://127.0.0.1:8080/"),
            ("http://[::1]:8080/x", false, "http://[::1]:8080/x"),
            (
                "http://app.example.com/done",
                true,
                "http://app.example.com/done",
            ),
        ] {
            assert_eq!(
                validate_allowlist_entry(entry, insecure)
                    .unwrap_or_else(|e| panic!("{entry}: {e}")),
                normalised
            );
        }
        for entry in [
            "",
            "http://app.example.com/done",
            "https://app.example.com/done?x=1",
            "https://app.example.com/done?",
            "https://app.example.com/done#x",
            "https://*.example.com/",
            "https://user@app.example.com/",
            "https://app.example.com\\@evil.test/",
            "//app.example.com/",
            "app.example.com/done",
            "javascript:alert(1)",
            "https://app.example.com/a%2fb",
            "https://app.example.com/a/..;/b",
            "https://app.example.com/a b",
        ] {
            assert!(
                validate_allowlist_entry(entry, false).is_err(),
                "accepted {entry:?}"
            );
        }
        let e = validate_allowlist_entry("http://app.example.com/done", false).unwrap_err();
        assert!(e.contains("use https"), "{e}");
    }

    #[test]
    fn invalid_stored_entries_never_match() {
        // Entries that skipped validation are ignored, not trusted.
        let list = vec![
            "https://good.example.com/done?x=1".to_string(),
            "https://user@good.example.com/done".to_string(),
            "not a url".to_string(),
        ];
        assert!(check_redirect("https://good.example.com/done?x=1", &list).is_err());
        assert!(check_redirect("https://good.example.com/done", &list).is_err());
    }
}
