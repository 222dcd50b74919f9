//! Records to object bodies: CSV, JSON Lines or a JSON array, split into several objects when
//! a batch exceeds `max_records` or `max_bytes`, each optionally gzip-compressed.
//!
//! * CSV: a header row, then one row per record. The columns are the declared `columns`, or
//!   the first record's keys sorted by name followed by any keys later records add (so every
//!   object of one batch has the same header; JSON objects do not keep their order here). Strings are written as they are, numbers and booleans as
//!   JSON text, `null` and missing keys as empty cells, nested objects and arrays as JSON
//!   text. Quoting follows RFC 4180 (the `csv` crate). A declared column that is not a key
//!   of the record is looked up as a dotted path (`customer.name`). Records must be objects.
//! * JSON Lines: one record per line, each line ending in `\n`.
//! * JSON: one array of the records.
//!
//! `max_bytes` counts encoded bytes before compression; a single record larger than it is
//! written alone in its own object.

use std::io::Write as _;

use estafeta_config::object_destination::{ObjectFormat, ObjectLayout};
use serde_json::{Map, Value};

/// Records that cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EncodeError {
    /// CSV needs objects.
    #[error(
        "record {index} of the batch is {found}, not a JSON object: CSV rows are built from objects (use `format: jsonl`, or a route template that renders an object)"
    )]
    NotAnObject {
        /// 0-based position of the record in the batch.
        index: usize,
        /// What was found (`null`, `a string`, …).
        found: &'static str,
    },
    /// The CSV writer failed.
    #[error("cannot write CSV")]
    Csv(#[source] csv::Error),
    /// A record could not be serialised.
    #[error("cannot write JSON")]
    Json(#[source] serde_json::Error),
    /// gzip failed.
    #[error("cannot gzip the object")]
    Gzip(#[source] std::io::Error),
}

/// One object's body.
#[derive(Debug)]
pub(crate) struct Part {
    /// The bytes to store (compressed when `gzip`).
    pub(crate) body: Vec<u8>,
    /// Records in it.
    pub(crate) records: usize,
}

/// Encoded records: one buffer, and where each record's bytes are in it.
struct Rows {
    buf: Vec<u8>,
    spans: Vec<std::ops::Range<usize>>,
}

impl Rows {
    fn row(&self, i: usize) -> &[u8] {
        &self.buf[self.spans[i].clone()]
    }
}

/// Encodes `records` into one or more object bodies.
pub(crate) fn encode(layout: &ObjectLayout, records: &[Value]) -> Result<Vec<Part>, EncodeError> {
    let (header, rows) = match layout.format {
        ObjectFormat::Csv => csv_rows(records, layout.columns.as_deref())?,
        ObjectFormat::Jsonl | ObjectFormat::Json => (Vec::new(), json_rows(records)?),
    };
    let mut parts = Vec::new();
    for group in group_rows(&rows, &header, layout) {
        let mut body = Vec::with_capacity(group.bytes);
        match layout.format {
            ObjectFormat::Csv => {
                body.extend_from_slice(&header);
                for i in group.range.clone() {
                    body.extend_from_slice(rows.row(i));
                }
            }
            ObjectFormat::Jsonl => {
                for i in group.range.clone() {
                    body.extend_from_slice(rows.row(i));
                    body.push(b'\n');
                }
            }
            ObjectFormat::Json => {
                body.push(b'[');
                for i in group.range.clone() {
                    if i > group.range.start {
                        body.push(b',');
                    }
                    body.extend_from_slice(rows.row(i));
                }
                body.push(b']');
            }
        }
        let body = if layout.gzip { gzip(&body)? } else { body };
        parts.push(Part {
            body,
            records: group.range.len(),
        });
    }
    Ok(parts)
}

/// A run of rows that becomes one object.
struct Group {
    range: std::ops::Range<usize>,
    bytes: usize,
}

/// Cuts `rows` into groups of at most `max_records` rows and (where more than one row) at
/// most `max_bytes` encoded bytes, counting the header and separators.
fn group_rows(rows: &Rows, header: &[u8], layout: &ObjectLayout) -> Vec<Group> {
    let max_bytes = usize::try_from(layout.max_bytes).unwrap_or(usize::MAX);
    let max_records = layout.max_records.max(1);
    // Bytes a group has before any row, and what each row adds besides itself.
    let (base, per_row) = match layout.format {
        ObjectFormat::Csv => (header.len(), 0),
        ObjectFormat::Jsonl => (0, 1),
        ObjectFormat::Json => (2, 1),
    };
    let mut groups = Vec::new();
    let mut start = 0;
    let mut bytes = base;
    for (i, span) in rows.spans.iter().enumerate() {
        let add = span.len() + per_row;
        let count = i - start;
        if count > 0 && (count >= max_records || bytes + add > max_bytes) {
            groups.push(Group {
                range: start..i,
                bytes,
            });
            start = i;
            bytes = base;
        }
        bytes += add;
    }
    if start < rows.spans.len() {
        groups.push(Group {
            range: start..rows.spans.len(),
            bytes,
        });
    }
    groups
}

fn json_rows(records: &[Value]) -> Result<Rows, EncodeError> {
    let mut buf = Vec::new();
    let mut spans = Vec::with_capacity(records.len());
    for r in records {
        let start = buf.len();
        serde_json::to_writer(&mut buf, r).map_err(EncodeError::Json)?;
        spans.push(start..buf.len());
    }
    Ok(Rows { buf, spans })
}

/// The header line and the encoded rows.
fn csv_rows(
    records: &[Value],
    declared: Option<&[String]>,
) -> Result<(Vec<u8>, Rows), EncodeError> {
    let mut objects = Vec::with_capacity(records.len());
    for (index, r) in records.iter().enumerate() {
        match r {
            Value::Object(m) => objects.push(m),
            other => {
                return Err(EncodeError::NotAnObject {
                    index,
                    found: kind_name(other),
                });
            }
        }
    }
    let columns: Vec<String> = match declared {
        Some(cols) => cols.to_vec(),
        None => {
            let mut seen = std::collections::HashSet::new();
            let mut cols = Vec::new();
            for m in &objects {
                for k in m.keys() {
                    if seen.insert(k.as_str()) {
                        cols.push(k.clone());
                    }
                }
            }
            cols
        }
    };
    let mut header = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    header.write_record(&columns).map_err(EncodeError::Csv)?;
    let header = header
        .into_inner()
        .map_err(|e| EncodeError::Csv(e.into_error().into()))?;
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    let mut spans = Vec::with_capacity(objects.len());
    let mut start = 0;
    for m in &objects {
        w.write_record(columns.iter().map(|c| cell(m, c)))
            .map_err(EncodeError::Csv)?;
        w.flush().map_err(|e| EncodeError::Csv(e.into()))?;
        let end = w.get_ref().len();
        spans.push(start..end);
        start = end;
    }
    let buf = w
        .into_inner()
        .map_err(|e| EncodeError::Csv(e.into_error().into()))?;
    Ok((header, Rows { buf, spans }))
}

/// The text of one cell.
fn cell(record: &Map<String, Value>, column: &str) -> String {
    let value = record.get(column).or_else(|| dotted(record, column));
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// `a.b.c` inside nested objects.
fn dotted<'a>(record: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if !path.contains('.') {
        return None;
    }
    let mut parts = path.split('.');
    let mut current = record.get(parts.next()?)?;
    for p in parts {
        current = current.as_object()?.get(p)?;
    }
    Some(current)
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn gzip(body: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::default(),
    );
    enc.write_all(body).map_err(EncodeError::Gzip)?;
    enc.finish().map_err(EncodeError::Gzip)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn layout(format: ObjectFormat) -> ObjectLayout {
        ObjectLayout {
            prefix: String::new(),
            key: "k".into(),
            format,
            columns: None,
            gzip: false,
            split_arrays: true,
            max_records: 1000,
            max_bytes: 1 << 20,
            max_wait: Duration::ZERO,
        }
    }

    fn text(p: &Part) -> &str {
        std::str::from_utf8(&p.body).unwrap()
    }

    #[test]
    fn csv_quotes_and_takes_columns_from_the_records_in_order() {
        let records = vec![
            json!({"id": 1, "name": "Ana, \"the\" first", "tags": ["a", "b"]}),
            json!({"id": 2, "name": "line\nbreak", "extra": null, "vip": true}),
        ];
        let parts = encode(&layout(ObjectFormat::Csv), &records).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(
            text(&parts[0]),
            "id,name,tags,extra,vip\n1,\"Ana, \"\"the\"\" first\",\"[\"\"a\"\",\"\"b\"\"]\",,\n2,\"line\nbreak\",,,true\n"
        );
        let mut rd = csv::Reader::from_reader(parts[0].body.as_slice());
        let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
        assert_eq!(&rows[0][1], "Ana, \"the\" first");
        assert_eq!(&rows[1][1], "line\nbreak");
    }

    #[test]
    fn declared_columns_pick_fields_and_dotted_paths() {
        let mut l = layout(ObjectFormat::Csv);
        l.columns = Some(vec!["id".into(), "customer.name".into(), "missing".into()]);
        let records = vec![json!({"id": "o-1", "customer": {"name": "Bo"}, "ignored": 1})];
        let parts = encode(&l, &records).unwrap();
        assert_eq!(text(&parts[0]), "id,customer.name,missing\no-1,Bo,\n");
    }

    #[test]
    fn csv_needs_objects() {
        let err = encode(&layout(ObjectFormat::Csv), &[json!({"a": 1}), json!("x")]).unwrap_err();
        assert!(err.to_string().contains("record 1"), "{err}");
        assert!(err.to_string().contains("a string"), "{err}");
    }

    #[test]
    fn jsonl_and_json_array() {
        let records = vec![json!({"a": 1}), json!([1, 2]), json!(null)];
        let parts = encode(&layout(ObjectFormat::Jsonl), &records).unwrap();
        assert_eq!(text(&parts[0]), "{\"a\":1}\n[1,2]\nnull\n");
        let parts = encode(&layout(ObjectFormat::Json), &records).unwrap();
        assert_eq!(text(&parts[0]), "[{\"a\":1},[1,2],null]");
        let back: Value = serde_json::from_slice(&parts[0].body).unwrap();
        assert_eq!(back, Value::Array(records));
    }

    #[test]
    fn splits_by_count_and_bytes_with_a_header_in_every_part() {
        let records: Vec<Value> = (0..10)
            .map(|i| json!({"n": i, "pad": "xxxxxxxxxx"}))
            .collect();
        let mut l = layout(ObjectFormat::Csv);
        l.max_records = 4;
        let parts = encode(&l, &records).unwrap();
        assert_eq!(
            parts.iter().map(|p| p.records).collect::<Vec<_>>(),
            [4, 4, 2]
        );
        assert!(parts.iter().all(|p| text(p).starts_with("n,pad\n")));
        // "n,pad\n" is 6 bytes, each row "0,xxxxxxxxxx\n" 13: 6 + 3 * 13 = 45 fit in 50.
        l.max_records = 1000;
        l.max_bytes = 50;
        let parts = encode(&l, &records).unwrap();
        assert_eq!(
            parts.iter().map(|p| p.records).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        assert!(parts.iter().all(|p| p.body.len() <= 50));
        // A record larger than the limit goes alone.
        l.max_bytes = 5;
        let parts = encode(&l, &records[..2]).unwrap();
        assert_eq!(parts.len(), 2);
        // JSON arrays count their brackets and commas.
        let mut l = layout(ObjectFormat::Json);
        l.max_bytes = 2 + 8 + 1 + 8;
        let parts = encode(&l, &vec![json!({"a":1}); 5]).unwrap();
        assert_eq!(
            parts.iter().map(|p| p.records).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        assert!(parts.iter().all(|p| p.body.len() <= 19));
    }

    #[test]
    fn gzip_round_trips() {
        let mut l = layout(ObjectFormat::Jsonl);
        l.gzip = true;
        let records: Vec<Value> = (0..100).map(|i| json!({"n": i})).collect();
        let parts = encode(&l, &records).unwrap();
        assert_eq!(&parts[0].body[..2], &[0x1f, 0x8b]);
        let mut out = String::new();
        flate2::read::GzDecoder::new(parts[0].body.as_slice())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out.lines().count(), 100);
        assert_eq!(out.lines().next(), Some("{\"n\":0}"));
    }
}
