//! Serving a local peer: an axum app on `127.0.0.1:<free port>`, small writes sent at once.

use std::net::SocketAddr;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::task::JoinHandle;

/// Binds 127.0.0.1 on a free port.
///
/// # Panics
/// When no local port can be bound.
async fn bind() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener
        .local_addr()
        .expect("local address of a bound listener");
    (listener, addr)
}

/// Binds 127.0.0.1 on a free port and serves `app` until the task is aborted. With
/// `peer_addr`, handlers can extract the client's address (`ConnectInfo<SocketAddr>`).
///
/// # Panics
/// When no local port can be bound.
pub(crate) async fn serve(app: Router, peer_addr: bool) -> (SocketAddr, JoinHandle<()>) {
    let (listener, addr) = bind().await;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = tokio::spawn(async move {
        let _ = if peer_addr {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        } else {
            axum::serve(listener, app).await
        };
    });
    (addr, server)
}

/// Like [`serve`], until `stop` fires: then the port is closed, idle keep-alive connections
/// are closed, answers in flight finish, and the task ends when every connection is gone.
///
/// # Panics
/// When no local port can be bound.
pub(crate) async fn serve_until(
    app: Router,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> (SocketAddr, JoinHandle<()>) {
    let (listener, addr) = bind().await;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.await;
            })
            .await;
    });
    (addr, server)
}

/// Locks a peer's record, even after a panicking test thread poisoned it: one failed
/// assertion must not hide the record from the others.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits until `count` reaches `n`; false when `timeout` passes first.
pub(crate) async fn wait_for_count(
    count: &tokio::sync::watch::Sender<usize>,
    n: usize,
    timeout: std::time::Duration,
) -> bool {
    let mut rx = count.subscribe();
    matches!(
        tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await,
        Ok(Ok(_))
    )
}

/// A loopback port that was free a moment ago, for a server process the test starts itself.
///
/// # Panics
/// When no local port can be bound.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}
