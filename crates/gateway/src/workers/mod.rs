//! Background workers. Each exposes `run_once`, one bounded batch of work that claims rows with
//! `FOR UPDATE SKIP LOCKED` and a lease, so any number of processes can run them against one
//! Postgres; [`run_until_stopped`] repeats it until the shutdown token fires.

pub mod archiver;
pub mod janitor;
pub mod monitor;
pub mod reaper;
pub mod webhooks;

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::http::AppState;

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Processed this many items; more may be waiting.
    Worked(usize),
    /// Nothing was due.
    Idle,
}

/// Timing of the workers.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Pause between steps when idle.
    pub tick: Duration,
    /// Rows claimed per step.
    pub batch: i64,
    /// How long a claim lasts; a crashed worker's rows return to the pool after it.
    pub lease: Duration,
    /// How often an unsettled session's upstream status is polled.
    pub poll_interval: Duration,
    /// A session queuing (status 1) longer than this is closed as failed.
    pub queue_timeout: Duration,
    /// A `creating` row older than this belongs to a crashed create and is resolved.
    pub creating_timeout: Duration,
    /// First delay of an upstream close retry; doubles per attempt up to five minutes.
    pub close_retry_base: Duration,
    /// Unit of the webhook retry schedule (5 s in production: retries after 5 s, 30 s, 2 min,
    /// 10 min, 30 min, 1 h, then every 3 h for a day; see `domain::webhooks`). Tests shrink it.
    pub webhook_retry_base: Duration,
}

/// Runs `step` until `stop` fires: at once again after work, after `tick` when idle or failing.
pub async fn run_until_stopped<F, Fut>(
    name: &'static str,
    tick: Duration,
    stop: CancellationToken,
    mut step: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Outcome>>,
{
    tracing::info!(worker = name, "worker started");
    while !stop.is_cancelled() {
        let pause = match step().await {
            Ok(Outcome::Worked(n)) if n > 0 => Duration::ZERO,
            Ok(_) => tick,
            Err(e) => {
                tracing::error!(worker = name, error = %format!("{e:#}"), "worker step failed");
                tick
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
    tracing::info!(worker = name, "worker stopped");
}

/// Starts every worker; they stop when `stop` fires.
pub fn spawn_all(
    state: AppState,
    settings: WorkerSettings,
    stop: CancellationToken,
) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    let tick = settings.tick;
    {
        let (state, settings, stop) = (state.clone(), settings.clone(), stop.clone());
        set.spawn(run_until_stopped("monitor", tick, stop, move || {
            let (state, settings) = (state.clone(), settings.clone());
            async move { monitor::run_once(&state, &settings).await }
        }));
    }
    {
        let (state, settings, stop) = (state.clone(), settings.clone(), stop.clone());
        set.spawn(run_until_stopped("reaper", tick, stop, move || {
            let (state, settings) = (state.clone(), settings.clone());
            async move { reaper::run_once(&state, &settings).await }
        }));
    }
    {
        let (state, settings, stop) = (state.clone(), settings.clone(), stop.clone());
        set.spawn(run_until_stopped("webhooks", tick, stop, move || {
            let (state, settings) = (state.clone(), settings.clone());
            async move { webhooks::run_once(&state, &settings).await }
        }));
    }
    {
        let (state, settings, stop) = (state.clone(), settings.clone(), stop.clone());
        set.spawn(run_until_stopped("archiver", tick, stop, move || {
            let (state, settings) = (state.clone(), settings.clone());
            async move { archiver::run_once(&state, &settings).await }
        }));
    }
    {
        let (state, settings, stop) = (state.clone(), settings.clone(), stop.clone());
        set.spawn(run_until_stopped("janitor", tick, stop, move || {
            let (state, settings) = (state.clone(), settings.clone());
            async move { janitor::run_once(&state, &settings).await }
        }));
    }
    set
}
