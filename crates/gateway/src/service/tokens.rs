//! Tenant client credentials exchanged for the gateway's own token.

use faceswap_wire::token::TokenData;
use faceswap_wire::{Code, TokenRequest, TokenResponse};

use crate::auth::passwords;
use crate::domain::ids::TenantId;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store;

/// Issues a token for valid, unrevoked credentials of an active tenant.
pub async fn issue(state: &AppState, req: TokenRequest) -> Result<TokenResponse, ApiError> {
    if req.client_id.trim().is_empty() {
        return Err(ApiError::BadRequest("clientId cannot be empty".into()));
    }
    if req.client_secret.is_empty() {
        return Err(ApiError::BadRequest("clientSecret cannot be empty".into()));
    }
    // No client id holds a NUL, and Postgres text cannot even be queried with one.
    let found = if req.client_id.contains('\0') {
        None
    } else {
        let mut conn = state.db.acquire().await?;
        store::credentials::find_active(
            &mut conn,
            store::credentials::Kind::Client,
            req.client_id.trim(),
        )
        .await?
    };
    let invalid = ApiError::AuthInvalid("invalid clientId or clientSecret");
    let Some(row) = found else {
        // Spend the same time as a real check, so timing does not tell which ids exist.
        passwords::verify_blocking(req.client_secret, DUMMY_HASH.clone()).await;
        return Err(invalid);
    };
    if !passwords::verify_blocking(req.client_secret, row.secret_hash).await {
        return Err(invalid);
    }
    if row.tenant_status != "active" {
        return Err(ApiError::Suspended);
    }
    // Counted once the secret checks out, so guessing at a tenant's client id cannot spend
    // its allowance.
    crate::http::extract::enforce_rate(state, TenantId(row.tenant_id)).await?;
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let (token, exp) =
        state
            .token_keys
            .issue(&TenantId(row.tenant_id).to_string(), row.credential_id, now)?;
    Ok(TokenResponse {
        code: Code::SUCCESS,
        msg: "success".into(),
        token: Some(token.clone()),
        data: Some(TokenData {
            token,
            expires_at: Some(exp as i64),
            expires_in: Some(state.token_keys.ttl().as_secs() as i64),
        }),
    })
}

/// A hash of a random string, checked against when the client id is unknown.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let random = uuid::Uuid::new_v4().to_string();
    passwords::hash(&random).unwrap_or_default()
});
