//! Request logging and fault injection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use faceswap_wire::{Code, DetectResponse, Envelope};
use rand::Rng;

use crate::state::SimState;
use crate::stats::{Call, Fault};

/// The code of an injected upstream error, answered with HTTP 503.
pub const INJECTED_ERROR: Code = Code(1503);

/// One log line per request.
pub async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    tracing::info!(
        %method,
        path,
        status = resp.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "request"
    );
    resp
}

/// Counts the call, then applies the configured latency and, by chance, one fault.
pub async fn count_and_inject_faults(
    State(state): State<Arc<SimState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(call) = Call::from_path(req.uri().path()) else {
        return next.run(req).await;
    };
    state.stats.record_call(call);
    if let Some(tp) = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        state.stats.record_traceparent(tp);
    }
    let knobs = state.knobs();
    if knobs.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(knobs.latency_ms)).await;
    }
    let fault = {
        let mut rng = rand::rng();
        if rng.random_bool(knobs.drop_rate) {
            Some(Fault::Drop)
        } else if rng.random_bool(knobs.timeout_rate) {
            Some(Fault::Timeout)
        } else if rng.random_bool(knobs.error_rate) {
            Some(Fault::Error)
        } else {
            None
        }
    };
    let Some(fault) = fault else {
        return next.run(req).await;
    };
    state.stats.record_fault(fault);
    match fault {
        Fault::Drop => dropped_connection(),
        Fault::Timeout => {
            // Long enough for any caller's timeout; the connection closes when the caller leaves.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Fault::Error => {
            let msg = "service unavailable (injected fault)";
            let body = if call.is_detect() {
                Json(DetectResponse::error(INJECTED_ERROR.0, msg, "")).into_response()
            } else {
                Json(Envelope::error(INJECTED_ERROR, msg)).into_response()
            };
            (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
        }
    }
}

/// A response whose body fails before its first byte: the server aborts the connection, and
/// the caller sees it reset without a complete answer.
fn dropped_connection() -> Response {
    let failing = futures_util::stream::once(async {
        Err::<bytes::Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection dropped (injected fault)",
        ))
    });
    Response::new(Body::from_stream(failing))
}
