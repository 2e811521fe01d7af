//! Webhook endpoints: registration (with the SSRF rules of `image_url`), listing, deletion, and
//! disabling an endpoint that keeps failing. Delivery itself is `workers::webhooks`.

use faceswap_upstream::ssrf::SsrfError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::events::WEBHOOK_DISABLED;
use crate::domain::ids::{TenantId, WebhookEndpointId};
use crate::domain::webhook_signature::Secret;
use crate::domain::webhooks::{self, MAX_ENDPOINTS_PER_TENANT, MAX_URL_LEN};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store;
use crate::store::webhooks::EndpointRow;

/// `POST /v1/webhooks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateWebhookRequest {
    /// Where to POST events: an `http` or `https` URL on a public address.
    pub url: String,
}

/// A registered endpoint, without its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookEndpointView {
    /// `whe_…`.
    pub endpoint_id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Whether events are delivered to it; an endpoint that kept failing is disabled.
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Registration time, Unix seconds.
    pub created_at: i64,
}

/// A newly registered endpoint, with the secret its deliveries are signed with. The secret is
/// shown here only.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedWebhookEndpoint {
    /// `whe_…`.
    pub endpoint_id: String,
    /// Where events are POSTed.
    pub url: String,
    /// `whsec_…`: verify `webhook-signature` with it (Standard Webhooks).
    pub secret: String,
    /// Always true for a new endpoint.
    pub enabled: bool,
    /// Registration time, Unix seconds.
    pub created_at: i64,
}

/// The tenant's endpoints.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookEndpointList {
    /// Oldest first.
    pub endpoints: Vec<WebhookEndpointView>,
}

/// The answer to a deletion.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeletedWebhookEndpoint {
    /// The deleted endpoint.
    pub endpoint_id: String,
    /// Always true.
    pub deleted: bool,
}

fn view(row: &EndpointRow) -> WebhookEndpointView {
    WebhookEndpointView {
        endpoint_id: WebhookEndpointId(row.endpoint_id).to_string(),
        url: row.url.clone(),
        enabled: row.enabled,
        disabled_reason: row.disabled_reason.clone(),
        created_at: row.created_at.timestamp(),
    }
}

/// An endpoint id from the tenant: one that does not parse names no endpoint of theirs.
pub fn parse_endpoint_id(raw: &str) -> Result<WebhookEndpointId, ApiError> {
    WebhookEndpointId::parse(raw.trim()).map_err(|_| ApiError::NotFound("webhook endpoint"))
}

/// The tenant-facing reason a URL was refused (the guard's own messages name `image_url`).
fn refused(e: SsrfError) -> ApiError {
    ApiError::BadRequest(match e {
        SsrfError::InvalidUrl(why) => format!("url is not a valid URL: {why}"),
        SsrfError::Scheme(s) => format!("url must be an http or https URL, not `{s}`"),
        SsrfError::NoHost => "url has no host".to_owned(),
        SsrfError::Forbidden { host, addr } => format!(
            "url host `{host}` resolves to {addr}, which is not a public address; only public addresses are allowed"
        ),
        SsrfError::Unresolvable { host, reason } => {
            format!("url host `{host}` could not be resolved: {reason}")
        }
    })
}

/// Checks a webhook URL as registration (and each delivery) does: http(s), at most
/// [`MAX_URL_LEN`] long, and every address its host names is public or allow-listed. Returns
/// the normalised URL.
pub async fn check_url(state: &AppState, raw: &str) -> Result<url::Url, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ApiError::BadRequest("url cannot be empty".into()));
    }
    if raw.len() > MAX_URL_LEN {
        return Err(ApiError::BadRequest(format!(
            "url is limited to {MAX_URL_LEN} characters"
        )));
    }
    state.ssrf.check(raw).await.map_err(refused)
}

/// Registers an endpoint for the tenant and returns it with its new secret.
pub async fn register(
    state: &AppState,
    tenant: TenantId,
    req: CreateWebhookRequest,
) -> Result<CreatedWebhookEndpoint, ApiError> {
    let url = check_url(state, &req.url).await?;
    let secret = Secret::generate().to_text();
    let id = WebhookEndpointId::generate();
    let mut tx = state.db.begin().await?;
    store::webhooks::lock_tenant(&mut tx, tenant.0).await?;
    if store::webhooks::count(&mut tx, tenant.0).await? >= MAX_ENDPOINTS_PER_TENANT {
        return Err(ApiError::Conflict(format!(
            "a tenant may register at most {MAX_ENDPOINTS_PER_TENANT} webhook endpoints; delete one first"
        )));
    }
    let row = store::webhooks::insert(&mut tx, id.0, tenant.0, url.as_str(), &secret).await?;
    tx.commit().await?;
    tracing::info!(tenant_id = %tenant, endpoint_id = %id, "webhook endpoint registered");
    Ok(CreatedWebhookEndpoint {
        endpoint_id: id.to_string(),
        url: row.url,
        secret,
        enabled: row.enabled,
        created_at: row.created_at.timestamp(),
    })
}

/// The tenant's endpoints.
pub async fn list(state: &AppState, tenant: TenantId) -> Result<WebhookEndpointList, ApiError> {
    let mut conn = state.db.acquire().await?;
    let rows = store::webhooks::list(&mut conn, tenant.0).await?;
    Ok(WebhookEndpointList {
        endpoints: rows.iter().map(view).collect(),
    })
}

/// Deletes the tenant's endpoint; another tenant's is not found.
pub async fn delete(
    state: &AppState,
    tenant: TenantId,
    id: WebhookEndpointId,
) -> Result<DeletedWebhookEndpoint, ApiError> {
    let mut conn = state.db.acquire().await?;
    if !store::webhooks::delete(&mut conn, tenant.0, id.0).await? {
        return Err(ApiError::NotFound("webhook endpoint"));
    }
    tracing::info!(tenant_id = %tenant, endpoint_id = %id, "webhook endpoint deleted");
    Ok(DeletedWebhookEndpoint {
        endpoint_id: id.to_string(),
        deleted: true,
    })
}

/// Disables an endpoint that kept failing, gives up its pending deliveries and records a
/// [`WEBHOOK_DISABLED`] event, in one transaction. The event is queued for the tenant's other
/// enabled endpoints only (this one is already disabled when it is written). `false` when
/// another worker disabled it first.
pub async fn disable_endpoint(
    state: &AppState,
    endpoint_id: Uuid,
    reason: &str,
) -> anyhow::Result<bool> {
    let mut tx = state.db.begin().await?;
    let Some(row) = store::webhooks::disable(&mut tx, endpoint_id, reason).await? else {
        return Ok(false);
    };
    let id = WebhookEndpointId(row.endpoint_id);
    let payload = webhooks::disabled_payload(id, &row.url, reason);
    store::events::insert(&mut tx, row.tenant_id, None, WEBHOOK_DISABLED, &payload).await?;
    tx.commit().await?;
    tracing::warn!(tenant_id = %TenantId(row.tenant_id), endpoint_id = %id, reason, "webhook endpoint disabled");
    crate::metrics::webhook_endpoint_disabled();
    Ok(true)
}
