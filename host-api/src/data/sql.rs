//! What a SQL statement is, as far as a read-only policy cares.
//!
//! [`check`] tokenizes just enough of each platform's dialect to tell code
//! from comments, string literals and quoted identifiers, then refuses
//! several statements in one call, and on a read-only connection anything
//! but a query. It errs on the side of refusing: wherever the dialects
//! could read a text two ways (a nested comment where comments do not nest,
//! a backslash before the quote that ends a raw string), the statement is
//! refused rather than guessed at; a write spelled so the classifier cannot
//! see it is still stopped by PostgreSQL's `READ ONLY` transaction, and on
//! the cloud platforms an admin should give read-only connections a
//! read-only role as well (functions with side effects, such as Snowflake's
//! `SYSTEM$…`, are beyond any classifier).
//!
//! [`quote_ident`] quotes an identifier for the few places where one must
//! appear in SQL text (a database-qualified `INFORMATION_SCHEMA`).

use crate::error::ToolError;

/// The SQL dialects, which differ in comments, literals and quoting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `--`, nested `/* */`; `'…'` with `''`, `E'…'` with backslashes,
    /// `$tag$…$tag$`; `"identifiers"`.
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
    /// A quoted identifier.
    Quoted,
    /// A string literal of any kind.
    Literal,
    /// A number.
    Number,
    /// `;`.
    Semicolon,
    /// Any other character (operators, punctuation, non-ASCII).
    Punct(char),
}

/// Statements a read-only connection may run, by first keyword.
const READ_STATEMENTS: &[&str] = &[
    "SELECT", "WITH", "VALUES", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "TABLE",
];

/// Keywords that write or change the session wherever they appear outside
/// literals (a `WITH … INSERT` is a write).
const WRITE_KEYWORDS: &[&str] = &[
    "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "CREATE", "ALTER", "DROP", "TRUNCATE",
    "GRANT", "REVOKE", "COPY", "CALL", "EXECUTE", "EXEC", "PUT", "GET", "REMOVE", "UNLOAD",
    "VACUUM", "REFRESH", "SET", "USE", "BEGIN", "COMMIT", "ROLLBACK", "LOCK", "DECLARE",
];

/// Write keywords that are also names of read-only functions when a `(`
/// follows: Snowflake's `GET(variant, 'key')` and `INSERT(string, …)`,
/// `TRUNCATE(number, scale)`. No statement form of these takes a `(` next.
const ALSO_FUNCTIONS: &[&str] = &["GET", "INSERT", "TRUNCATE"];

/// Longest identifier [`quote_ident`] accepts (the platforms' own limit is
/// 255 or less).
const MAX_IDENT_LEN: usize = 255;

/// Refuses what `sql` must not run: more than one statement, an unterminated
/// literal or comment, and on a read-only connection anything that writes.
///
/// Errors: [`ToolError::InvalidParams`] for malformed text,
/// [`ToolError::Denied`] for a write on a read-only connection; every
/// message says what to change.
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
    let Some(first) = tokens.iter().find(|t| **t != Token::Punct('(')) else {
        return Err(ToolError::InvalidParams(
            "params.sql holds no statement (only comments or punctuation)".into(),
        ));
    };
    if !read_only {
        return Ok(());
    }
    let fix = "an admin can allow writes on this connection with dataPolicy.readOnly = false";
    let first = match first {
        Token::Word(w) if READ_STATEMENTS.contains(&w.as_str()) => w.as_str(),
        Token::Word(w) => {
            return Err(ToolError::Denied(format!(
                "the connection is read-only and `{w}` statements are refused; run a query (SELECT, WITH, VALUES, SHOW, DESCRIBE, EXPLAIN), or {fix}"
            )));
        }
        _ => {
            return Err(ToolError::Denied(format!(
                "the connection is read-only and params.sql does not start with a query keyword; start it with SELECT, WITH, VALUES, SHOW, DESCRIBE or EXPLAIN, or {fix}"
            )));
        }
    };
    for (i, token) in tokens.iter().enumerate() {
        let Token::Word(word) = token else { continue };
        let before = i.checked_sub(1).and_then(|j| tokens.get(j));
        let before2 = i.checked_sub(2).and_then(|j| tokens.get(j));
        let after = tokens.get(i + 1);
        // `t.update` is a column of `t`, not a statement.
        let qualified = before == Some(&Token::Punct('.'))
            && matches!(before2, Some(Token::Word(_) | Token::Quoted));
        if qualified {
            continue;
        }
        let w = word.as_str();
        if WRITE_KEYWORDS.contains(&w) {
            if ALSO_FUNCTIONS.contains(&w) && after == Some(&Token::Punct('(')) {
                continue;
            }
            return Err(ToolError::Denied(format!(
                "the connection is read-only and params.sql contains `{w}`, which writes or changes the session; remove it (quote a column of that name: \"{}\"), or {fix}",
                w.to_ascii_lowercase()
            )));
        }
        if w == "INTO" {
            return Err(ToolError::Denied(format!(
                "the connection is read-only and `… INTO` writes its result somewhere (SELECT … INTO creates a table); return the rows instead, or {fix}"
            )));
        }
        if w == "FOR"
            && matches!(after, Some(Token::Word(n)) if matches!(n.as_str(), "UPDATE" | "SHARE" | "NO" | "KEY"))
        {
            return Err(ToolError::Denied(format!(
                "the connection is read-only and FOR UPDATE/SHARE locks rows; remove the locking clause, or {fix}"
            )));
        }
        if first == "EXPLAIN" && matches!(w, "ANALYZE" | "ANALYSE") {
            return Err(ToolError::Denied(format!(
                "the connection is read-only and EXPLAIN ANALYZE runs the statement; use EXPLAIN without ANALYZE, or {fix}"
            )));
        }
    }
    Ok(())
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
                    i = skip_quoted(&chars, i, '"', false)?;
                    tokens.push(Token::Quoted);
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
                i = skip_quoted(&chars, i, '`', dialect == Dialect::BigQuery)?;
                tokens.push(Token::Quoted);
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
                // String prefixes: E'…' (PostgreSQL escapes), r'…' raw strings.
                match (at(i), dialect, upper.as_str()) {
                    (Some('\''), Dialect::Postgres, "E") => {
                        i = skip_quoted(&chars, i, '\'', true)?;
                        tokens.push(Token::Literal);
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
                assert!(
                    m.contains("read-only") && m.contains("dataPolicy.readOnly = false"),
                    "{m}"
                );
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
                "EXPLAIN ANALYZE SELECT 1",
                "EXPLAIN (ANALYZE, BUFFERS) SELECT 1",
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
