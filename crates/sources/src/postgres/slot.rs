//! The slot watcher: measures retained WAL and lag, writes heartbeats so the slot advances
//! on an idle database, warns above the threshold and, with `on_limit: drop_slot`, asks the
//! stream to give the slot up before it fills the database's disk.

use std::time::{Duration, Instant};

use chrono::Utc;
use estafeta_config::postgres_source::{PostgresSourceSettings, SlotLimitAction};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::metrics as m;
use super::setup::Admin;
use crate::status::{SlotStats, StatusBoard};

pub(super) async fn monitor(
    id: String,
    s: PostgresSourceSettings,
    board: StatusBoard,
    limit: mpsc::Sender<String>,
    cancel: CancellationToken,
) {
    let mut admin: Option<Admin> = None;
    let mut last_heartbeat = Instant::now();
    let mut warned = false;
    let tick = s
        .heartbeat
        .map_or(s.slot_check_interval, |h| h.min(s.slot_check_interval));
    loop {
        if admin.is_none() {
            admin = Admin::connect(s.url.expose()).await.ok();
        }
        if let Some(a) = admin.as_mut() {
            let mut ok = true;
            if s.heartbeat.is_some_and(|h| last_heartbeat.elapsed() >= h) {
                ok &= a.heartbeat().await.is_ok();
                last_heartbeat = Instant::now();
            }
            match a.slot(&s.slot).await {
                Ok(Some(row)) => {
                    #[allow(clippy::cast_precision_loss)]
                    {
                        ::metrics::gauge!(m::SLOT_RETAINED_WAL, "source" => id.clone())
                            .set(row.retained_bytes as f64);
                        ::metrics::gauge!(m::SLOT_LAG, "source" => id.clone())
                            .set(row.lag_bytes as f64);
                    }
                    let stats = SlotStats {
                        slot: s.slot.clone(),
                        retained_wal_bytes: row.retained_bytes,
                        lag_bytes: row.lag_bytes,
                        confirmed_flush_lsn: row.confirmed_flush_lsn.clone(),
                        wal_status: row.wal_status.clone(),
                        checked_at: Utc::now(),
                    };
                    let over_warn = row.retained_bytes > s.warn_retained_wal;
                    let lost = row.wal_status.as_deref() == Some("lost");
                    if (over_warn || lost) && !warned {
                        tracing::warn!(source_id = %id, slot = %s.slot, retained_wal_bytes = row.retained_bytes,
                            wal_status = row.wal_status.as_deref().unwrap_or(""),
                            "the replication slot holds back a lot of WAL; the database's disk fills while changes are not confirmed");
                    }
                    warned = over_warn || lost;
                    let warning = warned.then(|| {
                        format!(
                            "replication slot `{}` retains {} bytes of WAL (threshold {})",
                            s.slot, row.retained_bytes, s.warn_retained_wal
                        )
                    });
                    board.update(&id, |st| {
                        st.slot = Some(stats);
                        if warning.is_some()
                            || st.warning.as_deref().is_some_and(|w| w.contains("retains"))
                        {
                            st.warning = warning;
                        }
                    });
                    if let Some(max) = s.max_retained_wal
                        && row.retained_bytes > max
                    {
                        let msg = format!(
                            "replication slot `{}` retained {} bytes of WAL, over `max_retained_wal` ({max})",
                            s.slot, row.retained_bytes
                        );
                        match s.on_limit {
                            SlotLimitAction::Warn => {
                                tracing::error!(source_id = %id, slot = %s.slot, retained_wal_bytes = row.retained_bytes, "replication slot over max_retained_wal");
                            }
                            SlotLimitAction::DropSlot => {
                                let _ = limit
                                        .send(format!("{msg}; the slot was dropped (on_limit: drop_slot) so the database can recycle its WAL. Changes since the last confirmed position were not captured; restart Estafeta to take a new snapshot"))
                                        .await;
                                return;
                            }
                        }
                    }
                }
                Ok(None) => {}
                Err(_) => ok = false,
            }
            if !ok {
                admin = None;
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(tick.max(Duration::from_millis(100))) => {}
        }
    }
}
