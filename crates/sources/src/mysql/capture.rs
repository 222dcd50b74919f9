//! One capture session: set-up checks, the checkpoint decision (resume, snapshot again after
//! a purged binlog, or start from now), the initial snapshot, then the stream.

use chrono::Utc;
use estafeta_config::mysql_source::SnapshotMode;
use estafeta_core::Event;
use serde::{Deserialize, Serialize};

use super::events::EventBuilder;
use super::setup::{self, Admin};
use super::{Capture, CaptureError, metrics as m, replica, snapshot, stream};
use crate::status::SourceState;

/// How a session ended without an error.
pub(crate) enum Ended {
    Cancelled,
    SnapshotOnlyDone,
}

/// What the source remembers in the store between runs.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// `running` while a snapshot is being copied, `done` after it, `skipped` with
    /// `snapshot: never`.
    #[serde(default)]
    pub(crate) snapshot: Option<String>,
    /// The binlog file of the last position whose changes are all stored.
    #[serde(default)]
    pub(crate) file: Option<String>,
    /// The position in `file` (the end of a transaction, or the snapshot's position).
    #[serde(default)]
    pub(crate) pos: Option<u64>,
    /// The GTID of the last transaction stored, when the server sends GTIDs (informative:
    /// positioning uses `file` and `pos`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) gtid: Option<String>,
}

pub(crate) async fn run_once(c: &Capture) -> Result<Ended, CaptureError> {
    let s = &c.settings;
    c.board.update(&c.id, |st| st.state = SourceState::Starting);
    let opts = setup::opts(s.url.expose())?;
    let mut admin = Admin::connect(&opts).await?;
    admin.check_server(s.server_id).await?;
    let tables = admin.tables(s).await?;
    let mut cp = load_checkpoint(c).await?;
    let builder = EventBuilder::new(&c.id, s.envelope, s.numeric);

    if s.snapshot == SnapshotMode::InitialOnly && cp.snapshot.as_deref() == Some("done") {
        admin.close().await;
        return Ok(Ended::SnapshotOnlyDone);
    }
    if let (Some(file), Some(pos)) = (cp.file.clone(), cp.pos) {
        let logs = admin.binary_logs().await?;
        if !logs.iter().any(|(f, size)| *f == file && *size >= pos) {
            let again = s.snapshot != SnapshotMode::Never;
            tracing::error!(source_id = %c.id, file = %file, pos,
                "the binlog file to resume from was purged (or the binlog was reset): changes after this position were not captured; {}",
                if again { "taking a new snapshot" } else { "streaming resumes from now" });
            c.board.update(&c.id, |st| {
                st.warning = Some(format!(
                    "binlog file {file} (position {pos}) was purged from the server before Estafeta read it; changes after it were not captured{}",
                    if again { " (a new snapshot was taken)" } else { "" }
                ));
            });
            cp.file = None;
            cp.pos = None;
            if again {
                cp.snapshot = None;
            }
        }
    }

    let need_snapshot = s.snapshot != SnapshotMode::Never && cp.snapshot.as_deref() != Some("done");
    if need_snapshot {
        // Find out now, not after copying every table, whether the binlog may be read.
        replica::probe(&opts, s.server_id, admin.mariadb).await?;
        if cp.snapshot.as_deref() == Some("running") {
            tracing::warn!(source_id = %c.id, "an earlier initial snapshot did not finish; starting it again");
        }
        cp = Checkpoint {
            snapshot: Some("running".into()),
            ..Checkpoint::default()
        };
        save_checkpoint(c, &cp).await?;
        let Some((file, pos)) = snapshot::run(c, &opts, &mut admin, &tables, &builder).await?
        else {
            admin.close().await;
            return Ok(Ended::Cancelled);
        };
        cp.snapshot = Some("done".into());
        cp.file = Some(file);
        cp.pos = Some(pos);
        save_checkpoint(c, &cp).await?;
        if s.snapshot == SnapshotMode::InitialOnly {
            admin.close().await;
            return Ok(Ended::SnapshotOnlyDone);
        }
    }
    if cp.file.is_none() || cp.pos.is_none() {
        let (file, pos) = admin.current_position().await?;
        cp.file = Some(file);
        cp.pos = Some(pos);
        if cp.snapshot.is_none() {
            cp.snapshot = Some("skipped".into());
        }
        save_checkpoint(c, &cp).await?;
    }
    stream::run(c, &opts, admin, tables, builder, cp).await
}

/// Appends durably and counts.
pub(crate) async fn store(c: &Capture, events: Vec<Event>) -> Result<(), CaptureError> {
    if events.is_empty() {
        return Ok(());
    }
    let n = events.len() as u64;
    c.sink.append(events).await.map_err(CaptureError::Store)?;
    ::metrics::counter!(m::EVENTS, "source" => c.id.clone()).increment(n);
    let now = Utc::now();
    c.board.update(&c.id, |st| {
        st.events += n;
        st.last_event_at = Some(now);
    });
    Ok(())
}

async fn load_checkpoint(c: &Capture) -> Result<Checkpoint, CaptureError> {
    let raw = c
        .store
        .get_cursor(&c.id)
        .await
        .map_err(CaptureError::Checkpoint)?;
    Ok(raw
        .and_then(|r| serde_json::from_str(&r).ok())
        .unwrap_or_default())
}

pub(crate) async fn save_checkpoint(c: &Capture, cp: &Checkpoint) -> Result<(), CaptureError> {
    let raw = serde_json::to_string(cp).unwrap_or_else(|_| "{}".to_owned());
    c.store
        .put_cursor(&c.id, &raw)
        .await
        .map_err(CaptureError::Checkpoint)
}
