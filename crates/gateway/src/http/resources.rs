//! Archived resources: the list with archive states, and the archived bytes, streamed.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use faceswap_wire::{EmptyEnvelope, Envelope};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::Tenant;
use crate::domain::ids::{ResourceId, SessionId};
use crate::domain::resources::extension;
use crate::service::archive::{self, parse_resource_id};
use crate::service::live::parse_session_id;
use crate::store::resources::ResourceRow;

/// A generated resource and where its archive stands.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceView {
    /// Resource id (`res_…`).
    pub resource_id: String,
    /// The session that produced it (`ses_…`); null for detection face crops.
    #[serde(rename = "_id")]
    pub session_id: Option<String>,
    /// `snapshot`, `recording`, `face`, …
    pub kind: String,
    /// `pending` (not archived yet), `archived` (fetchable here), `expired` (the upstream
    /// deleted it before it could be archived), `failed` (it can never be archived),
    /// `deleted` (archived, then deleted at the end of the retention period).
    pub state: String,
    /// Media type.
    pub content_type: Option<String>,
    /// Size in bytes (announced until archived, then as stored).
    pub size: Option<i64>,
    /// SHA-256 of the archived bytes, lower-case hex.
    pub sha256: Option<String>,
    /// When the upstream deletes its copy, seconds since the Unix epoch.
    pub upstream_expires_at: i64,
    /// When it was archived.
    pub archived_at: Option<i64>,
    /// When it was recorded.
    pub created_at: i64,
    /// Failed download attempts so far.
    pub attempts: i32,
    /// Where to fetch the archived bytes (`/v1/resources/{resource_id}`), once archived.
    pub href: Option<String>,
}

/// A session's resources.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceList {
    /// Oldest first.
    pub resources: Vec<ResourceView>,
}

/// A page of the tenant's resources.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourcePage {
    /// Newest first.
    pub resources: Vec<ResourceView>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn view(r: &ResourceRow) -> ResourceView {
    let id = ResourceId(r.resource_id).to_string();
    ResourceView {
        href: (r.state == "archived").then(|| format!("/v1/resources/{id}")),
        resource_id: id,
        session_id: r.session_id.map(|s| SessionId(s).to_string()),
        kind: r.kind.clone(),
        state: r.state.clone(),
        content_type: r.content_type.clone(),
        size: r.size_bytes,
        sha256: r.sha256.clone(),
        upstream_expires_at: r.upstream_expires_at.timestamp(),
        archived_at: r.archived_at.map(|t| t.timestamp()),
        created_at: r.created_at.timestamp(),
        attempts: r.attempts,
    }
}

/// The generated resources of a session (recording, snapshot, …) with their archive state.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/resources",
    tag = "resources",
    params(("id" = String, Path, description = "The session id (`ses_…`)")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The session's resources, oldest first", body = Envelope<ResourceList>),
        (status = 401, description = "1101 / 1102", body = EmptyEnvelope),
        (status = 404, description = "4004: no such session", body = EmptyEnvelope),
    )
)]
pub async fn list_session_resources(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<Json<Envelope<ResourceList>>, ApiError> {
    let id = parse_session_id(&id)?;
    let rows = archive::list_for_session(&state, tenant.id, id).await?;
    Ok(Json(Envelope::ok(ResourceList {
        resources: rows.iter().map(view).collect(),
    })))
}

/// Filters of the resource list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this session's resources (`ses_…`).
    session_id: Option<String>,
    /// Only resources in this state: `pending`, `archived`, `expired`, `failed`, `deleted`.
    state: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
}

/// The tenant's resources (session outputs and detection face crops), newest first, paged.
#[utoipa::path(
    get,
    path = "/v1/resources",
    tag = "resources",
    params(ListParams),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A page", body = Envelope<ResourcePage>),
        (status = 400, description = "1003: bad filter or cursor", body = EmptyEnvelope),
        (status = 401, description = "1101 / 1102", body = EmptyEnvelope),
    )
)]
pub async fn list_resources(
    State(state): State<AppState>,
    tenant: Tenant,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Envelope<ResourcePage>>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (rows, next_cursor) = archive::list(
        &state,
        tenant.id,
        p.session_id.as_deref(),
        p.state,
        p.cursor.as_deref(),
        p.limit,
    )
    .await?;
    Ok(Json(Envelope::ok(ResourcePage {
        resources: rows.iter().map(view).collect(),
        next_cursor,
    })))
}

/// Download an archived resource, streamed from the gateway's object storage.
///
/// Works as long as the archived copy is kept (the tenant's retention), whether or not the
/// upstream still has its own. The answer carries the stored media type, the size, and the
/// SHA-256 as `Repr-Digest` (RFC 9530) and as the `ETag`.
#[utoipa::path(
    get,
    path = "/v1/resources/{id}",
    tag = "resources",
    params(("id" = String, Path, description = "The resource id (`res_…`)")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The archived bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, description = "1101 / 1102", body = EmptyEnvelope),
        (status = 404, description = "4004: no such resource", body = EmptyEnvelope),
        (status = 409, description = "4009: not archived (pending, expired, failed or deleted)", body = EmptyEnvelope),
    )
)]
pub async fn get_resource(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_resource_id(&id)?;
    let (row, size, stream) = archive::open(&state, tenant.id, id).await?;
    let content_type = row
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let filename = format!(
        "{id}-{}.{}",
        row.kind,
        extension(row.content_type.as_deref())
    );
    let mut resp = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::CACHE_CONTROL, "private, max-age=3600".to_owned()),
        ],
        Body::from_stream(stream),
    )
        .into_response();
    if let Some(sha) = &row.sha256 {
        let headers = resp.headers_mut();
        if let Ok(v) = format!("\"{sha}\"").parse() {
            headers.insert(header::ETAG, v);
        }
        if let Some(raw) = unhex(sha)
            && let Ok(v) = format!(
                "sha-256=:{}:",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
            .parse()
        {
            headers.insert("repr-digest", v);
        }
    }
    Ok(resp)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    s.len()
        .is_multiple_of(2)
        .then(|| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn hex_round_trips() {
        let raw = [0u8, 1, 0xab, 0xff];
        assert_eq!(
            unhex(&crate::domain::resources::hex(&raw)).unwrap(),
            raw.to_vec()
        );
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }
}
