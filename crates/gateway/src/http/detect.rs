//! `POST /detect` and `POST /interface/detect-api/detect_faces`

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use faceswap_wire::{DetectRequest, DetectResponse};

use super::AppState;
use super::error::ApiError;
use super::extract::{Body, Tenant};
use crate::service;

async fn forward(
    state: AppState,
    tenant: Result<Tenant, ApiError>,
    body: Result<Body, ApiError>,
) -> Response {
    let result = async {
        let tenant = tenant?;
        let Body(bytes) = body?;
        let detected = service::detect::detect(&state, bytes).await?;
        // Face crop URLs in the answer are recorded for archiving; the body passes untouched.
        service::archive::record_detect_answer(&state, tenant.id, &detected.body).await;
        Ok::<_, ApiError>(detected)
    }
    .await;
    match result {
        Ok(detected) => (
            detected.status,
            [(CONTENT_TYPE, "application/json")],
            detected.body,
        )
            .into_response(),
        Err(e) => e.into_detect_response(),
    }
}

/// Detect faces in an image (URL or base64).
///
/// Answers in the detection shape: `error_code` 0 with `region`, `landmarks` and
/// `landmarks_str` per face, or a non-zero `error_code` with `error_msg`. `image_url` may not
/// point at private, loopback or link-local addresses.
#[utoipa::path(
    post,
    path = "/detect",
    tag = "detect",
    request_body = DetectRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Faces found", body = DetectResponse),
        (status = 400, description = "1003: no image, bad JSON, or a refused image_url", body = DetectResponse),
        (status = 401, description = "1101 / 1102", body = DetectResponse),
        (status = 413, description = "4013: body too large", body = DetectResponse),
        (status = 422, description = "2001 unreadable, 2002 no face, 2003 fetch failed, 2004 too large, 2005 too small", body = DetectResponse),
        (status = 502, description = "5002: upstream unavailable", body = DetectResponse),
        (status = 504, description = "5004: upstream timeout", body = DetectResponse),
    )
)]
pub async fn detect(
    State(state): State<AppState>,
    tenant: Result<Tenant, ApiError>,
    body: Result<Body, ApiError>,
) -> Response {
    forward(state, tenant, body).await
}

/// Detect faces: the same call on the provider's detect-host path.
#[utoipa::path(
    post,
    path = "/interface/detect-api/detect_faces",
    tag = "detect",
    request_body = DetectRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Faces found", body = DetectResponse),
        (status = 400, description = "1003", body = DetectResponse),
        (status = 401, description = "1101 / 1102", body = DetectResponse),
        (status = 422, description = "No face or unreadable image", body = DetectResponse),
    )
)]
pub async fn detect_faces(
    State(state): State<AppState>,
    tenant: Result<Tenant, ApiError>,
    body: Result<Body, ApiError>,
) -> Response {
    forward(state, tenant, body).await
}
