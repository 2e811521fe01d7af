//! The drop-in session calls: `POST /api/open/v3/faceswap/live/{create,update,close,info}`.
//! `_id` is always the gateway's session id.

use axum::Json;
use axum::extract::State;
use faceswap_wire::gateway::SessionView;
use faceswap_wire::{CreateRequest, EmptyEnvelope, Envelope, SessionIdRequest, UpdateRequest};

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, Tenant};
use crate::domain::session::CloseReason;
use crate::service::live::{self, parse_session_id, view};

/// Create a live face swap session.
///
/// Reserves one of the tenant's concurrent sessions, then creates the session upstream. Over
/// quota the answer is 1104 and nothing is sent upstream.
#[utoipa::path(
    post,
    path = "/api/open/v3/faceswap/live/create",
    tag = "live",
    request_body = CreateRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Created; status 1 (queuing)", body = Envelope<SessionView>),
        (status = 400, description = "1003: invalid sourceImage", body = EmptyEnvelope),
        (status = 401, description = "1101 / 1102", body = EmptyEnvelope),
        (status = 429, description = "1104: the tenant's (or the upstream's) quota is spent", body = EmptyEnvelope),
        (status = 502, description = "5002: upstream unavailable", body = EmptyEnvelope),
        (status = 504, description = "5004: upstream timeout", body = EmptyEnvelope),
    )
)]
pub async fn create_session(
    State(state): State<AppState>,
    tenant: Tenant,
    JsonBody(req): JsonBody<CreateRequest>,
) -> Result<Json<Envelope<SessionView>>, ApiError> {
    let row = live::create(&state, tenant.id, req).await?;
    Ok(Json(Envelope::ok(view(&row))))
}

/// Replace the source faces of an open session.
#[utoipa::path(
    post,
    path = "/api/open/v3/faceswap/live/update",
    tag = "live",
    request_body = UpdateRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Updated", body = Envelope<SessionView>),
        (status = 400, description = "1003", body = EmptyEnvelope),
        (status = 404, description = "4004: no such session", body = EmptyEnvelope),
        (status = 409, description = "4009: the session is not open", body = EmptyEnvelope),
    )
)]
pub async fn update_session(
    State(state): State<AppState>,
    tenant: Tenant,
    JsonBody(req): JsonBody<UpdateRequest>,
) -> Result<Json<Envelope<SessionView>>, ApiError> {
    let row = live::update(&state, tenant.id, req).await?;
    Ok(Json(Envelope::ok(view(&row))))
}

/// Close a session, upstream first; its session-seconds are charged once.
#[utoipa::path(
    post,
    path = "/api/open/v3/faceswap/live/close",
    tag = "live",
    request_body = SessionIdRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Closed", body = Envelope<SessionView>),
        (status = 404, description = "4004: no such session", body = EmptyEnvelope),
        (status = 409, description = "4009: already closed or not yet created", body = EmptyEnvelope),
        (status = 502, description = "5002: the upstream close failed; the session stays open", body = EmptyEnvelope),
    )
)]
pub async fn close_session(
    State(state): State<AppState>,
    tenant: Tenant,
    JsonBody(req): JsonBody<SessionIdRequest>,
) -> Result<Json<Envelope<SessionView>>, ApiError> {
    let id = parse_session_id(&req.id)?;
    let row = live::close(&state, tenant.id, id, CloseReason::Client).await?;
    Ok(Json(Envelope::ok(view(&row))))
}

/// A session with its current `faceswap_status`.
#[utoipa::path(
    post,
    path = "/api/open/v3/faceswap/live/info",
    tag = "live",
    request_body = SessionIdRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The session", body = Envelope<SessionView>),
        (status = 404, description = "4004: no such session", body = EmptyEnvelope),
    )
)]
pub async fn session_info(
    State(state): State<AppState>,
    tenant: Tenant,
    JsonBody(req): JsonBody<SessionIdRequest>,
) -> Result<Json<Envelope<SessionView>>, ApiError> {
    let id = parse_session_id(&req.id)?;
    let row = live::info(&state, tenant.id, id).await?;
    Ok(Json(Envelope::ok(view(&row))))
}
