//! Face detection, forwarded to the upstream. The body is passed through untouched (it can be a
//! 14 MB base64 image); only the fields we must check are read, borrowing from the body.

use std::borrow::Cow;

use axum::http::StatusCode;
use bytes::Bytes;
use faceswap_wire::codes::detect as codes;
use serde::Deserialize;

use crate::http::AppState;
use crate::http::error::ApiError;

#[derive(Deserialize)]
struct DetectProbe<'a> {
    #[serde(default)]
    #[allow(dead_code)] // read only to refuse a non-boolean before the upstream sees it
    single_face: Option<bool>,
    #[serde(default, borrow)]
    image_url: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    img: Option<Cow<'a, str>>,
}

/// What the tenant gets: the upstream's status-mapped answer, body untouched.
pub struct Detected {
    /// HTTP status for the tenant.
    pub status: StatusCode,
    /// The upstream's JSON.
    pub body: Bytes,
}

/// The HTTP status of a detection answer by its `error_code`.
pub fn status_for(error_code: i64) -> StatusCode {
    match error_code {
        codes::SUCCESS => StatusCode::OK,
        1003 => StatusCode::BAD_REQUEST,
        codes::IMAGE_UNREADABLE
        | codes::NO_FACE
        | codes::IMAGE_FETCH_FAILED
        | codes::IMAGE_TOO_LARGE
        | codes::IMAGE_TOO_SMALL => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// Checks the request, then forwards it with the upstream token.
pub async fn detect(state: &AppState, body: Bytes) -> Result<Detected, ApiError> {
    let probe: DetectProbe<'_> = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    let has_img = probe.img.as_deref().is_some_and(|s| !s.trim().is_empty());
    let url = probe
        .image_url
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    match (has_img, url) {
        (false, None) => return Err(ApiError::BadRequest("img or image_url is required".into())),
        (false, Some(url)) => {
            state.ssrf.check(url).await?;
        }
        (true, _) => {}
    }
    drop(probe);
    let outcome = state
        .upstream_tokens
        .with_token(|token| {
            let upstream = state.upstream.clone();
            let body = body.clone();
            async move { upstream.detect(&token, body).await }
        })
        .await?;
    Ok(Detected {
        status: status_for(outcome.error_code),
        body: outcome.body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_outcomes_map_to_statuses() {
        assert_eq!(status_for(0), StatusCode::OK);
        assert_eq!(status_for(1003), StatusCode::BAD_REQUEST);
        assert_eq!(status_for(codes::NO_FACE), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            status_for(codes::IMAGE_FETCH_FAILED),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(status_for(9999), StatusCode::BAD_GATEWAY);
    }
}
