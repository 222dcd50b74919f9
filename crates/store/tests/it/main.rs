//! Integration tests of `estafeta-store`: the shared behaviour suite run against SQLite (a
//! fresh database in its own temporary folder per test), SQLite-only checks (time
//! bounds at millisecond edges among them), and a throughput check run by hand.

mod shared_file;
mod sqlite;
mod suite;
mod throughput;
mod time_bounds;
mod vault_file;

use std::sync::Arc;
use std::time::Duration;

use estafeta_store::{SqliteOptions, SqliteStore, Store};
use tempfile::TempDir;

/// A fresh SQLite store in its own folder (kept alive by the returned guard).
pub(crate) async fn sqlite_store(window: Option<Duration>) -> (TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = SqliteOptions::new(dir.path().join("data").join("estafeta.db"));
    if let Some(window) = window {
        options.dedupe_window = window;
    }
    let store = SqliteStore::open(options).await.expect("open sqlite store");
    (dir, Arc::new(store))
}

/// Runs each named suite function against a fresh SQLite store.
macro_rules! sqlite_suite {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod sqlite_suite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (_dir, store) = crate::sqlite_store(None).await;
                    crate::suite::$module::$name(std::sync::Arc::clone(&store)).await;
                    store.close().await;
                }
            )*
        }
    };
}

sqlite_suite!(
    events::append_round_trips_every_field,
    events::dedupe_across_calls,
    events::dedupe_within_call,
    events::dedupe_concurrent,
    events::keyless_events_are_always_stored,
    events::failed_call_is_atomic_and_isolated,
    events::list_events_filters_and_pages,
    events::scan_events_in_log_order,
    events::tenant_isolation_for_events,
    events::concurrent_appends,
    deliveries::deliveries_list_filter_and_page,
    deliveries::insert_deliveries_for_replay,
    deliveries::record_attempts_updates_state,
    deliveries::requeue_dead_delivery,
    deliveries::unfinished_deliveries_in_pages,
    deliveries::delivery_counts_per_destination,
    filtered::filtered_delivery_keeps_its_step_traces,
    lifecycle::cursors_and_settings_round_trip,
    lifecycle::close_then_write_is_unavailable,
    lifecycle::close_finishes_queued_writes,
    schedules::a_tick_is_claimed_once,
    schedules::concurrent_claims_have_one_winner_per_tick,
    schedules::a_run_moves_through_its_states,
    schedules::runs_list_newest_first_in_pages,
    schedules::last_ticks_per_schedule,
    schedules::unfinished_runs_are_failed_after_a_restart,
    retention::purge_deletes_old_events_in_batches,
    retention::purge_filters_by_scope,
    retention::audit_entries_list_newest_first,
    vault::secrets_round_trip_and_list_without_values,
    vault::credentials_show_only_whether_private_fields_are_set,
    vault::rotation_reseals_everything_and_the_old_key_stops_working,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_dedupe_window_expires() {
    let window = Duration::from_millis(50);
    let (_dir, store) = sqlite_store(Some(window)).await;
    suite::events::dedupe_window_expires(Arc::clone(&store), window).await;
    store.close().await;
}
