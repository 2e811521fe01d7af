//! `POST /api/open/v3/getToken`

use axum::Json;
use axum::extract::State;
use faceswap_wire::{EmptyEnvelope, TokenRequest, TokenResponse};

use super::AppState;
use super::error::ApiError;
use super::extract::JsonBody;
use crate::service;

/// Exchange a tenant's client credentials for a gateway token.
///
/// The token is an ES256 JWT (keys at `/.well-known/jwks.json`). It is returned at the top level
/// and inside `data`, with its expiry.
#[utoipa::path(
    post,
    path = "/api/open/v3/getToken",
    tag = "token",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "A token", body = TokenResponse),
        (status = 400, description = "1003: clientId or clientSecret missing", body = EmptyEnvelope),
        (status = 401, description = "1101: wrong credentials", body = EmptyEnvelope),
    )
)]
pub async fn get_token(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    service::tokens::issue(&state, req).await.map(Json)
}
