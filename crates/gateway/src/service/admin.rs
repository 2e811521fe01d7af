//! Admin operations that act on sessions: suspension (which closes a tenant's sessions) and
//! forced closes. Tenant and credential changes live in [`crate::service::tenants`].

use uuid::Uuid;

use crate::domain::ids::{SessionId, TenantId};
use crate::domain::session::CloseReason;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::service::{closing, tenants};
use crate::store;
use crate::store::sessions::SessionRow;

/// Suspends a tenant: its calls and tokens are refused at once (here, and on every replica
/// within the revocation refresh), and its open sessions are closed with reason `admin`.
/// Returns how many sessions were closed now; a close the upstream refuses is retried by the
/// reaper.
pub async fn suspend(state: &AppState, tenant: TenantId, actor: &str) -> Result<usize, ApiError> {
    tenants::set_status(&state.db, tenant, true, actor).await?;
    state.revocations.refresh(&state.db).await?;
    let mut conn = state.db.acquire().await?;
    let open = store::admin::open_session_ids(&mut conn, tenant.0).await?;
    drop(conn);
    let mut closed = 0;
    for id in open {
        match force_close_claim(state, id).await {
            Ok(Some(_)) => closed += 1,
            Ok(None) => {}
            // The close is scheduled for retry; the tenant is suspended either way.
            Err(e) => {
                tracing::warn!(session_id = %SessionId(id), error = %e, "closing a suspended tenant's session failed")
            }
        }
    }
    Ok(closed)
}

/// Lets a suspended tenant call again.
pub async fn resume(state: &AppState, tenant: TenantId, actor: &str) -> Result<(), ApiError> {
    tenants::set_status(&state.db, tenant, false, actor).await?;
    state.revocations.refresh(&state.db).await?;
    Ok(())
}

/// Closes any tenant's session with reason `admin`, recording who did it.
pub async fn force_close(
    state: &AppState,
    id: SessionId,
    actor: &str,
) -> Result<SessionRow, ApiError> {
    let mut conn = state.db.acquire().await?;
    let details = serde_json::json!({});
    store::admin::audit(
        &mut conn,
        actor,
        "session.close",
        Some(&id.to_string()),
        &details,
    )
    .await?;
    drop(conn);
    match force_close_claim(state, id.0).await? {
        Some(row) => Ok(row),
        None => {
            let mut conn = state.db.acquire().await?;
            let exists: Option<Uuid> =
                sqlx::query_scalar("select tenant_id from sessions where session_id = $1")
                    .bind(id.0)
                    .fetch_optional(&mut *conn)
                    .await?;
            match exists {
                None => Err(ApiError::NotFound("session")),
                Some(_) => Err(ApiError::Conflict("the session is not open".into())),
            }
        }
    }
}

/// Claims and closes one session for an admin; `None` when it was not open.
async fn force_close_claim(state: &AppState, id: Uuid) -> Result<Option<SessionRow>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let claimed = store::sessions::claim_for_close(
        &mut conn,
        None,
        id,
        CloseReason::Admin,
        state.settings.lease,
    )
    .await?;
    drop(conn);
    match claimed {
        Some(row) => closing::close_claimed(state, &row).await.map(Some),
        None => Ok(None),
    }
}
