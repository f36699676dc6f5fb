//! Reading PostgreSQL's binary result format into JSON: the kind of each
//! column's type, and numerics, dates, intervals, arrays and records decoded
//! exactly (numerics as strings, so no digit is lost).

use std::net::IpAddr;

use base64::Engine as _;
use serde_json::{Map, Value};
use tokio_postgres::types::{FromSql, Kind, Type};

use crate::data::value;

/// Deepest nesting of arrays and records decoded.
pub(super) const MAX_DEPTH: usize = 16;

/// Largest array dimension product accepted from the server.
pub(super) const MAX_ARRAY_ELEMENTS: usize = 1_000_000;

/// A column's bytes exactly as PostgreSQL sent them (binary format).
pub(super) struct Raw<'a>(pub(super) Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

/// What a PostgreSQL type is, for decoding and naming.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum PgKind {
    Bool,
    /// Signed integers of 16, 32 or 64 bits; 33 for `oid` (unsigned 32).
    Int(u8),
    Float,
    Float4,
    Numeric,
    Text,
    /// `"char"`: one byte.
    Char,
    Bytea,
    Timestamp,
    Timestamptz,
    Date,
    Time,
    Timetz,
    Interval,
    Json,
    Jsonb,
    Uuid,
    Inet,
    Array(Box<PgKind>),
    Composite(Vec<(String, PgKind)>),
    /// An anonymous `record`: each field names its own type.
    Record,
    /// `void` (functions such as `pg_sleep`): always null.
    Void,
    Unsupported(String),
}

impl PgKind {
    pub(super) fn portable(&self) -> String {
        match self {
            PgKind::Bool => "boolean".into(),
            PgKind::Int(_) => "integer".into(),
            PgKind::Float | PgKind::Float4 => "number".into(),
            PgKind::Numeric => "decimal".into(),
            PgKind::Text | PgKind::Char => "string".into(),
            PgKind::Bytea => "bytes".into(),
            PgKind::Timestamp => "datetime".into(),
            PgKind::Timestamptz => "timestamp".into(),
            PgKind::Date => "date".into(),
            PgKind::Time | PgKind::Timetz => "time".into(),
            PgKind::Interval => "interval".into(),
            PgKind::Json | PgKind::Jsonb => "json".into(),
            PgKind::Uuid => "uuid".into(),
            PgKind::Inet => "inet".into(),
            PgKind::Array(_) | PgKind::Composite(_) | PgKind::Record => "json".into(),
            PgKind::Void => "void".into(),
            PgKind::Unsupported(name) => name.to_ascii_lowercase(),
        }
    }

    /// The name of a type inside this one that cannot be decoded.
    pub(super) fn unsupported(&self) -> Option<&str> {
        match self {
            PgKind::Unsupported(name) => Some(name),
            PgKind::Array(inner) => inner.unsupported(),
            PgKind::Composite(fields) => fields.iter().find_map(|(_, k)| k.unsupported()),
            _ => None,
        }
    }
}

/// Classifies a type by OID (built-ins), then by kind and name.
pub(super) fn pg_kind(ty: &Type, depth: usize) -> PgKind {
    if depth > MAX_DEPTH {
        return PgKind::Unsupported(ty.name().to_string());
    }
    match ty.kind() {
        Kind::Domain(base) => return pg_kind(base, depth + 1),
        Kind::Enum(_) => return PgKind::Text,
        Kind::Array(elem) => return PgKind::Array(Box::new(pg_kind(elem, depth + 1))),
        Kind::Composite(fields) => {
            return PgKind::Composite(
                fields
                    .iter()
                    .map(|f| (f.name().to_string(), pg_kind(f.type_(), depth + 1)))
                    .collect(),
            );
        }
        _ => {}
    }
    match ty.oid() {
        16 => PgKind::Bool,
        17 => PgKind::Bytea,
        18 => PgKind::Char,
        // name, text, bpchar, varchar, unknown, xml
        19 | 25 | 1042 | 1043 | 705 | 142 => PgKind::Text,
        20 => PgKind::Int(64),
        21 => PgKind::Int(16),
        23 => PgKind::Int(32),
        26 => PgKind::Int(33),
        114 => PgKind::Json,
        3802 => PgKind::Jsonb,
        700 => PgKind::Float4,
        701 => PgKind::Float,
        1700 => PgKind::Numeric,
        1082 => PgKind::Date,
        1083 => PgKind::Time,
        1114 => PgKind::Timestamp,
        1184 => PgKind::Timestamptz,
        1186 => PgKind::Interval,
        1266 => PgKind::Timetz,
        2950 => PgKind::Uuid,
        // inet, cidr
        869 | 650 => PgKind::Inet,
        2249 => PgKind::Record,
        2278 => PgKind::Void,
        // Extension text types send their text.
        _ if matches!(ty.name(), "citext" | "ltree" | "lquery") => PgKind::Text,
        _ => PgKind::Unsupported(ty.name().to_string()),
    }
}

/// Reads big-endian numbers off the front of a byte slice.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("too short".into());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N)?
            .try_into()
            .map_err(|_| "too short".to_string())
    }

    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    /// A length-prefixed value (`-1` is NULL).
    fn value(&mut self) -> Result<Option<&'a [u8]>, String> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| "bad length".to_string())?;
        self.take(len).map(Some)
    }
}

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
pub(super) const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Days from 1970-01-01 to 2000-01-01.
pub(super) const PG_EPOCH_DAYS: i64 = 10_957;

/// Decodes one value in PostgreSQL's binary format.
pub(super) fn decode(kind: &PgKind, raw: &[u8], depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("nested too deeply".into());
    }
    let mut r = Reader(raw);
    let text = || String::from_utf8_lossy(raw).into_owned();
    Ok(match kind {
        PgKind::Bool => Value::Bool(r.u8()? != 0),
        PgKind::Int(16) => Value::from(r.i16()?),
        PgKind::Int(32) => Value::from(r.i32()?),
        PgKind::Int(33) => Value::from(r.u32()?),
        PgKind::Int(_) => Value::from(r.i64()?),
        PgKind::Float4 => {
            let f = f32::from_be_bytes(r.array()?);
            // Through its shortest text, so 1.1f32 stays 1.1.
            value::float(&f.to_string())
        }
        PgKind::Float => value::float_value(f64::from_be_bytes(r.array()?)),
        PgKind::Numeric => Value::String(numeric(&mut r)?),
        PgKind::Text => Value::String(text()),
        PgKind::Char => Value::String(char::from(r.u8()?).to_string()),
        PgKind::Bytea => Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
        PgKind::Timestamp | PgKind::Timestamptz => {
            let micros = r.i64()?;
            let infinite = match micros {
                i64::MAX => Some("infinity"),
                i64::MIN => Some("-infinity"),
                _ => None,
            };
            if let Some(inf) = infinite {
                return Ok(Value::from(inf));
            }
            let unix = micros
                .checked_add(PG_EPOCH_MICROS)
                .ok_or("timestamp out of range")?;
            let secs = unix.div_euclid(1_000_000);
            let nanos = u32::try_from(unix.rem_euclid(1_000_000) * 1000)
                .map_err(|_| "timestamp out of range".to_string())?;
            let text = if *kind == PgKind::Timestamptz {
                value::instant(secs, nanos, 0)
            } else {
                value::naive_from_epoch(secs, nanos)
            };
            Value::String(text.ok_or("timestamp out of range")?)
        }
        PgKind::Date => match r.i32()? {
            i32::MAX => Value::from("infinity"),
            i32::MIN => Value::from("-infinity"),
            days => Value::String(
                value::date_from_days(i64::from(days) + PG_EPOCH_DAYS)
                    .ok_or("date out of range")?,
            ),
        },
        PgKind::Time => Value::String(time_of_day(r.i64()?)?),
        PgKind::Timetz => {
            let time = time_of_day(r.i64()?)?;
            // Seconds west of UTC.
            let east = -r.i32()?;
            let sign = if east < 0 { '-' } else { '+' };
            let abs = east.unsigned_abs();
            Value::String(format!(
                "{time}{sign}{:02}:{:02}",
                abs / 3600,
                abs % 3600 / 60
            ))
        }
        PgKind::Interval => {
            let micros = r.i64()?;
            let days = r.i32()?;
            let months = r.i32()?;
            Value::String(interval(micros, days, months))
        }
        PgKind::Json => value::json_text(&text()),
        PgKind::Jsonb => {
            let version = r.u8()?;
            if version != 1 {
                return Err(format!("jsonb version {version}"));
            }
            value::json_text(&String::from_utf8_lossy(r.0))
        }
        PgKind::Uuid => {
            let b: [u8; 16] = r.array()?;
            let h = hex::encode(b);
            Value::String(format!(
                "{}-{}-{}-{}-{}",
                h.get(0..8).unwrap_or(""),
                h.get(8..12).unwrap_or(""),
                h.get(12..16).unwrap_or(""),
                h.get(16..20).unwrap_or(""),
                h.get(20..32).unwrap_or("")
            ))
        }
        PgKind::Inet => {
            let family = r.u8()?;
            let bits = r.u8()?;
            let is_cidr = r.u8()? != 0;
            let len = r.u8()?;
            let addr: IpAddr = match (family, len) {
                (2, 4) => IpAddr::from(r.array::<4>()?),
                (3, 16) => IpAddr::from(r.array::<16>()?),
                _ => return Err("unknown address family".into()),
            };
            let full = if addr.is_ipv4() { 32 } else { 128 };
            if is_cidr || bits != full {
                Value::String(format!("{addr}/{bits}"))
            } else {
                Value::String(addr.to_string())
            }
        }
        PgKind::Array(elem) => array(elem, &mut r, depth)?,
        PgKind::Composite(fields) => {
            let count = usize::try_from(r.i32()?).map_err(|_| "bad field count".to_string())?;
            let mut object = Map::new();
            for i in 0..count {
                let _oid = r.u32()?;
                let v = r.value()?;
                let (name, k) = fields.get(i).ok_or("more fields than the type has")?;
                let decoded = match v {
                    None => Value::Null,
                    Some(b) => decode(k, b, depth + 1)?,
                };
                object.insert(name.clone(), decoded);
            }
            Value::Object(object)
        }
        PgKind::Record => {
            let count = usize::try_from(r.i32()?).map_err(|_| "bad field count".to_string())?;
            let mut items = Vec::new();
            for _ in 0..count.min(MAX_ARRAY_ELEMENTS) {
                let oid = r.u32()?;
                let v = r.value()?;
                let k = Type::from_oid(oid).map_or_else(
                    || PgKind::Unsupported(oid.to_string()),
                    |t| pg_kind(&t, depth + 1),
                );
                items.push(match (v, &k) {
                    (None, _) => Value::Null,
                    (Some(_), PgKind::Unsupported(name)) => {
                        return Err(format!(
                            "a record field of type {name}; select the fields as columns"
                        ));
                    }
                    (Some(b), _) => decode(&k, b, depth + 1)?,
                });
            }
            Value::Array(items)
        }
        PgKind::Void => Value::Null,
        PgKind::Unsupported(name) => return Err(format!("type {name}")),
    })
}

/// A time of day from microseconds since midnight (`24:00:00` included).
pub(super) fn time_of_day(micros: i64) -> Result<String, String> {
    if micros == 86_400_000_000 {
        return Ok("24:00:00".into());
    }
    let secs = micros.div_euclid(1_000_000);
    let nanos = u32::try_from(micros.rem_euclid(1_000_000) * 1000)
        .map_err(|_| "time out of range".to_string())?;
    value::time_from_seconds(secs, nanos).ok_or_else(|| "time out of range".into())
}

/// An interval as ISO 8601 (`P1Y2M3DT4H5M6.5S`; each part keeps its sign
/// as PostgreSQL's `iso_8601` style writes it).
pub(super) fn interval(micros: i64, days: i32, months: i32) -> String {
    let mut out = String::from("P");
    let (years, months) = (months / 12, months % 12);
    if years != 0 {
        out.push_str(&format!("{years}Y"));
    }
    if months != 0 {
        out.push_str(&format!("{months}M"));
    }
    if days != 0 {
        out.push_str(&format!("{days}D"));
    }
    if micros != 0 {
        out.push('T');
        let hours = micros / 3_600_000_000;
        let minutes = micros % 3_600_000_000 / 60_000_000;
        let rest = micros % 60_000_000;
        if hours != 0 {
            out.push_str(&format!("{hours}H"));
        }
        if minutes != 0 {
            out.push_str(&format!("{minutes}M"));
        }
        if rest != 0 {
            let sign = if rest < 0 { "-" } else { "" };
            let abs = rest.unsigned_abs();
            let (s, frac) = (abs / 1_000_000, abs % 1_000_000);
            if frac == 0 {
                out.push_str(&format!("{sign}{s}S"));
            } else {
                let frac = format!("{frac:06}");
                out.push_str(&format!("{sign}{s}.{}S", frac.trim_end_matches('0')));
            }
        }
    }
    if out == "P" {
        out.push_str("T0S");
    }
    out
}

/// `numeric`'s binary form as decimal text.
pub(super) fn numeric(r: &mut Reader<'_>) -> Result<String, String> {
    let ndigits = usize::try_from(r.i16()?).map_err(|_| "bad digit count".to_string())?;
    let weight = i64::from(r.i16()?);
    let sign = r.u16()?;
    let dscale = usize::from(r.u16()?);
    let mut digits = Vec::with_capacity(ndigits);
    for _ in 0..ndigits {
        digits.push(r.i16()?);
    }
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return Err("bad numeric sign".into()),
    }
    let digit = |k: i64| -> i16 {
        usize::try_from(k)
            .ok()
            .and_then(|k| digits.get(k).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for k in 0..=weight {
            if k == 0 {
                out.push_str(&digit(k).to_string());
            } else {
                out.push_str(&format!("{:04}", digit(k)));
            }
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut k = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(k)));
            k += 1;
        }
        frac.truncate(dscale);
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

/// An array in binary form as nested JSON arrays.
pub(super) fn array(elem: &PgKind, r: &mut Reader<'_>, depth: usize) -> Result<Value, String> {
    let ndim = usize::try_from(r.i32()?).map_err(|_| "bad dimensions".to_string())?;
    let _has_nulls = r.i32()?;
    let _elem_oid = r.u32()?;
    if ndim == 0 {
        return Ok(Value::Array(Vec::new()));
    }
    if ndim > 6 {
        return Err("more than 6 dimensions".into());
    }
    let mut dims = Vec::with_capacity(ndim);
    let mut total: usize = 1;
    for _ in 0..ndim {
        let len = usize::try_from(r.i32()?).map_err(|_| "bad dimension".to_string())?;
        let _lower_bound = r.i32()?;
        total = total.saturating_mul(len);
        dims.push(len);
    }
    if total > MAX_ARRAY_ELEMENTS {
        return Err("array too large".into());
    }
    let mut items = Vec::with_capacity(total);
    for _ in 0..total {
        items.push(match r.value()? {
            None => Value::Null,
            Some(b) => decode(elem, b, depth + 1)?,
        });
    }
    // Fold the flat list into the dimensions, innermost first.
    for len in dims.iter().skip(1).rev() {
        if *len == 0 {
            break;
        }
        items = items
            .chunks(*len)
            .map(|c| Value::Array(c.to_vec()))
            .collect();
    }
    Ok(Value::Array(items))
}
