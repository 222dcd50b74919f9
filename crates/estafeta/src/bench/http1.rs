//! The bench's own HTTP/1.1 servers (the webhook receiver, the look-up API): an accept loop
//! on hyper with keep-alive and no Nagle delay, every connection closed on `stop`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `answer` on every connection `listener` accepts until `stop`; `on_connection`
/// runs once per accepted connection.
pub(super) async fn serve<A, F>(
    listener: TcpListener,
    stop: CancellationToken,
    on_connection: impl Fn(),
    answer: A,
) where
    A: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let answer = Arc::new(answer);
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            // Out of file descriptors or a reset before accept: let the client retry.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        on_connection();
        let _ = stream.set_nodelay(true);
        let answer = Arc::clone(&answer);
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let fut = answer(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = stop.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}
