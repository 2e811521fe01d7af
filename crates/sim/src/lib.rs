//! `faceswap-sim`: a faithful simulator of the upstream Live Face Swap API.
//!
//! It serves every upstream call with the provider's paths, bodies, auth rules and codes, issues
//! real expiring JWTs, detects real faces with the SeetaFace model, moves sessions through their
//! statuses, mints generated resources that expire, and injects faults on demand. The library
//! lets tests start it in-process on port 0; the binary is what local runs use.

pub mod clock;
pub mod config;
pub mod detect;
pub mod fetch;
pub mod http;
pub mod resources;
pub mod sessions;
pub mod state;
pub mod stats;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt as _;
pub use config::{Knobs, SimArgs};
pub use stats::StatsReport;
use tokio::net::{TcpListener, TcpStream};

/// A running simulator. Dropping it stops the server.
pub struct SimHandle {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SimHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Binds `args.bind` and serves in a background task until the handle is dropped.
pub async fn spawn(args: SimArgs) -> anyhow::Result<SimHandle> {
    let listener = TcpListener::bind(args.bind).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (app, state) = build(&args, addr)?;
    tokio::spawn(async move {
        let served = axum::serve(counted(listener, state), app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "simulator server failed");
        }
    });
    Ok(SimHandle {
        addr,
        shutdown: Some(tx),
    })
}

/// Binds `args.bind` and serves until SIGINT or SIGTERM.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.bind))?;
    let addr = listener.local_addr()?;
    let (app, state) = build(&args, addr)?;
    tracing::info!(%addr, client_id = %args.client_id, "faceswap-sim listening");
    axum::serve(counted(listener, state), app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

/// `listener`, counting the connections it accepts in `/sim/stats`.
fn counted(
    listener: TcpListener,
    state: Arc<state::SimState>,
) -> axum::serve::TapIo<TcpListener, impl FnMut(&mut TcpStream) + Send + 'static> {
    listener.tap_io(move |_| state.stats.record_connection())
}

fn build(args: &SimArgs, addr: SocketAddr) -> anyhow::Result<(axum::Router, Arc<state::SimState>)> {
    args.knobs
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid setting: {e}"))?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_owned();
    let state = Arc::new(state::SimState::new(args, public_url)?);
    Ok((http::router(state.clone(), args.max_body_bytes), state))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
