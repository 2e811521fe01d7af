//! Recording a session's upstream status and the event of its change, together.

use crate::domain::events;
use crate::domain::ids::SessionId;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store;
use crate::store::sessions::SessionRow;

/// Stores `status` for `row` and, when it changed, a `session.status_changed` event.
pub async fn record(
    state: &AppState,
    row: SessionRow,
    status: i16,
) -> Result<SessionRow, ApiError> {
    if row.faceswap_status == Some(status) {
        return Ok(row);
    }
    // Boxed: most calls see no change, and the transaction's future is large.
    Box::pin(record_change(state, row, status)).await
}

async fn record_change(
    state: &AppState,
    row: SessionRow,
    status: i16,
) -> Result<SessionRow, ApiError> {
    let mut tx = state.db.begin().await?;
    let Some(updated) =
        store::sessions::set_status(&mut tx, row.session_id, row.faceswap_status, status).await?
    else {
        // Another caller recorded the change first; its event stands. The answer still says
        // what the upstream has just said.
        return Ok(SessionRow {
            faceswap_status: Some(status),
            ..row
        });
    };
    let payload = events::status_changed(SessionId(row.session_id), row.faceswap_status, status);
    store::events::insert(
        &mut tx,
        row.tenant_id,
        Some(row.session_id),
        events::STATUS_CHANGED,
        &payload,
    )
    .await?;
    tx.commit().await?;
    Ok(updated)
}
