//! The HTTP/1.1 accept loop. `axum::serve` has no knobs for the request head, so the gateway
//! runs hyper itself: the head is size-capped (431 beyond it) and must arrive within a deadline,
//! which also closes idle keep-alive connections, so slow or idle clients cannot pin sockets.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::http::limits::HttpLimits;
use crate::lingering::LingeringClose;

/// Serves `app` on `listener` from `threads` threads, each running a single-threaded runtime of
/// its own, until `shutdown` resolves; then stops accepting, lets every open connection finish
/// its in-flight request, and returns once they have closed.
///
/// The caller's task accepts and hands each connection to the thread serving the fewest; the
/// connection stays there, and so does the upstream exchange it starts (the upstream client
/// keeps a pool per thread): a call never wakes another thread, which on a multi-threaded
/// runtime cost a fifth of the gateway's CPU at peak (work stealing, wake-ups across cores).
/// Threads that accepted for themselves would split a burst of connections by who woke first,
/// leaving one thread with most of them. The threads' runtimes outlive the return until the
/// returned [`ServingThreads`] is dropped, because what they opened (pooled Postgres
/// connections) is still used by the work that runs after the last request (the final activity
/// flush).
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
    // The caller's log subscriber (a test's, say), which a new thread would not inherit.
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let serving = ServingThreads::default();
    let mut workers = Vec::with_capacity(threads.get());
    let mut started = Vec::with_capacity(threads.get());
    let mut closed = Vec::with_capacity(threads.get());
    for i in 0..threads.get() {
        let (handed_tx, handed) = mpsc::unbounded_channel();
        let load = Arc::new(AtomicUsize::new(0));
        let worker = ServingThread {
            load: Arc::clone(&load),
            app: app.clone(),
            http: http.clone(),
        };
        let release = serving.release.clone();
        let dispatch = dispatch.clone();
        let (started_tx, started_rx) = oneshot::channel::<std::io::Result<()>>();
        let (closed_tx, closed_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("serve-{i}"))
            .spawn(move || {
                let _logs = tracing::dispatcher::set_default(&dispatch);
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        let _ = started_tx.send(Ok(()));
                        runtime
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    worker.serve(handed).await;
                    let _ = closed_tx.send(());
                    release.cancelled().await;
                });
            })?;
        workers.push((handed_tx, load));
        started.push(started_rx);
        closed.push(closed_rx);
    }
    // Every thread runs before the first connection is taken, or none stays: a gateway
    // serving from fewer threads than it was given would hide the failure.
    for started in started {
        started.await.unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "a serving thread ended while starting",
            ))
        })?;
    }
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
        // Handed over as a plain socket: it joins the receiving thread's runtime there.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "a connection could not be handed to a serving thread");
                continue;
            }
        };
        let mut unhanded = Some(stream);
        while let Some(stream) = unhanded.take() {
            let (handed, load) = &workers[least_loaded(workers.iter().map(|(_, load)| &**load))];
            if load.load(Ordering::Relaxed) == STOPPED {
                tracing::error!("no serving thread is running; the connection is refused");
                break;
            }
            load.fetch_add(1, Ordering::Relaxed);
            if let Err(mpsc::error::SendError(stream)) = handed.send(stream) {
                // Its thread has stopped: the others take its share from now on.
                load.store(STOPPED, Ordering::Relaxed);
                tracing::error!("a serving thread has stopped; its connections go to the others");
                unhanded = Some(stream);
            }
        }
    }
    drop(listener);
    // Closing the hand-over channels tells each thread to finish.
    drop(workers);
    for closed in closed {
        if closed.await.is_err() {
            tracing::error!("a serving thread ended before its connections closed");
        }
    }
    Ok(serving)
}

/// The load of a serving thread that has stopped, so that it is never the least loaded while
/// another runs.
const STOPPED: usize = usize::MAX;

/// The index of the thread serving the fewest connections (the first of equals).
fn least_loaded<'a>(loads: impl Iterator<Item = &'a AtomicUsize>) -> usize {
    // `min_by_key` keeps the first of equal minima.
    loads
        .enumerate()
        .min_by_key(|(_, load)| load.load(Ordering::Relaxed))
        .map_or(0, |(i, _)| i)
}

/// The threads [`serve`] started: dropping this ends them and their runtimes.
#[derive(Debug, Default)]
pub struct ServingThreads {
    release: CancellationToken,
}

impl Drop for ServingThreads {
    fn drop(&mut self) {
        self.release.cancel();
    }
}

/// What one serving thread runs.
struct ServingThread {
    /// Connections handed to this thread and not yet closed.
    load: Arc<AtomicUsize>,
    app: axum::Router,
    http: hyper::server::conn::http1::Builder,
}

impl ServingThread {
    /// Serves the connections handed over until the hand-over ends, then lets every open
    /// connection finish its in-flight request and returns once they have closed.
    async fn serve(self, mut handed: mpsc::UnboundedReceiver<std::net::TcpStream>) {
        let graceful = GracefulShutdown::new();
        while let Some(stream) = handed.recv().await {
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(e) => {
                    self.load.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "a handed-over connection could not be served");
                    continue;
                }
            };
            let conn = self.http.serve_connection(
                TokioIo::new(LingeringClose::new(stream)),
                TowerToHyperService::new(self.app.clone()),
            );
            let conn = graceful.watch(conn);
            let load = Arc::clone(&self.load);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
                load.fetch_sub(1, Ordering::Relaxed);
            });
        }
        graceful.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_goes_to_the_thread_serving_the_fewest() {
        let loads = |counts: &[usize]| -> Vec<AtomicUsize> {
            counts.iter().map(|&n| AtomicUsize::new(n)).collect()
        };
        assert_eq!(least_loaded(loads(&[3, 1, 2]).iter()), 1);
        assert_eq!(least_loaded(loads(&[2, 2, 2]).iter()), 0);
        assert_eq!(least_loaded(loads(&[5, 4, 4]).iter()), 1);
        assert_eq!(least_loaded(loads(&[7]).iter()), 0);
        assert_eq!(least_loaded(loads(&[STOPPED, 900]).iter()), 1);
    }
}
