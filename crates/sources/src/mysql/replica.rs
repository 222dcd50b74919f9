//! The connection as a replica: registering with the server (heartbeats, MariaDB GTID
//! events), opening the binlog stream at a position, checking beforehand that the user may,
//! and telling a purged binlog file from other refusals.

use std::time::Duration;

use futures::StreamExt as _;
use mysql_async::prelude::Queryable as _;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Opts};

use super::CaptureError;
use super::setup::{Admin, GRANT, connect};

/// How often the server sends a heartbeat on an idle stream.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(5);

/// Registers as a replica and opens the binlog stream at `file:pos`.
pub(crate) async fn open(
    opts: &Opts,
    server_id: u32,
    mariadb: bool,
    file: &str,
    pos: u64,
    non_blocking: bool,
) -> Result<BinlogStream, CaptureError> {
    let mut conn: Conn = connect(opts).await?;
    let q = |e| CaptureError::db("could not prepare the binlog connection", e);
    conn.query_drop(format!(
        "SET @master_heartbeat_period = {}",
        HEARTBEAT.as_nanos()
    ))
    .await
    .map_err(q)?;
    if mariadb {
        // Ask for MariaDB's GTID events (recorded in events and the checkpoint).
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .map_err(q)?;
    }
    let mut request = BinlogStreamRequest::new(server_id)
        .with_filename(file.as_bytes())
        .with_pos(pos);
    if non_blocking {
        request = request.with_non_blocking();
    }
    conn.get_binlog_stream(request)
        .await
        .map_err(|e| refusal(e, "could not start reading the binlog"))
}

/// Access refusals name the grant; the rest is retried.
pub(crate) fn refusal(e: mysql_async::Error, message: &str) -> CaptureError {
    match &e {
        mysql_async::Error::Server(s) if matches!(s.code, 1045 | 1227) => {
            CaptureError::Setup(format!(
                "the user may not read the binary log as a replica ({}). Run `{GRANT}`",
                s.message
            ))
        }
        _ => CaptureError::db(message, e),
    }
}

/// Checks, before a snapshot, that the user may read the binlog: opens a non-blocking
/// stream at the current position and reads it to its end.
pub(crate) async fn probe(opts: &Opts, server_id: u32, mariadb: bool) -> Result<(), CaptureError> {
    let mut admin = Admin::connect(opts).await?;
    let (file, pos) = admin.current_position().await?;
    admin.close().await;
    let mut stream = open(opts, server_id, mariadb, &file, pos, true).await?;
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(item) = stream.next().await {
            item.map_err(|e| refusal(e, "could not read the binlog"))?;
        }
        Ok::<(), CaptureError>(())
    })
    .await;
    let _ = stream.close().await;
    match read {
        Ok(r) => r,
        Err(_) => Err(CaptureError::Transient(
            "the binlog check did not finish within 15s".into(),
        )),
    }
}

/// A binlog file the server no longer has is retried (the next session takes the purge
/// path); any other refusal to send from a position needs a person.
pub(crate) async fn purged_or(e: CaptureError, mut admin: Admin, file: &str) -> CaptureError {
    let CaptureError::Database {
        source: mysql_async::Error::Server(s),
        ..
    } = &e
    else {
        return e;
    };
    if s.code != 1236 {
        return e;
    }
    let exists = admin
        .binary_logs()
        .await
        .map(|logs| logs.iter().any(|(f, _)| f == file));
    admin.close().await;
    match exists {
        Ok(false) => {
            CaptureError::Transient(format!("binlog file {file} was purged; starting over"))
        }
        _ => match e {
            CaptureError::Database { source, .. } => CaptureError::Refused {
                message: format!(
                    "the server cannot send the binlog from the saved position in {file}"
                ),
                source,
            },
            other => other,
        },
    }
}
