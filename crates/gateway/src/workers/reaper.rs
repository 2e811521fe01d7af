//! The reaper: closes sessions that are idle, over their maximum duration, failed upstream, stuck
//! queuing, or over their tenant's budget; retries upstream closes that failed; and resolves
//! reservations left `creating` by a crashed create.

use super::{Outcome, WorkerSettings};
use crate::domain::ids::{SessionId, TenantId};
use crate::http::AppState;
use crate::service;
use crate::store;

/// Upstream closes in flight at once per step.
const CONCURRENCY: usize = 32;

/// One batch of each kind of work.
#[tracing::instrument(skip_all)]
pub async fn run_once(state: &AppState, settings: &WorkerSettings) -> anyhow::Result<Outcome> {
    let mut conn = state.db.acquire().await?;
    let due =
        store::sessions::due_for_reaping(&mut conn, settings.queue_timeout, settings.batch).await?;
    let mut claimed = if due.is_empty() {
        Vec::new()
    } else {
        store::sessions::claim_many_for_close(&mut conn, &due, settings.lease).await?
    };
    claimed.extend(
        store::sessions::claim_close_retries(&mut conn, settings.lease, settings.batch).await?,
    );
    let stale =
        store::sessions::stale_creating(&mut conn, settings.creating_timeout, settings.batch)
            .await?;
    drop(conn);

    let worked = claimed.len() + stale.len();
    service::closing::close_claimed_batch(state, claimed, CONCURRENCY).await?;
    for (session_id, tenant_id, upstream_id) in stale {
        if upstream_id.is_some() {
            // The upstream session exists and we know its id: close it rather than leak it.
            let mut conn = state.db.acquire().await?;
            let claimed =
                store::sessions::claim_creating_for_close(&mut conn, session_id, settings.lease)
                    .await?;
            drop(conn);
            if let Some(row) = claimed {
                tracing::warn!(session_id = %SessionId(session_id), "dead create with a known upstream id; closing it");
                if let Err(e) = service::closing::close_claimed(state, &row).await {
                    tracing::debug!(session_id = %SessionId(session_id), error = %e, "reconciling close failed; retried");
                }
            }
            continue;
        }
        tracing::warn!(session_id = %SessionId(session_id), "reservation left by a dead create; marked lost");
        service::live::mark_lost(state, TenantId(tenant_id), session_id).await?;
    }
    Ok(if worked == 0 {
        Outcome::Idle
    } else {
        Outcome::Worked(worked)
    })
}
