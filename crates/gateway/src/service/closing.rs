//! Closing a session: upstream first, then the record, the charge and the event together. A
//! failed upstream close leaves the session `closing` with a retry scheduled; it is never
//! reported closed before the upstream agrees (or says it no longer has it).

use faceswap_upstream::UpstreamError;
use faceswap_wire::Code;
use futures_util::StreamExt;

use crate::domain::events;
use crate::domain::ids::SessionId;
use crate::domain::session::{CloseReason, close_retry_delay};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store;
use crate::store::events::NewEvent;
use crate::store::sessions::SessionRow;

/// The upstream says it no longer holds the session (closed already, or unknown).
fn upstream_already_closed(e: &UpstreamError) -> bool {
    matches!(e, UpstreamError::Business { code, .. } if *code == Code::PARAM_ERROR)
}

/// Closes a session the caller has claimed (state `closing`). On upstream failure schedules a
/// retry and returns the error.
pub async fn close_claimed(state: &AppState, row: &SessionRow) -> Result<SessionRow, ApiError> {
    close_upstream(state, row).await?;
    let closed = settle(state, row.session_id, Some(final_status(row))).await?;
    // The close mints the session's resources upstream: record them for archiving.
    crate::service::archive::after_close(state, &closed).await;
    Ok(closed)
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
    let released: Vec<(uuid::Uuid, Option<i16>)> = futures_util::stream::iter(rows)
        .map(|row| async move {
            match close_upstream(state, &row).await {
                Ok(()) => Some((row.session_id, Some(final_status(&row)))),
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
    settle_many(state, &released).await?;
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
    settle_many(state, &[(session_id, final_status)])
        .await?
        .pop()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "session {} left 'closing' while we closed it",
                SessionId(session_id)
            )
            .into()
        })
}

/// [`settle`] for many sessions in one transaction. A session no longer `closing` (another
/// closer settled it, with its own event) is left out of the answer.
pub async fn settle_many(
    state: &AppState,
    closes: &[(uuid::Uuid, Option<i16>)],
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
    if closed.len() > 1 {
        let ids: Vec<uuid::Uuid> = closed.iter().map(|(row, _)| row.session_id).collect();
        store::sessions::lock_usage_totals(&mut tx, &ids).await?;
    }
    tx.commit().await?;
    for ((row, seconds), (reason, _)) in closed.iter().zip(&payloads) {
        tracing::info!(session_id = %SessionId(row.session_id), reason = reason.as_str(), seconds, "session closed");
        crate::metrics::session_closed(reason.as_str());
    }
    Ok(closed.into_iter().map(|(row, _)| row).collect())
}
