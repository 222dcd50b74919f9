//! How values are laid out in SQLite columns: timestamps, ids, JSON, statuses, and the row
//! encoders (run on the caller's task, off the writer thread) and decoders.

use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use estafeta_core::{
    Attempt, AttemptOutcome, Delivery, DeliveryId, DeliveryStatus, Event, EventId, StepTrace,
    TenantId,
};
use rusqlite::Row;
use serde_json::{Map, Value};

use super::errors::{corrupt, from_sqlite};
use crate::{AttemptRecord, StoreError, StoreResult};

/// Columns of `events`, in the order [`event_from_row`] reads them.
pub(crate) const EVENT_COLUMNS: &str = "id, tenant, source_id, ce_id, ce_source, type, subject, \
    time, datacontenttype, dataschema, key, extensions, data, data_is_base64, received_at";

/// Columns of `deliveries`, in the order [`delivery_from_row`] reads them.
pub(crate) const DELIVERY_COLUMNS: &str = "id, event_id, tenant, route_id, destination_id, \
    target_index, status, attempts, next_at, last_error, key, created_at, updated_at";

/// Columns of `attempts`, in the order [`attempt_from_row`] reads them.
pub(crate) const ATTEMPT_COLUMNS: &str = "id, delivery_id, started_at, duration_ms, outcome, \
    status_code, error, response_excerpt, steps";

/// A timestamp as stored: RFC 3339 in UTC with exactly nine fraction digits, so that text
/// order is time order (years 0000–9999) and every nanosecond survives.
pub(crate) fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Reads a stored timestamp.
pub(crate) fn parse_ts(s: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| corrupt(format!("stored timestamp `{s}` is invalid: {e}")))
}

/// Microseconds since the Unix epoch (dedupe bookkeeping).
pub(crate) fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn parse_id<T: FromStr>(s: &str) -> StoreResult<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| corrupt(format!("stored id is invalid: {e}")))
}

fn u32_col(v: i64, what: &str) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| corrupt(format!("stored {what} {v} is out of range")))
}

fn col<T: rusqlite::types::FromSql>(row: &Row<'_>, idx: usize) -> StoreResult<T> {
    row.get(idx).map_err(from_sqlite)
}

fn json_text(v: &impl serde::Serialize) -> StoreResult<String> {
    serde_json::to_string(v)
        .map_err(|e| StoreError::Invalid(format!("a value cannot be stored as JSON: {e}")))
}

/// An event ready for `INSERT`, with its JSON already rendered.
#[derive(Debug)]
pub(crate) struct EventRow {
    pub(crate) id: EventId,
    pub(crate) id_text: String,
    pub(crate) tenant: String,
    pub(crate) source_id: String,
    pub(crate) ce_id: String,
    pub(crate) ce_source: String,
    pub(crate) ty: String,
    pub(crate) subject: Option<String>,
    pub(crate) time: String,
    pub(crate) datacontenttype: Option<String>,
    pub(crate) dataschema: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) extensions: Option<String>,
    pub(crate) data: Option<String>,
    pub(crate) data_is_base64: bool,
    pub(crate) received_at: String,
}

impl EventRow {
    /// Encodes an event (empty extensions are stored as NULL; absent data as NULL, JSON
    /// `null` data as the text `null`).
    pub(crate) fn encode(e: &Event) -> StoreResult<Self> {
        let extensions = if e.extensions.is_empty() {
            None
        } else {
            Some(json_text(&e.extensions)?)
        };
        let data = e.data.as_ref().map(json_text).transpose()?;
        Ok(Self {
            id: e.id,
            id_text: e.id.to_string(),
            tenant: e.tenant.as_str().to_owned(),
            source_id: e.source_id.clone(),
            ce_id: e.ce_id.clone(),
            ce_source: e.ce_source.clone(),
            ty: e.ty.clone(),
            subject: e.subject.clone(),
            time: ts(&e.time),
            datacontenttype: e.datacontenttype.clone(),
            dataschema: e.dataschema.clone(),
            key: e.key.clone(),
            extensions,
            data,
            data_is_base64: e.data_is_base64,
            received_at: ts(&e.received_at),
        })
    }

    /// Rough size in bytes, for capping a group commit.
    pub(crate) fn weight(&self) -> usize {
        200 + self.tenant.len()
            + self.source_id.len()
            + self.ce_id.len()
            + self.ce_source.len()
            + self.ty.len()
            + self.subject.as_ref().map_or(0, String::len)
            + self.key.as_ref().map_or(0, String::len)
            + self.extensions.as_ref().map_or(0, String::len)
            + self.data.as_ref().map_or(0, String::len)
    }
}

/// A delivery ready for `INSERT`.
#[derive(Debug)]
pub(crate) struct DeliveryRow {
    pub(crate) id: String,
    pub(crate) event_id: String,
    pub(crate) tenant: String,
    pub(crate) route_id: String,
    pub(crate) destination_id: String,
    pub(crate) target_index: i64,
    pub(crate) status: &'static str,
    pub(crate) attempts: i64,
    pub(crate) next_at: Option<String>,
    pub(crate) last_error: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
}

impl DeliveryRow {
    /// Encodes a delivery.
    pub(crate) fn encode(d: Delivery) -> Self {
        Self {
            id: d.id.to_string(),
            event_id: d.event_id.to_string(),
            tenant: d.tenant.as_str().to_owned(),
            route_id: d.route_id,
            destination_id: d.destination_id,
            target_index: i64::from(d.target_index),
            status: d.status.as_str(),
            attempts: i64::from(d.attempts),
            next_at: d.next_at.as_ref().map(ts),
            last_error: d.last_error,
            key: d.key,
            created_at: ts(&d.created_at),
            updated_at: ts(&d.updated_at),
        }
    }

    /// Rough size in bytes.
    pub(crate) fn weight(&self) -> usize {
        250 + self.route_id.len()
            + self.destination_id.len()
            + self.last_error.as_ref().map_or(0, String::len)
            + self.key.as_ref().map_or(0, String::len)
    }
}

/// A finished attempt and its delivery's new state, ready for the writer.
#[derive(Debug)]
pub(crate) struct AttemptRow {
    pub(crate) id: String,
    pub(crate) delivery_id: String,
    pub(crate) started_at: String,
    pub(crate) duration_ms: i64,
    pub(crate) outcome: &'static str,
    pub(crate) status_code: Option<i64>,
    pub(crate) error: Option<String>,
    pub(crate) response_excerpt: Option<String>,
    /// The step traces as a JSON array; `None` when there are none.
    pub(crate) steps: Option<String>,
    pub(crate) status: &'static str,
    pub(crate) attempts: i64,
    pub(crate) next_at: Option<String>,
    pub(crate) last_error: Option<String>,
}

impl AttemptRow {
    /// Encodes an attempt record (no step traces are stored as NULL).
    pub(crate) fn encode(r: AttemptRecord) -> StoreResult<Self> {
        let a = r.attempt;
        let steps = if a.steps.is_empty() {
            None
        } else {
            Some(json_text(&a.steps)?)
        };
        Ok(Self {
            id: a.id.to_string(),
            delivery_id: a.delivery_id.to_string(),
            started_at: ts(&a.started_at),
            duration_ms: i64::try_from(a.duration_ms).unwrap_or(i64::MAX),
            outcome: a.outcome.as_str(),
            status_code: a.status_code.map(i64::from),
            error: a.error,
            response_excerpt: a.response_excerpt,
            steps,
            status: r.status.as_str(),
            attempts: i64::from(r.attempts),
            next_at: r.next_at.as_ref().map(ts),
            last_error: r.last_error,
        })
    }

    /// Rough size in bytes.
    pub(crate) fn weight(&self) -> usize {
        250 + self.error.as_ref().map_or(0, String::len)
            + self.response_excerpt.as_ref().map_or(0, String::len)
            + self.steps.as_ref().map_or(0, String::len)
            + self.last_error.as_ref().map_or(0, String::len)
    }
}

/// Decodes a row selected with [`EVENT_COLUMNS`].
pub(crate) fn event_from_row(row: &Row<'_>) -> StoreResult<Event> {
    let extensions = match col::<Option<String>>(row, 11)? {
        None => Map::new(),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| corrupt(format!("stored extensions are not a JSON object: {e}")))?,
    };
    let data = match col::<Option<String>>(row, 12)? {
        None => None,
        Some(text) => Some(
            serde_json::from_str::<Value>(&text)
                .map_err(|e| corrupt(format!("stored event data is not JSON: {e}")))?,
        ),
    };
    Ok(Event {
        id: parse_id(&col::<String>(row, 0)?)?,
        tenant: TenantId::new(col::<String>(row, 1)?),
        source_id: col(row, 2)?,
        ce_id: col(row, 3)?,
        ce_source: col(row, 4)?,
        ty: col(row, 5)?,
        subject: col(row, 6)?,
        time: parse_ts(&col::<String>(row, 7)?)?,
        datacontenttype: col(row, 8)?,
        dataschema: col(row, 9)?,
        key: col(row, 10)?,
        extensions,
        data,
        data_is_base64: col(row, 13)?,
        received_at: parse_ts(&col::<String>(row, 14)?)?,
    })
}

/// Decodes a row selected with [`DELIVERY_COLUMNS`].
pub(crate) fn delivery_from_row(row: &Row<'_>) -> StoreResult<Delivery> {
    let status = col::<String>(row, 6)?;
    Ok(Delivery {
        id: parse_id::<DeliveryId>(&col::<String>(row, 0)?)?,
        event_id: parse_id::<EventId>(&col::<String>(row, 1)?)?,
        tenant: TenantId::new(col::<String>(row, 2)?),
        route_id: col(row, 3)?,
        destination_id: col(row, 4)?,
        target_index: u32_col(col(row, 5)?, "target index")?,
        status: parse_status(&status)?,
        attempts: u32_col(col(row, 7)?, "attempt count")?,
        next_at: col::<Option<String>>(row, 8)?
            .as_deref()
            .map(parse_ts)
            .transpose()?,
        last_error: col(row, 9)?,
        key: col(row, 10)?,
        created_at: parse_ts(&col::<String>(row, 11)?)?,
        updated_at: parse_ts(&col::<String>(row, 12)?)?,
    })
}

/// Decodes a row selected with [`ATTEMPT_COLUMNS`].
pub(crate) fn attempt_from_row(row: &Row<'_>) -> StoreResult<Attempt> {
    let duration: i64 = col(row, 3)?;
    let status_code = col::<Option<i64>>(row, 5)?
        .map(|c| u16::try_from(c).map_err(|_| corrupt(format!("stored status code {c}"))))
        .transpose()?;
    let steps: Vec<StepTrace> = match col::<Option<String>>(row, 8)? {
        None => Vec::new(),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| corrupt(format!("stored attempt steps are not valid: {e}")))?,
    };
    Ok(Attempt {
        id: parse_id(&col::<String>(row, 0)?)?,
        delivery_id: parse_id(&col::<String>(row, 1)?)?,
        started_at: parse_ts(&col::<String>(row, 2)?)?,
        duration_ms: u64::try_from(duration)
            .map_err(|_| corrupt(format!("stored duration {duration} is negative")))?,
        outcome: AttemptOutcome::from_name(&col::<String>(row, 4)?),
        status_code,
        error: col(row, 6)?,
        response_excerpt: col(row, 7)?,
        steps,
    })
}

/// Parses a stored delivery status.
pub(crate) fn parse_status(s: &str) -> StoreResult<DeliveryStatus> {
    s.parse()
        .map_err(|e| corrupt(format!("stored delivery status: {e}")))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn timestamps_keep_nanoseconds_and_sort_as_text() {
        let a = Utc
            .timestamp_opt(1_700_000_000, 123_456_789)
            .single()
            .unwrap_or_default();
        let b = Utc
            .timestamp_opt(1_700_000_000, 123_456_790)
            .single()
            .unwrap_or_default();
        let c = Utc
            .timestamp_opt(1_700_000_001, 0)
            .single()
            .unwrap_or_default();
        assert_eq!(parse_ts(&ts(&a)).ok(), Some(a));
        assert!(ts(&a) < ts(&b) && ts(&b) < ts(&c));
        assert_eq!(ts(&c), "2023-11-14T22:13:21.000000000Z");
    }

    #[test]
    fn bad_timestamps_are_corrupt() {
        assert!(matches!(parse_ts("yesterday"), Err(StoreError::Corrupt(_))));
    }
}
