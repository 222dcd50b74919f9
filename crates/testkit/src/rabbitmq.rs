//! RabbitMQ helpers for tests against the machine's broker: closing one test's connections
//! (found by the `connection_name` client property) to test reconnection without touching
//! anyone else's.

/// Closes, through `rabbitmqctl`, the connections whose client properties carry
/// `connection_name` = `name`. Returns how many were closed; `None` when `rabbitmqctl` is not
/// available (the test can skip).
///
/// # Panics
/// When `rabbitmqctl` refuses to close a connection it listed.
pub async fn close_connections_named(name: &str) -> Option<usize> {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_connections",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let needle = format!("{{\"connection_name\",\"{name}\"}}");
    let mut closed = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if !line.contains(&needle) {
            continue;
        }
        let pid = line.split_whitespace().next()?;
        let status = tokio::process::Command::new("rabbitmqctl")
            .args(["-q", "close_connection", pid, "closed by an estafeta test"])
            .status()
            .await
            .ok()?;
        assert!(status.success(), "close_connection {pid} failed");
        closed += 1;
    }
    Some(closed)
}
