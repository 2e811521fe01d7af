//! Admin: the token signing keys. The list shows ids and dates, never private material;
//! rotation makes a new key sign and retires the others, which keep verifying until every
//! token they signed has expired (see [`crate::auth::jwt`]).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use faceswap_wire::{EmptyEnvelope, Envelope};
use serde::Serialize;

use super::AppState;
use super::admin::Admin;
use super::error::ApiError;
use crate::auth::jwt;
use crate::store;

/// A token signing key, public facts only.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SigningKeyView {
    /// The `kid` tokens and the JWKS name it by.
    pub kid: String,
    /// When it was created; null for the key from `GATEWAY_JWT_PRIVATE_KEY_FILE`.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub created_at: Option<DateTime<Utc>>,
    /// When it stopped signing, if it has.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub retired_at: Option<DateTime<Utc>>,
    /// Whether it signs new tokens.
    pub signing: bool,
    /// For a retired key: when it stops verifying and leaves the JWKS (every token it signed
    /// has expired by then).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub verifies_until: Option<DateTime<Utc>>,
}

/// What a rotation did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RotatedSigningKey {
    /// The key that signs from now on (on every replica within the key refresh period).
    pub kid: String,
    /// The keys it retired; they verify until their `verifies_until`.
    pub retired: Vec<String>,
}

/// The token signing keys, newest first.
#[utoipa::path(get, path = "/admin/signing-keys", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "Done", body = Envelope<Vec<SigningKeyView>>), (status = 401, description = "1101 / 1102: missing or wrong admin credential", body = EmptyEnvelope)))]
pub async fn list_signing_keys(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Envelope<Vec<SigningKeyView>>>, ApiError> {
    let keys = &state.token_keys;
    let mut conn = state.db.acquire().await?;
    let rows = store::keys::list(&mut conn).await?;
    drop(conn);
    let configured = keys.is_configured();
    let mut views: Vec<SigningKeyView> = Vec::with_capacity(rows.len() + 1);
    if configured {
        views.push(SigningKeyView {
            kid: keys.signing_kid(),
            created_at: None,
            retired_at: None,
            signing: true,
            verifies_until: None,
        });
    }
    views.extend(rows.into_iter().map(|r| SigningKeyView {
        signing: !configured && r.retired_at.is_none(),
        verifies_until: r.retired_at.and_then(|t| keys.verifies_until(t)),
        kid: r.kid,
        created_at: Some(r.created_at),
        retired_at: r.retired_at,
    }));
    Ok(Json(Envelope::ok(views)))
}

/// Rotate the token signing key: a new key signs from now on, the previous ones keep verifying
/// until every token they signed has expired. Refused (4009) when the key comes from
/// `GATEWAY_JWT_PRIVATE_KEY_FILE`: its operator rotates that file.
#[utoipa::path(post, path = "/admin/signing-keys/rotate", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "Done", body = Envelope<RotatedSigningKey>), (status = 401, description = "1101 / 1102: missing or wrong admin credential", body = EmptyEnvelope), (status = 409, description = "4009: the key comes from GATEWAY_JWT_PRIVATE_KEY_FILE", body = EmptyEnvelope)))]
pub async fn rotate_signing_key(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<Json<Envelope<RotatedSigningKey>>, ApiError> {
    if state.token_keys.is_configured() {
        return Err(ApiError::Conflict(jwt::CONFIGURED_KEY_NOT_ROTATED.into()));
    }
    let rotated = jwt::rotate(&state.db, &admin.name).await.map_err(|e| {
        match e.downcast::<sqlx::Error>() {
            Ok(db) => ApiError::from(db),
            Err(other) => ApiError::Internal(other),
        }
    })?;
    // This replica signs with the new key at once; the others within their refresh period.
    if let Err(e) = state.token_keys.reload().await {
        tracing::warn!(error = %e, "reloading signing keys after a rotation failed; the background refresh retries");
    }
    Ok(Json(Envelope::ok(RotatedSigningKey {
        kid: rotated.kid,
        retired: rotated.retired,
    })))
}
