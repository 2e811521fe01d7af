//! The archiver: copies generated resources into object storage before their upstream
//! deadline, streaming, with checksum; retries with backoff; alarms on resources near their
//! deadline; marks the ones that expired un-archived; deletes archived objects past their
//! tenant's retention; and looks up the resources of closed sessions not checked yet.
//!
//! Every kind of work claims rows with `FOR UPDATE SKIP LOCKED` and a lease in one short
//! statement, so any number of workers can run; a long download renews its lease as it goes.

use futures_util::StreamExt;

use super::{Outcome, WorkerSettings};
use crate::domain::ids::SessionId;
use crate::http::AppState;
use crate::service::archive;
use crate::store;

/// Lookups of closed sessions in flight at once per step.
const LOOKUP_CONCURRENCY: usize = 8;

/// One batch of each kind of work.
#[tracing::instrument(skip_all)]
pub async fn run_once(state: &AppState, settings: &WorkerSettings) -> anyhow::Result<Outcome> {
    let looked_up = look_up_closed_sessions(state, settings).await?;
    // The alarm comes before the copy attempts so that a resource that will not make it is
    // reported even while its downloads keep failing.
    let alarms = archive::raise_alarms(state, settings.batch).await?;
    let copied = copy_due(state, settings).await?;
    let expired = archive::expire(state, settings.batch).await?;
    let deleted = archive::delete_past_retention(state, settings.lease, settings.batch).await?;
    let backlog = archive::backlog(state).await?;
    crate::metrics::set_archive_backlog(
        u64::try_from(backlog.pending).unwrap_or(0),
        backlog.oldest_deadline.map(|t| t.timestamp()),
    );
    let worked = looked_up + alarms + copied + expired + deleted;
    Ok(if worked == 0 {
        Outcome::Idle
    } else {
        Outcome::Worked(worked)
    })
}

async fn copy_due(state: &AppState, settings: &WorkerSettings) -> anyhow::Result<usize> {
    let claimed = {
        let mut conn = state.db.acquire().await?;
        store::resources::claim_due(&mut conn, settings.lease, settings.batch).await?
    };
    let n = claimed.len();
    let lease = settings.lease;
    // Copies run side by side; every one finished when the previous recording committed is
    // recorded in the next (copies in flight pause meanwhile: a recording takes milliseconds).
    futures_util::stream::iter(claimed)
        .map(|row| archive::copy_claimed(state, row, lease))
        .buffer_unordered(state.archive.settings.concurrency.max(1))
        .ready_chunks(n.max(1))
        .for_each(|copies| async move {
            if let Err(e) = archive::record_copies(state, copies).await {
                // The claims lapse and the copies are tried again.
                tracing::warn!(error = %format!("{e:#}"), "recording archive attempts failed");
            }
        })
        .await;
    Ok(n)
}

async fn look_up_closed_sessions(
    state: &AppState,
    settings: &WorkerSettings,
) -> anyhow::Result<usize> {
    let claimed = {
        let mut conn = state.db.acquire().await?;
        store::resources::claim_unchecked_sessions(
            &mut conn,
            state.archive.settings.default_ttl,
            settings.lease,
            settings.batch,
        )
        .await?
    };
    let n = claimed.len();
    futures_util::stream::iter(claimed)
        .for_each_concurrent(LOOKUP_CONCURRENCY, |s| async move {
            if let Err(e) = archive::check_session(state, &s).await {
                // The claim stays: the lookup is tried again when its lease lapses.
                tracing::warn!(session_id = %SessionId(s.session_id), error = %format!("{e:#}"), "looking up a closed session's resources failed");
            }
        })
        .await;
    Ok(n)
}
