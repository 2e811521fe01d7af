//! `Idempotency-Key` on the tenant POSTs that change state ([`ROUTES`]): the first request
//! with a key runs and its successful answer is kept for the key's lifetime; a retry with the
//! same key and the same request gets that answer again (with `Idempotent-Replayed: true`)
//! and nothing runs twice, upstream included. The claim is a row in Postgres, so it holds
//! across replicas.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::extract::Tenant;
use crate::domain::idempotency::{
    HEADER, REPLAYED_HEADER, ROUTES, keeps_answer, parse_key, request_fingerprint,
};
use crate::store;

/// How long a claim protects a running request; a request still running after it is presumed
/// dead (its process crashed) and a retry may run in its place. Longer than any request lasts.
const LEASE: std::time::Duration = std::time::Duration::from_secs(120);
/// Largest answer kept for replay (tenant answers are small envelopes).
const MAX_KEPT_ANSWER: usize = 1024 * 1024;

/// Runs `inner` on the request, once per key; requests without the header, or to other routes,
/// pass straight through.
pub async fn around(
    state: &AppState,
    req: Request,
    inner: impl AsyncFnOnce(Request) -> Response,
) -> Response {
    if req.method() != Method::POST
        || !req.headers().contains_key(HEADER)
        || !ROUTES.contains(&req.uri().path())
    {
        return inner(req).await;
    }
    // Boxed: its Postgres calls would otherwise size the future every request carries.
    Box::pin(run(state, req, inner))
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn run(
    state: &AppState,
    req: Request,
    inner: impl AsyncFnOnce(Request) -> Response,
) -> Result<Response, ApiError> {
    let key = req
        .headers()
        .get(HEADER)
        .map(|v| parse_key(v.as_bytes()).map(str::to_owned))
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?
        .unwrap_or_default();
    let (mut parts, body) = req.into_parts();
    // Keys belong to tenants; the handler finds this tenant in the extensions.
    let tenant = Tenant::from_request_parts(&mut parts, state).await?;
    // The handler's own body rules (the route's cap, the read deadline) apply here first.
    let super::extract::Body(body) =
        super::extract::Body::from_request(Request::from_parts(parts.clone(), body), state).await?;
    let fingerprint = request_fingerprint(parts.method.as_str(), parts.uri.path(), &body);
    let tenant_id = tenant.id.0;

    let mut conn = state.db.acquire().await?;
    let mut claimed = false;
    // A key found neither claimable nor live expired or was released in between: claim again.
    for _ in 0..3 {
        if store::idempotency::claim(
            &mut conn,
            tenant_id,
            &key,
            &fingerprint,
            LEASE,
            state.settings.idempotency_ttl,
        )
        .await?
        {
            claimed = true;
            break;
        }
        match store::idempotency::find(&mut conn, tenant_id, &key).await? {
            None => continue,
            Some(row) if row.request_hash != fingerprint => {
                return Err(ApiError::IdempotencyMismatch);
            }
            Some(row) => match (row.state.as_str(), row.response_status, row.response_body) {
                ("done", Some(status), Some(body)) => return Ok(replay(status, body)),
                _ => return Err(ApiError::IdempotencyInProgress),
            },
        }
    }
    if !claimed {
        return Err(ApiError::IdempotencyInProgress);
    }
    drop(conn);

    let resp = inner(Request::from_parts(parts, Body::from(body))).await;
    let status = resp.status().as_u16();
    if !keeps_answer(status) {
        forget(state, tenant_id, &key).await;
        return Ok(resp);
    }
    let (resp_parts, resp_body) = resp.into_parts();
    let Ok(kept) = axum::body::to_bytes(resp_body, MAX_KEPT_ANSWER).await else {
        forget(state, tenant_id, &key).await;
        return Err(ApiError::Internal(anyhow::anyhow!(
            "an answer to keep for an idempotency key could not be read"
        )));
    };
    let stored = async {
        let mut conn = state.db.acquire().await?;
        store::idempotency::complete(&mut conn, tenant_id, &key, status, &kept).await
    }
    .await;
    if let Err(e) = stored {
        // The work is done and answered; the claim stays running until its lease ends, so a
        // retry meanwhile is told to wait rather than run it again.
        tracing::error!(error = %e, "keeping the answer of an idempotency key failed");
    }
    Ok(Response::from_parts(resp_parts, Body::from(kept)))
}

fn replay(status: i16, body: Vec<u8>) -> Response {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    resp
}

async fn forget(state: &AppState, tenant_id: uuid::Uuid, key: &str) {
    let released = async {
        let mut conn = state.db.acquire().await?;
        store::idempotency::release(&mut conn, tenant_id, key).await
    }
    .await;
    if let Err(e) = released {
        tracing::warn!(error = %e, "releasing an idempotency key failed; it frees itself when its lease ends");
    }
}
