// Runs oauth2-mock-server (an independent OAuth 2.0 / OpenID Connect server
// from npm) for the end-to-end tests: `node tests/oauth-peer/serve.mjs [PORT]`.
// Listens on 127.0.0.1 (port 0 = any free port), signs with a fresh RS256 key,
// prints exactly one line `oauth2-mock-server listening on http://127.0.0.1:PORT`
// on stdout when ready, and exits when stdin closes or on SIGTERM/SIGINT.
// (So `node serve.mjs </dev/null` exits at once: keep stdin open.)
//
// What oauth2-mock-server 9.3.0 does (read from its dist/ source and checked by
// the tests in tests/src/oauth.rs):
//   GET  /authorize  No login or consent page: answers 302 straight to
//                    redirect_uri with `code` (a random UUID) and `state`.
//                    Requires redirect_uri (else 400); response_type other than
//                    `code` redirects with error=unsupported_response_type.
//                    Stores code_challenge with its method (S256 or plain;
//                    default plain; others 400). client_id, scope and
//                    redirect_uri are not checked or remembered.
//   POST /token      Form or JSON body. grant_type authorization_code,
//                    refresh_token, client_credentials, password, jwt-bearer.
//                    NO client authentication: any client id/secret (Basic or
//                    in the body) or none at all is accepted. The code is not
//                    checked either (any string works) and neither is
//                    redirect_uri. PKCE is checked only when the request
//                    carries code_verifier: the stored challenge must exist
//                    and match (S256), and it is deleted on the first attempt,
//                    so with a verifier a code works once (a wrong verifier
//                    burns it); a request without code_verifier skips PKCE.
//                    Refresh: any refresh_token value is accepted; every
//                    authorization_code/refresh_token answer carries a new
//                    random refresh_token (UUID) and an id_token, but old
//                    refresh tokens are never invalidated (no rotation
//                    enforcement, no reuse detection). Access tokens are RS256
//                    JWTs (iss = the base URL, sub "johndoe", kid in the
//                    header, no jti: two tokens issued in the same second
//                    are identical), expires_in 3600, scope = the request's
//                    `scope` (not the one given to /authorize) or "dummy".
//                    Errors are 400 application/problem+json
//                    {type,title,detail}, not RFC 6749 {"error": ...}.
//   POST /revoke     Always 200 with an empty body; revokes nothing (tokens
//                    keep working).
//   GET  /userinfo   {"sub":"johndoe"}, without checking any token.
//   GET  /jwks       {"keys":[...]} public signing keys.
//   GET  /.well-known/openid-configuration, POST /introspect (always
//                    {"active":true}), GET /endsession.
// The issuer URL is set to http://127.0.0.1:PORT (the library would say
// localhost), so discovery, `iss` and the printed line agree.

import { OAuth2Server } from 'oauth2-mock-server';

const arg = process.argv[2] ?? '0';
const port = Number.parseInt(arg, 10);
if (!Number.isInteger(port) || port < 0 || port > 65535 || String(port) !== arg) {
  console.error(`usage: node serve.mjs [PORT]  (got ${JSON.stringify(arg)})`);
  process.exit(2);
}

const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');
await server.start(port, '127.0.0.1');
const base = `http://127.0.0.1:${server.address().port}`;
server.issuer.url = base;

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  // Open keep-alive connections could hold close() up: give it a moment.
  setTimeout(() => process.exit(0), 500).unref();
  server.stop().finally(() => process.exit(0));
}

process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.on('error', stop);
process.stdin.resume();

process.stdout.write(`oauth2-mock-server listening on ${base}\n`);
