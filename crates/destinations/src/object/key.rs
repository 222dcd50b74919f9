//! Object keys: the `key` template and the names it sees.
//!
//! Times come from the batch's first delivery id (a ULID records when the delivery was
//! made), not from the clock at write time, so a retried batch renders the same key and
//! rewrites its object instead of adding a second copy:
//!
//! | name | value |
//! |---|---|
//! | `date` | `2026-11-21` (UTC) |
//! | `time` | `235907` (UTC, `HHMMSS`) |
//! | `year`, `month`, `day`, `hour` | `2026`, `11`, `21`, `23` |
//! | `timestamp` | `20261121T235907Z` |
//! | `batch_id` | the first delivery's id, `dlv_01J…` |
//! | `part`, `parts` | this object's number (from 1) and how many the batch was split into |
//! | `records` | records in this object |
//! | `extension` | `csv`, `jsonl`, `json`, with `.gz` when compressed |
//! | `first` | the first record's event, with the names a route template sees (`first.data.region`, `first.type`, `first.subject`, …) |

use chrono::{DateTime, Utc};
use estafeta_core::{DeliveryId, Event};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};

const NAME: &str = "key";

/// S3's limit on a key's length, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// A key template that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    /// A syntax error.
    #[error("the key template does not compile")]
    Compile(#[source] minijinja::Error),
    /// An undefined name or a failing filter.
    #[error("cannot render the object key")]
    Render(#[source] minijinja::Error),
    /// The rendered key is not a usable object key.
    #[error(
        "the rendered object key `{key}` is not valid: keys are 1 to 1024 bytes of folder names separated by `/`, without a leading `/`, empty parts, `.` or `..`"
    )]
    Invalid {
        /// The key as rendered.
        key: String,
    },
}

/// The compiled `key` template.
pub(crate) struct KeyTemplate {
    env: Environment<'static>,
}

impl std::fmt::Debug for KeyTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTemplate").finish_non_exhaustive()
    }
}

/// What every object of one batch shares.
pub(crate) struct Batch<'a> {
    /// The batch's first (lowest) delivery id.
    pub(crate) first_delivery: DeliveryId,
    /// The first record's event.
    pub(crate) first_event: &'a Event,
    /// How many objects the batch is written as.
    pub(crate) parts: usize,
    /// `csv`, `jsonl.gz`, …
    pub(crate) extension: &'a str,
}

impl KeyTemplate {
    /// Compiles `source`.
    pub(crate) fn new(source: &str) -> Result<Self, KeyError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_template_owned(NAME, source.to_owned())
            .map_err(KeyError::Compile)?;
        Ok(Self { env })
    }

    /// The full key of object `part` (1-based) holding `records` records: `prefix`
    /// followed by the rendered template.
    pub(crate) fn render(
        &self,
        prefix: &str,
        batch: &Batch<'_>,
        part: usize,
        records: usize,
    ) -> Result<String, KeyError> {
        let ctx = context(batch, part, records);
        let rendered = self
            .env
            .get_template(NAME)
            .and_then(|t| t.render(minijinja::value::Serde(&ctx)))
            .map_err(KeyError::Render)?;
        let key = format!("{prefix}{}", rendered.trim());
        if key.len() > MAX_KEY_BYTES || !estafeta_config::object_destination::valid_key_path(&key) {
            return Err(KeyError::Invalid { key });
        }
        Ok(key)
    }
}

fn context(batch: &Batch<'_>, part: usize, records: usize) -> Value {
    let millis = i64::try_from(batch.first_delivery.ulid().timestamp_ms()).unwrap_or(0);
    let at: DateTime<Utc> = DateTime::from_timestamp_millis(millis).unwrap_or_default();
    json!({
        "date": at.format("%Y-%m-%d").to_string(),
        "time": at.format("%H%M%S").to_string(),
        "year": at.format("%Y").to_string(),
        "month": at.format("%m").to_string(),
        "day": at.format("%d").to_string(),
        "hour": at.format("%H").to_string(),
        "timestamp": at.format("%Y%m%dT%H%M%SZ").to_string(),
        "batch_id": batch.first_delivery.to_string(),
        "part": part,
        "parts": batch.parts,
        "records": records,
        "extension": batch.extension,
        "first": estafeta_core::template::event_context(batch.first_event, &[]),
    })
}

#[cfg(test)]
mod tests {
    use estafeta_core::TenantId;
    use estafeta_core::event::parse_cloudevent;
    use estafeta_core::template::TemplateSet;

    use super::*;

    fn event() -> Event {
        parse_cloudevent(
            json!({"specversion":"1.0","id":"o-1","source":"shop","type":"sale.created",
                   "subject":"br-7","time":"2026-11-21T10:00:00Z",
                   "data":{"region":"eu","total":42}}),
            &TenantId::default(),
            "http",
            Utc::now(),
        )
        .unwrap()
    }

    fn batch(e: &Event) -> Batch<'_> {
        // 2026-11-21T23:59:07.123Z
        Batch {
            first_delivery: DeliveryId::from_ulid(ulid::Ulid::from_parts(1_795_305_547_123, 7)),
            first_event: e,
            parts: 2,
            extension: "csv.gz",
        }
    }

    #[test]
    fn renders_the_documented_names() {
        let e = event();
        let b = batch(&e);
        let t = KeyTemplate::new(
            "sales/{{ first.data.region }}/{{ date }}/{{ time }}-{{ year }}{{ month }}{{ day }}{{ hour }}-{{ timestamp }}-{{ part }}of{{ parts }}-{{ records }}.{{ extension }}",
        )
        .unwrap();
        assert_eq!(
            t.render("exports/", &b, 1, 10).unwrap(),
            "exports/sales/eu/2026-11-21/235907-2026112123-20261121T235907Z-1of2-10.csv.gz"
        );
        let id = KeyTemplate::new("{{ batch_id }}").unwrap();
        assert_eq!(
            id.render("", &b, 1, 1).unwrap(),
            b.first_delivery.to_string()
        );
    }

    #[test]
    fn first_has_the_names_of_route_templates() {
        let e = event();
        let names = "{{ id }}_{{ source }}_{{ type }}_{{ subject }}_{{ key }}_{{ tenant }}_{{ time }}_{{ data | tojson }}_{{ extensions | tojson }}_{{ event.id }}";
        let mut set = TemplateSet::new();
        set.add("route", names).unwrap();
        let expected = set.render("route", &e, &[]).unwrap();
        let t = KeyTemplate::new(&names.replace("{{ ", "{{ first.")).unwrap();
        assert_eq!(t.render("", &batch(&e), 1, 1).unwrap(), expected);
    }

    #[test]
    fn invalid_keys_and_unknown_names_fail() {
        let e = event();
        let b = batch(&e);
        for bad in ["/abs", "a//b", "a/../b", "{{ first.subject }}/../x", ""] {
            let t = KeyTemplate::new(bad).unwrap();
            assert!(
                matches!(t.render("", &b, 1, 1), Err(KeyError::Invalid { .. })),
                "{bad}"
            );
        }
        let t = KeyTemplate::new("{{ nope }}").unwrap();
        assert!(matches!(t.render("", &b, 1, 1), Err(KeyError::Render(_))));
        assert!(matches!(
            KeyTemplate::new("{{ date "),
            Err(KeyError::Compile(_))
        ));
    }
}
