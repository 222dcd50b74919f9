//! The names of every metric Estafeta exports, in one place (documented in
//! `docs/operations.md`).

/// Counter: events accepted into the log, by `source`.
pub const EVENTS_INGESTED: &str = "estafeta_events_ingested_total";
/// Counter: deliveries delivered, by `destination`.
pub const DELIVERIES_DELIVERED: &str = "estafeta_deliveries_delivered_total";
/// Counter: failed attempts, by `destination` and `class` (`retryable` or `final`).
pub const ATTEMPTS_FAILED: &str = "estafeta_attempts_failed_total";
/// Counter: deliveries a route's `filter` step ended (nothing sent), by `destination`.
pub const DELIVERIES_FILTERED: &str = "estafeta_deliveries_filtered_total";
/// Histogram (seconds): duration of a route's `enrich` step (look-up and cache), by `route`
/// and `step` (`enrich:<name>`).
pub const STEP_DURATION: &str = "estafeta_step_duration_seconds";
/// Counter: deliveries parked as dead, by `destination`.
pub const DELIVERIES_DEAD: &str = "estafeta_deliveries_dead_total";
/// Histogram (seconds): duration of one delivery attempt, by `destination`.
pub const ATTEMPT_DURATION: &str = "estafeta_attempt_duration_seconds";
/// Histogram (seconds): from the event's arrival to its delivery, by `destination`.
pub const END_TO_END_LATENCY: &str = "estafeta_end_to_end_latency_seconds";
/// Gauge: deliveries waiting (pending or retrying), by `destination`.
pub const QUEUE_DEPTH: &str = "estafeta_queue_depth";
/// Gauge: 1 while a destination's circuit breaker is open, by `destination`.
pub const CIRCUIT_OPEN: &str = "estafeta_circuit_open";
/// Histogram (seconds): time to commit one batch of writes to the store.
pub const STORE_COMMIT_DURATION: &str = "estafeta_store_commit_duration_seconds";
/// Histogram: number of write requests committed together in one store transaction.
pub const STORE_BATCH_SIZE: &str = "estafeta_store_batch_size";
/// Counter: events a pulling source (database capture, outbox …) stored, by `source`.
pub const SOURCE_EVENTS: &str = "estafeta_source_events_total";
/// Counter: times a source lost its connection (or its store) and started over, by `source`.
pub const SOURCE_RECONNECTS: &str = "estafeta_source_reconnects_total";
/// Counter: rows copied by an initial snapshot, by `source` and `table`.
pub const SOURCE_SNAPSHOT_ROWS: &str = "estafeta_source_snapshot_rows_total";
/// Gauge: WAL a PostgreSQL replication slot retains, in bytes, by `source`.
pub const SOURCE_SLOT_RETAINED_WAL: &str = "estafeta_source_slot_retained_wal_bytes";
/// Gauge: bytes from a slot's confirmed position to the server's WAL position, by `source`.
pub const SOURCE_SLOT_LAG: &str = "estafeta_source_slot_lag_bytes";
/// Gauge: messages a broker source has not taken in yet (Kafka: high watermark minus the
/// committed offset, summed over partitions; NATS: the consumer's pending count; AMQP: the
/// queue's ready messages). Label `source`.
pub const SOURCE_LAG: &str = "estafeta_source_lag_messages";
/// Counter: broker messages that could not be decoded and were stored as failed records
/// (events of type `estafeta.message.undecodable`). Label `source`.
pub const SOURCE_UNDECODABLE: &str = "estafeta_source_undecodable_total";
/// Counter: schedule runs that ended, by `schedule` and `status` (`succeeded`, `failed`,
/// `skipped`).
pub const SCHEDULE_RUNS: &str = "estafeta_schedule_runs_total";
/// Histogram (seconds): from a schedule's tick (plus its jitter) to the start of its run, by
/// `priority` (the queue it waited in): the firing accuracy.
pub const SCHEDULE_FIRE_DELAY: &str = "estafeta_schedule_fire_delay_seconds";
/// Histogram (seconds): duration of a schedule run, by `schedule`.
pub const SCHEDULE_RUN_DURATION: &str = "estafeta_schedule_run_duration_seconds";
/// Counter: times a schedule found ticks it missed (downtime, a clock jump), by `schedule`
/// and `misfire` (`run_once`: one catch-up run; `skip`: none).
pub const SCHEDULE_MISFIRES: &str = "estafeta_schedule_misfires_total";
/// Gauge: schedule runs waiting for a worker, by `priority` (`high`, `normal`, `low`).
pub const SCHEDULE_QUEUE_DEPTH: &str = "estafeta_schedule_queue_depth";
/// Counter: rows and objects deleted by retention passes and purges, by `kind` (`events`,
/// `deliveries`, `attempts`, `objects`) and `trigger` (`retention`: the background job;
/// `purge`: `POST /v1/purge`).
pub const RETENTION_DELETED: &str = "estafeta_retention_deleted_total";
/// Counter: retention passes, by `status` (`ok`, `failed`: a policy could not be applied).
pub const RETENTION_PASSES: &str = "estafeta_retention_passes_total";
