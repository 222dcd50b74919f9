//! Changes PostgreSQL may send again. The source confirms a position only after the changes
//! before it are durable, so after a crash or a lost connection the server re-sends every
//! transaction committed after the slot's confirmed position — some of which may already be
//! in the log. Instead of a de-duplication claim per event (a B-tree write each), the source
//! reads the tail of its own events once when streaming starts and skips those it meets
//! again: their CloudEvents ids (`<commit LSN>:<n>`) are stable across re-reads.

use std::collections::HashSet;

use estafeta_core::TenantId;
use estafeta_store::{EventQuery, Store};

use super::CaptureError;

/// Events read back from the log per page.
const PAGE: usize = 1_000;

/// The stored changes at or after the slot's confirmed position.
#[derive(Debug, Default)]
pub(crate) struct AlreadyStored {
    ce_ids: HashSet<String>,
    /// The highest commit position among them.
    upto: u64,
}

impl AlreadyStored {
    /// Reads, newest first, the source's events committed at or after `floor` (the slot's
    /// confirmed position). Stops at the first older change or snapshot row.
    pub(crate) async fn load(
        store: &dyn Store,
        source_id: &str,
        floor: u64,
    ) -> Result<Self, CaptureError> {
        let mut found = Self::default();
        let mut cursor = None;
        loop {
            let page = store
                .list_events(&EventQuery {
                    tenant: TenantId::default(),
                    source_id: Some(source_id.to_owned()),
                    limit: PAGE,
                    cursor,
                    ..EventQuery::default()
                })
                .await
                .map_err(|e| CaptureError::Store(e.to_string()))?;
            for e in page.items {
                match commit_lsn(&e.ce_id) {
                    Some(lsn) if lsn >= floor => {
                        found.upto = found.upto.max(lsn);
                        found.ce_ids.insert(e.ce_id);
                    }
                    _ => return Ok(found),
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(found),
            }
        }
    }

    /// How many stored changes may come again.
    pub(crate) fn len(&self) -> usize {
        self.ce_ids.len()
    }

    /// Whether the change with this CloudEvents id is already in the log.
    pub(crate) fn contains(&self, ce_id: &str) -> bool {
        !self.ce_ids.is_empty() && self.ce_ids.contains(ce_id)
    }

    /// A transaction ending at `end_lsn` was read: once past every stored change, nothing
    /// more can repeat and the set is dropped.
    pub(crate) fn passed(&mut self, end_lsn: u64) {
        if !self.ce_ids.is_empty() && end_lsn > self.upto {
            self.ce_ids = HashSet::new();
        }
    }
}

/// The commit position in a streamed change's CloudEvents id (`<X/Y>:<n>`); `None` for
/// snapshot rows and anything else.
fn commit_lsn(ce_id: &str) -> Option<u64> {
    let (lsn, seq) = ce_id.rsplit_once(':')?;
    seq.parse::<u64>().ok()?;
    parse_lsn(lsn)
}

/// `X/Y` (hexadecimal halves) as a 64-bit position.
pub(crate) fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u64::from(u32::MAX) && lo <= u64::from(u32::MAX)).then_some((hi << 32) | lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::envelope::format_lsn;

    #[test]
    fn lsn_round_trip_and_ce_ids() {
        for lsn in [0, 1, 0x1_6B37_4D48, u64::MAX] {
            assert_eq!(parse_lsn(&format_lsn(lsn)), Some(lsn));
        }
        assert_eq!(commit_lsn("16/B374D848:12"), Some(0x16_B374_D848));
        assert_eq!(commit_lsn("snapshot:0/1:public.t:3"), None);
        assert_eq!(commit_lsn("16/B374D848"), None);
        assert_eq!(parse_lsn("1/2/3"), None);
        assert_eq!(parse_lsn("G/0"), None);
    }

    #[test]
    fn forgets_once_past_the_last_stored_change() {
        let mut s = AlreadyStored {
            ce_ids: ["0/10:1".to_owned(), "0/10:2".to_owned()].into(),
            upto: 0x10,
        };
        assert!(s.contains("0/10:2"));
        assert!(!s.contains("0/10:3"));
        s.passed(0x10);
        assert!(s.contains("0/10:1"));
        s.passed(0x11);
        assert!(!s.contains("0/10:1"));
        assert_eq!(s.len(), 0);
    }
}
