//! The status monitor: asks the upstream about every unsettled session, records each
//! `faceswap_status` change as an event, and settles sessions the upstream has closed or no
//! longer knows (reconciliation).

use faceswap_upstream::UpstreamError;
use faceswap_wire::Code;
use futures_util::StreamExt;

use super::{Outcome, WorkerSettings};
use crate::domain::session::CloseReason;
use crate::http::AppState;
use crate::service;
use crate::store;
use crate::store::sessions::SessionRow;

/// Upstream calls in flight at once per step.
const CONCURRENCY: usize = 16;

/// One batch of polls.
#[tracing::instrument(skip_all)]
pub async fn run_once(state: &AppState, settings: &WorkerSettings) -> anyhow::Result<Outcome> {
    let mut conn = state.db.acquire().await?;
    let rows = store::sessions::claim_for_poll(
        &mut conn,
        settings.poll_interval,
        settings.lease,
        settings.batch,
    )
    .await?;
    drop(conn);
    if rows.is_empty() {
        return Ok(Outcome::Idle);
    }
    let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.session_id).collect();
    futures_util::stream::iter(rows)
        .for_each_concurrent(CONCURRENCY, |row| async move {
            let id = row.session_id;
            if let Err(e) = poll(state, row).await {
                tracing::warn!(session_id = %crate::domain::ids::SessionId(id), error = %format!("{e:#}"), "status poll failed");
            }
        })
        .await;
    // Should this fail, the claims lapse with their lease.
    let mut conn = state.db.acquire().await?;
    store::sessions::release_claims(&mut conn, &ids).await?;
    Ok(Outcome::Worked(ids.len()))
}

async fn poll(state: &AppState, row: SessionRow) -> anyhow::Result<()> {
    let Some(upstream_id) = row.upstream_id.clone() else {
        return Ok(());
    };
    let info = state
        .upstream_tokens
        .with_token(|token| {
            let upstream = state.upstream.clone();
            let upstream_id = upstream_id.clone();
            async move { upstream.info(&token, &upstream_id).await }
        })
        .await;
    let live = match info {
        Ok(live) => live,
        Err(UpstreamError::Business { code, .. }) if code == Code::PARAM_ERROR => {
            // The upstream no longer knows the session: it is not open there.
            return reconcile(state, &row, None).await;
        }
        Err(e) => return Err(e.into()),
    };
    service::archive::record_live(state, &row, &live).await;
    let status = i16::from(live.faceswap_status.as_u8());
    let row = service::status::record(state, row, status).await?;
    if status == 3 || live.closed_at.is_some() {
        // Closed upstream without us: settle it here.
        return reconcile(state, &row, Some(status)).await;
    }
    Ok(())
}

async fn reconcile(state: &AppState, row: &SessionRow, status: Option<i16>) -> anyhow::Result<()> {
    let mut conn = state.db.acquire().await?;
    let claimed = store::sessions::claim_for_close(
        &mut conn,
        None,
        row.session_id,
        CloseReason::Reconciled,
        state.settings.lease,
    )
    .await?;
    drop(conn);
    if claimed.is_some() {
        service::closing::settle(state, row.session_id, status).await?;
    }
    Ok(())
}
