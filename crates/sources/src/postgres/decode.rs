//! PostgreSQL values (pgoutput's text form) to JSON, by column type: numbers stay exact,
//! `json`/`jsonb` become JSON, timestamps RFC 3339, `bytea` base64, arrays JSON arrays.

use base64::Engine as _;
use estafeta_config::postgres_source::NumericMode;
use pg_walstream::ColumnValue;
use serde_json::{Number, Value};

// Type OIDs from PostgreSQL's pg_type.dat (stable across versions).
const BOOL: u32 = 16;
const BYTEA: u32 = 17;
const INT8: u32 = 20;
const INT2: u32 = 21;
const INT4: u32 = 23;
const OID: u32 = 26;
const JSON: u32 = 114;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const TIMESTAMP: u32 = 1114;
const TIMESTAMPTZ: u32 = 1184;
const NUMERIC: u32 = 1700;
const JSONB: u32 = 3802;

/// The element type of an array type, for the array types worth decoding element-wise
/// (other arrays still become arrays, of strings).
fn array_element(oid: u32) -> Option<u32> {
    Some(match oid {
        1000 => BOOL,
        1001 => BYTEA,
        1016 => INT8,
        1005 => INT2,
        1007 => INT4,
        1028 => OID,
        199 => JSON,
        1021 => FLOAT4,
        1022 => FLOAT8,
        1115 => TIMESTAMP,
        1185 => TIMESTAMPTZ,
        1231 => NUMERIC,
        3807 => JSONB,
        // text[], varchar[], bpchar[], name[], uuid[], date[], time[], interval[],
        // inet[], cidr[], macaddr[], char[]
        1009 | 1015 | 1014 | 1003 | 2951 | 1182 | 1183 | 1187 | 1041 | 651 | 1040 | 1002 => 25,
        _ => return None,
    })
}

/// Converts one column value.
pub(crate) fn column_to_json(type_oid: u32, value: &ColumnValue, numeric: NumericMode) -> Value {
    match value {
        ColumnValue::Null => Value::Null,
        ColumnValue::Binary(b) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        ColumnValue::Text(b) => match std::str::from_utf8(b) {
            Ok(s) => text_to_json(type_oid, s, numeric),
            // The server encoding is not UTF-8 (e.g. SQL_ASCII): keep the bytes, marked.
            Err(_) => serde_json::json!({
                "$base64": base64::engine::general_purpose::STANDARD.encode(b)
            }),
        },
    }
}

/// Converts the text form of a value of type `oid`.
pub(crate) fn text_to_json(oid: u32, s: &str, numeric: NumericMode) -> Value {
    match oid {
        BOOL => match s {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            other => Value::String(other.to_owned()),
        },
        INT2 | INT4 | INT8 | OID => s
            .parse::<i64>()
            .map(|n| Value::Number(n.into()))
            .or_else(|_| s.parse::<u64>().map(|n| Value::Number(n.into())))
            .unwrap_or_else(|_| Value::String(s.to_owned())),
        FLOAT4 | FLOAT8 => s
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or_else(|| Value::String(s.to_owned()), Value::Number),
        NUMERIC => match numeric {
            NumericMode::String => Value::String(s.to_owned()),
            NumericMode::Number => exact_number(s).unwrap_or_else(|| Value::String(s.to_owned())),
        },
        JSON | JSONB => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned())),
        TIMESTAMPTZ => Value::String(timestamptz(s).unwrap_or_else(|| s.to_owned())),
        TIMESTAMP => Value::String(timestamp(s).unwrap_or_else(|| s.to_owned())),
        BYTEA => Value::String(bytea(s).unwrap_or_else(|| s.to_owned())),
        _ => match array_element(oid) {
            Some(elem) => {
                parse_array(s, elem, numeric).unwrap_or_else(|| Value::String(s.to_owned()))
            }
            None => Value::String(s.to_owned()),
        },
    }
}

/// A JSON number only when it holds every digit of `s` (integers within 64 bits, decimals
/// that round-trip through `f64`); `None` otherwise, and the caller keeps the string.
fn exact_number(s: &str) -> Option<Value> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(Value::Number(n.into()));
    }
    let f: f64 = s.parse().ok()?;
    let n = Number::from_f64(f)?;
    let canonical = |t: &str| -> String {
        let t = t.trim_start_matches('+');
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            t.to_owned()
        }
    };
    (canonical(&n.to_string()) == canonical(s)).then_some(Value::Number(n))
}

/// `2026-11-22 10:00:00.123-03` → `2026-11-22T13:00:00.123Z`.
fn timestamptz(s: &str) -> Option<String> {
    // The server writes the offset as `+HH`, `+HH:MM` or `+HH:MM:SS`.
    let (body, offset) = split_offset(s)?;
    let naive = chrono::NaiveDateTime::parse_from_str(body, "%Y-%m-%d %H:%M:%S%.f").ok()?;
    let secs = offset_seconds(offset)?;
    let fixed = chrono::FixedOffset::east_opt(secs)?;
    let dt = naive.and_local_timezone(fixed).single()?;
    Some(
        dt.with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
    )
}

/// `2026-11-22 10:00:00.5` → `2026-11-22T10:00:00.5` (no zone: the column has none).
fn timestamp(s: &str) -> Option<String> {
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").ok()?;
    Some(naive.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
}

fn split_offset(s: &str) -> Option<(&str, &str)> {
    // The date part has '-' too, so look for the sign after the time.
    let time_start = s.find(' ')?;
    let rel = s[time_start..].rfind(['+', '-'])?;
    Some(s.split_at(time_start + rel))
}

fn offset_seconds(o: &str) -> Option<i32> {
    let sign = if o.starts_with('-') { -1 } else { 1 };
    let mut parts = o[1..].split(':');
    let h: i32 = parts.next()?.parse().ok()?;
    let m: i32 = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    let sec: i32 = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    Some(sign * (h * 3600 + m * 60 + sec))
}

/// `\xdeadbeef` → base64 of those bytes.
fn bytea(s: &str) -> Option<String> {
    let hex = s.strip_prefix("\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    Some(base64::engine::general_purpose::STANDARD.encode(bytes?))
}

/// Parses an array literal (`{1,2,NULL}`, `{"a b","c\"d"}`, `{{1,2},{3,4}}`), converting
/// each element as type `elem`.
fn parse_array(s: &str, elem: u32, numeric: NumericMode) -> Option<Value> {
    // A literal with explicit bounds (`[0:1]={…}`) starts with '['.
    let s = match s.find('=') {
        Some(i) if s.starts_with('[') => &s[i + 1..],
        _ => s,
    };
    let mut chars = s.chars().peekable();
    let v = parse_level(&mut chars, elem, numeric)?;
    chars.next().is_none().then_some(v)
}

fn parse_level(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    elem: u32,
    numeric: NumericMode,
) -> Option<Value> {
    if chars.next()? != '{' {
        return None;
    }
    let mut out = Vec::new();
    if chars.peek() == Some(&'}') {
        chars.next();
        return Some(Value::Array(out));
    }
    loop {
        match chars.peek()? {
            '{' => out.push(parse_level(chars, elem, numeric)?),
            '"' => {
                chars.next();
                let mut item = String::new();
                loop {
                    match chars.next()? {
                        '\\' => item.push(chars.next()?),
                        '"' => break,
                        c => item.push(c),
                    }
                }
                out.push(text_to_json(elem, &item, numeric));
            }
            _ => {
                let mut item = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '}' {
                        break;
                    }
                    item.push(c);
                    chars.next();
                }
                let item = item.trim();
                out.push(if item.eq_ignore_ascii_case("NULL") {
                    Value::Null
                } else {
                    text_to_json(elem, item, numeric)
                });
            }
        }
        match chars.next()? {
            ',' => {}
            '}' => return Some(Value::Array(out)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(oid: u32, s: &str) -> Value {
        text_to_json(oid, s, NumericMode::String)
    }

    #[test]
    fn scalars() {
        assert_eq!(t(BOOL, "t"), json!(true));
        assert_eq!(t(INT8, "-9223372036854775808"), json!(i64::MIN));
        assert_eq!(t(FLOAT8, "1.5"), json!(1.5));
        assert_eq!(t(FLOAT8, "NaN"), json!("NaN"));
        assert_eq!(t(NUMERIC, "12.50"), json!("12.50"));
        assert_eq!(t(JSONB, r#"{"a": [1, 2]}"#), json!({"a": [1, 2]}));
        assert_eq!(t(BYTEA, "\\xdeadbeef"), json!("3q2+7w=="));
        assert_eq!(
            t(2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        );
    }

    #[test]
    fn numeric_as_number_keeps_every_digit_or_stays_a_string() {
        let n = |s| text_to_json(NUMERIC, s, NumericMode::Number);
        assert_eq!(n("42"), json!(42));
        assert_eq!(n("12.5"), json!(12.5));
        assert_eq!(n("12.50"), json!(12.5));
        assert_eq!(
            n("12345678901234567890.123456789"),
            json!("12345678901234567890.123456789")
        );
        assert_eq!(n("NaN"), json!("NaN"));
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            t(TIMESTAMPTZ, "2026-11-22 10:00:00-03"),
            json!("2026-11-22T13:00:00Z")
        );
        assert_eq!(
            t(TIMESTAMPTZ, "2026-11-22 10:00:00.25+05:30"),
            json!("2026-11-22T04:30:00.250Z")
        );
        assert_eq!(
            t(TIMESTAMP, "2026-11-22 10:00:00.5"),
            json!("2026-11-22T10:00:00.500")
        );
        assert_eq!(t(TIMESTAMPTZ, "infinity"), json!("infinity"));
    }

    #[test]
    fn arrays() {
        assert_eq!(t(1007, "{1,2,NULL}"), json!([1, 2, null]));
        assert_eq!(t(1009, r#"{"a b","c\"d",e}"#), json!(["a b", "c\"d", "e"]));
        assert_eq!(t(1007, "{{1,2},{3,4}}"), json!([[1, 2], [3, 4]]));
        assert_eq!(t(1009, "{}"), json!([]));
        assert_eq!(t(1007, "[0:1]={5,6}"), json!([5, 6]));
        assert_eq!(t(1007, "{1,2"), json!("{1,2"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(oid in proptest::sample::select(vec![BOOL, BYTEA, INT4, NUMERIC, JSONB, TIMESTAMPTZ, TIMESTAMP, 1007, 1009, 25]), s in ".{0,40}") {
            let _ = text_to_json(oid, &s, NumericMode::Number);
        }
    }
}
