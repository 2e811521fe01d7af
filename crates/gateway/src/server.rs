//! The HTTP/1.1 accept loops. `axum::serve` has no knobs for the request head, so the gateway
//! runs hyper itself: the head is size-capped (431 beyond it) and must arrive within a deadline,
//! which also closes idle keep-alive connections, so slow or idle clients cannot pin sockets.

use std::future::Future;
use std::num::NonZeroUsize;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::limits::HttpLimits;
use crate::lingering::LingeringClose;

/// Serves `app` on `listener` from `threads` threads, each running a single-threaded runtime of
/// its own, until `shutdown` resolves; then stops accepting, lets every open connection finish
/// its in-flight request, and returns once they have closed.
///
/// A connection stays on the thread that accepted it, and so does the upstream exchange it
/// starts (the upstream client keeps a pool per thread): a call never wakes another thread,
/// which on a multi-threaded runtime cost a fifth of the gateway's CPU at peak (work stealing,
/// wake-ups across cores). The threads' runtimes outlive the return until the returned
/// [`ServingThreads`] is dropped, because what they opened (pooled Postgres connections) is
/// still used by the work that runs after the last request (the final activity flush).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: &HttpLimits,
    threads: NonZeroUsize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<ServingThreads> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    let listener = listener.into_std()?;
    // The caller's log subscriber (a test's, say), which a new thread would not inherit.
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let serving = ServingThreads::default();
    let mut started = Vec::with_capacity(threads.get());
    let mut closed = Vec::with_capacity(threads.get());
    for i in 0..threads.get() {
        let listener = listener.try_clone()?;
        let (app, http) = (app.clone(), http.clone());
        let (stop, release) = (serving.stop.clone(), serving.release.clone());
        let dispatch = dispatch.clone();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("serve-{i}"))
            .spawn(move || {
                let _logs = tracing::dispatcher::set_default(&dispatch);
                let (runtime, listener) = match runtime_with(listener) {
                    Ok(ready) => {
                        let _ = started_tx.send(Ok(()));
                        ready
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    accept_loop(listener, app, http, stop.cancelled_owned()).await;
                    let _ = closed_tx.send(());
                    release.cancelled().await;
                });
            })?;
        started.push(started_rx);
        closed.push(closed_rx);
    }
    drop(listener);
    // Every thread listens before this returns ready, or none stays: a gateway serving from
    // fewer threads than it was given would hide the failure.
    for started in started {
        started.await.unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "a serving thread ended while starting",
            ))
        })?;
    }
    shutdown.await;
    serving.stop.cancel();
    for closed in closed {
        if closed.await.is_err() {
            tracing::error!("a serving thread ended before its connections closed");
        }
    }
    Ok(serving)
}

/// A single-threaded runtime and `listener` registered with it.
fn runtime_with(
    listener: std::net::TcpListener,
) -> std::io::Result<(tokio::runtime::Runtime, TcpListener)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = {
        let _entered = runtime.enter();
        TcpListener::from_std(listener)?
    };
    Ok((runtime, listener))
}

/// The threads [`serve`] started: dropping this stops them and their runtimes.
#[derive(Debug, Default)]
pub struct ServingThreads {
    stop: CancellationToken,
    release: CancellationToken,
}

impl Drop for ServingThreads {
    fn drop(&mut self) {
        self.stop.cancel();
        self.release.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    http: hyper::server::conn::http1::Builder,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Per-connection failures (reset before accept) are routine; running out of
                    // file descriptors is not, and retrying at once would spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set");
        }
        let conn = http.serve_connection(
            TokioIo::new(LingeringClose::new(stream)),
            TowerToHyperService::new(app.clone()),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
