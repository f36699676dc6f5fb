//! The data-connector engine (`host_api::data`) against each platform.
//!
//! Snowflake, Databricks and BigQuery: local fakes (axum on 127.0.0.1:0)
//! that record every request and answer in each platform's documented
//! format; the tests assert the exact requests (method, path, query,
//! credential headers, JSON body), asynchronous statements with polling,
//! results in several partitions, chunks or pages, cancellation at the
//! deadline, type mapping, the caps, and that a refused statement sends
//! nothing.
//!
//! PostgreSQL: a real server, started and seeded by `scripts/postgres.sh`
//! (`RUNTIME_TEST_POSTGRES_URL`); without it these tests say "skipped",
//! unless `RUNTIME_REQUIRE_POSTGRES=1`, when they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use host_api::data::{
    self, Column, DataError, DataOp, DataPolicy, DataTarget, Platform, QueryRequest, QueryResult,
};
use host_api::egress::EgressPolicy;
use host_api::error::ToolError;
use host_api::secret::Secret;
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------
// A scripted platform fake.

/// One request the fake received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What the fake answers.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

fn reply(status: u16, body: Value) -> Answer {
    Answer {
        status,
        body: serde_json::to_vec(&body).unwrap(),
        headers: vec![("content-type", "application/json".into())],
    }
}

fn gzip_reply(body: Value) -> Answer {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&serde_json::to_vec(&body).unwrap()).unwrap();
    Answer {
        status: 200,
        body: enc.finish().unwrap(),
        headers: vec![
            ("content-type", "application/json".into()),
            ("content-encoding", "gzip".into()),
        ],
    }
}

type Script = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

#[derive(Clone)]
struct FakeState {
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Script,
}

struct Fake {
    /// `http://127.0.0.1:<port>/`.
    base: url::Url,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    async fn start(script: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = FakeState {
            seen: seen.clone(),
            script: Arc::new(script),
        };
        let app = axum::Router::new().fallback(handle).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base: format!("http://127.0.0.1:{port}/").parse().unwrap(),
            seen,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn requests(&self) -> Vec<String> {
        self.seen()
            .iter()
            .map(|s| match &s.query {
                Some(q) => format!("{} {}?{q}", s.method, s.path),
                None => format!("{} {}", s.method, s.path),
            })
            .collect()
    }
}

async fn handle(
    State(state): State<FakeState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers,
        body: if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()))
        },
    };
    state.seen.lock().unwrap().push(seen.clone());
    let answer = (state.script)(&seen);
    let mut response = (StatusCode::from_u16(answer.status).unwrap(), answer.body).into_response();
    for (name, value) in answer.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

// ---------------------------------------------------------------------------
// Calling the engine.

fn open() -> EgressPolicy {
    EgressPolicy {
        allow_private: true,
    }
}

fn settings(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn query(sql: &str, params: Vec<Value>) -> DataOp {
    DataOp::Query(QueryRequest {
        sql: sql.into(),
        params,
        max_rows: None,
        timeout_ms: None,
    })
}

fn query_with(sql: &str, max_rows: Option<u64>, timeout_ms: Option<u64>) -> DataOp {
    DataOp::Query(QueryRequest {
        sql: sql.into(),
        params: vec![],
        max_rows,
        timeout_ms,
    })
}

async fn run_on(
    platform: Platform,
    base: &url::Url,
    credential: &str,
    settings: &Map<String, Value>,
    policy: &DataPolicy,
    op: DataOp,
) -> Result<QueryResult, DataError> {
    run_with(open(), platform, base, credential, settings, policy, op).await
}

async fn run_with(
    egress: EgressPolicy,
    platform: Platform,
    base: &url::Url,
    credential: &str,
    settings: &Map<String, Value>,
    policy: &DataPolicy,
    op: DataOp,
) -> Result<QueryResult, DataError> {
    let client = egress.client().unwrap();
    let credential = Secret::new(credential);
    let target = DataTarget {
        platform,
        base_url: base,
        credential: &credential,
        settings,
    };
    data::run(&client, &egress, &target, policy, op).await
}

fn tool_error(r: Result<QueryResult, DataError>) -> ToolError {
    match r {
        Err(DataError::Tool(e)) => e,
        other => panic!("expected a tool error, got {other:?}"),
    }
}

fn columns(list: &[(&str, &str)]) -> Vec<Column> {
    list.iter().map(|(n, t)| Column::new(*n, *t)).collect()
}

// ---------------------------------------------------------------------------
// Snowflake

const SF_TOKEN: &str = "sf-oauth-token-canary";

fn sf_settings() -> Map<String, Value> {
    settings(json!({
        "account": "xy12345.us-east-1",
        "user": "analyst",
        "warehouse": "WH",
        "database": "ANALYTICS",
        "schema": "PUBLIC",
        "role": "REPORTER",
    }))
}

fn sf_result(row_type: Value, data: Value, partitions: usize, num_rows: u64) -> Value {
    let partition_info: Vec<Value> = (0..partitions)
        .map(|_| json!({"rowCount": 1, "uncompressedSize": 100}))
        .collect();
    json!({
        "code": "090001",
        "statementHandle": "01b2-handle",
        "sqlState": "00000",
        "message": "Statement executed successfully.",
        "resultSetMetaData": {
            "numRows": num_rows,
            "format": "jsonv2",
            "rowType": row_type,
            "partitionInfo": partition_info,
        },
        "data": data,
    })
}

fn assert_sf_headers(seen: &Seen, token_type: &str) {
    assert_eq!(seen.header("accept"), Some("application/json"));
    assert_eq!(
        seen.header("x-snowflake-authorization-token-type"),
        Some(token_type)
    );
    assert!(
        seen.header("user-agent")
            .is_some_and(|u| u.starts_with("runtime/"))
    );
}

#[tokio::test]
async fn snowflake_sync_statement_binds_params_and_maps_every_type() {
    let row_type = json!([
        {"name": "ID", "type": "fixed", "scale": 0, "precision": 38, "nullable": false},
        {"name": "BIG", "type": "fixed", "scale": 0, "precision": 38, "nullable": true},
        {"name": "PRICE", "type": "fixed", "scale": 2, "precision": 12, "nullable": true},
        {"name": "RATIO", "type": "real", "nullable": true},
        {"name": "NAME", "type": "text", "nullable": true},
        {"name": "ACTIVE", "type": "boolean", "nullable": true},
        {"name": "DAY", "type": "date", "nullable": true},
        {"name": "AT", "type": "time", "scale": 9, "nullable": true},
        {"name": "NTZ", "type": "timestamp_ntz", "scale": 9, "nullable": true},
        {"name": "LTZ", "type": "timestamp_ltz", "scale": 9, "nullable": true},
        {"name": "TZ", "type": "timestamp_tz", "scale": 9, "nullable": true},
        {"name": "V", "type": "variant", "nullable": true},
        {"name": "O", "type": "object", "nullable": true},
        {"name": "A", "type": "array", "nullable": true},
        {"name": "B", "type": "binary", "nullable": true},
        {"name": "G", "type": "geography", "nullable": true}
    ]);
    let data = json!([
        [
            "1",
            "123456789012345678901234567890",
            "12.50",
            "1.5",
            "héllo \"x\"",
            "true",
            "19782",
            "45296.000000000",
            "1709210096.789000000",
            "1709210096.000000000",
            "1709210096.000000000 1500",
            "{\n  \"k\": 1\n}",
            "{\"a\": [1]}",
            "[1, 2]",
            "48690a",
            "POINT(1 2)"
        ],
        [
            null, null, null, null, null, null, null, null, null, null, null, null, null, null,
            null, null
        ]
    ]);
    let answer = sf_result(row_type, data, 1, 2);
    let fake = Fake::start(move |_| reply(200, answer.clone())).await;
    let result = run_on(
        Platform::Snowflake,
        &fake.base,
        SF_TOKEN,
        &sf_settings(),
        &DataPolicy::default(),
        query(
            "SELECT * FROM t WHERE id = ? AND name = ? AND ok = ? AND r = ? AND x = ?",
            vec![
                json!(7),
                json!("O'Brien; DROP TABLE t"),
                json!(true),
                json!(0.5),
                Value::Null,
            ],
        ),
    )
    .await
    .unwrap();

    let seen = fake.seen();
    assert_eq!(seen.len(), 1, "{:?}", fake.requests());
    let s = &seen[0];
    assert_eq!(
        (s.method.as_str(), s.path.as_str()),
        ("POST", "/api/v2/statements")
    );
    assert_eq!(s.query, None);
    assert_eq!(
        s.header("authorization"),
        Some("Bearer sf-oauth-token-canary")
    );
    assert_sf_headers(s, "OAUTH");
    assert_eq!(
        s.body,
        json!({
            "statement": "SELECT * FROM t WHERE id = ? AND name = ? AND ok = ? AND r = ? AND x = ?",
            "timeout": 30,
            "parameters": {"MULTI_STATEMENT_COUNT": "1"},
            "database": "ANALYTICS",
            "schema": "PUBLIC",
            "warehouse": "WH",
            "role": "REPORTER",
            "bindings": {
                "1": {"type": "FIXED", "value": "7"},
                "2": {"type": "TEXT", "value": "O'Brien; DROP TABLE t"},
                "3": {"type": "BOOLEAN", "value": "true"},
                "4": {"type": "REAL", "value": "0.5"},
                "5": {"type": "TEXT", "value": null},
            },
        })
    );

    assert_eq!(
        result.columns,
        columns(&[
            ("ID", "integer"),
            ("BIG", "integer"),
            ("PRICE", "decimal"),
            ("RATIO", "number"),
            ("NAME", "string"),
            ("ACTIVE", "boolean"),
            ("DAY", "date"),
            ("AT", "time"),
            ("NTZ", "datetime"),
            ("LTZ", "timestamp"),
            ("TZ", "timestamp"),
            ("V", "json"),
            ("O", "json"),
            ("A", "json"),
            ("B", "bytes"),
            ("G", "geography"),
        ])
    );
    assert_eq!(
        result.rows[0],
        vec![
            json!(1),
            json!("123456789012345678901234567890"),
            json!("12.50"),
            json!(1.5),
            json!("héllo \"x\""),
            json!(true),
            json!("2024-02-29"),
            json!("12:34:56"),
            json!("2024-02-29T12:34:56.789"),
            json!("2024-02-29T12:34:56Z"),
            json!("2024-02-29T13:34:56+01:00"),
            json!({"k": 1}),
            json!({"a": [1]}),
            json!([1, 2]),
            json!("SGkK"),
            json!("POINT(1 2)"),
        ]
    );
    assert_eq!(result.rows[1], vec![Value::Null; 16]);
    assert!(!result.truncated);
    let text = serde_json::to_value(&result).unwrap();
    assert!(text.get("elapsedMs").is_some());
}

#[tokio::test]
async fn snowflake_async_statements_are_polled_and_partitions_fetched() {
    let row_type = json!([{"name": "N", "type": "fixed", "scale": 0}]);
    let polls = Arc::new(AtomicUsize::new(0));
    let p = polls.clone();
    let done = sf_result(row_type, json!([["1"], ["2"]]), 3, 5);
    let fake =
        Fake::start(
            move |s| match (s.method.as_str(), s.path.as_str(), s.query.as_deref()) {
                ("POST", "/api/v2/statements", _) => reply(
                    202,
                    json!({
                        "code": "333334",
                        "message": "Asynchronous execution in progress.",
                        "statementHandle": "01b2-handle",
                        "statementStatusUrl": "/api/v2/statements/01b2-handle",
                    }),
                ),
                ("GET", "/api/v2/statements/01b2-handle", None) => {
                    if p.fetch_add(1, Ordering::SeqCst) < 2 {
                        reply(
                            202,
                            json!({"code": "333334", "statementHandle": "01b2-handle"}),
                        )
                    } else {
                        reply(200, done.clone())
                    }
                }
                ("GET", "/api/v2/statements/01b2-handle", Some("partition=1")) => {
                    gzip_reply(json!({"data": [["3"], ["4"]]}))
                }
                ("GET", "/api/v2/statements/01b2-handle", Some("partition=2")) => {
                    reply(200, json!({"data": [["5"]]}))
                }
                other => panic!("unexpected request {other:?}"),
            },
        )
        .await;
    let result = run_on(
        Platform::Snowflake,
        &fake.base,
        SF_TOKEN,
        &sf_settings(),
        &DataPolicy::default(),
        query("SELECT n FROM big", vec![]),
    )
    .await
    .unwrap();
    assert_eq!(
        result.rows,
        vec![
            vec![json!(1)],
            vec![json!(2)],
            vec![json!(3)],
            vec![json!(4)],
            vec![json!(5)]
        ]
    );
    assert!(!result.truncated);
    assert_eq!(
        fake.requests(),
        vec![
            "POST /api/v2/statements",
            "GET /api/v2/statements/01b2-handle",
            "GET /api/v2/statements/01b2-handle",
            "GET /api/v2/statements/01b2-handle",
            "GET /api/v2/statements/01b2-handle?partition=1",
            "GET /api/v2/statements/01b2-handle?partition=2",
        ]
    );
    for s in fake.seen() {
        assert_eq!(
            s.header("authorization"),
            Some("Bearer sf-oauth-token-canary")
        );
        assert_sf_headers(&s, "OAUTH");
    }
}

#[tokio::test]
async fn snowflake_statement_running_past_the_deadline_is_cancelled() {
    let fake = Fake::start(|s| match (s.method.as_str(), s.path.as_str()) {
        ("POST", "/api/v2/statements") | ("GET", "/api/v2/statements/01b2-forever") => reply(
            202,
            json!({"code": "333334", "statementHandle": "01b2-forever"}),
        ),
        ("POST", "/api/v2/statements/01b2-forever/cancel") => reply(
            200,
            json!({"code": "000604", "message": "SQL execution canceled"}),
        ),
        other => panic!("unexpected request {other:?}"),
    })
    .await;
    let started = Instant::now();
    let err = tool_error(
        run_on(
            Platform::Snowflake,
            &fake.base,
            SF_TOKEN,
            &sf_settings(),
            &DataPolicy::default(),
            query_with("SELECT SYSTEM$WAIT(3600)", None, Some(300)),
        )
        .await,
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    let ToolError::Unavailable(message) = &err else {
        panic!("{err:?}");
    };
    assert!(
        message.contains("300 ms timeout") && message.contains("cancelled"),
        "{message}"
    );
    let requests = fake.requests();
    assert_eq!(
        requests.first().map(String::as_str),
        Some("POST /api/v2/statements")
    );
    assert_eq!(
        requests.last().map(String::as_str),
        Some("POST /api/v2/statements/01b2-forever/cancel"),
        "{requests:?}"
    );
    // The body asked Snowflake to stop it at the same deadline.
    assert_eq!(fake.seen()[0].body["timeout"], json!(1));
}

#[tokio::test]
async fn snowflake_caps_rows_and_bytes_and_stops_fetching_partitions() {
    let row_type = json!([{"name": "S", "type": "text"}]);
    let rows: Vec<Value> = (0..5)
        .map(|i| json!([format!("row-{i}-{}", "x".repeat(300))]))
        .collect();
    let answer = sf_result(row_type, Value::Array(rows), 4, 20);
    let fake = Fake::start(move |s| {
        assert_eq!(s.path, "/api/v2/statements", "no partition may be fetched");
        reply(200, answer.clone())
    })
    .await;
    let base = fake.base.clone();
    let run = |policy: DataPolicy, op: DataOp| {
        let base = base.clone();
        async move {
            run_on(
                Platform::Snowflake,
                &base,
                SF_TOKEN,
                &sf_settings(),
                &policy,
                op,
            )
            .await
            .unwrap()
        }
    };
    // Row cap: the request's maxRows lowers the policy's.
    let r = run(
        DataPolicy::default(),
        query_with("SELECT s FROM t", Some(2), None),
    )
    .await;
    assert_eq!(r.rows.len(), 2);
    assert!(r.truncated);
    // A request cannot raise the policy's cap.
    let policy = DataPolicy {
        max_rows: 3,
        ..DataPolicy::default()
    };
    let r = run(policy, query_with("SELECT s FROM t", Some(50), None)).await;
    assert_eq!(r.rows.len(), 3);
    assert!(r.truncated);
    // Byte cap.
    let policy = DataPolicy {
        max_bytes: 1024,
        ..DataPolicy::default()
    };
    let r = run(policy, query("SELECT s FROM t", vec![])).await;
    assert_eq!(r.rows.len(), 3);
    assert!(r.truncated);
    assert!(serde_json::to_vec(&r.rows).unwrap().len() <= 1024);
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test]
async fn read_only_refusals_send_nothing() {
    let fake = Fake::start(|s| panic!("nothing may be sent, got {} {}", s.method, s.path)).await;
    let policy = DataPolicy::default();
    let cases = [
        (Platform::Snowflake, "DELETE FROM customers"),
        (Platform::Snowflake, "SELECT 1; DROP TABLE t"),
        (
            Platform::Databricks,
            "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
        ),
        (Platform::Databricks, "CREATE TABLE t AS SELECT 1"),
        (Platform::BigQuery, "DELETE FROM ds.t WHERE true"),
        (Platform::BigQuery, "DECLARE x INT64 DEFAULT 1"),
        (
            Platform::BigQuery,
            "SELECT 1 /* /* */ ; DROP TABLE ds.t -- */",
        ),
        (Platform::Postgres, "SELECT * INTO copy FROM customers"),
    ];
    for (platform, sql) in cases {
        let err = tool_error(
            run_on(
                platform,
                &fake.base,
                "token",
                &settings(json!({"warehouseId": "w", "projectId": "p"})),
                &policy,
                query(sql, vec![]),
            )
            .await,
        );
        assert!(
            matches!(err, ToolError::Denied(_) | ToolError::InvalidParams(_)),
            "{platform:?} {sql}: {err:?}"
        );
    }
    assert!(fake.seen().is_empty());
}

#[tokio::test]
async fn snowflake_failures_are_typed_and_never_echo_the_credential() {
    let fake = Fake::start(|s| match s.body["statement"].as_str() {
        Some("SELECT bad") => reply(
            422,
            json!({
                "code": "001003",
                "message": format!("SQL compilation error: syntax error near 'bad' (token {SF_TOKEN})"),
                "sqlState": "42000",
                "statementHandle": "01b2-bad",
            }),
        ),
        Some("SELECT expired") => reply(401, json!({"code": "390318", "message": "OAuth access token expired"})),
        Some("SELECT busy") => Answer {
            headers: vec![("retry-after", "7".into())],
            ..reply(429, json!({"message": "too many requests"}))
        },
        Some("SELECT forbidden") => reply(403, json!({"message": "role REPORTER may not use warehouse WH"})),
        _ => reply(500, json!({"message": "internal"})),
    })
    .await;
    let go = |sql: &'static str| {
        let base = fake.base.clone();
        async move {
            run_on(
                Platform::Snowflake,
                &base,
                SF_TOKEN,
                &sf_settings(),
                &DataPolicy::default(),
                query(sql, vec![]),
            )
            .await
        }
    };
    let err = tool_error(go("SELECT bad").await);
    let ToolError::InvalidParams(m) = &err else {
        panic!("{err:?}")
    };
    assert!(m.contains("syntax error") && m.contains("42000"), "{m}");
    assert!(!m.contains(SF_TOKEN), "{m}");
    assert!(matches!(
        go("SELECT expired").await,
        Err(DataError::Unauthorized)
    ));
    assert_eq!(
        tool_error(go("SELECT busy").await),
        ToolError::RateLimited {
            retry_after_ms: 7000
        }
    );
    assert!(matches!(
        tool_error(go("SELECT forbidden").await),
        ToolError::Denied(_)
    ));
    assert!(matches!(
        tool_error(go("SELECT other").await),
        ToolError::Upstream { status: 500, .. }
    ));
}

#[tokio::test]
async fn snowflake_keypair_auth_sends_a_signed_jwt() {
    use rsa::pkcs1::EncodeRsaPublicKey as _;
    use rsa::pkcs8::EncodePrivateKey as _;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    let answer = sf_result(
        json!([{"name": "X", "type": "fixed", "scale": 0}]),
        json!([["1"]]),
        1,
        1,
    );
    let fake = Fake::start(move |_| reply(200, answer.clone())).await;
    let mut s = sf_settings();
    s.insert("authType".into(), json!("keypair"));
    run_on(
        Platform::Snowflake,
        &fake.base,
        pem.as_str(),
        &s,
        &DataPolicy::default(),
        query("SELECT 1", vec![]),
    )
    .await
    .unwrap();
    let seen = fake.seen();
    assert_sf_headers(&seen[0], "KEYPAIR_JWT");
    let jwt = seen[0]
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap()
        .to_string();
    assert!(!jwt.contains("PRIVATE"));
    let der = key.to_public_key().to_pkcs1_der().unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(
        &jwt,
        &jsonwebtoken::DecodingKey::from_rsa_der(der.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], json!("XY12345.ANALYST"));
    assert!(
        claims["iss"]
            .as_str()
            .unwrap()
            .starts_with("XY12345.ANALYST.SHA256:")
    );
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );

    // A bad key is the admin's to fix, and names no key material.
    let err = tool_error(
        run_on(
            Platform::Snowflake,
            &fake.base,
            "-----BEGIN PRIVATE KEY-----\nAAAAsecretish\n-----END PRIVATE KEY-----",
            &s,
            &DataPolicy::default(),
            query("SELECT 1", vec![]),
        )
        .await,
    );
    let ToolError::NotConnected(m) = &err else {
        panic!("{err:?}")
    };
    assert!(!m.contains("secretish"), "{m}");
}

#[tokio::test]
async fn snowflake_listing_binds_names_and_quotes_databases() {
    let fake = Fake::start(|s| {
        let statement = s.body["statement"].as_str().unwrap_or_default();
        if statement == "SHOW DATABASES" {
            return reply(
                200,
                sf_result(
                    json!([
                        {"name": "created_on", "type": "timestamp_ltz"},
                        {"name": "name", "type": "text"},
                        {"name": "owner", "type": "text"}
                    ]),
                    json!([
                        ["1709210096.0", "ANALYTICS", "SYSADMIN"],
                        ["1709210096.0", "RAW", "SYSADMIN"]
                    ]),
                    1,
                    2,
                ),
            );
        }
        reply(
            200,
            sf_result(
                json!([
                    {"name": "name", "type": "text"},
                    {"name": "type", "type": "text"},
                    {"name": "nullable", "type": "boolean"}
                ]),
                json!([["ID", "number", "false"], ["NAME", "text", "true"]]),
                1,
                2,
            ),
        )
    })
    .await;
    let r = run_on(
        Platform::Snowflake,
        &fake.base,
        SF_TOKEN,
        &sf_settings(),
        &DataPolicy::default(),
        DataOp::ListDatabases,
    )
    .await
    .unwrap();
    assert_eq!(r.columns, columns(&[("name", "string")]));
    assert_eq!(r.rows, vec![vec![json!("ANALYTICS")], vec![json!("RAW")]]);

    let hostile = "x'); DROP TABLE t; --";
    let r = run_on(
        Platform::Snowflake,
        &fake.base,
        SF_TOKEN,
        &sf_settings(),
        &DataPolicy::default(),
        DataOp::DescribeTable {
            database: Some("My \"Db\"".into()),
            schema: None,
            table: hostile.into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(r.rows[0], vec![json!("ID"), json!("number"), json!(false)]);
    let body = &fake.seen()[1].body;
    let statement = body["statement"].as_str().unwrap();
    assert!(
        statement.contains("FROM \"My \"\"Db\"\"\".INFORMATION_SCHEMA.COLUMNS"),
        "{statement}"
    );
    assert!(!statement.contains("DROP"), "{statement}");
    assert_eq!(
        body["bindings"],
        json!({"1": {"type": "TEXT", "value": "PUBLIC"}, "2": {"type": "TEXT", "value": hostile}})
    );
}

// ---------------------------------------------------------------------------
// Databricks

const DBX_TOKEN: &str = "dapi-canary-token";

fn dbx_settings() -> Map<String, Value> {
    settings(json!({"warehouseId": "abc123", "catalog": "main", "schema": "sales"}))
}

fn dbx_columns(list: &[(&str, &str)]) -> Value {
    Value::Array(
        list.iter()
            .enumerate()
            .map(|(i, (n, t))| json!({"name": n, "type_name": t, "type_text": t, "position": i}))
            .collect(),
    )
}

#[tokio::test]
async fn databricks_sync_statement_sends_named_parameters_and_maps_types() {
    let cols = dbx_columns(&[
        ("id", "LONG"),
        ("n", "INT"),
        ("small", "SHORT"),
        ("tiny", "BYTE"),
        ("d", "DOUBLE"),
        ("f", "FLOAT"),
        ("dec", "DECIMAL"),
        ("b", "BOOLEAN"),
        ("s", "STRING"),
        ("day", "DATE"),
        ("ts", "TIMESTAMP"),
        ("ntz", "TIMESTAMP_NTZ"),
        ("arr", "ARRAY"),
        ("m", "MAP"),
        ("st", "STRUCT"),
        ("bin", "BINARY"),
        ("iv", "INTERVAL"),
    ]);
    let answer = json!({
        "statement_id": "01ef-stmt",
        "status": {"state": "SUCCEEDED"},
        "manifest": {
            "format": "JSON_ARRAY",
            "schema": {"column_count": 17, "columns": cols},
            "total_chunk_count": 1,
            "total_row_count": 2,
            "truncated": false
        },
        "result": {
            "chunk_index": 0,
            "row_offset": 0,
            "row_count": 2,
            "data_array": [
                ["9223372036854775807", "-1", "7", "1", "2.5", "0.5", "123.4500", "false", "ünï",
                 "2024-02-29", "2024-02-29T12:34:56.789Z", "2024-02-29T12:34:56", "[1,2]",
                 "{\"k\":\"v\"}", "{\"a\":{\"b\":null}}", "SGkK", "1 00:00:00.000000000"],
                [null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null]
            ]
        }
    });
    let fake = Fake::start(move |_| reply(200, answer.clone())).await;
    let result = run_on(
        Platform::Databricks,
        &fake.base,
        DBX_TOKEN,
        &dbx_settings(),
        &DataPolicy::default(),
        query(
            "SELECT * FROM orders WHERE id = :p1 AND note = :p2 AND flag = :p3 AND gone = :p4",
            vec![
                json!(42),
                json!("'; DROP TABLE orders; --"),
                json!(false),
                Value::Null,
            ],
        ),
    )
    .await
    .unwrap();
    let seen = fake.seen();
    assert_eq!(fake.requests(), vec!["POST /api/2.0/sql/statements"]);
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer dapi-canary-token")
    );
    assert_eq!(seen[0].header("accept"), Some("application/json"));
    assert_eq!(
        seen[0].body,
        json!({
            "statement": "SELECT * FROM orders WHERE id = :p1 AND note = :p2 AND flag = :p3 AND gone = :p4",
            "warehouse_id": "abc123",
            "catalog": "main",
            "schema": "sales",
            "wait_timeout": "10s",
            "on_wait_timeout": "CONTINUE",
            "disposition": "INLINE",
            "format": "JSON_ARRAY",
            "row_limit": 1001,
            "byte_limit": 4194304,
            "parameters": [
                {"name": "p1", "value": "42", "type": "BIGINT"},
                {"name": "p2", "value": "'; DROP TABLE orders; --", "type": "STRING"},
                {"name": "p3", "value": "false", "type": "BOOLEAN"},
                {"name": "p4", "type": "STRING"}
            ]
        })
    );
    assert_eq!(
        result.columns,
        columns(&[
            ("id", "integer"),
            ("n", "integer"),
            ("small", "integer"),
            ("tiny", "integer"),
            ("d", "number"),
            ("f", "number"),
            ("dec", "decimal"),
            ("b", "boolean"),
            ("s", "string"),
            ("day", "date"),
            ("ts", "timestamp"),
            ("ntz", "datetime"),
            ("arr", "json"),
            ("m", "json"),
            ("st", "json"),
            ("bin", "bytes"),
            ("iv", "interval"),
        ])
    );
    assert_eq!(
        result.rows[0],
        vec![
            json!(i64::MAX),
            json!(-1),
            json!(7),
            json!(1),
            json!(2.5),
            json!(0.5),
            json!("123.4500"),
            json!(false),
            json!("ünï"),
            json!("2024-02-29"),
            json!("2024-02-29T12:34:56.789Z"),
            json!("2024-02-29T12:34:56"),
            json!([1, 2]),
            json!({"k": "v"}),
            json!({"a": {"b": null}}),
            json!("SGkK"),
            json!("1 00:00:00.000000000"),
        ]
    );
    assert_eq!(result.rows[1], vec![Value::Null; 17]);
    assert!(!result.truncated);
}

#[tokio::test]
async fn databricks_pending_statements_are_polled_and_chunks_followed() {
    let polls = Arc::new(AtomicUsize::new(0));
    let p = polls.clone();
    let fake = Fake::start(move |s| match (s.method.as_str(), s.path.as_str()) {
        ("POST", "/api/2.0/sql/statements") => {
            reply(200, json!({"statement_id": "01ef-async", "status": {"state": "PENDING"}}))
        }
        ("GET", "/api/2.0/sql/statements/01ef-async") => {
            if p.fetch_add(1, Ordering::SeqCst) == 0 {
                reply(200, json!({"statement_id": "01ef-async", "status": {"state": "RUNNING"}}))
            } else {
                reply(
                    200,
                    json!({
                        "statement_id": "01ef-async",
                        "status": {"state": "SUCCEEDED"},
                        "manifest": {
                            "schema": {"columns": dbx_columns(&[("n", "INT")])},
                            "total_chunk_count": 3,
                            "truncated": false
                        },
                        "result": {
                            "chunk_index": 0,
                            "data_array": [["1"], ["2"]],
                            "next_chunk_index": 1,
                            "next_chunk_internal_link": "/api/2.0/sql/statements/01ef-async/result/chunks/1?row_offset=2"
                        }
                    }),
                )
            }
        }
        ("GET", "/api/2.0/sql/statements/01ef-async/result/chunks/1") => {
            assert_eq!(s.query.as_deref(), Some("row_offset=2"));
            reply(
                200,
                json!({
                    "chunk_index": 1,
                    "data_array": [["3"]],
                    "next_chunk_index": 2,
                    "next_chunk_internal_link": "/api/2.0/sql/statements/01ef-async/result/chunks/2?row_offset=3"
                }),
            )
        }
        ("GET", "/api/2.0/sql/statements/01ef-async/result/chunks/2") => {
            reply(200, json!({"chunk_index": 2, "data_array": [["4"]]}))
        }
        other => panic!("unexpected request {other:?}"),
    })
    .await;
    let result = run_on(
        Platform::Databricks,
        &fake.base,
        DBX_TOKEN,
        &dbx_settings(),
        &DataPolicy::default(),
        query("SELECT n FROM t", vec![]),
    )
    .await
    .unwrap();
    assert_eq!(
        result.rows,
        vec![
            vec![json!(1)],
            vec![json!(2)],
            vec![json!(3)],
            vec![json!(4)]
        ]
    );
    assert!(!result.truncated);
    assert_eq!(
        fake.requests(),
        vec![
            "POST /api/2.0/sql/statements",
            "GET /api/2.0/sql/statements/01ef-async",
            "GET /api/2.0/sql/statements/01ef-async",
            "GET /api/2.0/sql/statements/01ef-async/result/chunks/1?row_offset=2",
            "GET /api/2.0/sql/statements/01ef-async/result/chunks/2?row_offset=3",
        ]
    );
    for s in fake.seen() {
        assert_eq!(s.header("authorization"), Some("Bearer dapi-canary-token"));
    }
}

#[tokio::test]
async fn databricks_statement_running_past_the_deadline_is_cancelled() {
    let fake = Fake::start(|s| match (s.method.as_str(), s.path.as_str()) {
        ("POST", "/api/2.0/sql/statements") | ("GET", "/api/2.0/sql/statements/01ef-slow") => {
            reply(
                200,
                json!({"statement_id": "01ef-slow", "status": {"state": "RUNNING"}}),
            )
        }
        ("POST", "/api/2.0/sql/statements/01ef-slow/cancel") => reply(200, json!({})),
        other => panic!("unexpected request {other:?}"),
    })
    .await;
    let started = Instant::now();
    let err = tool_error(
        run_on(
            Platform::Databricks,
            &fake.base,
            DBX_TOKEN,
            &dbx_settings(),
            &DataPolicy::default(),
            query_with("SELECT * FROM huge", None, Some(300)),
        )
        .await,
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(
        matches!(&err, ToolError::Unavailable(m) if m.contains("timeout")),
        "{err:?}"
    );
    let requests = fake.requests();
    assert_eq!(
        requests.last().map(String::as_str),
        Some("POST /api/2.0/sql/statements/01ef-slow/cancel"),
        "{requests:?}"
    );
    // Less than 5 s left: Databricks is asked not to wait at all.
    assert_eq!(fake.seen()[0].body["wait_timeout"], json!("0s"));
}

#[tokio::test]
async fn databricks_failures_caps_and_foreign_chunk_links() {
    let fake = Fake::start(|s| {
        let statement = s.body["statement"].as_str().unwrap_or_default();
        match statement {
            "SELECT bad" => reply(
                200,
                json!({
                    "statement_id": "01ef-f",
                    "status": {"state": "FAILED", "error": {"error_code": "BAD_REQUEST", "message": "[PARSE_SYNTAX_ERROR] Syntax error at or near 'bad'"}}
                }),
            ),
            "SELECT elsewhere" => reply(
                200,
                json!({
                    "statement_id": "01ef-e",
                    "status": {"state": "SUCCEEDED"},
                    "manifest": {"schema": {"columns": dbx_columns(&[("n", "INT")])}},
                    "result": {"data_array": [["1"]], "next_chunk_internal_link": "http://198.51.100.7/api/2.0/sql/statements/01ef-e/result/chunks/1"}
                }),
            ),
            "SELECT capped" => reply(
                200,
                json!({
                    "statement_id": "01ef-c",
                    "status": {"state": "SUCCEEDED"},
                    "manifest": {"schema": {"columns": dbx_columns(&[("n", "INT")])}, "truncated": true},
                    "result": {"data_array": [["1"], ["2"], ["3"]], "next_chunk_internal_link": "/api/2.0/sql/statements/01ef-c/result/chunks/1"}
                }),
            ),
            _ => reply(400, json!({"error_code": "INVALID_PARAMETER_VALUE", "message": "warehouse abc123 is stopped"})),
        }
    })
    .await;
    let go = |sql: &'static str, max_rows: Option<u64>| {
        let base = fake.base.clone();
        async move {
            run_on(
                Platform::Databricks,
                &base,
                DBX_TOKEN,
                &dbx_settings(),
                &DataPolicy::default(),
                query_with(sql, max_rows, None),
            )
            .await
        }
    };
    let err = tool_error(go("SELECT bad", None).await);
    assert!(
        matches!(&err, ToolError::InvalidParams(m) if m.contains("PARSE_SYNTAX_ERROR")),
        "{err:?}"
    );
    let err = tool_error(go("SELECT elsewhere", None).await);
    assert!(
        matches!(&err, ToolError::Unavailable(m) if m.contains("chunk link")),
        "{err:?}"
    );
    let r = go("SELECT capped", Some(2)).await.unwrap();
    assert_eq!(r.rows, vec![vec![json!(1)], vec![json!(2)]]);
    assert!(r.truncated);
    assert_eq!(fake.seen().last().unwrap().body["row_limit"], json!(3));
    let err = tool_error(go("SELECT other", None).await);
    assert!(
        matches!(&err, ToolError::InvalidParams(m) if m.contains("stopped")),
        "{err:?}"
    );
    // No chunk was fetched from the foreign host or past the cap.
    assert!(fake.seen().iter().all(|s| s.method == "POST"));
}

#[tokio::test]
async fn databricks_listing_uses_bound_names() {
    let fake = Fake::start(|s| {
        let statement = s.body["statement"].as_str().unwrap_or_default();
        let (cols, rows) = if statement == "SHOW CATALOGS" {
            (
                dbx_columns(&[("catalog", "STRING")]),
                json!([["main"], ["samples"]]),
            )
        } else {
            (
                dbx_columns(&[("schema", "STRING"), ("name", "STRING"), ("type", "STRING")]),
                json!([["sales", "orders", "managed"]]),
            )
        };
        reply(
            200,
            json!({
                "statement_id": "01ef-l",
                "status": {"state": "SUCCEEDED"},
                "manifest": {"schema": {"columns": cols}},
                "result": {"data_array": rows}
            }),
        )
    })
    .await;
    let r = run_on(
        Platform::Databricks,
        &fake.base,
        DBX_TOKEN,
        &dbx_settings(),
        &DataPolicy::default(),
        DataOp::ListDatabases,
    )
    .await
    .unwrap();
    assert_eq!(r.columns, columns(&[("name", "string")]));
    assert_eq!(r.rows, vec![vec![json!("main")], vec![json!("samples")]]);
    let r = run_on(
        Platform::Databricks,
        &fake.base,
        DBX_TOKEN,
        &dbx_settings(),
        &DataPolicy::default(),
        DataOp::ListTables {
            database: Some("prod`; DROP".into()),
            schema: Some("sales' OR 1=1 --".into()),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        r.rows,
        vec![vec![json!("sales"), json!("orders"), json!("managed")]]
    );
    let body = &fake.seen()[1].body;
    let statement = body["statement"].as_str().unwrap();
    assert!(
        statement.contains("FROM `prod``; DROP`.information_schema.tables"),
        "{statement}"
    );
    assert_eq!(
        body["parameters"],
        json!([{"name": "schema", "value": "sales' OR 1=1 --", "type": "STRING"}])
    );
}

// ---------------------------------------------------------------------------
// BigQuery

const BQ_TOKEN: &str = "ya29.bq-canary-token";

fn bq_base(fake: &Fake) -> url::Url {
    fake.base.join("bigquery/v2").unwrap()
}

fn bq_settings() -> Map<String, Value> {
    settings(json!({"projectId": "acme-data", "location": "EU"}))
}

#[tokio::test]
async fn bigquery_query_binds_positional_params_and_maps_types() {
    let fields = json!([
        {"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
        {"name": "f", "type": "FLOAT", "mode": "NULLABLE"},
        {"name": "n", "type": "NUMERIC", "mode": "NULLABLE"},
        {"name": "bn", "type": "BIGNUMERIC", "mode": "NULLABLE"},
        {"name": "b", "type": "BOOLEAN", "mode": "NULLABLE"},
        {"name": "s", "type": "STRING", "mode": "NULLABLE"},
        {"name": "by", "type": "BYTES", "mode": "NULLABLE"},
        {"name": "ts", "type": "TIMESTAMP", "mode": "NULLABLE"},
        {"name": "d", "type": "DATE", "mode": "NULLABLE"},
        {"name": "dt", "type": "DATETIME", "mode": "NULLABLE"},
        {"name": "t", "type": "TIME", "mode": "NULLABLE"},
        {"name": "j", "type": "JSON", "mode": "NULLABLE"},
        {"name": "g", "type": "GEOGRAPHY", "mode": "NULLABLE"},
        {"name": "rec", "type": "RECORD", "mode": "NULLABLE", "fields": [
            {"name": "x", "type": "INTEGER", "mode": "NULLABLE"},
            {"name": "tags", "type": "STRING", "mode": "REPEATED"}
        ]},
        {"name": "nums", "type": "INT64", "mode": "REPEATED"}
    ]);
    let answer = json!({
        "kind": "bigquery#queryResponse",
        "schema": {"fields": fields},
        "jobReference": {"projectId": "acme-data", "jobId": "job_123", "location": "EU"},
        "totalRows": "2",
        "jobComplete": true,
        "rows": [
            {"f": [{"v": "42"}, {"v": "1.25"}, {"v": "99.99"}, {"v": "123456789012345678901234567890.5"},
                   {"v": "true"}, {"v": "a\"b"}, {"v": "SGkK"}, {"v": "1709210096789000"},
                   {"v": "2024-02-29"}, {"v": "2024-02-29T12:34:56.789"}, {"v": "12:34:56"},
                   {"v": "{\"k\":[1]}"}, {"v": "POINT(1 2)"},
                   {"v": {"f": [{"v": "7"}, {"v": [{"v": "x"}, {"v": "y"}]}]}},
                   {"v": [{"v": "1"}, {"v": "2"}]}]},
            {"f": [{"v": "0"}, {"v": null}, {"v": null}, {"v": null}, {"v": null}, {"v": null},
                   {"v": null}, {"v": null}, {"v": null}, {"v": null}, {"v": null}, {"v": null},
                   {"v": null}, {"v": null}, {"v": []}]}
        ]
    });
    let fake = Fake::start(move |_| reply(200, answer.clone())).await;
    let result = run_on(
        Platform::BigQuery,
        &bq_base(&fake),
        BQ_TOKEN,
        &bq_settings(),
        &DataPolicy::default(),
        query(
            "SELECT * FROM ds.t WHERE id = ? AND name = ? AND score > ? AND ok = ? AND gone IS ?",
            vec![
                json!(42),
                json!("\\'; DROP TABLE ds.t; --"),
                json!(1.5),
                json!(true),
                Value::Null,
            ],
        ),
    )
    .await
    .unwrap();
    let seen = fake.seen();
    assert_eq!(
        fake.requests(),
        vec!["POST /bigquery/v2/projects/acme-data/queries"]
    );
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer ya29.bq-canary-token")
    );
    assert_eq!(
        seen[0].body,
        json!({
            "query": "SELECT * FROM ds.t WHERE id = ? AND name = ? AND score > ? AND ok = ? AND gone IS ?",
            "useLegacySql": false,
            "parameterMode": "POSITIONAL",
            "queryParameters": [
                {"parameterType": {"type": "INT64"}, "parameterValue": {"value": "42"}},
                {"parameterType": {"type": "STRING"}, "parameterValue": {"value": "\\'; DROP TABLE ds.t; --"}},
                {"parameterType": {"type": "FLOAT64"}, "parameterValue": {"value": "1.5"}},
                {"parameterType": {"type": "BOOL"}, "parameterValue": {"value": "true"}},
                {"parameterType": {"type": "STRING"}, "parameterValue": {}}
            ],
            "maxResults": 1001,
            "timeoutMs": seen[0].body["timeoutMs"],
            "jobTimeoutMs": 30000,
            "location": "EU",
            "dryRun": false,
            "formatOptions": {"useInt64Timestamp": true}
        })
    );
    let wait = seen[0].body["timeoutMs"].as_u64().unwrap();
    assert!((9_000..=10_000).contains(&wait), "{wait}");
    assert_eq!(
        result.columns,
        columns(&[
            ("id", "integer"),
            ("f", "number"),
            ("n", "decimal"),
            ("bn", "decimal"),
            ("b", "boolean"),
            ("s", "string"),
            ("by", "bytes"),
            ("ts", "timestamp"),
            ("d", "date"),
            ("dt", "datetime"),
            ("t", "time"),
            ("j", "json"),
            ("g", "geography"),
            ("rec", "json"),
            ("nums", "json"),
        ])
    );
    assert_eq!(
        result.rows[0],
        vec![
            json!(42),
            json!(1.25),
            json!("99.99"),
            json!("123456789012345678901234567890.5"),
            json!(true),
            json!("a\"b"),
            json!("SGkK"),
            json!("2024-02-29T12:34:56.789Z"),
            json!("2024-02-29"),
            json!("2024-02-29T12:34:56.789"),
            json!("12:34:56"),
            json!({"k": [1]}),
            json!("POINT(1 2)"),
            json!({"x": 7, "tags": ["x", "y"]}),
            json!([1, 2]),
        ]
    );
    let mut nulls = vec![Value::Null; 15];
    nulls[0] = json!(0);
    nulls[14] = json!([]);
    assert_eq!(result.rows[1], nulls);
    assert!(!result.truncated);
}

#[tokio::test]
async fn bigquery_incomplete_jobs_are_polled_and_pages_followed() {
    let polls = Arc::new(AtomicUsize::new(0));
    let p = polls.clone();
    let fields = json!([{"name": "n", "type": "INTEGER", "mode": "NULLABLE"}]);
    let fake = Fake::start(move |s| {
        let page = |rows: Value, token: Option<&str>| {
            let mut v = json!({
                "jobReference": {"projectId": "acme-data", "jobId": "job_async", "location": "EU"},
                "jobComplete": true,
                "schema": {"fields": fields.clone()},
                "totalRows": "4",
                "rows": rows
            });
            if let Some(t) = token {
                v["pageToken"] = json!(t);
            }
            reply(200, v)
        };
        match (s.method.as_str(), s.path.as_str()) {
            ("POST", "/bigquery/v2/projects/acme-data/queries") => reply(
                200,
                json!({
                    "jobReference": {"projectId": "acme-data", "jobId": "job_async", "location": "EU"},
                    "jobComplete": false
                }),
            ),
            ("GET", "/bigquery/v2/projects/acme-data/queries/job_async") => {
                let q = s.query.clone().unwrap_or_default();
                assert!(q.contains("maxResults=1001"), "{q}");
                assert!(q.contains("location=EU"), "{q}");
                assert!(q.contains("formatOptions.useInt64Timestamp=true"), "{q}");
                assert!(q.contains("timeoutMs="), "{q}");
                if q.contains("pageToken=tok%2F2") {
                    page(json!([{"f": [{"v": "3"}]}, {"f": [{"v": "4"}]}]), None)
                } else if p.fetch_add(1, Ordering::SeqCst) == 0 {
                    reply(
                        200,
                        json!({"jobReference": {"projectId": "acme-data", "jobId": "job_async", "location": "EU"}, "jobComplete": false}),
                    )
                } else {
                    page(json!([{"f": [{"v": "1"}]}, {"f": [{"v": "2"}]}]), Some("tok/2"))
                }
            }
            other => panic!("unexpected request {other:?}"),
        }
    })
    .await;
    let result = run_on(
        Platform::BigQuery,
        &bq_base(&fake),
        BQ_TOKEN,
        &bq_settings(),
        &DataPolicy::default(),
        query("SELECT n FROM ds.t", vec![]),
    )
    .await
    .unwrap();
    assert_eq!(
        result.rows,
        vec![
            vec![json!(1)],
            vec![json!(2)],
            vec![json!(3)],
            vec![json!(4)]
        ]
    );
    assert!(!result.truncated);
    let requests = fake.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert_eq!(requests[0], "POST /bigquery/v2/projects/acme-data/queries");
    assert!(requests[3].contains("pageToken=tok%2F2"), "{requests:?}");
    // The POST carried no parameters: none were given.
    assert!(fake.seen()[0].body.get("queryParameters").is_none());
}

#[tokio::test]
async fn bigquery_job_running_past_the_deadline_is_cancelled() {
    let fake = Fake::start(|s| match (s.method.as_str(), s.path.as_str()) {
        ("POST", "/bigquery/v2/projects/acme-data/queries")
        | ("GET", "/bigquery/v2/projects/acme-data/queries/job_slow") => reply(
            200,
            json!({"jobReference": {"projectId": "acme-data", "jobId": "job_slow", "location": "EU"}, "jobComplete": false}),
        ),
        ("POST", "/bigquery/v2/projects/acme-data/jobs/job_slow/cancel") => {
            assert_eq!(s.query.as_deref(), Some("location=EU"));
            reply(200, json!({"kind": "bigquery#jobCancelResponse"}))
        }
        other => panic!("unexpected request {other:?}"),
    })
    .await;
    let started = Instant::now();
    let err = tool_error(
        run_on(
            Platform::BigQuery,
            &bq_base(&fake),
            BQ_TOKEN,
            &bq_settings(),
            &DataPolicy::default(),
            query_with("SELECT * FROM ds.huge", None, Some(300)),
        )
        .await,
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(
        matches!(&err, ToolError::Unavailable(m) if m.contains("timeout")),
        "{err:?}"
    );
    assert_eq!(
        fake.requests().last().map(String::as_str),
        Some("POST /bigquery/v2/projects/acme-data/jobs/job_slow/cancel?location=EU")
    );
}

#[tokio::test]
async fn bigquery_errors_caps_and_listing() {
    let fake = Fake::start(|s| match (s.method.as_str(), s.path.as_str()) {
        ("POST", "/bigquery/v2/projects/acme-data/queries") => {
            if s.body["query"] == json!("SELECT bad") {
                return reply(
                    400,
                    json!({"error": {"code": 400, "message": "Syntax error: Unexpected identifier \"bad\"", "errors": [{"reason": "invalidQuery"}], "status": "INVALID_ARGUMENT"}}),
                );
            }
            if s.body["query"] == json!("SELECT quota") {
                return reply(
                    403,
                    json!({"error": {"code": 403, "message": "Exceeded rate limits", "errors": [{"reason": "rateLimitExceeded"}]}}),
                );
            }
            reply(
                200,
                json!({
                    "jobReference": {"projectId": "acme-data", "jobId": "job_c", "location": "EU"},
                    "jobComplete": true,
                    "schema": {"fields": [{"name": "n", "type": "INTEGER"}]},
                    "totalRows": "500",
                    "rows": [{"f": [{"v": "1"}]}, {"f": [{"v": "2"}]}, {"f": [{"v": "3"}]}],
                    "pageToken": "more"
                }),
            )
        }
        ("GET", "/bigquery/v2/projects/acme-data/queries/job_c") => reply(
            200,
            json!({
                "jobReference": {"projectId": "acme-data", "jobId": "job_c", "location": "EU"},
                "jobComplete": true,
                "schema": {"fields": [{"name": "n", "type": "INTEGER"}]},
                "totalRows": "500",
                "rows": [{"f": [{"v": "4"}]}]
            }),
        ),
        ("GET", "/bigquery/v2/projects/acme-data/datasets") => {
            if s.query.as_deref().is_some_and(|q| q.contains("pageToken=p2")) {
                reply(200, json!({"datasets": [{"datasetReference": {"projectId": "acme-data", "datasetId": "sales"}}]}))
            } else {
                reply(
                    200,
                    json!({"datasets": [{"datasetReference": {"projectId": "acme-data", "datasetId": "marketing"}}], "nextPageToken": "p2"}),
                )
            }
        }
        ("GET", "/bigquery/v2/projects/acme-data/datasets/sales/tables") => reply(
            200,
            json!({"tables": [
                {"tableReference": {"projectId": "acme-data", "datasetId": "sales", "tableId": "orders"}, "type": "TABLE"},
                {"tableReference": {"projectId": "acme-data", "datasetId": "sales", "tableId": "daily"}, "type": "VIEW"}
            ]}),
        ),
        ("GET", "/bigquery/v2/projects/acme-data/datasets/sales/tables/orders%2F..%3Fx") => reply(
            200,
            json!({"schema": {"fields": [
                {"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
                {"name": "customer", "type": "RECORD", "mode": "NULLABLE", "fields": [
                    {"name": "name", "type": "STRING"}
                ]},
                {"name": "tags", "type": "STRING", "mode": "REPEATED"}
            ]}}),
        ),
        ("GET", "/bigquery/v2/projects/acme-data/datasets/sales/tables/missing") => {
            reply(404, json!({"error": {"code": 404, "message": "Not found: Table acme-data:sales.missing"}}))
        }
        other => panic!("unexpected request {other:?}"),
    })
    .await;
    let base = bq_base(&fake);
    let go = |op: DataOp| {
        let base = base.clone();
        async move {
            run_on(
                Platform::BigQuery,
                &base,
                BQ_TOKEN,
                &bq_settings(),
                &DataPolicy::default(),
                op,
            )
            .await
        }
    };
    let err = tool_error(go(query("SELECT bad", vec![])).await);
    assert!(
        matches!(&err, ToolError::InvalidParams(m) if m.contains("Syntax error")),
        "{err:?}"
    );
    assert!(matches!(
        tool_error(go(query("SELECT quota", vec![])).await),
        ToolError::RateLimited { .. }
    ));
    let r = go(query_with("SELECT n", Some(2), None)).await.unwrap();
    assert_eq!(r.rows, vec![vec![json!(1)], vec![json!(2)]]);
    assert!(r.truncated);
    assert_eq!(fake.seen().last().unwrap().body["maxResults"], json!(3));
    // Under the cap, the next page is fetched; totalRows says more rows
    // exist than the pages held, so the answer is marked truncated.
    let r = go(query("SELECT n", vec![])).await.unwrap();
    assert_eq!(r.rows.len(), 4);
    assert!(r.truncated);
    assert!(
        fake.requests()
            .iter()
            .any(|q| q.contains("/queries/job_c?") && q.contains("pageToken=more"))
    );

    let r = go(DataOp::ListSchemas { database: None }).await.unwrap();
    assert_eq!(r.columns, columns(&[("name", "string")]));
    assert_eq!(r.rows, vec![vec![json!("marketing")], vec![json!("sales")]]);
    let r = go(DataOp::ListTables {
        database: None,
        schema: Some("sales".into()),
    })
    .await
    .unwrap();
    assert_eq!(
        r.rows,
        vec![
            vec![json!("sales"), json!("orders"), json!("table")],
            vec![json!("sales"), json!("daily"), json!("view")],
        ]
    );
    let err = tool_error(
        go(DataOp::ListTables {
            database: None,
            schema: None,
        })
        .await,
    );
    assert!(
        matches!(&err, ToolError::InvalidParams(m) if m.contains("dataset")),
        "{err:?}"
    );
    // A table name cannot move the request: it is one encoded segment.
    let r = go(DataOp::DescribeTable {
        database: None,
        schema: Some("sales".into()),
        table: "orders/..?x".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        r.columns,
        columns(&[
            ("name", "string"),
            ("type", "string"),
            ("nullable", "boolean")
        ])
    );
    assert_eq!(
        r.rows,
        vec![
            vec![json!("id"), json!("integer"), json!(false)],
            vec![json!("customer"), json!("record"), json!(true)],
            vec![json!("customer.name"), json!("string"), json!(true)],
            vec![json!("tags"), json!("array<string>"), json!(true)],
        ]
    );
    let err = tool_error(
        go(DataOp::DescribeTable {
            database: None,
            schema: Some("sales".into()),
            table: "missing".into(),
        })
        .await,
    );
    assert!(
        matches!(&err, ToolError::InvalidParams(m) if m.contains("LIST_TABLES")),
        "{err:?}"
    );
    for s in fake.seen() {
        assert_eq!(
            s.header("authorization"),
            Some("Bearer ya29.bq-canary-token")
        );
    }
}

#[tokio::test]
async fn credentials_never_go_to_loopback_without_the_opt_in() {
    let fake = Fake::start(|s| panic!("nothing may be sent, got {} {}", s.method, s.path)).await;
    for (platform, base) in [
        (Platform::Snowflake, fake.base.clone()),
        (Platform::Databricks, fake.base.clone()),
        (Platform::BigQuery, bq_base(&fake)),
    ] {
        let err = tool_error(
            run_with(
                EgressPolicy::default(),
                platform,
                &base,
                "token",
                &settings(json!({"warehouseId": "w", "projectId": "p"})),
                &DataPolicy::default(),
                query("SELECT 1", vec![]),
            )
            .await,
        );
        assert!(matches!(err, ToolError::Denied(_)), "{platform:?}: {err:?}");
    }
    assert!(fake.seen().is_empty());
}

#[tokio::test]
async fn missing_settings_are_the_admins_to_fix() {
    let base: url::Url = "https://example.invalid/".parse().unwrap();
    for (platform, what) in [
        (Platform::Databricks, "warehouseId"),
        (Platform::BigQuery, "projectId"),
    ] {
        let err = tool_error(
            run_on(
                platform,
                &base,
                "t",
                &Map::new(),
                &DataPolicy::default(),
                query("SELECT 1", vec![]),
            )
            .await,
        );
        assert!(
            matches!(&err, ToolError::NotConnected(m) if m.contains(what)),
            "{err:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL (a real server)

/// The test server's connection string, or `None` (skipped) when the
/// script did not start one.
fn postgres_url() -> Option<String> {
    match std::env::var("RUNTIME_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("RUNTIME_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "RUNTIME_REQUIRE_POSTGRES=1 but RUNTIME_TEST_POSTGRES_URL is not set; run `source scripts/postgres.sh && ensure_postgres` first"
                );
            }
            eprintln!(
                "skipped: RUNTIME_TEST_POSTGRES_URL is not set (source scripts/postgres.sh and run ensure_postgres)"
            );
            None
        }
    }
}

async fn pg(url: &str, policy: &DataPolicy, op: DataOp) -> Result<QueryResult, DataError> {
    let unused: url::Url = "postgres://configured-connection-string/".parse().unwrap();
    run_on(Platform::Postgres, &unused, url, &Map::new(), policy, op).await
}

async fn pg_ok(url: &str, op: DataOp) -> QueryResult {
    pg(url, &DataPolicy::default(), op).await.unwrap()
}

/// The connection string's password, which no error may contain.
fn password_of(url: &str) -> String {
    let parsed: url::Url = url.parse().unwrap();
    parsed.password().unwrap_or_default().to_string()
}

#[tokio::test]
async fn postgres_maps_every_type() {
    let Some(url) = postgres_url() else { return };
    let r = pg_ok(
        &url,
        query("SELECT * FROM type_samples ORDER BY id", vec![]),
    )
    .await;
    assert_eq!(
        r.columns,
        columns(&[
            ("id", "integer"),
            ("c_int2", "integer"),
            ("c_int4", "integer"),
            ("c_int8", "integer"),
            ("c_float4", "number"),
            ("c_float8", "number"),
            ("c_numeric", "decimal"),
            ("c_bool", "boolean"),
            ("c_text", "string"),
            ("c_varchar", "string"),
            ("c_timestamptz", "timestamp"),
            ("c_timestamp", "datetime"),
            ("c_date", "date"),
            ("c_time", "time"),
            ("c_json", "json"),
            ("c_jsonb", "json"),
            ("c_uuid", "uuid"),
            ("c_bytea", "bytes"),
            ("c_interval", "interval"),
            ("c_int_array", "json"),
            ("c_text_array", "json"),
        ])
    );
    assert_eq!(
        r.rows[0],
        vec![
            json!(1),
            json!(32767),
            json!(-2_147_483_648i64),
            json!(i64::MAX),
            json!(1.5),
            json!(2.25),
            json!("12345678901234.123456"),
            json!(true),
            json!("héllo ✓ \"quoted\""),
            json!("short"),
            json!("2024-02-29T12:34:56.789Z"),
            json!("2024-02-29T12:34:56.789"),
            json!("2024-02-29"),
            json!("12:34:56"),
            json!({"a": [1, 2.5, "x"]}),
            json!({"b": {"c": null}}),
            json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            json!("SGkK"),
            json!("P1DT2H3M4.5S"),
            json!([1, 2, 3]),
            json!(["a", "b c", null]),
        ]
    );
    let mut nulls = vec![Value::Null; 21];
    nulls[0] = json!(2);
    assert_eq!(r.rows[1], nulls);
    assert_eq!(
        r.rows[2],
        vec![
            json!(3),
            json!(-1),
            json!(0),
            json!(i64::MIN),
            json!("NaN"),
            json!("-Infinity"),
            json!("-0.000001"),
            json!(false),
            json!(""),
            json!("x"),
            json!("1970-01-01T00:00:00Z"),
            json!("1969-12-31T23:59:59.999999"),
            json!("0001-01-01"),
            json!("00:00:00.000001"),
            json!([]),
            json!("just a string"),
            json!("00000000-0000-0000-0000-000000000000"),
            json!(""),
            json!("P-1M"),
            json!([]),
            json!([]),
        ]
    );
    assert!(!r.truncated);

    // Types without a mapping are refused before running, with the fix.
    let err = tool_error(
        pg(
            &url,
            &DataPolicy::default(),
            query("SELECT point(1, 2) AS p", vec![]),
        )
        .await,
    );
    assert!(
        matches!(&err, ToolError::InvalidParams(m) if m.contains("p::text")),
        "{err:?}"
    );
}

#[tokio::test]
async fn postgres_binds_hostile_strings_as_values() {
    let Some(url) = postgres_url() else { return };
    let sql = "SELECT id, name FROM customers WHERE name = $1 ORDER BY id";
    let hostile = "'; DROP TABLE customers; --";
    let r = pg_ok(&url, query(sql, vec![json!(hostile)])).await;
    assert!(r.rows.is_empty());
    let r = pg_ok(&url, query(sql, vec![json!("Conan O'Brien")])).await;
    assert_eq!(r.rows, vec![vec![json!(6), json!("Conan O'Brien")]]);
    let r = pg_ok(&url, query(sql, vec![json!("李雷")])).await;
    assert_eq!(r.rows, vec![vec![json!(5), json!("李雷")]]);
    // Strings come back exactly as sent, whatever they hold.
    for s in [
        hostile,
        "$$; DELETE FROM orders; $$",
        "\\x00 \\' \" ` /* -- */",
        "😀 e\u{301} \u{202e}rtl",
    ] {
        let r = pg_ok(&url, query("SELECT $1::text AS echo", vec![json!(s)])).await;
        assert_eq!(r.rows, vec![vec![json!(s)]]);
    }
    // NUL cannot be stored in text: refused, naming the parameter.
    let err = tool_error(
        pg(
            &url,
            &DataPolicy::default(),
            query(sql, vec![json!("a\u{0}b")]),
        )
        .await,
    );
    assert!(
        matches!(&err, ToolError::InvalidParams(m) if m.contains("params[0]") && m.contains("NUL")),
        "{err:?}"
    );
    // Typed parameters, checked against what PostgreSQL inferred.
    let r = pg_ok(
        &url,
        query(
            "SELECT count(*) AS n FROM orders WHERE customer_id = $1 AND ordered_at >= $2 AND amount > $3 AND metadata @> $4",
            vec![json!(3), json!("2024-03-01T00:00:00Z"), json!("100.50"), json!("{\"channel\": \"web\"}")],
        ),
    )
    .await;
    assert_eq!(r.columns, columns(&[("n", "integer")]));
    assert!(r.rows[0][0].as_i64().unwrap() > 0);
    let err = tool_error(
        pg(
            &url,
            &DataPolicy::default(),
            query("SELECT * FROM orders WHERE id = $1", vec![json!("abc")]),
        )
        .await,
    );
    assert!(
        matches!(&err, ToolError::InvalidParams(m) if m.contains("params[0]") && m.contains("$1")),
        "{err:?}"
    );
    let err = tool_error(
        pg(
            &url,
            &DataPolicy::default(),
            query("SELECT * FROM orders WHERE id = $1", vec![]),
        )
        .await,
    );
    assert!(
        matches!(&err, ToolError::InvalidParams(m) if m.contains("placeholder")),
        "{err:?}"
    );
    // The table is still there.
    let r = pg_ok(&url, query("SELECT count(*) FROM customers", vec![])).await;
    assert_eq!(r.rows, vec![vec![json!(10)]]);
}

#[tokio::test]
async fn postgres_read_only_is_enforced_twice() {
    let Some(url) = postgres_url() else { return };
    // The classifier refuses without a round trip: this server does not
    // exist, and the answer is still `denied`.
    let nowhere = "postgres://nobody:pw@127.0.0.1:1/none?sslmode=disable";
    for sql in [
        "INSERT INTO customers (id) VALUES (99)",
        // Side effects the READ ONLY transaction would not all stop.
        "SELECT nextval('invoice_numbers')",
        "SELECT pg_catalog.set_config('search_path', 'evil', false)",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
    ] {
        let err = tool_error(pg(nowhere, &DataPolicy::default(), query(sql, vec![])).await);
        assert!(
            matches!(&err, ToolError::Denied(m) if m.contains("\"readOnly\": false")),
            "{sql}: {err:?}"
        );
    }
    // Writes the classifier cannot see stop at the READ ONLY transaction.
    let sql = "SELECT * FROM write_something()";
    let err = tool_error(pg(&url, &DataPolicy::default(), query(sql, vec![])).await);
    let ToolError::Denied(m) = &err else {
        panic!("{sql}: {err:?}")
    };
    assert!(
        m.contains("read-only") && m.contains("dataPolicy.readOnly = false"),
        "{m}"
    );
    let r = pg_ok(&url, query("SELECT count(*) FROM audit_log", vec![])).await;
    assert_eq!(r.rows, vec![vec![json!(0)]]);
    // With writes allowed, the same statement runs.
    let writable = DataPolicy {
        read_only: false,
        ..DataPolicy::default()
    };
    let r = pg(
        &url,
        &writable,
        query("SELECT nextval('invoice_numbers') AS n", vec![]),
    )
    .await
    .unwrap();
    assert!(r.rows[0][0].as_i64().unwrap() >= 1000);
}

#[tokio::test]
async fn postgres_statement_timeout_cancels() {
    let Some(url) = postgres_url() else { return };
    let started = Instant::now();
    let err = tool_error(
        pg(
            &url,
            &DataPolicy::default(),
            query_with("SELECT pg_sleep(5)", None, Some(300)),
        )
        .await,
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(&err, ToolError::Unavailable(m) if m.contains("300 ms timeout")),
        "{err:?}"
    );
}

#[tokio::test]
async fn postgres_caps_rows_and_bytes() {
    let Some(url) = postgres_url() else { return };
    let r = pg_ok(
        &url,
        query_with("SELECT id FROM orders ORDER BY id", Some(5), None),
    )
    .await;
    assert_eq!(r.rows, (1..=5).map(|i| vec![json!(i)]).collect::<Vec<_>>());
    assert!(r.truncated);
    let r = pg_ok(
        &url,
        query_with("SELECT id FROM orders ORDER BY id", Some(200), None),
    )
    .await;
    assert_eq!(r.rows.len(), 200);
    assert!(!r.truncated);
    let policy = DataPolicy {
        max_rows: 3,
        ..DataPolicy::default()
    };
    let r = pg(
        &url,
        &policy,
        query_with("SELECT id FROM orders", Some(50), None),
    )
    .await
    .unwrap();
    assert_eq!(r.rows.len(), 3);
    assert!(r.truncated);
    let policy = DataPolicy {
        max_bytes: 2048,
        ..DataPolicy::default()
    };
    let r = pg(
        &url,
        &policy,
        query(
            "SELECT repeat('x', 500) AS s FROM generate_series(1, 100)",
            vec![],
        ),
    )
    .await
    .unwrap();
    // Each row is 504 bytes of JSON: four fit in 2 KiB.
    assert_eq!(r.rows.len(), 4);
    assert!(r.truncated);
    assert!(serde_json::to_vec(&r.rows).unwrap().len() <= 2048);
}

#[tokio::test]
async fn postgres_lists_and_describes() {
    let Some(url) = postgres_url() else { return };
    let r = pg_ok(&url, DataOp::ListDatabases).await;
    assert_eq!(r.columns, columns(&[("name", "string")]));
    assert!(
        r.rows.contains(&vec![json!("runtime_test")]),
        "{:?}",
        r.rows
    );
    let r = pg_ok(&url, DataOp::ListSchemas { database: None }).await;
    assert!(r.rows.contains(&vec![json!("public")]) && r.rows.contains(&vec![json!("analytics")]));
    assert!(!r.rows.contains(&vec![json!("pg_catalog")]));
    let r = pg_ok(
        &url,
        DataOp::ListTables {
            database: None,
            schema: None,
        },
    )
    .await;
    assert_eq!(
        r.columns,
        columns(&[("schema", "string"), ("name", "string"), ("type", "string")])
    );
    assert!(
        r.rows
            .contains(&vec![json!("public"), json!("customers"), json!("table")])
    );
    assert!(r.rows.contains(&vec![
        json!("analytics"),
        json!("daily_revenue"),
        json!("view")
    ]));
    let r = pg_ok(
        &url,
        DataOp::ListTables {
            database: Some("RUNTIME_TEST".into()),
            schema: Some("ANALYTICS".into()),
        },
    )
    .await;
    assert_eq!(
        r.rows,
        vec![vec![
            json!("analytics"),
            json!("daily_revenue"),
            json!("view")
        ]]
    );
    let r = pg_ok(
        &url,
        DataOp::DescribeTable {
            database: None,
            schema: None,
            table: "customers".into(),
        },
    )
    .await;
    assert_eq!(
        r.columns,
        columns(&[
            ("name", "string"),
            ("type", "string"),
            ("nullable", "boolean")
        ])
    );
    assert_eq!(
        r.rows,
        vec![
            vec![json!("id"), json!("integer"), json!(false)],
            vec![json!("name"), json!("text"), json!(false)],
            vec![json!("email"), json!("character varying"), json!(false)],
            vec![json!("country"), json!("character"), json!(false)],
            vec![
                json!("created_at"),
                json!("timestamp with time zone"),
                json!(false)
            ],
            vec![json!("vip"), json!("boolean"), json!(false)],
        ]
    );
    let err = tool_error(
        pg(
            &url,
            &DataPolicy::default(),
            DataOp::DescribeTable {
                database: None,
                schema: Some("public".into()),
                table: "customers'; DROP TABLE customers; --".into(),
            },
        )
        .await,
    );
    assert!(
        matches!(&err, ToolError::InvalidParams(m) if m.contains("POSTGRES_LIST_TABLES")),
        "{err:?}"
    );
    let err = tool_error(
        pg(
            &url,
            &DataPolicy::default(),
            DataOp::ListSchemas {
                database: Some("other".into()),
            },
        )
        .await,
    );
    assert!(
        matches!(&err, ToolError::InvalidParams(m) if m.contains("runtime_test")),
        "{err:?}"
    );
}

#[tokio::test]
async fn postgres_errors_are_typed_and_never_show_the_connection_string() {
    let Some(url) = postgres_url() else { return };
    let password = password_of(&url);
    assert!(password.len() >= 8);
    let err = tool_error(pg(&url, &DataPolicy::default(), query("SELECT 1 +", vec![])).await);
    let ToolError::InvalidParams(m) = &err else {
        panic!("{err:?}")
    };
    assert!(m.contains("syntax error"), "{m}");
    let err = tool_error(
        pg(
            &url,
            &DataPolicy::default(),
            query("SELECT * FROM no_such_table", vec![]),
        )
        .await,
    );
    assert!(
        matches!(&err, ToolError::InvalidParams(m) if m.contains("no_such_table")),
        "{err:?}"
    );
    // A wrong password is the credential's fault.
    let wrong = url.replacen(&password, "wrong-password-canary", 1);
    assert!(matches!(
        pg(&wrong, &DataPolicy::default(), query("SELECT 1", vec![])).await,
        Err(DataError::Unauthorized)
    ));
    // An unreachable server: unavailable, and the message holds no secret.
    let down = "postgres://runtime:secret-canary-pw@127.0.0.1:1/runtime_test?sslmode=disable";
    let err = tool_error(pg(down, &DataPolicy::default(), query("SELECT 1", vec![])).await);
    assert!(matches!(err, ToolError::Unavailable(_)), "{err:?}");
    assert!(!format!("{err:?}").contains("secret-canary-pw"));
    // TLS is negotiated and the certificate verified: the test server's is
    // self-signed, so it is refused (psql's sslmode=require would accept it).
    if std::env::var("RUNTIME_TEST_POSTGRES_TLS").as_deref() == Ok("1") {
        let tls = url.replace("sslmode=disable", "sslmode=require");
        let err = tool_error(pg(&tls, &DataPolicy::default(), query("SELECT 1", vec![])).await);
        assert!(
            matches!(&err, ToolError::Unavailable(m) if m.contains("certificate")),
            "{err:?}"
        );
        assert!(!format!("{err:?}").contains(&password));
    }
    // Without the private-upstreams opt-in: no plaintext, no loopback.
    for strict_url in [
        url.clone(),
        url.replace("sslmode=disable", "sslmode=require"),
    ] {
        let unused: url::Url = "postgres://configured-connection-string/".parse().unwrap();
        let err = tool_error(
            run_with(
                EgressPolicy::default(),
                Platform::Postgres,
                &unused,
                &strict_url,
                &Map::new(),
                &DataPolicy::default(),
                query("SELECT 1", vec![]),
            )
            .await,
        );
        let ToolError::Denied(m) = &err else {
            panic!("{err:?}")
        };
        assert!(!m.contains(&password), "{m}");
    }
}
