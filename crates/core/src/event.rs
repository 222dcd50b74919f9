//! The event: CloudEvents 1.0 attributes plus the tenant, the Estafeta source it came through
//! and an optional ordering key. Also the strict parser for incoming CloudEvents JSON.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::EventId;

/// The organisation an event, route or destination belongs to.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// The tenant everything belongs to until multi-tenancy is configured.
    pub const DEFAULT: &'static str = "default";

    /// Wraps a tenant name.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The tenant name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

/// One event in the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Estafeta's id for the event.
    pub id: EventId,
    /// Owner of the event.
    pub tenant: TenantId,
    /// The Estafeta source (by id) that took the event in, e.g. `http`.
    pub source_id: String,
    /// The CloudEvents `id` given by the producer.
    pub ce_id: String,
    /// The CloudEvents `source` attribute.
    pub ce_source: String,
    /// The CloudEvents `type` attribute.
    #[serde(rename = "type")]
    pub ty: String,
    /// The CloudEvents `subject` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The CloudEvents `time` attribute (the time the producer gave, or arrival time).
    pub time: DateTime<Utc>,
    /// The CloudEvents `datacontenttype` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    /// The CloudEvents `dataschema` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    /// The partition / ordering key (CloudEvents `partitionkey` extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Other CloudEvents extension attributes.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extensions: Map<String, Value>,
    /// The payload: JSON data, or a string for `data_base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// True when `data` holds base64 text from `data_base64`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub data_is_base64: bool,
    /// When Estafeta received the event.
    pub received_at: DateTime<Utc>,
}

impl Event {
    /// The event as a structured-mode CloudEvents 1.0 JSON object.
    #[must_use]
    pub fn to_cloudevent(&self) -> Value {
        let mut m = Map::with_capacity(10 + self.extensions.len());
        m.insert("specversion".into(), Value::from("1.0"));
        m.insert("id".into(), Value::from(self.ce_id.as_str()));
        m.insert("source".into(), Value::from(self.ce_source.as_str()));
        m.insert("type".into(), Value::from(self.ty.as_str()));
        if let Some(s) = &self.subject {
            m.insert("subject".into(), Value::from(s.as_str()));
        }
        m.insert(
            "time".into(),
            Value::from(self.time.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        );
        if let Some(s) = &self.datacontenttype {
            m.insert("datacontenttype".into(), Value::from(s.as_str()));
        }
        if let Some(s) = &self.dataschema {
            m.insert("dataschema".into(), Value::from(s.as_str()));
        }
        if let Some(k) = &self.key {
            m.insert("partitionkey".into(), Value::from(k.as_str()));
        }
        for (k, v) in &self.extensions {
            m.insert(k.clone(), v.clone());
        }
        m.insert("estafetaid".into(), Value::from(self.id.to_string()));
        if let Some(d) = &self.data {
            let field = if self.data_is_base64 {
                "data_base64"
            } else {
                "data"
            };
            m.insert(field.into(), d.clone());
        }
        Value::Object(m)
    }
}

/// Serialises an event as structured-mode CloudEvents 1.0 JSON without copying it (the same
/// document as [`Event::to_cloudevent`]).
pub struct CloudEventJson<'a>(pub &'a Event);

impl Serialize for CloudEventJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("specversion", "1.0")?;
        m.serialize_entry("id", &e.ce_id)?;
        m.serialize_entry("source", &e.ce_source)?;
        m.serialize_entry("type", &e.ty)?;
        if let Some(v) = &e.subject {
            m.serialize_entry("subject", v)?;
        }
        m.serialize_entry("time", &e.time.to_rfc3339_opts(SecondsFormat::AutoSi, true))?;
        if let Some(v) = &e.datacontenttype {
            m.serialize_entry("datacontenttype", v)?;
        }
        if let Some(v) = &e.dataschema {
            m.serialize_entry("dataschema", v)?;
        }
        if let Some(v) = &e.key {
            m.serialize_entry("partitionkey", v)?;
        }
        for (k, v) in &e.extensions {
            m.serialize_entry(k, v)?;
        }
        m.serialize_entry("estafetaid", &e.id)?;
        if let Some(d) = &e.data {
            m.serialize_entry(
                if e.data_is_base64 {
                    "data_base64"
                } else {
                    "data"
                },
                d,
            )?;
        }
        m.end()
    }
}

/// Why an incoming CloudEvent was refused; names the offending attribute.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct CloudEventError {
    /// JSON path of the attribute, e.g. `type` or `[3].id`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl CloudEventError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// The same error with its field prefixed by the position in a batch.
    #[must_use]
    pub fn in_batch(self, index: usize) -> Self {
        Self {
            field: format!("[{index}].{}", self.field),
            message: self.message,
        }
    }
}

const RESERVED: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
    "partitionkey",
];

/// Parses one CloudEvents 1.0 JSON object into an [`Event`] owned by `tenant` and taken in
/// by source `source_id`. Every rule of the spec that a receiver can check is checked.
///
/// # Errors
/// A [`CloudEventError`] naming the first attribute that is missing or malformed.
pub fn parse_cloudevent(
    value: Value,
    tenant: &TenantId,
    source_id: &str,
    now: DateTime<Utc>,
) -> Result<Event, CloudEventError> {
    let Value::Object(mut obj) = value else {
        return Err(CloudEventError::new(
            "$",
            "a CloudEvent must be a JSON object",
        ));
    };
    match obj.get("specversion") {
        Some(Value::String(v)) if v == "1.0" => {}
        Some(Value::String(v)) => {
            return Err(CloudEventError::new(
                "specversion",
                format!("unsupported version `{v}` (only `1.0` is supported)"),
            ));
        }
        Some(_) => {
            return Err(CloudEventError::new(
                "specversion",
                "must be the string \"1.0\"",
            ));
        }
        None => return Err(CloudEventError::new("specversion", "is required")),
    }
    let ce_id = required_string(&obj, "id")?;
    let ce_source = required_string(&obj, "source")?;
    let ty = required_string(&obj, "type")?;
    let subject = optional_string(&obj, "subject")?;
    let datacontenttype = optional_string(&obj, "datacontenttype")?;
    let dataschema = optional_string(&obj, "dataschema")?;
    let key = optional_string(&obj, "partitionkey")?;
    let time = match optional_string(&obj, "time")? {
        Some(t) => DateTime::parse_from_rfc3339(&t)
            .map_err(|e| {
                CloudEventError::new("time", format!("must be an RFC 3339 timestamp ({e})"))
            })?
            .with_timezone(&Utc),
        None => now,
    };
    if datacontenttype
        .as_ref()
        .is_some_and(|ct| ct.trim().is_empty())
    {
        return Err(CloudEventError::new("datacontenttype", "must not be empty"));
    }
    let (data, data_is_base64) = match (obj.remove("data"), obj.remove("data_base64")) {
        (Some(_), Some(_)) => {
            return Err(CloudEventError::new(
                "data_base64",
                "`data` and `data_base64` are mutually exclusive",
            ));
        }
        (Some(d), None) => (Some(d), false),
        (None, Some(Value::String(b))) => (Some(Value::String(b)), true),
        (None, Some(_)) => return Err(CloudEventError::new("data_base64", "must be a string")),
        (None, None) => (None, false),
    };
    let mut extensions = Map::new();
    for (name, v) in obj {
        if RESERVED.contains(&name.as_str()) {
            continue;
        }
        if name.is_empty()
            || name.len() > 20
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(CloudEventError::new(
                &name,
                "extension attribute names must be 1-20 lowercase letters or digits",
            ));
        }
        if matches!(v, Value::Object(_) | Value::Array(_)) {
            return Err(CloudEventError::new(
                &name,
                "extension attributes must be scalar values",
            ));
        }
        extensions.insert(name, v);
    }
    Ok(Event {
        id: EventId::new(),
        tenant: tenant.clone(),
        source_id: source_id.to_owned(),
        ce_id,
        ce_source,
        ty,
        subject,
        time,
        datacontenttype,
        dataschema,
        key,
        extensions,
        data,
        data_is_base64,
        received_at: now,
    })
}

fn required_string(obj: &Map<String, Value>, field: &str) -> Result<String, CloudEventError> {
    match obj.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(CloudEventError::new(field, "must be a non-empty string")),
        Some(other) => Err(CloudEventError::new(
            field,
            format!("must be a string, found {}", json_kind(other)),
        )),
        None => Err(CloudEventError::new(field, "is required")),
    }
}

fn optional_string(
    obj: &Map<String, Value>,
    field: &str,
) -> Result<Option<String>, CloudEventError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CloudEventError::new(
            field,
            format!("must be a string, found {}", json_kind(other)),
        )),
    }
}

/// A short human name for a JSON value's type, for error messages.
#[must_use]
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<Event, CloudEventError> {
        parse_cloudevent(v, &TenantId::default(), "http", Utc::now())
    }

    #[test]
    fn accepts_a_minimal_event_and_renders_it_back() {
        let ev = parse(
            json!({"specversion":"1.0","id":"o-1","source":"shop","type":"order.created",
            "data":{"total":42},"partitionkey":"c-9","traceid":"abc"}),
        )
        .unwrap();
        assert_eq!(ev.ty, "order.created");
        assert_eq!(ev.key.as_deref(), Some("c-9"));
        let back = ev.to_cloudevent();
        let streamed: Value = serde_json::to_value(CloudEventJson(&ev)).unwrap();
        assert_eq!(back, streamed);
        assert_eq!(back["data"]["total"], 42);
        assert_eq!(back["traceid"], "abc");
        assert_eq!(back["id"], "o-1");
    }

    #[test]
    fn names_the_missing_or_wrong_attribute() {
        let e = parse(json!({"specversion":"1.0","source":"s","type":"t"})).unwrap_err();
        assert_eq!(e.field, "id");
        let e = parse(json!({"specversion":"1.0","id":"1","source":"s","type":7})).unwrap_err();
        assert_eq!(e.field, "type");
        assert!(e.message.contains("a number"));
        let e = parse(json!({"specversion":"0.3","id":"1","source":"s","type":"t"})).unwrap_err();
        assert_eq!(e.field, "specversion");
        let e =
            parse(json!({"specversion":"1.0","id":"1","source":"s","type":"t","time":"yesterday"}))
                .unwrap_err();
        assert_eq!(e.field, "time");
        let e = parse(json!({"specversion":"1.0","id":"1","source":"s","type":"t","Bad-Ext":1}))
            .unwrap_err();
        assert_eq!(e.field, "Bad-Ext");
        let e = parse(json!([1])).unwrap_err();
        assert_eq!(e.field, "$");
    }
}
