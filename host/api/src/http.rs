//! The HTTP server around the router, with limits no client can get around: a deadline for a
//! request's headers (and so for an idle kept-alive connection), a deadline between two
//! pieces of a request's body, a deadline for each write of a response (a client that stops
//! reading), a cap on open connections, and a shutdown that ends within a bounded time
//! whatever the clients do.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// The server's limits on its clients.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// A client has this long to send a request's headers; an idle kept-alive connection
    /// is closed after it too.
    pub header_read_timeout: Duration,
    /// A response that cannot be written for this long (the client stopped reading) ends
    /// its connection.
    pub write_timeout: Duration,
    /// Connections open at once; one more is closed at once.
    pub max_connections: usize,
    /// After shutdown begins, requests in progress have this long to finish; connections
    /// still open then are dropped.
    pub shutdown_grace: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in progress
/// finish for at most `limits.shutdown_grace` and returns.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.max_connections, "too many connections: closing a new one");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.write_timeout));
        let service = TowerToHyperService::new(app.clone());
        let io = TokioIo::new(Box::pin(stream));
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    // Idle connections close now, busy ones after their current request.
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period are dropped");
    }
}
