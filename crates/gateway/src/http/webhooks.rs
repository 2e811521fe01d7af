//! Webhook endpoints of the tenant: `POST /v1/webhooks`, `GET /v1/webhooks`,
//! `DELETE /v1/webhooks/{id}`.

use axum::Json;
use axum::extract::{Path, State};
use faceswap_wire::{EmptyEnvelope, Envelope};

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, Tenant};
use crate::service::webhooks::{
    self, CreateWebhookRequest, CreatedWebhookEndpoint, DeletedWebhookEndpoint,
    WebhookEndpointList, parse_endpoint_id,
};

/// Register a webhook endpoint.
///
/// Every later event of the tenant is POSTed to `url`, signed per the Standard Webhooks
/// convention (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`)
/// with the `secret` returned here (shown only once). A delivery not answered 2xx within 5 s is
/// retried with exponential backoff and jitter for more than 24 h; an endpoint that fails that
/// long is disabled with a `webhook.endpoint_disabled` event. The URL must be http(s) on a
/// public address, as `image_url`.
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "events",
    request_body = CreateWebhookRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Registered; keep the secret", body = Envelope<CreatedWebhookEndpoint>),
        (status = 400, description = "1003: missing, malformed or refused URL", body = EmptyEnvelope),
        (status = 401, description = "1101 / 1102", body = EmptyEnvelope),
        (status = 409, description = "4009: the tenant has the most endpoints allowed", body = EmptyEnvelope),
    )
)]
pub async fn create_webhook(
    State(state): State<AppState>,
    tenant: Tenant,
    JsonBody(req): JsonBody<CreateWebhookRequest>,
) -> Result<Json<Envelope<CreatedWebhookEndpoint>>, ApiError> {
    let created = webhooks::register(&state, tenant.id, req).await?;
    Ok(Json(Envelope::ok(created)))
}

/// The tenant's webhook endpoints (without their secrets).
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "events",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The endpoints, oldest first", body = Envelope<WebhookEndpointList>),
        (status = 401, description = "1101 / 1102", body = EmptyEnvelope),
    )
)]
pub async fn list_webhooks(
    State(state): State<AppState>,
    tenant: Tenant,
) -> Result<Json<Envelope<WebhookEndpointList>>, ApiError> {
    Ok(Json(Envelope::ok(webhooks::list(&state, tenant.id).await?)))
}

/// Delete a webhook endpoint; its pending deliveries are dropped.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "events",
    params(("id" = String, Path, description = "The endpoint id (`whe_…`)")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Deleted", body = Envelope<DeletedWebhookEndpoint>),
        (status = 401, description = "1101 / 1102", body = EmptyEnvelope),
        (status = 404, description = "4004: no such endpoint", body = EmptyEnvelope),
    )
)]
pub async fn delete_webhook(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<Json<Envelope<DeletedWebhookEndpoint>>, ApiError> {
    let id = parse_endpoint_id(&id)?;
    Ok(Json(Envelope::ok(
        webhooks::delete(&state, tenant.id, id).await?,
    )))
}
