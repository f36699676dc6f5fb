//! The portable values every platform's text becomes (see
//! [`Column`](super::Column) for the rules).
//!
//! Each function takes what a platform sent and gives the JSON value; when
//! the text is not what the platform documents, it is kept as a string
//! rather than lost.

use base64::Engine as _;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use serde_json::{Number, Value};

/// An integer: a JSON number when it fits in an `i64`, else the digits.
pub fn integer(text: &str) -> Value {
    let t = text.trim();
    match t.parse::<i64>() {
        Ok(i) => Value::from(i),
        Err(_) => Value::String(t.to_string()),
    }
}

/// A floating-point number: a JSON number when finite, else `"NaN"`,
/// `"Infinity"` or `"-Infinity"`.
pub fn float(text: &str) -> Value {
    let t = text.trim();
    match t.parse::<f64>() {
        Ok(f) => float_value(f),
        Err(_) => match t.to_ascii_lowercase().as_str() {
            "inf" | "+inf" | "infinity" | "+infinity" => Value::from("Infinity"),
            "-inf" | "-infinity" => Value::from("-Infinity"),
            "nan" => Value::from("NaN"),
            _ => Value::String(t.to_string()),
        },
    }
}

/// A float as JSON.
pub fn float_value(f: f64) -> Value {
    match Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::from("NaN"),
        None if f > 0.0 => Value::from("Infinity"),
        None => Value::from("-Infinity"),
    }
}

/// A decimal: always its text, so no digit is lost.
pub fn decimal(text: &str) -> Value {
    Value::String(text.trim().to_string())
}

/// A boolean from `true`/`false` (or `1`/`0`, `t`/`f`).
pub fn boolean(text: &str) -> Value {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "1" => Value::Bool(true),
        "false" | "f" | "0" => Value::Bool(false),
        _ => Value::String(text.to_string()),
    }
}

/// A JSON document sent as text: the parsed value, or the text if it does
/// not parse.
pub fn json_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// Hexadecimal bytes (Snowflake `BINARY`) as base64.
pub fn hex_bytes(text: &str) -> Value {
    match hex::decode(text.trim()) {
        Ok(bytes) => Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        Err(_) => Value::String(text.to_string()),
    }
}

/// `seconds[.fraction]` (possibly negative) as whole seconds and
/// nanoseconds, the way Snowflake sends times and timestamps.
pub fn epoch(text: &str) -> Option<(i64, u32)> {
    let t = text.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut nanos_text: String = frac.chars().take(9).collect();
    while nanos_text.len() < 9 {
        nanos_text.push('0');
    }
    let frac_nanos: i128 = nanos_text.parse().ok()?;
    let mut total = whole.checked_mul(1_000_000_000)?.checked_add(frac_nanos)?;
    if negative {
        total = -total;
    }
    let secs = i64::try_from(total.div_euclid(1_000_000_000)).ok()?;
    let nanos = u32::try_from(total.rem_euclid(1_000_000_000)).ok()?;
    Some((secs, nanos))
}

/// An instant as RFC 3339 at the given UTC offset (`Z` for UTC), with as
/// many fractional digits as it needs (0, 3, 6 or 9).
pub fn instant(secs: i64, nanos: u32, offset_secs: i32) -> Option<String> {
    let utc = DateTime::<Utc>::from_timestamp(secs, nanos)?;
    let offset = FixedOffset::east_opt(offset_secs)?;
    Some(
        utc.with_timezone(&offset)
            .to_rfc3339_opts(SecondsFormat::AutoSi, true),
    )
}

/// A date and time without a zone, from seconds since 1970-01-01T00:00:00
/// read as wall-clock time: `2024-05-01T12:30:00[.fff]`.
pub fn naive_from_epoch(secs: i64, nanos: u32) -> Option<String> {
    let dt = DateTime::<Utc>::from_timestamp(secs, nanos)?.naive_utc();
    Some(naive_text(&dt))
}

/// A zone-less date and time in the portable form.
pub fn naive_text(dt: &NaiveDateTime) -> String {
    format!("{}T{}", dt.date().format("%Y-%m-%d"), time_text(&dt.time()))
}

/// A time of day in the portable form: `HH:MM:SS[.fff]`.
pub fn time_text(t: &NaiveTime) -> String {
    t.format("%H:%M:%S%.f").to_string()
}

/// A date from days since 1970-01-01.
pub fn date_from_days(days: i64) -> Option<String> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    let date = epoch.checked_add_signed(chrono::Duration::try_days(days)?)?;
    Some(date.format("%Y-%m-%d").to_string())
}

/// A time of day from seconds (and nanoseconds) since midnight.
pub fn time_from_seconds(secs: i64, nanos: u32) -> Option<String> {
    let secs = u32::try_from(secs).ok()?;
    NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos).map(|t| time_text(&t))
}

/// An RFC 3339 timestamp (or `YYYY-MM-DD HH:MM:SS…+hh:mm`) rewritten in
/// the portable form, offset kept.
pub fn rfc3339(text: &str) -> Option<String> {
    let t = text.trim();
    let parsed = DateTime::parse_from_rfc3339(t)
        .or_else(|_| DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .or_else(|_| DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .ok()?;
    Some(parsed.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// A zone-less date and time (`T` or space between date and time) in the
/// portable form.
pub fn naive(text: &str) -> Option<String> {
    let t = text.trim();
    let parsed = NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()?;
    Some(naive_text(&parsed))
}

/// A date `YYYY-MM-DD`, checked.
pub fn date(text: &str) -> Option<String> {
    let t = text.trim();
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .map(|d| d.format("%Y-%m-%d").to_string())
}

/// A time `HH:MM[:SS[.fff]]`, checked.
pub fn time(text: &str) -> Option<String> {
    let t = text.trim();
    NaiveTime::parse_from_str(t, "%H:%M:%S%.f")
        .or_else(|_| NaiveTime::parse_from_str(t, "%H:%M"))
        .ok()
        .map(|t| time_text(&t))
}

/// Whether `text` is a decimal number (`-12.5`, `1e3`, `.5`, `NaN`).
pub fn is_decimal(text: &str) -> bool {
    let t = text.trim();
    if t.eq_ignore_ascii_case("nan") {
        return true;
    }
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (t.get(..i).unwrap_or(""), Some(t.get(i + 1..).unwrap_or(""))),
        None => (t, None),
    };
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = (!whole.is_empty() || !frac.is_empty()) && digits(whole) && digits(frac);
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_keep_every_digit() {
        assert_eq!(integer("42"), json!(42));
        assert_eq!(integer("-9223372036854775808"), json!(i64::MIN));
        assert_eq!(
            integer("99999999999999999999"),
            json!("99999999999999999999")
        );
        assert_eq!(float("1.5"), json!(1.5));
        assert_eq!(float("NaN"), json!("NaN"));
        assert_eq!(float("inf"), json!("Infinity"));
        assert_eq!(float("-Infinity"), json!("-Infinity"));
        assert_eq!(float_value(f64::NEG_INFINITY), json!("-Infinity"));
        assert_eq!(decimal(" 12.50 "), json!("12.50"));
        assert!(is_decimal("-12.5") && is_decimal("1e3") && is_decimal(".5") && is_decimal("NaN"));
        assert!(!is_decimal("1.2.3") && !is_decimal("") && !is_decimal("1e") && !is_decimal("x"));
    }

    #[test]
    fn epoch_texts_become_instants_dates_and_times() {
        assert_eq!(
            epoch("1616173619.123456789"),
            Some((1_616_173_619, 123_456_789))
        );
        assert_eq!(epoch("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(epoch("12"), Some((12, 0)));
        assert_eq!(epoch("1.5e9"), None);
        assert_eq!(
            instant(1_616_173_619, 0, 0).unwrap(),
            "2021-03-19T17:06:59Z"
        );
        assert_eq!(
            instant(1_616_173_619, 120_000_000, -7 * 3600).unwrap(),
            "2021-03-19T10:06:59.120-07:00"
        );
        assert_eq!(
            naive_from_epoch(1_616_173_619, 5_000).unwrap(),
            "2021-03-19T17:06:59.000005"
        );
        assert_eq!(date_from_days(18_705).unwrap(), "2021-03-19");
        assert_eq!(date_from_days(-1).unwrap(), "1969-12-31");
        assert_eq!(
            time_from_seconds(3_723, 500_000_000).unwrap(),
            "01:02:03.500"
        );
        assert_eq!(
            rfc3339("2024-01-02T03:04:05.000+00:00").unwrap(),
            "2024-01-02T03:04:05Z"
        );
        assert_eq!(
            rfc3339("2024-01-02 03:04:05+02:00").unwrap(),
            "2024-01-02T03:04:05+02:00"
        );
        assert_eq!(
            naive("2024-01-02 03:04:05.250").unwrap(),
            "2024-01-02T03:04:05.250"
        );
        assert_eq!(date("2024-02-30"), None);
        assert_eq!(time("10:30").unwrap(), "10:30:00");
    }

    #[test]
    fn other_texts() {
        assert_eq!(boolean("TRUE"), json!(true));
        assert_eq!(boolean("0"), json!(false));
        assert_eq!(json_text("{\"a\":[1]}"), json!({"a": [1]}));
        assert_eq!(json_text("not json"), json!("not json"));
        assert_eq!(hex_bytes("48690a"), json!("SGkK"));
    }
}
