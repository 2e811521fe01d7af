//! Closing a session: upstream first, then the record, the charge and the event together. A
//! failed upstream close leaves the session `closing` with a retry scheduled; it is never
//! reported closed before the upstream agrees (or says it no longer has it).

use faceswap_upstream::UpstreamError;
use faceswap_wire::Code;

use crate::domain::events;
use crate::domain::ids::SessionId;
use crate::domain::session::{CloseReason, close_retry_delay};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store;
use crate::store::sessions::SessionRow;

/// The upstream says it no longer holds the session (closed already, or unknown).
fn upstream_already_closed(e: &UpstreamError) -> bool {
    matches!(e, UpstreamError::Business { code, .. } if *code == Code::PARAM_ERROR)
}

/// Closes a session the caller has claimed (state `closing`). On upstream failure schedules a
/// retry and returns the error.
pub async fn close_claimed(state: &AppState, row: &SessionRow) -> Result<SessionRow, ApiError> {
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
        Ok(()) => {}
        Err(e) if upstream_already_closed(&e) => {}
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
            return Err(e.into());
        }
    }
    // A session that had failed stays failed; any other one ends in success.
    let final_status = if row.faceswap_status == Some(4) { 4 } else { 3 };
    let closed = settle(state, row.session_id, Some(final_status)).await?;
    // The close mints the session's resources upstream: record them for archiving.
    crate::service::archive::after_close(state, &closed).await;
    Ok(closed)
}

/// Marks a `closing` session closed without an upstream call (the upstream already agrees),
/// charging it and recording the event in one transaction.
pub async fn settle(
    state: &AppState,
    session_id: uuid::Uuid,
    final_status: Option<i16>,
) -> Result<SessionRow, ApiError> {
    let mut tx = state.db.begin().await?;
    let (closed, seconds) = store::sessions::finish_close(&mut tx, session_id, final_status)
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "session {} left 'closing' while we closed it",
                SessionId(session_id)
            )
        })?;
    let reason = closed
        .close_reason
        .as_deref()
        .and_then(CloseReason::parse)
        .unwrap_or(CloseReason::Client);
    let payload = events::closed(
        SessionId(session_id),
        reason,
        closed.faceswap_status,
        seconds,
    );
    store::events::insert(
        &mut tx,
        closed.tenant_id,
        Some(session_id),
        events::CLOSED,
        &payload,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(session_id = %SessionId(session_id), reason = reason.as_str(), seconds, "session closed");
    crate::metrics::session_closed(reason.as_str());
    Ok(closed)
}
