//! Associated data of every sealed field, in one table: a ciphertext opens
//! only under the row and field it was sealed for, so one copied to another
//! app, connection or field fails to open.
//!
//! | field | associated data |
//! |---|---|
//! | toolkit API key / credential | `toolkit-credential, app, toolkit` |
//! | toolkit OAuth client secret | `toolkit, app, toolkit, client_secret` |
//! | connection tokens | `connection, app, connection id, field` |
//! | flow PKCE verifier | `flow, app, request id, pkce_verifier` |
//! | flow provider URL | `flow, app, request id, provider_url` |
//! | app JWT HS256 secret | `app, app, jwt_hs256_secret` |
//! | the key check | `runtime/key-check` (see [`super::Keyring::key_check`]) |
//!
//! Changing any of these makes every stored value of that field unreadable:
//! the strings are part of the storage format.

/// Associated data binding a sealed value to its row and field.
pub fn aad(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    out
}

/// A toolkit's sealed API key (or other static credential).
pub fn credential(app: &str, toolkit: &str) -> Vec<u8> {
    aad(&["toolkit-credential", app, toolkit])
}

/// A toolkit's sealed OAuth client secret.
pub fn client_secret(app: &str, toolkit: &str) -> Vec<u8> {
    aad(&["toolkit", app, toolkit, "client_secret"])
}

/// A sealed field (`access_token`, `refresh_token`, ...) of a connection.
pub fn connection(app: &str, connection: &str, field: &str) -> Vec<u8> {
    aad(&["connection", app, connection, field])
}

/// A pending flow's sealed PKCE verifier.
pub fn flow_pkce_verifier(app: &str, request_id: &str) -> Vec<u8> {
    aad(&["flow", app, request_id, "pkce_verifier"])
}

/// A pending flow's sealed provider authorization URL (it carries `state`).
pub fn flow_provider_url(app: &str, request_id: &str) -> Vec<u8> {
    aad(&["flow", app, request_id, "provider_url"])
}

/// An app's sealed HS256 secret for end-user JWTs.
pub fn jwt_secret(app: &str) -> Vec<u8> {
    aad(&["app", app, "jwt_hs256_secret"])
}
