//! The upstream calls.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use faceswap_wire::codes::detect as detect_codes;
use faceswap_wire::{
    Code, CreateRequest, DetectRequest, DetectResponse, SessionIdRequest, SourceImage,
    TokenRequest, TokenResponse, UpdateRequest,
};
use rand::Rng;

use super::auth::authorize;
use super::reply::{self, envelope, ok};
use crate::clock::unix_now;
use crate::detect::{self, DetectError};
use crate::fetch::{FetchError, fetch_image};
use crate::sessions::{NewSession, SessionError};
use crate::state::SimState;

type Body_ = Result<Bytes, BytesRejection>;

/// Most source faces a session takes at once.
const MAX_SOURCE_IMAGES: usize = 10;

macro_rules! require_auth {
    ($state:expr, $headers:expr) => {
        if let Err((code, msg)) = authorize(&$state, &$headers) {
            return envelope(code, msg);
        }
    };
}

macro_rules! parse_or_answer {
    ($body:expr) => {
        match reply::parse($body) {
            Ok(v) => v,
            Err(bad) => return bad.into_envelope(),
        }
    };
}

/// `POST /api/open/v3/getToken`
pub async fn get_token(State(state): State<Arc<SimState>>, body: Body_) -> Response {
    let req: TokenRequest = parse_or_answer!(body);
    if req.client_id.is_empty() {
        return envelope(Code::PARAM_ERROR, "clientId cannot be empty");
    }
    if req.client_secret.is_empty() {
        return envelope(Code::PARAM_ERROR, "clientSecret cannot be empty");
    }
    if req.client_id != state.account.client_id || req.client_secret != state.account.client_secret
    {
        return envelope(Code::TOKEN_INVALID, "invalid clientId or clientSecret");
    }
    let ttl = state.knobs().token_ttl_seconds;
    let (token, _exp) = state.tokens.issue(&req.client_id, unix_now(), ttl);
    state.tokens_issued.fetch_add(1, Ordering::Relaxed);
    Json(TokenResponse {
        code: Code::SUCCESS,
        msg: "success".to_owned(),
        token: Some(token),
        data: None,
    })
    .into_response()
}

/// `POST /detect` and `POST /interface/detect-api/detect_faces`
pub async fn detect(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Body_,
) -> Response {
    let started = Instant::now();
    let trx_id = crate::sessions::hex_id(&mut rand::rng());
    let fail = |code: i64, msg: String| Json(DetectResponse::error(code, msg, &trx_id));
    if let Err((code, msg)) = authorize(&state, &headers) {
        return fail(code.0, msg).into_response();
    }
    let req: DetectRequest = match reply::parse(body) {
        Ok(r) => r,
        Err(bad) => return (bad.status, fail(Code::PARAM_ERROR.0, bad.msg)).into_response(),
    };
    let limits = state.image_limits;
    let bytes = match (req.img.as_deref(), req.image_url.as_deref()) {
        (Some(img), _) if !img.trim().is_empty() => match decode_base64(img) {
            Ok(b) if b.len() > limits.max_bytes => {
                let msg = format!("img exceeds {} bytes", limits.max_bytes);
                return fail(detect_codes::IMAGE_TOO_LARGE, msg).into_response();
            }
            Ok(b) => b,
            Err(msg) => return fail(Code::PARAM_ERROR.0, msg).into_response(),
        },
        (_, Some(url)) if !url.trim().is_empty() => {
            match fetch_image(
                &state.http,
                url.trim(),
                limits.fetch_timeout,
                limits.max_bytes,
            )
            .await
            {
                Ok(b) => b,
                Err(e @ FetchError::Failed(_)) => {
                    return fail(detect_codes::IMAGE_FETCH_FAILED, e.to_string()).into_response();
                }
                Err(e @ FetchError::TooLarge(_)) => {
                    return fail(detect_codes::IMAGE_TOO_LARGE, e.to_string()).into_response();
                }
            }
        }
        _ => {
            return fail(
                Code::PARAM_ERROR.0,
                "img or image_url is required".to_owned(),
            )
            .into_response();
        }
    };
    let single = req.single_face;
    let want_crops = req.return_face_urls;
    let found = tokio::task::spawn_blocking(move || {
        let faces = detect::detect_faces(&bytes, single)?;
        let crops = if want_crops {
            detect::crop_faces(&bytes, &faces)?
        } else {
            Vec::new()
        };
        Ok((faces, crops))
    })
    .await
    .unwrap_or_else(|_| {
        Err(DetectError::Unreadable(
            "the image crashed the decoder".into(),
        ))
    });
    match found {
        Ok((faces, crops)) => {
            let (face_urls, face_urls_expires_at) = if want_crops {
                let expires_at = unix_now() + state.knobs().resource_retention_seconds;
                let crops = crops.into_iter().map(Bytes::from).collect();
                let mut resources = state.resources();
                resources.prune(unix_now());
                let urls = resources.mint_face_crops(&state.public_url, &trx_id, crops, expires_at);
                (urls, Some(expires_at as i64))
            } else {
                (Vec::new(), None)
            };
            Json(DetectResponse {
                error_code: detect_codes::SUCCESS,
                error_msg: "SUCCESS".to_owned(),
                landmarks: faces.iter().map(detect::landmarks).collect(),
                landmarks_str: faces.iter().map(detect::landmarks_str).collect(),
                region: faces
                    .iter()
                    .map(|f| [f.x, f.y, f.width, f.height])
                    .collect(),
                seconds: started.elapsed().as_secs_f64(),
                trx_id,
                face_urls,
                face_urls_expires_at,
            })
            .into_response()
        }
        Err(e) => {
            let mut answer = DetectResponse::error(e.code(), e.to_string(), &trx_id);
            answer.seconds = started.elapsed().as_secs_f64();
            Json(answer).into_response()
        }
    }
}

fn decode_base64(img: &str) -> Result<Vec<u8>, String> {
    // Accept `data:image/...;base64,` prefixes and line-wrapped base64, as browsers produce.
    let payload = match img.split_once(',') {
        Some((prefix, rest)) if prefix.starts_with("data:") => rest,
        _ => img,
    };
    let compact: String = payload
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("img is not valid base64: {e}"))
}

fn validate_sources(sources: &[SourceImage]) -> Result<(), String> {
    if sources.is_empty() {
        return Err("sourceImage cannot be empty".to_owned());
    }
    if sources.len() > MAX_SOURCE_IMAGES {
        return Err(format!(
            "sourceImage takes at most {MAX_SOURCE_IMAGES} faces, got {}",
            sources.len()
        ));
    }
    for (i, s) in sources.iter().enumerate() {
        if s.path.trim().is_empty() {
            return Err(format!("sourceImage[{i}].path cannot be empty"));
        }
        detect::parse_landmarks_str(&s.opts).map_err(|e| format!("sourceImage[{i}].{e}"))?;
    }
    Ok(())
}

fn session_error(e: SessionError) -> Response {
    let code = match e {
        SessionError::QuotaExceeded { .. } => Code::QUOTA_EXCEEDED,
        SessionError::NotFound | SessionError::Closed | SessionError::Failed => Code::PARAM_ERROR,
    };
    envelope(code, e.to_string())
}

/// `POST /api/open/v3/faceswap/live/create`
pub async fn create(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Body_,
) -> Response {
    require_auth!(state, headers);
    let req: CreateRequest = parse_or_answer!(body);
    if let Err(msg) = validate_sources(&req.source_image) {
        return envelope(Code::PARAM_ERROR, msg);
    }
    let knobs = state.knobs();
    let new = NewSession {
        source_image: req.source_image,
        queue_delay: Duration::from_millis(knobs.queue_delay_ms),
        fails: rand::rng().random_bool(knobs.failure_rate),
        max_open: knobs.max_open_sessions,
        created_at: unix_now(),
    };
    let now = Instant::now();
    let mut sessions = state.sessions();
    let app_id = sessions.app_id().to_owned();
    match sessions.create(new, now) {
        Ok(session) => {
            let wire = session.to_wire(now, &app_id);
            state.sessions_created.fetch_add(1, Ordering::Relaxed);
            ok(wire)
        }
        Err(e) => session_error(e),
    }
}

/// `POST /api/open/v3/faceswap/live/update`
pub async fn update(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Body_,
) -> Response {
    require_auth!(state, headers);
    let req: UpdateRequest = parse_or_answer!(body);
    if req.id.trim().is_empty() {
        return envelope(Code::PARAM_ERROR, "_id cannot be empty");
    }
    if let Err(msg) = validate_sources(&req.source_image) {
        return envelope(Code::PARAM_ERROR, msg);
    }
    let now = Instant::now();
    let mut sessions = state.sessions();
    let app_id = sessions.app_id().to_owned();
    match sessions.update(&req.id, req.source_image, now) {
        Ok(session) => ok(session.to_wire(now, &app_id)),
        Err(e) => session_error(e),
    }
}

/// `POST /api/open/v3/faceswap/live/close`
pub async fn close(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Body_,
) -> Response {
    require_auth!(state, headers);
    let req: SessionIdRequest = parse_or_answer!(body);
    if req.id.trim().is_empty() {
        return envelope(Code::PARAM_ERROR, "_id cannot be empty");
    }
    let knobs = state.knobs();
    let now = unix_now();
    let mut sessions = state.sessions();
    match sessions.close(&req.id, now, Instant::now()) {
        Ok(session) => {
            let minted = state.resources().mint_for_session(
                &state.public_url,
                &req.id,
                knobs.recording_bytes,
                now + knobs.resource_retention_seconds,
            );
            session.set_resources(minted);
            // Closed sessions and resources are kept only while downloadable, bounding memory.
            sessions.prune_closed_before(now.saturating_sub(knobs.resource_retention_seconds));
            state.resources().prune(now);
            envelope(Code::SUCCESS, "success")
        }
        Err(e) => session_error(e),
    }
}

/// `POST /api/open/v3/faceswap/live/info`
pub async fn info(State(state): State<Arc<SimState>>, headers: HeaderMap, body: Body_) -> Response {
    require_auth!(state, headers);
    let req: SessionIdRequest = parse_or_answer!(body);
    if req.id.trim().is_empty() {
        return envelope(Code::PARAM_ERROR, "_id cannot be empty");
    }
    let sessions = state.sessions();
    match sessions.get(&req.id) {
        Some(session) => ok(session.to_wire(Instant::now(), sessions.app_id())),
        None => session_error(SessionError::NotFound),
    }
}

/// `GET /resources/{path}`: a generated resource, until its retention runs out. While
/// `resource_fail_count` is above zero, a download answers 500 and counts it down.
pub async fn get_resource(
    State(state): State<Arc<SimState>>,
    Path(path): Path<String>,
) -> Response {
    let failing = {
        let mut knobs = state.knobs.write().unwrap_or_else(|e| e.into_inner());
        let failing = knobs.resource_fail_count > 0;
        knobs.resource_fail_count = knobs.resource_fail_count.saturating_sub(1);
        failing
    };
    state.stats.record_resource_download(failing);
    if failing {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected resource download failure",
        )
            .into_response();
    }
    let now = unix_now();
    let found = state.resources().get(&path, now);
    let Some(resource) = found else {
        return (StatusCode::NOT_FOUND, "resource not found or expired").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, resource.content_type.to_owned()),
            (header::CONTENT_LENGTH, resource.size().to_string()),
        ],
        Body::from_stream(resource.stream()),
    )
        .into_response()
}
