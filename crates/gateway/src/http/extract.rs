//! Extractors whose rejections are [`ApiError`]s, so malformed input gets the envelope (1003,
//! 413) instead of axum's plain-text answers, and the authenticated tenant.

use std::time::Instant;

use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH};
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::limits::{MAX_JSON_DEPTH, json_too_deep};
use crate::auth::api_keys::KeyOwner;
use crate::auth::jwt::TokenError;
use crate::auth::passwords;
use crate::domain::credentials::ApiKey;
use crate::domain::ids::TenantId;
use crate::domain::rate::Decision;
use crate::store;

/// The raw body, capped in size per route (see [`super::limits::HttpLimits::body_cap`]) and in read time.
pub struct Body(pub Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limits = &state.settings.limits;
        let cap = match req.extensions().get::<MatchedPath>() {
            Some(route) => limits.body_cap(route.as_str()),
            None => limits.body_cap(req.uri().path()),
        };
        // An honest Content-Length over the cap is refused before a byte is read.
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > cap as u64) {
            return Err(ApiError::PayloadTooLarge(cap));
        }
        let read = axum::body::to_bytes(req.into_body(), cap);
        match tokio::time::timeout(limits.body_read_timeout, read).await {
            Err(_) => Err(ApiError::BodyTimeout(limits.body_read_timeout)),
            Ok(Ok(bytes)) => Ok(Body(bytes)),
            Ok(Err(e)) if is_over_limit(&e) => Err(ApiError::PayloadTooLarge(cap)),
            Ok(Err(e)) => Err(ApiError::BadRequest(format!(
                "request body could not be read: {e}"
            ))),
        }
    }
}

fn is_over_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// A JSON body; any parse failure is a 1003 naming the problem.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let Body(bytes) = Body::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON, with the parser's message as the 1003 reason. Bodies nested deeper than
/// [`MAX_JSON_DEPTH`] are refused before the parser sees them.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if json_too_deep(bytes, MAX_JSON_DEPTH) {
        return Err(ApiError::BadRequest(format!(
            "invalid JSON body: nested deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// The tenant a call is made for, from `Authorization: Bearer <token or API key>` or
/// `x-api-key: <API key or token>`. Authorization wins when both are sent.
#[derive(Debug, Clone, Copy)]
pub struct Tenant {
    /// The tenant.
    pub id: TenantId,
    /// The credential the call authenticated with.
    pub credential_id: Uuid,
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Authenticated (and counted against the rate) once per request, even when a
        // middleware needed the tenant before the handler.
        if let Some(tenant) = parts.extensions.get::<Tenant>() {
            return Ok(*tenant);
        }
        let presented = presented_credential(&parts.headers)?;
        let tenant = match ApiKey::parse(presented) {
            Some(key) => authenticate_api_key(state, presented, &key).await,
            None => authenticate_token(state, presented).await,
        }?;
        super::observe::record_tenant(&parts.extensions, tenant.id);
        // Tokens and cached keys outlive a revocation or suspension; the deny lists do not.
        if state.revocations.is_revoked(tenant.credential_id) {
            return Err(ApiError::AuthInvalid("the credential has been revoked"));
        }
        if state.revocations.is_suspended(tenant.id.0) {
            return Err(ApiError::Suspended);
        }
        enforce_rate(state, tenant.id).await?;
        parts.extensions.insert(tenant);
        Ok(tenant)
    }
}

/// Counts the request against the tenant's rate: over it → 429/1005 with `Retry-After`.
pub async fn enforce_rate(state: &AppState, tenant: TenantId) -> Result<(), ApiError> {
    let rate = state
        .rate_limits
        .rates
        .get(&state.db, tenant.0)
        .await?
        .ok_or(ApiError::AuthInvalid("the tenant no longer exists"))?;
    let (decision, source) = state.rate_limits.check(tenant.0, rate).await;
    crate::metrics::rate_limit_decision(source, decision);
    match decision {
        Decision::Allow => Ok(()),
        Decision::Deny { retry_after } => Err(ApiError::RateLimited { retry_after }),
    }
}

fn presented_credential(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = if let Some(auth) = headers.get(AUTHORIZATION) {
        let auth = auth
            .to_str()
            .map_err(|_| ApiError::AuthInvalid("the header is not valid text"))?
            .trim();
        match auth.get(..6) {
            Some(scheme) if scheme.eq_ignore_ascii_case("bearer") => auth[6..].trim(),
            _ if auth.is_empty() => "",
            _ => return Err(ApiError::AuthInvalid("expected `Bearer <token>`")),
        }
    } else if let Some(key) = headers.get("x-api-key") {
        key.to_str()
            .map_err(|_| ApiError::AuthInvalid("the header is not valid text"))?
            .trim()
    } else {
        ""
    };
    if value.is_empty() {
        Err(ApiError::AuthMissing)
    } else {
        Ok(value)
    }
}

async fn authenticate_token(state: &AppState, token: &str) -> Result<Tenant, ApiError> {
    let claims = state.token_keys.verify(token).await.map_err(|e| match e {
        TokenError::Expired => ApiError::AuthInvalid("the token has expired"),
        TokenError::Invalid => ApiError::AuthInvalid("the token is not valid"),
    })?;
    let id = TenantId::parse(&claims.sub)
        .map_err(|_| ApiError::AuthInvalid("the token is not valid"))?;
    Ok(Tenant {
        id,
        credential_id: claims.cid,
    })
}

async fn authenticate_api_key(
    state: &AppState,
    presented: &str,
    key: &ApiKey,
) -> Result<Tenant, ApiError> {
    let now = Instant::now();
    if let Some(owner) = state.api_keys.get(presented, now) {
        return Ok(Tenant {
            id: TenantId(owner.tenant_id),
            credential_id: owner.credential_id,
        });
    }
    let mut conn = state.db.acquire().await?;
    let found =
        store::credentials::find_active(&mut conn, store::credentials::Kind::ApiKey, &key.id)
            .await?;
    drop(conn);
    let Some(row) = found else {
        return Err(ApiError::AuthInvalid("unknown or revoked API key"));
    };
    if !passwords::verify_blocking(key.secret.clone(), row.secret_hash).await {
        return Err(ApiError::AuthInvalid("unknown or revoked API key"));
    }
    let owner = KeyOwner {
        tenant_id: row.tenant_id,
        credential_id: row.credential_id,
    };
    state.api_keys.put(
        presented,
        owner,
        now + crate::auth::api_keys::CACHE_TTL,
        now,
    );
    Ok(Tenant {
        id: TenantId(row.tenant_id),
        credential_id: row.credential_id,
    })
}
