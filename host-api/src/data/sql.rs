//! What a SQL statement is, as far as a read-only policy cares.
//!
//! [`check`] tokenizes just enough of each platform's dialect to tell code
//! from comments, string literals and quoted identifiers, then refuses
//! several statements in one call (after a `;`, or chained with
//! Snowflake's `->>` pipe operator) and, on a read-only connection,
//! everything it does not positively know to be a read:
//!
//! - the statement's kind must be on [`READ_STATEMENTS`] (an allowlist: a
//!   kind nobody listed, such as Snowflake's `UNDROP` or a keyword a
//!   platform adds next year, is refused, not guessed at); a `WITH` must end
//!   in a query and every CTE must be one, an `EXPLAIN` must explain one;
//! - inside it, words that make a query write ([`WRITE_KEYWORDS`], `INTO`,
//!   `FOR UPDATE`) are refused as a second net;
//! - so are calls of functions with side effects ([`SIDE_EFFECT_FUNCTIONS`],
//!   [`SIDE_EFFECT_PREFIXES`], every Snowflake `SYSTEM$…` function but
//!   [`PURE_SYSTEM_FUNCTIONS`]), however they are qualified or quoted.
//!
//! It errs on the side of refusing: wherever the dialects could read a text
//! two ways (a nested comment where comments do not nest, a backslash
//! before the quote that ends a raw string, a function named through
//! escapes or `IDENTIFIER(…)`), the statement is refused rather than
//! guessed at. A write spelled so the classifier cannot see it (a user
//! function that writes) is still stopped by PostgreSQL's `READ ONLY`
//! transaction; on the cloud platforms an admin should give read-only
//! connections a read-only role as well.
//!
//! [`quote_ident`] quotes an identifier for the few places where one must
//! appear in SQL text (a database-qualified `INFORMATION_SCHEMA`).

use crate::error::ToolError;

/// The SQL dialects, which differ in comments, literals and quoting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `--`, nested `/* */`; `'…'` with `''`, `E'…'` with backslashes,
    /// `$tag$…$tag$`; `"identifiers"`, `U&"identifiers"` with escapes.
    Postgres,
    /// `--`, `//`, `/* */` (not nested); `'…'` with `''` or backslashes,
    /// `$$…$$`; `"identifiers"`.
    Snowflake,
    /// `--`, nested `/* */`; `'…'` and `"…"` strings with backslashes,
    /// `r'…'` raw strings; `` `identifiers` `` with doubled backticks.
    Databricks,
    /// `--`, `#`, `/* */` (not nested); `'…'`, `"…"`, `'''…'''`, `"""…"""`
    /// with backslashes, `r'…'` raw strings; `` `identifiers` `` with
    /// backslashes.
    BigQuery,
}

/// One lexical token; only what the checks look at is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An unquoted word (keyword or identifier), upper-cased.
    Word(String),
    /// A quoted identifier: its text (doubled quotes undone), and whether
    /// escapes could spell it differently from that text (`U&"…"`, a
    /// backslash in BigQuery), so that nobody can tell what it names.
    Quoted { name: String, escaped: bool },
    /// A string literal of any kind.
    Literal,
    /// A number.
    Number,
    /// `;`.
    Semicolon,
    /// Any other character (operators, punctuation, non-ASCII).
    Punct(char),
}

/// The statement kinds a read-only connection runs, by first keyword (after
/// any opening parentheses). Anything else is refused, whatever it is:
/// `CALL`, `EXECUTE`, `DO`, `BEGIN`/`DECLARE` (scripts), `COPY`, `PUT`,
/// `GET`, `RM`/`REMOVE`, `UNDROP`, `COMMENT`, `SET`/`UNSET`/`RESET`,
/// `ALTER`, `GRANT`, `MERGE`, `ANALYZE` (writes statistics), `REFRESH`,
/// and `USE`, which reads nothing and changes the session's database or
/// schema (the connection's settings choose those).
///
/// - `SELECT`, `VALUES`, `TABLE`: queries ([`QUERY_STATEMENTS`]).
/// - `WITH`: only when every CTE is a query and so is the statement after
///   them (no `WITH x AS (DELETE … RETURNING *)`, no `WITH … INSERT`).
/// - `SHOW`, `DESCRIBE`, `DESC`: catalog reads on every platform that has
///   them.
/// - `EXPLAIN`: only of a query; its options are skipped (`ANALYZE`, which
///   runs the statement, is then no more than running the query).
/// - `LIST`, `LS`: Snowflake's listing of a stage (`LIST @stage`) and
///   Databricks' listing of a path (`LIST '/Volumes/…'`); nothing else.
pub const READ_STATEMENTS: &[&str] = &[
    "SELECT", "VALUES", "TABLE", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "LIST", "LS",
];

/// The statements a `WITH` may end in, a CTE may hold and `EXPLAIN` may
/// explain (besides a nested `WITH` that is itself a read).
const QUERY_STATEMENTS: &[&str] = &["SELECT", "VALUES", "TABLE"];

/// `EXPLAIN` options written as bare words before the statement:
/// PostgreSQL's legacy `ANALYZE`/`VERBOSE`, Databricks' modes. (Snowflake's
/// `USING <format>` and PostgreSQL's `( … )` list are skipped as well.)
const EXPLAIN_OPTIONS: &[&str] = &[
    "ANALYZE",
    "ANALYSE",
    "VERBOSE",
    "EXTENDED",
    "CODEGEN",
    "COST",
    "FORMATTED",
];

/// Keywords that make a query write or change the session wherever they
/// appear outside literals: the second net behind [`READ_STATEMENTS`] (a
/// data-modifying CTE, a word the statement-kind check did not expect).
/// Words that are common column names and write only as a statement's first
/// keyword (`COMMENT`, `RM`, `UNSET`, `UNDROP`) are not here: the allowlist
/// already refuses those statements.
const WRITE_KEYWORDS: &[&str] = &[
    "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "CREATE", "ALTER", "DROP", "TRUNCATE",
    "GRANT", "REVOKE", "COPY", "CALL", "EXECUTE", "EXEC", "PUT", "GET", "REMOVE", "UNLOAD",
    "VACUUM", "REFRESH", "SET", "USE", "BEGIN", "COMMIT", "ROLLBACK", "LOCK", "DECLARE",
];

/// Write keywords that are also names of read-only functions when a `(`
/// follows: Snowflake's `GET(variant, 'key')` and `INSERT(string, …)`,
/// `TRUNCATE(number, scale)`. No statement form of these takes a `(` next.
const ALSO_FUNCTIONS: &[&str] = &["GET", "INSERT", "TRUNCATE"];

/// Functions a read-only statement may not call (lower case; matched
/// case-insensitively, schema-qualified or not, quoted or not). Most of
/// these work inside PostgreSQL's `READ ONLY` transaction, which is why the
/// classifier must stop them:
///
/// - sessions and the server: `pg_cancel_backend`, `pg_terminate_backend`,
///   `pg_reload_conf`, `pg_promote`, `pg_switch_wal`/`pg_switch_xlog`,
///   `pg_log_backend_memory_contexts`, `pg_import_system_collations`,
///   `pg_start_backup`/`pg_stop_backup`, `pg_notify`;
/// - settings and sequences: `set_config`, `nextval`, `setval`;
/// - server files: `pg_stat_file`;
/// - SQL given as text, run where no classifier looks: `query_to_xml` and
///   friends, `ts_stat`, `ts_rewrite`; BigQuery's `external_query`;
/// - Databricks: `reflect`/`try_reflect`/`java_method` (call Java),
///   `http_request` (calls out).
///
/// `txid_current()` and `pg_sleep()` are left alone: the first only
/// assigns a transaction id, the second is bounded by the statement timeout.
pub const SIDE_EFFECT_FUNCTIONS: &[&str] = &[
    "pg_cancel_backend",
    "pg_terminate_backend",
    "pg_reload_conf",
    "pg_promote",
    "pg_switch_wal",
    "pg_switch_xlog",
    "pg_log_backend_memory_contexts",
    "pg_import_system_collations",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_notify",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "set_config",
    "nextval",
    "setval",
    "pg_stat_file",
    "lowrite",
    "loread",
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "query_to_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "ts_stat",
    "ts_rewrite",
    "external_query",
    "reflect",
    "try_reflect",
    "java_method",
    "http_request",
];

/// Families of such functions, by name prefix (lower case):
///
/// - `dblink`: `dblink`, `dblink_exec`, `dblink_connect`, … run SQL on
///   another server, outside this transaction;
/// - `lo_`: large objects (`lo_import`, `lo_export`, `lo_unlink`,
///   `lo_create`, `lo_from_bytea`, `lo_put`, …) read and write server
///   files and the large-object store;
/// - `pg_read_`, `pg_ls_`, `pg_file_`: server files (`pg_read_file`,
///   `pg_read_binary_file`, `pg_ls_dir`, adminpack's `pg_file_write`);
/// - `pg_advisory_`, `pg_try_advisory_`: advisory locks, which outlive the
///   statement;
/// - `pg_create_`, `pg_copy_`, `pg_logical_`, `pg_replication_origin_`:
///   restore points, replication slots, `pg_logical_emit_message`;
/// - `pg_rotate_logfile`, `pg_wal_replay_`, `pg_xlog_replay_`,
///   `pg_backup_`, `pg_stat_reset`: server state;
/// - `pg_set_`, `pg_clear_`, `pg_restore_`: planner statistics.
pub const SIDE_EFFECT_PREFIXES: &[&str] = &[
    "dblink",
    "lo_",
    "pg_read_",
    "pg_ls_",
    "pg_file_",
    "pg_advisory_",
    "pg_try_advisory_",
    "pg_create_",
    "pg_copy_",
    "pg_logical_",
    "pg_replication_origin_",
    "pg_rotate_logfile",
    "pg_wal_replay_",
    "pg_xlog_replay_",
    "pg_backup_",
    "pg_stat_reset",
    "pg_set_",
    "pg_clear_",
    "pg_restore_",
];

/// The Snowflake `SYSTEM$…` functions a read-only statement may call: they
/// only compute, read metadata, or wait (lower case). Every other
/// `SYSTEM$…` function is refused: many cancel queries, abort sessions,
/// resume pipes, run tasks or change settings (`SYSTEM$CANCEL_QUERY`,
/// `SYSTEM$ABORT_SESSION`, `SYSTEM$PIPE_FORCE_RESUME`, `SYSTEM$TASK_…`,
/// `SYSTEM$SET_…`), and new ones appear every release.
pub const PURE_SYSTEM_FUNCTIONS: &[&str] = &[
    "system$typeof",
    "system$clustering_information",
    "system$clustering_depth",
    "system$get_tag",
    "system$pipe_status",
    "system$stream_has_data",
    "system$wait",
];

/// What a read-only connection runs, for messages.
const READS: &str =
    "SELECT, WITH … SELECT, VALUES, TABLE, SHOW, DESCRIBE, EXPLAIN of a query, or LIST @stage";

/// How deeply `WITH`s and parentheses may nest in the statement-kind check
/// (each level is a recursive call; real queries stay far below).
const MAX_NESTING: usize = 64;

/// Longest identifier [`quote_ident`] accepts (the platforms' own limit is
/// 255 or less).
const MAX_IDENT_LEN: usize = 255;

/// Refuses what `sql` must not run: more than one statement, an unterminated
/// literal or comment, and on a read-only connection anything not known to
/// be a read (see the module documentation).
///
/// Errors: [`ToolError::InvalidParams`] for malformed text and several
/// statements, [`ToolError::Denied`] for what a read-only connection
/// refuses; every message says what to change.
pub fn check(sql: &str, dialect: Dialect, read_only: bool) -> Result<(), ToolError> {
    let tokens = tokenize(sql, dialect)?;
    let end = match tokens.iter().position(|t| *t == Token::Semicolon) {
        Some(pos) => {
            if tokens
                .get(pos..)
                .is_some_and(|rest| rest.iter().any(|t| *t != Token::Semicolon))
            {
                return Err(ToolError::InvalidParams(
                    "params.sql holds more than one statement (SQL follows a `;`); send one statement per call".into(),
                ));
            }
            pos
        }
        None => tokens.len(),
    };
    let tokens = tokens.get(..end).unwrap_or_default();
    if dialect == Dialect::Snowflake
        && tokens
            .windows(3)
            .any(|w| w == [Token::Punct('-'), Token::Punct('>'), Token::Punct('>')])
    {
        return Err(ToolError::InvalidParams(
            "params.sql chains statements with Snowflake's `->>` pipe operator; send one statement per call (filter a SHOW with a query on INFORMATION_SCHEMA instead)".into(),
        ));
    }
    if tokens.iter().all(|t| *t == Token::Punct('(')) {
        return Err(ToolError::InvalidParams(
            "params.sql holds no statement (only comments or punctuation)".into(),
        ));
    }
    if !read_only {
        return Ok(());
    }
    statement_is_read(tokens, dialect).map_err(|what| refuse(&what))?;
    check_words(tokens)?;
    check_calls(tokens, dialect)
}

/// The refusal of a statement on a read-only connection: `why`, then what
/// runs and how an admin lifts the policy.
fn refuse(why: &str) -> ToolError {
    ToolError::Denied(format!(
        "{why}; this toolkit's dataPolicy is read-only (readOnly: true), so only one query runs ({READS}); an admin can allow writes with configure `\"dataPolicy\": {{\"readOnly\": false}}`"
    ))
}

/// `tokens` without their leading `(`s.
fn skip_open(tokens: &[Token]) -> &[Token] {
    let n = tokens
        .iter()
        .take_while(|t| **t == Token::Punct('('))
        .count();
    tokens.get(n..).unwrap_or_default()
}

/// The index of the `)` closing the `(` at `open`.
fn closing(tokens: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t {
            Token::Punct('(') => depth += 1,
            Token::Punct(')') => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether the statement's kind is on [`READ_STATEMENTS`] and, for the
/// kinds that wrap another statement, whether that one is a read; `Err`
/// says what it is instead.
fn statement_is_read(tokens: &[Token], dialect: Dialect) -> Result<(), String> {
    let body = skip_open(tokens);
    let kind = match body.first() {
        Some(Token::Word(w)) if READ_STATEMENTS.contains(&w.as_str()) => w.as_str(),
        Some(Token::Word(w)) => {
            return Err(format!(
                "`{w}` statements are refused: `{w}` is not a statement kind known to only read"
            ));
        }
        _ => return Err("params.sql does not start with a statement keyword".into()),
    };
    let rest = body.get(1..).unwrap_or_default();
    match kind {
        "EXPLAIN" => query_is_read(explained(rest), 0)
            .map_err(|what| format!("EXPLAIN is refused unless it explains a query: {what}")),
        "LIST" | "LS" => {
            let stage = matches!(
                (dialect, rest.first()),
                (Dialect::Snowflake, Some(Token::Punct('@') | Token::Literal))
                    | (Dialect::Databricks, Some(Token::Literal))
            );
            if stage {
                Ok(())
            } else {
                Err(format!(
                    "`{kind}` is refused unless it lists a Snowflake stage (`LIST @stage`) or a Databricks path (`LIST '/Volumes/…'`)"
                ))
            }
        }
        "SHOW" | "DESCRIBE" | "DESC" => Ok(()),
        // SELECT, VALUES, TABLE and WITH.
        _ => query_is_read(tokens, 0).map_err(|what| {
            format!("params.sql is a WITH that is not only queries: {what}; every CTE and the statement after them must be a query")
        }),
    }
}

/// What an `EXPLAIN` explains: `rest` without its options.
fn explained(rest: &[Token]) -> &[Token] {
    let mut i = 0;
    // PostgreSQL's `( ANALYZE, FORMAT JSON )`, told from `EXPLAIN (SELECT 1)`
    // by what follows the parenthesis.
    if rest.first() == Some(&Token::Punct('(')) && !starts_query(rest.get(1..).unwrap_or_default())
    {
        match closing(rest, 0) {
            Some(close) => i = close + 1,
            None => return rest,
        }
    }
    loop {
        match rest.get(i) {
            Some(Token::Word(w)) if EXPLAIN_OPTIONS.contains(&w.as_str()) => i += 1,
            // Snowflake's `USING TABULAR | JSON | TEXT`.
            Some(Token::Word(w)) if w == "USING" => i += 2,
            _ => break,
        }
    }
    rest.get(i..).unwrap_or_default()
}

/// Whether `tokens` start (after `(`s) with a query keyword or `WITH`.
fn starts_query(tokens: &[Token]) -> bool {
    matches!(skip_open(tokens).first(), Some(Token::Word(w)) if w == "WITH" || QUERY_STATEMENTS.contains(&w.as_str()))
}

/// Whether `tokens` are a query: a [`QUERY_STATEMENTS`] kind, or a `WITH`
/// whose CTEs and final statement are queries. `Err` says what is there
/// instead ("it runs `UPDATE`").
fn query_is_read(tokens: &[Token], depth: usize) -> Result<(), String> {
    if depth > MAX_NESTING {
        return Err(format!(
            "it nests WITHs more than {MAX_NESTING} deep (flatten the query)"
        ));
    }
    let tokens = skip_open(tokens);
    let rest = tokens.get(1..).unwrap_or_default();
    match tokens.first() {
        Some(Token::Word(w)) if QUERY_STATEMENTS.contains(&w.as_str()) => Ok(()),
        Some(Token::Word(w)) if w == "WITH" => with_is_read(rest, depth),
        Some(Token::Word(w)) => Err(format!("it runs `{w}`")),
        Some(_) => Err("it holds something that does not start with a query keyword".into()),
        None => Err("it holds nothing where a query belongs".into()),
    }
}

/// Walks the CTEs after `WITH` (`[RECURSIVE] name [(cols)] AS [NOT]
/// [MATERIALIZED] ( query ) [, …]`), then checks the final statement.
fn with_is_read(tokens: &[Token], depth: usize) -> Result<(), String> {
    let word = |i: usize, kw: &str| matches!(tokens.get(i), Some(Token::Word(w)) if w == kw);
    let malformed = || "it is not of the form `WITH name AS (query), … query`".to_string();
    let mut i = usize::from(word(0, "RECURSIVE"));
    loop {
        if !matches!(tokens.get(i), Some(Token::Word(_) | Token::Quoted { .. })) {
            return Err(malformed());
        }
        i += 1;
        if tokens.get(i) == Some(&Token::Punct('(')) {
            i = closing(tokens, i).ok_or_else(malformed)? + 1;
        }
        if !word(i, "AS") {
            return Err(malformed());
        }
        i += 1;
        i += usize::from(word(i, "NOT"));
        i += usize::from(word(i, "MATERIALIZED"));
        if tokens.get(i) != Some(&Token::Punct('(')) {
            // Snowflake's `WITH p AS PROCEDURE …` lands here too.
            return Err(malformed());
        }
        let close = closing(tokens, i).ok_or_else(malformed)?;
        let body = tokens.get(i + 1..close).unwrap_or_default();
        query_is_read(body, depth + 1)?;
        i = close + 1;
        if tokens.get(i) == Some(&Token::Punct(',')) {
            i += 1;
            continue;
        }
        let last = tokens.get(i..).unwrap_or_default();
        return query_is_read(last, depth + 1);
    }
}

/// The second net: words that make even a query write or lock.
fn check_words(tokens: &[Token]) -> Result<(), ToolError> {
    for (i, token) in tokens.iter().enumerate() {
        let Token::Word(word) = token else { continue };
        let before = i.checked_sub(1).and_then(|j| tokens.get(j));
        let before2 = i.checked_sub(2).and_then(|j| tokens.get(j));
        let after = tokens.get(i + 1);
        // `t.update` is a column of `t`, not a statement.
        let qualified = before == Some(&Token::Punct('.'))
            && matches!(before2, Some(Token::Word(_) | Token::Quoted { .. }));
        if qualified {
            continue;
        }
        let w = word.as_str();
        if WRITE_KEYWORDS.contains(&w) {
            if ALSO_FUNCTIONS.contains(&w) && after == Some(&Token::Punct('(')) {
                continue;
            }
            return Err(refuse(&format!(
                "params.sql contains `{w}`, which writes or changes the session; remove it (quote a column of that name: \"{}\")",
                w.to_ascii_lowercase()
            )));
        }
        if w == "INTO" {
            return Err(refuse(
                "`… INTO` writes its result somewhere (SELECT … INTO creates a table); return the rows instead",
            ));
        }
        if w == "FOR"
            && matches!(after, Some(Token::Word(n)) if matches!(n.as_str(), "UPDATE" | "SHARE" | "NO" | "KEY"))
        {
            return Err(refuse(
                "FOR UPDATE/SHARE locks rows; remove the locking clause",
            ));
        }
    }
    Ok(())
}

/// Refuses calls of functions with side effects: a name (bare, qualified
/// or quoted) followed by `(`, wherever it is in the statement.
fn check_calls(tokens: &[Token], dialect: Dialect) -> Result<(), ToolError> {
    // Where each `(` closes, found once (looking for each one separately
    // would be quadratic in nested `IDENTIFIER(IDENTIFIER(…`).
    let mut close_of = vec![None; tokens.len()];
    let mut open = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::Punct('(') => open.push(i),
            Token::Punct(')') => {
                if let Some(slot) = open.pop().and_then(|o| close_of.get_mut(o)) {
                    *slot = Some(i);
                }
            }
            _ => {}
        }
    }
    for (i, token) in tokens.iter().enumerate() {
        let (name, escaped) = match token {
            Token::Word(w) => (w.as_str(), false),
            Token::Quoted { name, escaped } => (name.as_str(), *escaped),
            _ => continue,
        };
        // Snowflake's `seq.NEXTVAL` advances a sequence without parentheses.
        if dialect == Dialect::Snowflake
            && name == "NEXTVAL"
            && i.checked_sub(1).and_then(|j| tokens.get(j)) == Some(&Token::Punct('.'))
            && tokens.get(i + 1) != Some(&Token::Punct('('))
        {
            return Err(refuse("`.NEXTVAL` advances a sequence, which is a write"));
        }
        let mut next = i + 1;
        // PostgreSQL's `U&"…" UESCAPE '!'` puts the escape character first.
        if escaped && matches!(tokens.get(next), Some(Token::Word(w)) if w == "UESCAPE") {
            next += 2;
        }
        if tokens.get(next) != Some(&Token::Punct('(')) {
            continue;
        }
        if escaped {
            return Err(refuse(
                "params.sql calls a function whose quoted name uses escapes, so which function it is cannot be checked; write the name plainly",
            ));
        }
        if matches!(token, Token::Word(w) if w == "IDENTIFIER")
            && close_of
                .get(next)
                .copied()
                .flatten()
                .and_then(|close| tokens.get(close + 1))
                == Some(&Token::Punct('('))
        {
            return Err(refuse(
                "params.sql calls a function named through IDENTIFIER(…), so which function it is cannot be checked; write the name plainly",
            ));
        }
        if let Some(why) = side_effect(name) {
            return Err(refuse(&why));
        }
    }
    Ok(())
}

/// Why calling the function `name` is not a read, if it is not.
fn side_effect(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("system$") {
        return (!PURE_SYSTEM_FUNCTIONS.contains(&lower.as_str())).then(|| {
            format!(
                "`{}()` is not one of the Snowflake SYSTEM$ functions known to only read ({}); many SYSTEM$ functions cancel queries, abort sessions or change settings",
                name.to_ascii_uppercase(),
                PURE_SYSTEM_FUNCTIONS
                    .iter()
                    .map(|f| f.to_ascii_uppercase())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    }
    let listed = SIDE_EFFECT_FUNCTIONS.contains(&lower.as_str())
        || SIDE_EFFECT_PREFIXES.iter().any(|p| lower.starts_with(p));
    listed.then(|| {
        format!("`{lower}()` has side effects (on the server, the session or another system)")
    })
}

/// How many `?` placeholders `sql` has outside literals and comments (for
/// Snowflake and BigQuery, whose parameters are positional `?`).
pub fn positional_placeholders(sql: &str, dialect: Dialect) -> Result<usize, ToolError> {
    Ok(tokenize(sql, dialect)?
        .iter()
        .filter(|t| **t == Token::Punct('?'))
        .count())
}

/// Quotes an identifier (database, catalog, schema) for SQL text.
///
/// A plain identifier (ASCII letters, digits, `_`, `$`, not starting with a
/// digit) means what it would unquoted: upper-cased for Snowflake, as
/// written for Databricks (case-insensitive), lower-cased for PostgreSQL.
/// Anything else is quoted exactly as given. Control characters and names
/// longer than 255 bytes are refused.
pub fn quote_ident(name: &str, dialect: Dialect) -> Result<String, ToolError> {
    if name.is_empty() || name.len() > MAX_IDENT_LEN {
        return Err(ToolError::InvalidParams(format!(
            "identifier names must be 1 to {MAX_IDENT_LEN} bytes long"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ToolError::InvalidParams(
            "identifier names cannot contain control characters".into(),
        ));
    }
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    Ok(match dialect {
        Dialect::Snowflake | Dialect::Postgres => {
            let text = match (plain, dialect) {
                (true, Dialect::Snowflake) => name.to_ascii_uppercase(),
                (true, _) => name.to_ascii_lowercase(),
                (false, _) => name.to_string(),
            };
            format!("\"{}\"", text.replace('"', "\"\""))
        }
        Dialect::Databricks => format!("`{}`", name.replace('`', "``")),
        Dialect::BigQuery => {
            let escaped = name.replace('\\', "\\\\").replace('`', "\\`");
            format!("`{escaped}`")
        }
    })
}

/// Splits `sql` into tokens, skipping whitespace and comments.
fn tokenize(sql: &str, dialect: Dialect) -> Result<Vec<Token>, ToolError> {
    let chars: Vec<char> = sql.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        let next = at(i + 1);
        match c {
            c if c.is_whitespace() => i += 1,
            '-' if next == Some('-') => i = skip_line(&chars, i),
            '/' if next == Some('/') && dialect == Dialect::Snowflake => {
                i = skip_line(&chars, i);
            }
            '#' if dialect == Dialect::BigQuery => i = skip_line(&chars, i),
            '/' if next == Some('*') => i = skip_block_comment(&chars, i, dialect)?,
            '\'' => {
                let triple =
                    dialect == Dialect::BigQuery && next == Some('\'') && at(i + 2) == Some('\'');
                i = if triple {
                    skip_triple(&chars, i, '\'')?
                } else {
                    skip_quoted(&chars, i, '\'', backslash_in_strings(dialect))?
                };
                tokens.push(Token::Literal);
            }
            '"' => match dialect {
                Dialect::Postgres | Dialect::Snowflake => {
                    let end = skip_quoted(&chars, i, '"', false)?;
                    tokens.push(quoted(&chars, i, end, false, false));
                    i = end;
                }
                Dialect::BigQuery if next == Some('"') && at(i + 2) == Some('"') => {
                    i = skip_triple(&chars, i, '"')?;
                    tokens.push(Token::Literal);
                }
                Dialect::BigQuery | Dialect::Databricks => {
                    i = skip_quoted(&chars, i, '"', true)?;
                    tokens.push(Token::Literal);
                }
            },
            '`' if matches!(dialect, Dialect::BigQuery | Dialect::Databricks) => {
                let backslash = dialect == Dialect::BigQuery;
                let end = skip_quoted(&chars, i, '`', backslash)?;
                tokens.push(quoted(&chars, i, end, backslash, false));
                i = end;
            }
            '$' if matches!(dialect, Dialect::Postgres | Dialect::Snowflake) => {
                if let Some(end) = dollar_quote(&chars, i, dialect)? {
                    i = end;
                    tokens.push(Token::Literal);
                } else {
                    tokens.push(Token::Punct('$'));
                    i += 1;
                }
            }
            ';' => {
                tokens.push(Token::Semicolon);
                i += 1;
            }
            c if c.is_ascii_digit() => {
                while at(i).is_some_and(|c| c.is_ascii_digit() || c == '.' || c == '_') {
                    i += 1;
                }
                tokens.push(Token::Number);
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while at(i).is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
                    i += 1;
                }
                let word: String = chars.get(start..i).unwrap_or_default().iter().collect();
                let upper = word.to_ascii_uppercase();
                // String prefixes: E'…' (PostgreSQL escapes), r'…' raw strings;
                // PostgreSQL's U&'…' strings and U&"…" identifiers.
                match (at(i), dialect, upper.as_str()) {
                    (Some('\''), Dialect::Postgres, "E") => {
                        i = skip_quoted(&chars, i, '\'', true)?;
                        tokens.push(Token::Literal);
                    }
                    (Some('&'), Dialect::Postgres, "U") if at(i + 1) == Some('\'') => {
                        i = skip_quoted(&chars, i + 1, '\'', false)?;
                        tokens.push(Token::Literal);
                    }
                    (Some('&'), Dialect::Postgres, "U") if at(i + 1) == Some('"') => {
                        let end = skip_quoted(&chars, i + 1, '"', false)?;
                        tokens.push(quoted(&chars, i + 1, end, false, true));
                        i = end;
                    }
                    (Some(q @ ('\'' | '"')), Dialect::BigQuery, "R" | "RB" | "BR")
                    | (Some(q @ ('\'' | '"')), Dialect::Databricks, "R") => {
                        if dialect == Dialect::BigQuery
                            && at(i + 1) == Some(q)
                            && at(i + 2) == Some(q)
                        {
                            i = skip_triple(&chars, i, q)?;
                        } else {
                            i = skip_raw(&chars, i, q)?;
                        }
                        tokens.push(Token::Literal);
                    }
                    _ => tokens.push(Token::Word(upper)),
                }
            }
            other => {
                tokens.push(Token::Punct(other));
                i += 1;
            }
        }
    }
    Ok(tokens)
}

/// The [`Token::Quoted`] for the identifier quoted from `start` to `end`
/// (exclusive): its text with doubled quotes undone. It is `escaped` when
/// `escapes` says the form has escapes (`U&"…"`), or when `backslash` does
/// and the text holds one.
fn quoted(chars: &[char], start: usize, end: usize, backslash: bool, escapes: bool) -> Token {
    let q = chars.get(start).copied().unwrap_or('"');
    let inner: String = chars
        .get(start + 1..end.saturating_sub(1))
        .unwrap_or_default()
        .iter()
        .collect();
    Token::Quoted {
        escaped: escapes || (backslash && inner.contains('\\')),
        name: inner.replace(&format!("{q}{q}"), &q.to_string()),
    }
}

/// Whether `\` escapes the next character in `'…'` strings.
fn backslash_in_strings(dialect: Dialect) -> bool {
    // PostgreSQL's standard strings take backslashes literally (the
    // connection pins standard_conforming_strings = on); the others escape.
    dialect != Dialect::Postgres
}

/// Skips a line comment starting at `i`; returns the index after it.
fn skip_line(chars: &[char], mut i: usize) -> usize {
    while let Some(c) = chars.get(i) {
        if *c == '\n' || *c == '\r' {
            break;
        }
        i += 1;
    }
    i
}

/// Skips a `/* */` comment starting at `i`.
fn skip_block_comment(chars: &[char], start: usize, dialect: Dialect) -> Result<usize, ToolError> {
    let nests = matches!(dialect, Dialect::Postgres | Dialect::Databricks);
    let mut depth = 0usize;
    let mut i = start;
    loop {
        let (Some(c), next) = (chars.get(i), chars.get(i + 1)) else {
            return Err(ToolError::InvalidParams(
                "params.sql has a /* comment that is never closed with */".into(),
            ));
        };
        match (c, next) {
            ('/', Some('*')) => {
                if depth > 0 && !nests {
                    return Err(ToolError::InvalidParams(
                        "params.sql has /* inside a /* comment; this platform does not nest comments, so remove the inner /*".into(),
                    ));
                }
                depth += 1;
                i += 2;
            }
            ('*', Some('/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => i += 1,
        }
    }
}

/// Skips a literal or identifier quoted with `q` starting at `start`: a
/// doubled `q` stands for itself, and with `backslash` a `\` escapes the next
/// character.
fn skip_quoted(chars: &[char], start: usize, q: char, backslash: bool) -> Result<usize, ToolError> {
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => return Err(unterminated(q)),
            Some('\\') if backslash => i += 2,
            Some(c) if *c == q => {
                if chars.get(i + 1) == Some(&q) {
                    i += 2;
                } else {
                    return Ok(i + 1);
                }
            }
            Some(_) => i += 1,
        }
    }
}

/// Skips a BigQuery `'''…'''` or `"""…"""` string starting at `start`
/// (backslashes escape).
fn skip_triple(chars: &[char], start: usize, q: char) -> Result<usize, ToolError> {
    let mut i = start + 3;
    loop {
        match chars.get(i) {
            None => return Err(unterminated(q)),
            Some('\\') => i += 2,
            Some(c) if *c == q && chars.get(i + 1) == Some(&q) && chars.get(i + 2) == Some(&q) => {
                return Ok(i + 3);
            }
            Some(_) => i += 1,
        }
    }
}

/// Skips a raw string `r'…'` whose opening quote is at `start`. The
/// dialects disagree on whether `\'` ends one, so a backslash right before
/// the closing quote is refused.
fn skip_raw(chars: &[char], start: usize, q: char) -> Result<usize, ToolError> {
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => return Err(unterminated(q)),
            Some(c) if *c == q => {
                if i > start + 1 && chars.get(i - 1) == Some(&'\\') {
                    return Err(ToolError::InvalidParams(
                        "params.sql has a raw string ending in a backslash before its quote; pass such values as bound parameters".into(),
                    ));
                }
                return Ok(i + 1);
            }
            Some(_) => i += 1,
        }
    }
}

/// A dollar-quoted string at `start`: PostgreSQL `$tag$…$tag$` (the tag
/// may be empty), Snowflake `$$…$$`. `None` when the `$` starts no such
/// string (`$1`).
fn dollar_quote(
    chars: &[char],
    start: usize,
    dialect: Dialect,
) -> Result<Option<usize>, ToolError> {
    let mut i = start + 1;
    if dialect == Dialect::Postgres
        && chars
            .get(i)
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == '_')
    {
        while chars
            .get(i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            i += 1;
        }
    }
    if chars.get(i) != Some(&'$') {
        return Ok(None);
    }
    let tag = chars.get(start..=i).unwrap_or_default();
    let mut j = i + 1;
    while j + tag.len() <= chars.len() {
        if chars.get(j..j + tag.len()) == Some(tag) {
            return Ok(Some(j + tag.len()));
        }
        j += 1;
    }
    Err(ToolError::InvalidParams(format!(
        "params.sql has a dollar-quoted string opened with {} that is never closed",
        tag.iter().collect::<String>()
    )))
}

fn unterminated(q: char) -> ToolError {
    let what = match q {
        '\'' => "a string literal ('…')",
        '"' => "a quoted name or string (\"…\")",
        _ => "a quoted name (`…`)",
    };
    ToolError::InvalidParams(format!(
        "params.sql has {what} that is never closed; close it, or pass the value as a bound parameter"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    /// How every read-only refusal says the policy can be lifted.
    const LIFT: &str = "configure `\"dataPolicy\": {\"readOnly\": false}`";

    const ALL: [Dialect; 4] = [
        Dialect::Postgres,
        Dialect::Snowflake,
        Dialect::Databricks,
        Dialect::BigQuery,
    ];

    fn ok(sql: &str, d: Dialect) {
        if let Err(e) = check(sql, d, true) {
            panic!("{d:?} refused {sql:?}: {e}");
        }
    }

    fn denied(sql: &str, d: Dialect) -> String {
        match check(sql, d, true) {
            Err(ToolError::Denied(m)) => m,
            other => panic!("{d:?} did not deny {sql:?}: {other:?}"),
        }
    }

    fn invalid(sql: &str, d: Dialect) -> String {
        match check(sql, d, true) {
            Err(ToolError::InvalidParams(m)) => m,
            other => panic!("{d:?} did not reject {sql:?}: {other:?}"),
        }
    }

    #[test]
    fn queries_pass_everywhere() {
        for d in ALL {
            for sql in [
                "SELECT 1",
                "select * from customers where id = 1;",
                "  (SELECT 1) UNION (SELECT 2)",
                "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
                "VALUES (1), (2)",
                "SHOW TABLES",
                "DESCRIBE customers",
                "DESC customers",
                "EXPLAIN SELECT 1",
                "TABLE customers",
                "-- a comment\nSELECT 1 -- trailing",
                "/* lead */ SELECT 1 /* tail */ ;  -- done",
                "SELECT 'DELETE FROM x; DROP TABLE y' AS s",
                "SELECT t.update, t.set FROM t",
                "SELECT insert('abc', 1, 1, 'x'), get(v, 'k'), truncate(1.5, 0) FROM t",
                "SELECT * FROM t WHERE name = 'it''s; fine'",
                "SELECT 1;;",
            ] {
                ok(sql, d);
            }
        }
    }

    #[test]
    fn writes_are_refused_with_a_way_out() {
        for d in ALL {
            for sql in [
                "INSERT INTO t VALUES (1)",
                "update t set a = 1",
                "DELETE FROM t",
                "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
                "CREATE TABLE x (a int)",
                "drop table customers",
                "ALTER TABLE t ADD COLUMN b int",
                "TRUNCATE t",
                "GRANT SELECT ON t TO bob",
                "COPY t TO '/tmp/x'",
                "CALL proc()",
                "SET search_path = evil",
                "USE DATABASE other",
                "BEGIN",
                "COMMIT",
                "LOCK TABLE t",
                "VACUUM t",
                "PUT file:///x @stage",
                "GET @stage file:///x",
                "REMOVE @stage",
                "EXECUTE IMMEDIATE 'DROP TABLE t'",
                "DO $$ BEGIN END $$",
                "ANALYZE t",
            ] {
                let m = denied(sql, d);
                assert!(m.contains("read-only") && m.contains(LIFT), "{m}");
            }
            assert!(check("INSERT INTO t VALUES (1)", d, false).is_ok());
        }
    }

    #[test]
    fn writes_hidden_inside_queries_are_found() {
        for d in ALL {
            for sql in [
                "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
                "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
                "SELECT * INTO new_table FROM t",
                "SELECT * FROM t FOR UPDATE",
                "SELECT * FROM t FOR SHARE",
                "SELECT * FROM t FOR NO KEY UPDATE",
                "EXPLAIN ANALYZE DELETE FROM t",
                "EXPLAIN (ANALYZE, BUFFERS) INSERT INTO t VALUES (1)",
                "EXPLAIN INSERT INTO t VALUES (1)",
                "SELECT 1 /* comment */ ; /* */ DELETE FROM t",
                "SELECT 1.DELETE FROM t",
            ] {
                match check(sql, d, true) {
                    Err(ToolError::Denied(_) | ToolError::InvalidParams(_)) => {}
                    other => panic!("{d:?} let {sql:?} through: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn several_statements_are_refused_even_when_writes_are_allowed() {
        for d in ALL {
            for sql in [
                "SELECT 1; SELECT 2",
                "SELECT 1; DROP TABLE t",
                "SELECT 'a'; DELETE FROM t; --'",
                "SELECT 1 -- x\n; DELETE FROM t",
            ] {
                let m = match check(sql, d, false) {
                    Err(ToolError::InvalidParams(m)) => m,
                    other => panic!("{d:?} accepted {sql:?}: {other:?}"),
                };
                assert!(m.contains("one statement"), "{m}");
            }
        }
    }

    #[test]
    fn comments_cannot_hide_or_fake_code() {
        // Nested comments: PostgreSQL and Databricks nest them.
        ok(
            "SELECT 1 /* outer /* inner */ DELETE still comment */",
            Dialect::Postgres,
        );
        ok(
            "SELECT 1 /* outer /* inner */ DELETE still comment */",
            Dialect::Databricks,
        );
        // Where comments do not nest, the inner /* is ambiguous: refused.
        for d in [Dialect::Snowflake, Dialect::BigQuery] {
            invalid("SELECT 1 /* /* */ ; DELETE FROM t; SELECT 2 -- */", d);
        }
        // The same text on a nesting dialect is one unterminated comment.
        invalid(
            "SELECT 1 /* /* */ ; DELETE FROM t; SELECT 2 /* */",
            Dialect::Postgres,
        );
        for d in ALL {
            invalid("SELECT 1 /* never closed", d);
            // Comment markers inside strings are text.
            ok("SELECT '/*', '--' FROM t", d);
            assert!(check("SELECT '/*' ; DELETE FROM t --*/'", d, true).is_err());
        }
        // Platform-specific line comments.
        ok("SELECT 1 // DELETE", Dialect::Snowflake);
        ok("SELECT 1 # DELETE", Dialect::BigQuery);
        // Elsewhere those are operators, so the words after them count.
        denied("SELECT 1 # DELETE", Dialect::Postgres);
        denied("SELECT 1 // DELETE FROM t", Dialect::Postgres);
    }

    #[test]
    fn literals_follow_each_dialect() {
        // PostgreSQL: standard strings take backslashes literally.
        ok(r"SELECT 'a\' FROM t", Dialect::Postgres);
        invalid(r"SELECT 'a\'; DELETE FROM t; --'", Dialect::Postgres);
        // E'' strings escape.
        ok(r"SELECT E'it\'s ; DELETE' FROM t", Dialect::Postgres);
        // Dollar quotes, tagged and not.
        ok("SELECT $$ ; DELETE FROM t $$", Dialect::Postgres);
        ok(
            "SELECT $body$ it's ; DROP $$ TABLE $body$",
            Dialect::Postgres,
        );
        ok("SELECT $$ ; DELETE FROM t $$", Dialect::Snowflake);
        invalid("SELECT $tag$ never closed $other$", Dialect::Postgres);
        // $1 is a parameter, not a quote.
        ok("SELECT * FROM t WHERE a = $1 AND b = $2", Dialect::Postgres);
        // Quoted identifiers may hold keywords.
        ok(r#"SELECT "delete", "a""b; drop" FROM t"#, Dialect::Postgres);
        ok(r#"SELECT "delete" FROM t"#, Dialect::Snowflake);
        ok("SELECT `delete`, `a``b` FROM t", Dialect::Databricks);
        ok(r"SELECT `de\`lete` FROM t", Dialect::BigQuery);
        // Snowflake, BigQuery and Databricks escape with backslashes.
        ok(r"SELECT 'it\'s ; DELETE' FROM t", Dialect::Snowflake);
        ok(r#"SELECT "it\"s ; DELETE" FROM t"#, Dialect::BigQuery);
        ok(r#"SELECT "it\"s ; DELETE" FROM t"#, Dialect::Databricks);
        // BigQuery triple-quoted strings.
        ok("SELECT '''it's ; DELETE''' FROM t", Dialect::BigQuery);
        ok(
            r#"SELECT """a "quoted" ; DELETE""" FROM t"#,
            Dialect::BigQuery,
        );
        // Raw strings: a backslash before the closing quote is ambiguous.
        ok(r"SELECT r'\d+ ; DELETE' FROM t", Dialect::BigQuery);
        ok(r"SELECT r'\d+' FROM t", Dialect::Databricks);
        invalid(r"SELECT r'abc\' ; DELETE FROM t; --'", Dialect::Databricks);
        invalid(r"SELECT r'abc\'", Dialect::BigQuery);
        for d in ALL {
            invalid("SELECT 'unterminated", d);
        }
    }

    #[test]
    fn unicode_is_not_mistaken_for_keywords_or_spaces() {
        for d in ALL {
            ok("SELECT 'ünïcödé ; DELETE 😀' AS naïve FROM t", d);
            ok("SELECT café_set FROM t", d);
            // Full-width letters are not the keyword.
            ok("SELECT ＤＥＬＥＴＥ FROM t", d);
            // A keyword glued to non-ASCII letters is still seen.
            denied("SELECT 1 FROM t éDELETE FROM t", d);
            // Unicode spaces separate statements as well as ASCII ones.
            invalid("SELECT 1;\u{a0}SELECT 2", d);
            invalid("SELECT 1;\u{3000}DELETE FROM t", d);
        }
    }

    #[test]
    fn only_queries_start_a_read_only_statement() {
        let m = denied("REFRESH MATERIALIZED VIEW v", Dialect::Postgres);
        assert!(m.contains("`REFRESH`"), "{m}");
        let m = denied("WITH x AS (SELECT 1) UPDATE t SET a = 1", Dialect::Postgres);
        assert!(m.contains("`UPDATE`"), "{m}");
        invalid("   -- only a comment", Dialect::Postgres);
        invalid(";", Dialect::Postgres);
        denied("'text'", Dialect::Postgres);
    }

    #[test]
    fn every_read_statement_kind_passes() {
        for d in ALL {
            for sql in [
                "select 1",
                "Select * From t",
                "(SELECT 1)",
                "((SELECT 1)) UNION ((SELECT 2))",
                "-- lead\n/* and */ SELECT 1",
                "WITH a AS (SELECT 1 AS x), b AS (SELECT 2 AS y) SELECT * FROM a, b",
                "with recursive t (n) as (select 1 union all select n + 1 from t where n < 5) select n from t",
                "WITH a AS (WITH b AS (SELECT 1 AS x) SELECT x FROM b) SELECT x FROM a",
                "WITH a AS (SELECT 1 AS x) (SELECT x FROM a)",
                "WITH a AS (VALUES (1)) TABLE a",
                "values (1, 'a')",
                "table t",
                "show tables",
                "describe t",
                "desc table t",
                "explain select 1",
                "EXPLAIN WITH a AS (SELECT 1) SELECT * FROM a",
                "EXPLAIN (SELECT 1)",
                "SELECT comment, rm, unset, undrop, t.comment FROM t",
                "SELECT comment FROM t",
            ] {
                ok(sql, d);
            }
        }
        // Each platform's own forms.
        ok(
            "WITH a AS MATERIALIZED (SELECT 1), b AS NOT MATERIALIZED (SELECT 2) SELECT * FROM a, b",
            Dialect::Postgres,
        );
        ok(
            r#"WITH "My CTE" AS (SELECT 1) SELECT * FROM "My CTE""#,
            Dialect::Postgres,
        );
        ok("EXPLAIN ANALYZE SELECT 1", Dialect::Postgres);
        ok("EXPLAIN ANALYZE VERBOSE SELECT 1", Dialect::Postgres);
        ok(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM t",
            Dialect::Postgres,
        );
        ok("SELECT data->>'name', data->'a' FROM t", Dialect::Postgres);
        ok("SHOW search_path", Dialect::Postgres);
        ok("EXPLAIN USING TEXT SELECT 1", Dialect::Snowflake);
        ok("LIST @my_stage", Dialect::Snowflake);
        ok("ls @~/data/ PATTERN = '.*csv'", Dialect::Snowflake);
        ok("LIST @%orders", Dialect::Snowflake);
        ok(
            "SHOW TABLES LIKE '%orders%' IN SCHEMA s",
            Dialect::Snowflake,
        );
        ok("DESCRIBE TABLE t", Dialect::Snowflake);
        ok("EXPLAIN EXTENDED SELECT 1", Dialect::Databricks);
        ok("LIST '/Volumes/main/default/files'", Dialect::Databricks);
        ok("DESCRIBE HISTORY t", Dialect::Databricks);
    }

    #[test]
    fn statement_kinds_not_known_to_read_are_refused_by_name() {
        for d in ALL {
            for sql in [
                "CALL proc()",
                "EXECUTE IMMEDIATE 'SELECT 1'",
                "EXECUTE p",
                "USE DATABASE other",
                "use schema s",
                "USE WAREHOUSE wh",
                "COPY INTO t FROM @stage",
                "PUT file:///tmp/x @stage",
                "GET @stage file:///tmp/",
                "RM @stage/x",
                "rm @stage",
                "REMOVE @stage/x",
                "UNDROP TABLE t",
                "COMMENT ON TABLE t IS 'x'",
                "comment on column t.a is 'x'",
                "UNSET my_var",
                "SET my_var = 1",
                "RESET ALL",
                "ALTER SESSION SET TIMEZONE = 'UTC'",
                "GRANT ROLE analyst TO USER bob",
                "REVOKE SELECT ON t FROM bob",
                "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = 1",
                "ANALYZE t",
                "REFRESH MATERIALIZED VIEW v",
                "DISCARD ALL",
                "LISTEN ch",
                "NOTIFY ch",
                "PREPARE p AS SELECT 1",
                "DEALLOCATE p",
                "DECLARE c CURSOR FOR SELECT 1",
                "FETCH NEXT FROM c",
                "CHECKPOINT",
                "REINDEX TABLE t",
                "CLUSTER t",
                "LOAD 'plugin'",
                "START TRANSACTION",
                "SAVEPOINT s",
                "OPTIMIZE t",
                "RESTORE TABLE t TO VERSION AS OF 1",
                "MSCK REPAIR TABLE t",
                "CACHE TABLE t",
                "EXPORT DATA OPTIONS (uri = 'gs://b/*') AS SELECT 1",
                "ASSERT (SELECT 1) = 1",
                "FROM t INSERT INTO u SELECT *",
                "FROM t SELECT *",
                "BEGIN SELECT 1; END",
                "EXECUTE TASK t",
                "UNDROP SCHEMA s",
            ] {
                let m = match check(sql, d, true) {
                    Err(ToolError::Denied(m)) => m,
                    // A `;` inside a script is refused earlier.
                    Err(ToolError::InvalidParams(_)) if sql.contains(';') => continue,
                    other => panic!("{d:?} did not deny {sql:?}: {other:?}"),
                };
                let kind = sql.split_whitespace().next().unwrap().to_ascii_uppercase();
                assert!(m.contains(&format!("`{kind}`")), "{d:?} {sql:?}: {m}");
                assert!(m.contains("read-only") && m.contains(LIFT), "{m}");
                // With writes allowed, the platform decides.
                assert!(check(sql, d, false).is_ok() || sql.contains(';'), "{sql}");
            }
            // LIST is a read only as a stage or path listing.
            denied("LIST t", d);
            denied("LS", d);
        }
        denied("LIST @stage", Dialect::Postgres);
        denied("LIST @stage", Dialect::BigQuery);
        denied("LIST @stage", Dialect::Databricks);
        denied("LIST '/Volumes/x'", Dialect::Postgres);
    }

    #[test]
    fn with_and_explain_must_wrap_queries() {
        for d in ALL {
            for (sql, kind) in [
                (
                    "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
                    "`DELETE`",
                ),
                (
                    "WITH a AS (SELECT 1), b AS (UPDATE t SET a = 1 RETURNING a) SELECT * FROM b",
                    "`UPDATE`",
                ),
                (
                    "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
                    "`INSERT`",
                ),
                (
                    "WITH x AS (SELECT 1) MERGE INTO t USING x ON true WHEN MATCHED THEN DELETE",
                    "`MERGE`",
                ),
                (
                    "WITH x AS ((DELETE FROM t RETURNING 1)) SELECT 1",
                    "`DELETE`",
                ),
                ("EXPLAIN DELETE FROM t", "`DELETE`"),
                ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", "`INSERT`"),
                ("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1", "`UPDATE`"),
                ("EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1", "`CREATE`"),
                ("EXPLAIN EXECUTE p", "`EXECUTE`"),
                ("EXPLAIN USING TEXT COPY INTO t FROM @s", "`COPY`"),
            ] {
                let m = denied(sql, d);
                assert!(m.contains(kind), "{d:?} {sql:?}: {m}");
            }
            for sql in [
                "WITH x AS (SELECT 1)",
                "WITH SELECT 1",
                "WITH x (SELECT 1) SELECT 1",
                "WITH x AS (SELECT 1) , SELECT 1",
                "WITH x AS (SELECT 1 SELECT 1",
                "EXPLAIN",
                "EXPLAIN ANALYZE",
                "EXPLAIN (ANALYZE",
            ] {
                denied(sql, d);
            }
        }
        // Snowflake's anonymous procedures run whatever they hold.
        denied(
            "WITH p AS PROCEDURE () RETURNS INT LANGUAGE SQL AS $$ BEGIN RETURN 1; END $$ CALL p()",
            Dialect::Snowflake,
        );
        // Deep nesting is refused, not a stack overflow.
        let deep = format!(
            "{}SELECT 1{}",
            "WITH a AS (".repeat(500),
            ") SELECT 1".repeat(500)
        );
        let m = denied(&deep, Dialect::Postgres);
        assert!(m.contains("deep"), "{m}");
        let parens = format!("{}SELECT 1{}", "(".repeat(5000), ")".repeat(5000));
        ok(&parens, Dialect::Postgres);
    }

    #[test]
    fn snowflake_pipe_operator_is_several_statements() {
        for read_only in [true, false] {
            for sql in [
                "SHOW TABLES ->> SELECT * FROM $1",
                "SELECT 1 ->> DELETE FROM t",
                "select 1->>drop table t",
                "SELECT 1 -> /* */ > > DELETE FROM t",
            ] {
                match check(sql, Dialect::Snowflake, read_only) {
                    Err(ToolError::InvalidParams(m)) => assert!(m.contains("->>"), "{m}"),
                    other => panic!("{sql:?} ({read_only}): {other:?}"),
                }
            }
        }
        ok(
            "SELECT '->>' AS arrow, \"a->>b\" FROM t",
            Dialect::Snowflake,
        );
        ok("SELECT FILTER(arr, a -> a > 1) FROM t", Dialect::Snowflake);
        // In PostgreSQL `->>` reads a JSON field.
        ok("SELECT doc ->> 'name' FROM t", Dialect::Postgres);
    }

    /// Functions with side effects named in issue 11 (and a few more).
    const SIDE_EFFECTS: &[&str] = &[
        "dblink",
        "dblink_exec",
        "dblink_connect",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "lo_import",
        "lo_export",
        "lo_unlink",
        "lo_create",
        "lo_from_bytea",
        "lo_put",
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "set_config",
        "pg_advisory_lock",
        "pg_advisory_xact_lock",
        "pg_advisory_lock_shared",
        "pg_advisory_unlock_all",
        "pg_try_advisory_lock",
        "nextval",
        "setval",
        "pg_switch_wal",
        "pg_create_restore_point",
        "pg_logical_emit_message",
        "pg_notify",
        "query_to_xml",
        "external_query",
        "reflect",
        "http_request",
    ];

    #[test]
    fn side_effect_functions_are_refused_wherever_they_hide() {
        for d in ALL {
            for f in SIDE_EFFECTS {
                let upper = f.to_ascii_uppercase();
                for sql in [
                    format!("SELECT {f}(1)"),
                    format!("select {upper}('x', 'y', false)"),
                    format!("SELECT * FROM t WHERE id IN (SELECT {f}(id) FROM u)"),
                    format!("SELECT a FROM (SELECT {f}(1) AS a) s"),
                    format!("WITH c AS (SELECT {f}(1) AS x) SELECT x FROM c"),
                    format!("WITH c AS (SELECT 1 AS x) SELECT {f}(x) FROM c"),
                    format!("SELECT pg_catalog.{f}(1)"),
                    format!("SELECT db.schema . {upper} (1)"),
                    format!("SELECT {f} /* between */ (1)"),
                    format!("SELECT {f}\n\t  -- a comment\n  (1)"),
                    format!("SELECT * FROM {f}('conn', 'select 1') AS r(a int)"),
                    format!("SELECT CASE WHEN false THEN {f}(1) END"),
                    format!("VALUES ({f}(1))"),
                    format!("EXPLAIN ANALYZE SELECT {f}(1)"),
                ] {
                    let m = denied(&sql, d);
                    assert!(m.contains(f) && m.contains(LIFT), "{d:?} {sql:?}: {m}");
                }
            }
        }
        // Quoted names call the same function.
        for f in SIDE_EFFECTS {
            for d in [Dialect::Postgres, Dialect::Snowflake] {
                denied(&format!(r#"SELECT "{f}"(1)"#), d);
                denied(&format!(r#"SELECT "pg_catalog"."{f}"(1)"#), d);
            }
            for d in [Dialect::Databricks, Dialect::BigQuery] {
                denied(&format!("SELECT `{f}`(1)"), d);
            }
        }
        // Names spelled with escapes cannot be checked.
        denied(
            r#"SELECT U&"set_config"('a', 'b', false)"#,
            Dialect::Postgres,
        );
        denied(
            r#"SELECT U&"\0073et_config"('a', 'b', false)"#,
            Dialect::Postgres,
        );
        denied(
            r#"SELECT U&"!0073et_config" UESCAPE '!' ('a', 'b', false)"#,
            Dialect::Postgres,
        );
        denied(r"SELECT `external\x5fquery`('c', 'q')", Dialect::BigQuery);
        ok(r#"SELECT U&"d\0061ta" FROM t"#, Dialect::Postgres);
        ok(r"SELECT `a\x5fb` FROM t", Dialect::BigQuery);
    }

    #[test]
    fn snowflake_system_functions_must_be_known_to_only_read() {
        let d = Dialect::Snowflake;
        for sql in [
            "SELECT SYSTEM$CANCEL_QUERY('01b2')",
            "SELECT SYSTEM$CANCEL_ALL_QUERIES(42)",
            "SELECT SYSTEM$ABORT_SESSION(42)",
            "SELECT SYSTEM$ABORT_TRANSACTION(42)",
            "SELECT SYSTEM$SET_RETURN_VALUE('x')",
            "SELECT SYSTEM$PIPE_FORCE_RESUME('p')",
            "SELECT SYSTEM$TASK_DEPENDENTS_ENABLE('t')",
            "SELECT SYSTEM$TASK_RUNTIME_INFO('x')",
            "select system$cancel_query('01b2')",
            "SELECT SYSTEM$NEW_NEXT_YEAR()",
            "SELECT * FROM t WHERE x = (SELECT SYSTEM$ABORT_SESSION(1))",
            r#"SELECT "SYSTEM$CANCEL_QUERY"('01b2')"#,
        ] {
            let m = denied(sql, d);
            assert!(m.contains("SYSTEM$") && m.contains(LIFT), "{sql}: {m}");
        }
        for sql in [
            "SELECT SYSTEM$TYPEOF(1)",
            "SELECT SYSTEM$CLUSTERING_INFORMATION('t')",
            "SELECT system$wait(1)",
            "SELECT 'SYSTEM$CANCEL_QUERY(1)'",
        ] {
            ok(sql, d);
        }
        // A sequence advances without parentheses too.
        denied("SELECT seq1.NEXTVAL", d);
        denied("SELECT db.s.seq1.nextval AS id", d);
        ok("SELECT nextval FROM t", d);
        // A function named through IDENTIFIER() cannot be checked.
        denied("SELECT IDENTIFIER('SYSTEM$CANCEL_QUERY')('01b2')", d);
        ok("SELECT * FROM IDENTIFIER('t')", d);
        ok("SELECT * FROM IDENTIFIER('t') WHERE (a)", d);
    }

    #[test]
    fn names_that_only_look_like_side_effects_pass() {
        for d in ALL {
            for sql in [
                "SELECT 'pg_terminate_backend(1)', 'set_config(''a'', ''b'', false)'",
                "SELECT 1 -- set_config('a', 'b', false)",
                "SELECT /* pg_terminate_backend( */ 1",
                "SELECT nextval, set_config, lo_import FROM t",
                "SELECT t.dblink, t.lo_id FROM t",
                "SELECT my_set_config(1), xlo_import(2), nextval_of(3)",
                "SELECT currval('s'), lastval(), txid_current(), pg_sleep(0)",
                "SELECT * FROM pg_stat_activity",
                "SELECT pg_stat_get_activity(1), pg_ls_dirname FROM t",
                "SELECT count(*) FROM lo_table",
            ] {
                ok(sql, d);
            }
        }
        for d in [Dialect::Postgres, Dialect::Snowflake] {
            ok(r#"SELECT "set_config", "pg_terminate_backend" FROM t"#, d);
            ok("SELECT $$ dblink_exec('x') $$", d);
        }
        for d in [Dialect::Databricks, Dialect::BigQuery] {
            ok("SELECT `set_config`, `dblink` FROM t", d);
        }
        ok(r"SELECT E'\' set_config(' FROM t", Dialect::Postgres);
        // With writes allowed, the platform decides.
        assert!(check("SELECT pg_terminate_backend(1)", Dialect::Postgres, false).is_ok());
        assert!(check("SELECT SYSTEM$CANCEL_QUERY('x')", Dialect::Snowflake, false).is_ok());
    }

    #[test]
    fn placeholders_are_counted_outside_literals() {
        assert_eq!(
            positional_placeholders("SELECT ? , '?' , \"?\" -- ?\n, ?", Dialect::Snowflake)
                .unwrap(),
            2
        );
        assert_eq!(
            positional_placeholders("SELECT ? FROM t # ?", Dialect::BigQuery).unwrap(),
            1
        );
    }

    #[test]
    fn identifiers_are_quoted_safely() {
        assert_eq!(
            quote_ident("analytics", Dialect::Snowflake).unwrap(),
            "\"ANALYTICS\""
        );
        assert_eq!(
            quote_ident("My Db", Dialect::Snowflake).unwrap(),
            "\"My Db\""
        );
        assert_eq!(
            quote_ident("x\"; DROP TABLE t; --", Dialect::Snowflake).unwrap(),
            "\"x\"\"; DROP TABLE t; --\""
        );
        assert_eq!(quote_ident("main", Dialect::Databricks).unwrap(), "`main`");
        assert_eq!(quote_ident("a`b", Dialect::Databricks).unwrap(), "`a``b`");
        assert_eq!(
            quote_ident("a`b\\", Dialect::BigQuery).unwrap(),
            "`a\\`b\\\\`"
        );
        assert_eq!(
            quote_ident("Public", Dialect::Postgres).unwrap(),
            "\"public\""
        );
        assert!(quote_ident("", Dialect::Snowflake).is_err());
        assert!(quote_ident("a\u{0}b", Dialect::Snowflake).is_err());
        assert!(quote_ident(&"x".repeat(256), Dialect::Databricks).is_err());
    }
}
