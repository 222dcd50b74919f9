//! MySQL/MariaDB values to JSON, by column kind, the same for a snapshot row (binary
//! protocol, session time zone UTC) and a binlog row: integers exact (unsigned too),
//! decimals as strings (or exact numbers), temporal values ISO 8601 / RFC 3339, `JSON` as
//! JSON, bytes base64, `ENUM`/`SET` as their labels, `BIT` and `YEAR` as numbers.

use base64::Engine as _;
use estafeta_config::mysql_source::NumericMode;
use mysql_async::Value as My;
use mysql_async::binlog::value::BinlogValue;
use serde_json::{Number, Value, json};

use super::schema::Kind;
use crate::row_change::exact_number;

/// Where a value was read: the two differ for `SET` (labels vs bit mask), `TIMESTAMP`
/// (a UTC date vs seconds since the epoch) and character sets (converted to UTF-8 by the
/// server vs the column's own bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    Snapshot,
    Binlog,
}

/// A binlog value.
pub(crate) fn binlog_to_json(kind: &Kind, v: &BinlogValue<'_>, numeric: NumericMode) -> Value {
    match v {
        BinlogValue::Value(v) => to_json(kind, v, Read::Binlog, numeric),
        BinlogValue::Jsonb(j) => serde_json::Value::try_from(j.clone())
            .unwrap_or_else(|_| json!({"$unreadable": "json"})),
        // Only with MySQL's `binlog_row_value_options=PARTIAL_JSON`, which set-up refuses.
        BinlogValue::JsonDiff(_) => json!({"$unreadable": "partial json update"}),
    }
}

/// A value of a column of kind `kind`.
pub(crate) fn to_json(kind: &Kind, v: &My, read: Read, numeric: NumericMode) -> Value {
    if matches!(v, My::NULL) {
        return Value::Null;
    }
    match (kind, v) {
        (Kind::Decimal, My::Bytes(b)) => {
            let s = String::from_utf8_lossy(b);
            match numeric {
                NumericMode::String => Value::String(s.into_owned()),
                NumericMode::Number => {
                    exact_number(&s).unwrap_or_else(|| Value::String(s.into_owned()))
                }
            }
        }
        (Kind::Float, My::Float(f)) => float(*f),
        (Kind::Bit, My::Bytes(b)) if b.len() <= 8 => {
            Value::from(b.iter().fold(0_u64, |n, byte| (n << 8) | u64::from(*byte)))
        }
        (Kind::Year, My::Bytes(b)) => match String::from_utf8_lossy(b).parse::<u16>() {
            // The binlog's zero year reads as 1900 (1901 is the first real one).
            Ok(1900) => Value::from(0),
            Ok(y) => Value::from(y),
            Err(_) => fallback(v),
        },
        (Kind::Timestamp, My::Bytes(b)) if read == Read::Binlog => {
            epoch(&String::from_utf8_lossy(b)).unwrap_or_else(|| fallback(v))
        }
        (Kind::Timestamp, My::Int(secs)) if read == Read::Binlog => {
            epoch(&secs.to_string()).unwrap_or_else(|| fallback(v))
        }
        (Kind::Timestamp, My::Date(y, mo, d, h, mi, s, us)) => {
            if (*y, *mo, *d) == (0, 0, 0) {
                Value::String(datetime(*y, *mo, *d, *h, *mi, *s, *us) + "Z")
            } else {
                chrono::NaiveDate::from_ymd_opt(i32::from(*y), u32::from(*mo), u32::from(*d))
                    .and_then(|date| {
                        date.and_hms_micro_opt(u32::from(*h), u32::from(*mi), u32::from(*s), *us)
                    })
                    .map_or_else(|| fallback(v), |t| Value::String(rfc3339(t.and_utc())))
            }
        }
        (Kind::Date, My::Date(y, mo, d, ..)) => Value::String(format!("{y:04}-{mo:02}-{d:02}")),
        (Kind::Json, My::Bytes(b)) => {
            serde_json::from_slice(b).unwrap_or_else(|_| text(b, false, read))
        }
        (Kind::Text { latin1 }, My::Bytes(b)) => text(b, *latin1, read),
        (Kind::Binary { pad_to }, My::Bytes(b)) => {
            let mut bytes = b.clone();
            if let Some(n) = pad_to
                && bytes.len() < *n
            {
                bytes.resize(*n, 0);
            }
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        (Kind::Enum(labels), My::Int(i)) if read == Read::Binlog && !labels.is_empty() => {
            match usize::try_from(*i) {
                Ok(0) => Value::String(String::new()),
                Ok(i) => labels
                    .get(i - 1)
                    .map_or_else(|| Value::from(i), |l| Value::String(l.clone())),
                Err(_) => fallback(v),
            }
        }
        (Kind::Set(labels), My::Bytes(mask)) if read == Read::Binlog => {
            if labels.is_empty() {
                let n = mask
                    .iter()
                    .rev()
                    .fold(0_u64, |n, byte| (n << 8) | u64::from(*byte));
                return Value::from(n);
            }
            let chosen: Vec<&str> = labels
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    mask.get(i / 8)
                        .is_some_and(|byte| byte & (1 << (i % 8)) != 0)
                })
                .map(|(_, l)| l.as_str())
                .collect();
            Value::String(chosen.join(","))
        }
        (Kind::Int | Kind::Double | Kind::Bit, My::Bytes(b)) => {
            // The text protocol's form of a number.
            let s = String::from_utf8_lossy(b);
            exact_number(&s).unwrap_or_else(|| Value::String(s.into_owned()))
        }
        _ => fallback(v),
    }
}

/// A value by its own type, for kinds that need nothing special.
fn fallback(v: &My) -> Value {
    match v {
        My::NULL => Value::Null,
        My::Int(n) => Value::from(*n),
        My::UInt(n) => Value::from(*n),
        My::Float(f) => float(*f),
        My::Double(d) => {
            Number::from_f64(*d).map_or_else(|| Value::String(d.to_string()), Value::Number)
        }
        My::Bytes(b) => text(b, false, Read::Snapshot),
        My::Date(y, mo, d, h, mi, s, us) => Value::String(datetime(*y, *mo, *d, *h, *mi, *s, *us)),
        My::Time(neg, days, h, m, s, us) => {
            let hours = u64::from(*days) * 24 + u64::from(*h);
            Value::String(format!(
                "{}{hours:02}:{m:02}:{s:02}{}",
                if *neg { "-" } else { "" },
                fraction(*us)
            ))
        }
    }
}

/// A single-precision float with the digits it holds (`1.1`, not `1.100000023841858`).
fn float(f: f32) -> Value {
    f.to_string()
        .parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or_else(|| Value::String(f.to_string()), Value::Number)
}

/// Character data: UTF-8 as is, `latin1` from the binlog by its code points, anything else
/// that is not UTF-8 as `{"$base64": …}` (like the PostgreSQL source).
fn text(b: &[u8], latin1: bool, read: Read) -> Value {
    if latin1 && read == Read::Binlog {
        return Value::String(b.iter().map(|&c| char::from(c)).collect());
    }
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => json!({"$base64": base64::engine::general_purpose::STANDARD.encode(b)}),
    }
}

/// `.5` → `.500`, `.000123` → `.000123`, 0 → nothing (like chrono's `%.f`).
fn fraction(us: u32) -> String {
    match us {
        0 => String::new(),
        us if us % 1000 == 0 => format!(".{:03}", us / 1000),
        us => format!(".{us:06}"),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]`, also for MySQL's zero dates.
fn datetime(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> String {
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{}",
        fraction(us)
    )
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Seconds since the epoch (`1763816400` or `1763816400.250000`) as RFC 3339 UTC; 0 is the
/// zero `TIMESTAMP`.
fn epoch(s: &str) -> Option<Value> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let micros: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").get(..6)?.parse().ok()?
    };
    if secs == 0 && micros == 0 {
        return Some(Value::String("0000-00-00T00:00:00Z".into()));
    }
    let t = chrono::DateTime::from_timestamp(secs, micros * 1000)?;
    Some(Value::String(rfc3339(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(k: &Kind, v: My) -> Value {
        to_json(k, &v, Read::Binlog, NumericMode::String)
    }
    fn s(k: &Kind, v: My) -> Value {
        to_json(k, &v, Read::Snapshot, NumericMode::String)
    }

    #[test]
    fn numbers() {
        assert_eq!(b(&Kind::Int, My::UInt(u64::MAX)), json!(u64::MAX));
        assert_eq!(b(&Kind::Int, My::Int(-5)), json!(-5));
        assert_eq!(b(&Kind::Float, My::Float(1.1)), json!(1.1));
        assert_eq!(
            b(&Kind::Decimal, My::Bytes(b"12.50".to_vec())),
            json!("12.50")
        );
        assert_eq!(
            to_json(
                &Kind::Decimal,
                &My::Bytes(b"12.50".to_vec()),
                Read::Binlog,
                NumericMode::Number
            ),
            json!(12.5)
        );
        assert_eq!(b(&Kind::Bit, My::Bytes(vec![1, 2])), json!(258));
        assert_eq!(b(&Kind::Year, My::Bytes(b"2024".to_vec())), json!(2024));
        assert_eq!(b(&Kind::Year, My::Bytes(b"1900".to_vec())), json!(0));
        assert_eq!(s(&Kind::Year, My::Int(2024)), json!(2024));
    }

    #[test]
    fn temporal() {
        assert_eq!(
            b(&Kind::DateTime, My::Date(2026, 11, 22, 10, 0, 0, 500_000)),
            json!("2026-11-22T10:00:00.500")
        );
        assert_eq!(
            b(&Kind::Timestamp, My::Bytes(b"1763816400.250000".to_vec())),
            json!("2025-11-22T13:00:00.250Z")
        );
        assert_eq!(
            s(&Kind::Timestamp, My::Date(2025, 11, 22, 13, 0, 0, 250_000)),
            json!("2025-11-22T13:00:00.250Z")
        );
        assert_eq!(
            b(&Kind::Timestamp, My::Int(0)),
            json!("0000-00-00T00:00:00Z")
        );
        assert_eq!(
            b(&Kind::Date, My::Date(1990, 1, 2, 0, 0, 0, 0)),
            json!("1990-01-02")
        );
        assert_eq!(
            b(&Kind::Time, My::Time(true, 1, 2, 3, 4, 0)),
            json!("-26:03:04")
        );
    }

    #[test]
    fn text_bytes_enums_sets() {
        assert_eq!(
            b(&Kind::Json, My::Bytes(br#"{"a":[1]}"#.to_vec())),
            json!({"a": [1]})
        );
        assert_eq!(
            b(
                &Kind::Text { latin1: true },
                My::Bytes(vec![0x63, 0x61, 0x66, 0xe9])
            ),
            json!("café")
        );
        assert_eq!(
            b(
                &Kind::Binary { pad_to: Some(4) },
                My::Bytes(vec![0xde, 0xad])
            ),
            json!("3q0AAA==")
        );
        let labels: std::sync::Arc<[String]> = vec!["a".to_owned(), "b".to_owned()].into();
        assert_eq!(b(&Kind::Enum(labels.clone()), My::Int(2)), json!("b"));
        assert_eq!(
            s(&Kind::Enum(labels.clone()), My::Bytes(b"b".to_vec())),
            json!("b")
        );
        assert_eq!(b(&Kind::Enum(Vec::new().into()), My::Int(2)), json!(2));
        assert_eq!(
            b(&Kind::Set(labels.clone()), My::Bytes(vec![3])),
            json!("a,b")
        );
        assert_eq!(
            s(&Kind::Set(labels), My::Bytes(b"a,b".to_vec())),
            json!("a,b")
        );
        assert_eq!(
            b(&Kind::Other, My::Bytes(vec![0xff])),
            json!({"$base64": "/w=="})
        );
    }
}
