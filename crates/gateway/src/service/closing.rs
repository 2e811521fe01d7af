//! Closing a session: upstream first, then the record, the charge, the event and (for a single
//! close) the resources the close minted upstream, together. A
//! failed upstream close leaves the session `closing` with a retry scheduled; it is never
//! reported closed before the upstream agrees (or says it no longer has it).

use faceswap_upstream::UpstreamError;
use faceswap_wire::Code;
use futures_util::StreamExt;

use crate::domain::events;
use crate::domain::ids::SessionId;
use crate::domain::resources::Discovered;
use crate::domain::session::{CloseReason, close_retry_delay};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store;
use crate::store::events::NewEvent;
use crate::store::sessions::{Close, SessionRow};

/// The upstream says it no longer holds the session (closed already, or unknown).
fn upstream_already_closed(e: &UpstreamError) -> bool {
    matches!(e, UpstreamError::Business { code, .. } if *code == Code::PARAM_ERROR)
}

/// Closes a session the caller has claimed (state `closing`). On upstream failure schedules a
/// retry and returns the error.
pub async fn close_claimed(state: &AppState, row: &SessionRow) -> Result<SessionRow, ApiError> {
    close_upstream(state, row).await?;
    // The close mints the session's resources upstream: looked up now, they are recorded for
    // archiving by the close's own transaction (one commit, and no lookup left to the archiver).
    let found = crate::service::archive::lookup_after_close(state, row).await;
    let close = Close {
        session_id: row.session_id,
        final_status: Some(final_status(row)),
        resources_checked: found.is_some(),
    };
    let resources = found.as_deref().map(|found| (row.session_id, found));
    settle_many(state, &[close], resources.as_slice())
        .await?
        .pop()
        .ok_or_else(|| left_closing(row.session_id))
}

fn left_closing(session_id: uuid::Uuid) -> ApiError {
    anyhow::anyhow!(
        "session {} left 'closing' while we closed it",
        SessionId(session_id)
    )
    .into()
}

/// Closes many claimed sessions: upstream `concurrency` at a time, then every one the upstream
/// let go is settled in one transaction, so a commit is paid once per batch rather than once per
/// session. Failed closes get their retry scheduled, as in [`close_claimed`]. The resources of these sessions are looked up by the archiver (they are
/// left unchecked).
pub async fn close_claimed_batch(
    state: &AppState,
    rows: Vec<SessionRow>,
    concurrency: usize,
) -> Result<(), ApiError> {
    let released: Vec<Close> = futures_util::stream::iter(rows)
        .map(|row| async move {
            match close_upstream(state, &row).await {
                Ok(()) => Some(Close {
                    session_id: row.session_id,
                    final_status: Some(final_status(&row)),
                    resources_checked: false,
                }),
                // The retry is scheduled; nothing more to do here.
                Err(e) => {
                    tracing::debug!(session_id = %SessionId(row.session_id), error = %e, "close failed");
                    None
                }
            }
        })
        .buffer_unordered(concurrency)
        .filter_map(std::future::ready)
        .collect()
        .await;
    settle_many(state, &released, &[]).await?;
    Ok(())
}

/// A session that had failed stays failed; any other one ends in success.
fn final_status(row: &SessionRow) -> i16 {
    if row.faceswap_status == Some(4) { 4 } else { 3 }
}

/// The upstream close of a claimed session. "Already closed" counts as closed; any other
/// failure schedules the retry and is returned.
async fn close_upstream(state: &AppState, row: &SessionRow) -> Result<(), ApiError> {
    let upstream_id = row.upstream_id.clone().unwrap_or_default();
    let closed = state
        .upstream_tokens
        .with_token(|token| {
            let upstream = state.upstream.clone();
            let upstream_id = upstream_id.clone();
            async move { upstream.close(&token, &upstream_id).await }
        })
        .await;
    match closed {
        Ok(()) => Ok(()),
        Err(e) if upstream_already_closed(&e) => Ok(()),
        Err(e) => {
            let delay = close_retry_delay(
                state.settings.close_retry_base,
                u32::try_from(row.close_attempts).unwrap_or(0),
                rand::random_range(0.8..1.2),
            )
            // An open breaker would refuse an earlier retry unsent.
            .max(e.retry_after().unwrap_or_default());
            tracing::warn!(session_id = %SessionId(row.session_id), error = %e, ?delay, "upstream close failed; retry scheduled");
            let mut conn = state.db.acquire().await?;
            store::sessions::schedule_close_retry(&mut conn, row.session_id, delay, &e.to_string())
                .await?;
            Err(e.into())
        }
    }
}

/// Marks a `closing` session closed without an upstream call (the upstream already agrees),
/// charging it and recording the event in one transaction.
pub async fn settle(
    state: &AppState,
    session_id: uuid::Uuid,
    final_status: Option<i16>,
) -> Result<SessionRow, ApiError> {
    let close = Close {
        session_id,
        final_status,
        resources_checked: false,
    };
    settle_many(state, &[close], &[])
        .await?
        .pop()
        .ok_or_else(|| left_closing(session_id))
}

/// [`settle`] for many sessions in one transaction, recording with them the resources found for
/// some (by session id). A session no longer `closing` (another closer settled it, with its own
/// event) is left out of the answer, and so are its resources.
pub async fn settle_many(
    state: &AppState,
    closes: &[Close],
    resources: &[(uuid::Uuid, &[Discovered])],
) -> Result<Vec<SessionRow>, ApiError> {
    if closes.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = state.db.begin().await?;
    let closed = store::sessions::finish_close_many(&mut tx, closes).await?;
    let payloads: Vec<(CloseReason, serde_json::Value)> = closed
        .iter()
        .map(|(row, seconds)| {
            let reason = row
                .close_reason
                .as_deref()
                .and_then(CloseReason::parse)
                .unwrap_or(CloseReason::Client);
            let payload = events::closed(
                SessionId(row.session_id),
                reason,
                row.faceswap_status,
                *seconds,
            );
            (reason, payload)
        })
        .collect();
    let new: Vec<NewEvent<'_>> = closed
        .iter()
        .zip(&payloads)
        .map(|((row, _), (_, payload))| NewEvent {
            tenant_id: row.tenant_id,
            session_id: Some(row.session_id),
            event_type: events::CLOSED,
            payload,
        })
        .collect();
    store::events::insert_many(&mut tx, &new).await?;
    let mut recorded = Vec::new();
    for (row, _) in &closed {
        if let Some((_, found)) = resources.iter().find(|(id, _)| *id == row.session_id) {
            let new = store::resources::insert_discovered(
                &mut tx,
                row.tenant_id,
                Some(row.session_id),
                found,
            )
            .await?;
            recorded.push((row.tenant_id, row.session_id, new));
        }
    }
    if closed.len() > 1 {
        let ids: Vec<uuid::Uuid> = closed.iter().map(|(row, _)| row.session_id).collect();
        store::sessions::lock_usage_totals(&mut tx, &ids).await?;
    }
    tx.commit().await?;
    for (tenant_id, session_id, new) in recorded {
        crate::service::archive::log_recorded(tenant_id, Some(session_id), new);
    }
    for ((row, seconds), (reason, _)) in closed.iter().zip(&payloads) {
        tracing::info!(session_id = %SessionId(row.session_id), reason = reason.as_str(), seconds, "session closed");
        crate::metrics::session_closed(reason.as_str());
    }
    Ok(closed.into_iter().map(|(row, _)| row).collect())
}
