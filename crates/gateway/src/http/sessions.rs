//! Gateway extensions: the session list, heartbeats and the quota.

use axum::Json;
use axum::extract::{Path, Query, State};
use faceswap_wire::gateway::{SessionPage, SessionView, UsageView};
use faceswap_wire::{EmptyEnvelope, Envelope};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::Tenant;
use crate::service::live::{self, parse_session_id, view};

/// Filters of the session list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only sessions in this state: `creating`, `open`, `closing`, `closed`, `lost`.
    state: Option<String>,
    /// Only sessions with this `faceswap_status` (1–4).
    faceswap_status: Option<i16>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
}

/// The tenant's sessions, newest first, paged.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    tag = "sessions",
    params(ListParams),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A page", body = Envelope<SessionPage>),
        (status = 400, description = "1003: bad filter or cursor", body = EmptyEnvelope),
    )
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    tenant: Tenant,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Envelope<SessionPage>>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let page = live::list(
        &state,
        tenant.id,
        p.state,
        p.faceswap_status,
        p.cursor,
        p.limit,
    )
    .await?;
    Ok(Json(Envelope::ok(page)))
}

/// Mark a session active, so idle reaping leaves it open.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/heartbeat",
    tag = "sessions",
    params(("id" = String, Path, description = "The session id (`ses_…`)")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The session", body = Envelope<SessionView>),
        (status = 404, description = "4004: no such session", body = EmptyEnvelope),
        (status = 409, description = "4009: the session is not open", body = EmptyEnvelope),
    )
)]
pub async fn heartbeat_session(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<Json<Envelope<SessionView>>, ApiError> {
    let id = parse_session_id(&id)?;
    let row = live::heartbeat(&state, tenant.id, id).await?;
    Ok(Json(Envelope::ok(view(&row))))
}

/// The tenant's quota and use.
#[utoipa::path(
    get,
    path = "/v1/usage",
    tag = "sessions",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Quota and use", body = Envelope<UsageView>))
)]
pub async fn get_usage(
    State(state): State<AppState>,
    tenant: Tenant,
) -> Result<Json<Envelope<UsageView>>, ApiError> {
    Ok(Json(Envelope::ok(live::usage(&state, tenant.id).await?)))
}
