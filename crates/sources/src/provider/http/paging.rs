//! Reading answers: records and values by JSON path, the `Link: <…>; rel="next"` header, and
//! the largest cursor value among records.

use std::cmp::Ordering;

use serde_json::Value;
use serde_json_path::JsonPath;

/// The records a path selects. A path that selects one array (`$.data` rather than
/// `$.data[*]`) gives the array's items.
pub(crate) fn records(path: &JsonPath, body: &Value) -> Vec<Value> {
    let nodes = path.query(body).all();
    if let [Value::Array(items)] = nodes.as_slice() {
        return items.clone();
    }
    nodes.into_iter().cloned().collect()
}

/// The first value a path selects, as text: strings as they are, numbers written out; null,
/// empty strings and other kinds count as none.
pub(crate) fn text(path: &JsonPath, value: &Value) -> Option<String> {
    match path.query(value).first()? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The `rel="next"` target of a `Link` header value (RFC 8288), if any.
pub(crate) fn link_next(header: &str) -> Option<String> {
    for link in header.split(',') {
        let (target, params) = link.split_once(';').unwrap_or((link, ""));
        let target = target.trim();
        let Some(target) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) else {
            continue;
        };
        let next = params.split(';').any(|p| {
            let Some((k, v)) = p.split_once('=') else {
                return false;
            };
            k.trim().eq_ignore_ascii_case("rel")
                && v.trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if next {
            return Some(target.to_owned());
        }
    }
    None
}

/// Orders cursor values: numbers numerically when both are numbers, otherwise as text (which
/// orders RFC 3339 times in one offset and zero-padded values correctly).
pub(crate) fn cursor_cmp(a: &str, b: &str) -> Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.cmp(b),
    }
}

/// Keeps the larger of `current` and `candidate`.
pub(crate) fn keep_max(current: &mut Option<String>, candidate: String) {
    match current {
        Some(c) if cursor_cmp(c, &candidate) != Ordering::Less => {}
        _ => *current = Some(candidate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn link_headers() {
        let h = r#"<https://a/x?page=1>; rel="prev", <https://a/x?page=3>; rel="next""#;
        assert_eq!(link_next(h).as_deref(), Some("https://a/x?page=3"));
        assert_eq!(link_next(r#"</p2>;rel=next"#).as_deref(), Some("/p2"));
        assert_eq!(link_next(r#"<https://a>; rel="last""#), None);
        assert_eq!(link_next(""), None);
    }

    #[test]
    fn records_by_path() {
        let body = json!({"data": [{"a": 1}, {"a": 2}], "next": null});
        let p = JsonPath::parse("$.data[*]").unwrap();
        assert_eq!(records(&p, &body).len(), 2);
        let p = JsonPath::parse("$.data").unwrap();
        assert_eq!(records(&p, &body).len(), 2);
        let p = JsonPath::parse("$.next").unwrap();
        assert_eq!(text(&p, &body), None);
        let p = JsonPath::parse("$.missing[*]").unwrap();
        assert!(records(&p, &body).is_empty());
    }

    #[test]
    fn cursor_maximum() {
        let mut c = None;
        keep_max(&mut c, "2026-01-02T00:00:00Z".into());
        keep_max(&mut c, "2026-01-01T00:00:00Z".into());
        assert_eq!(c.as_deref(), Some("2026-01-02T00:00:00Z"));
        let mut n = Some("9".to_owned());
        keep_max(&mut n, "10".into());
        assert_eq!(n.as_deref(), Some("10"));
    }
}
