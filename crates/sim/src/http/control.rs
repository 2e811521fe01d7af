//! `/sim/*`: run-time settings, statistics and targeted faults, for tests and benchmarks.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use faceswap_wire::{Code, Envelope};

use super::reply;
use crate::config::Knobs;
use crate::state::SimState;
use crate::stats::StatsReport;

/// `GET /sim/config`
pub async fn get_config(State(state): State<Arc<SimState>>) -> Json<Knobs> {
    Json(state.knobs())
}

/// `POST /sim/config`: changes the settings named in the body, all or none.
pub async fn set_config(
    State(state): State<Arc<SimState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let patch: serde_json::Value = match reply::parse(body) {
        Ok(p) => p,
        Err(bad) => return bad.into_envelope(),
    };
    let mut knobs = state.knobs.write().unwrap_or_else(|e| e.into_inner());
    match knobs.apply(patch) {
        Ok(()) => {
            tracing::info!(config = ?*knobs, "simulator settings changed");
            Json(knobs.clone()).into_response()
        }
        Err(msg) => (
            StatusCode::BAD_REQUEST,
            Json(Envelope::error(Code::PARAM_ERROR, msg)),
        )
            .into_response(),
    }
}

/// `GET /sim/stats`
pub async fn get_stats(State(state): State<Arc<SimState>>) -> Json<StatsReport> {
    Json(StatsReport {
        calls: state.stats.calls(),
        open_sessions: state.sessions().open_ids(),
        sessions_created: state.sessions_created.load(Ordering::Relaxed),
        tokens_issued: state.tokens_issued.load(Ordering::Relaxed),
        faults: state.stats.faults(),
        resources: state.stats.resources(),
        last_traceparent: state.stats.last_traceparent(),
        connections: state.stats.connections(),
    })
}

/// `POST /sim/expire-tokens`: every token issued so far now counts as expired.
pub async fn expire_tokens(State(state): State<Arc<SimState>>) -> Response {
    state.tokens.expire_all();
    tracing::info!("all issued tokens expired");
    reply::envelope(Code::SUCCESS, "all issued tokens have expired")
}

/// `POST /sim/sessions/{id}/fail`: the session turns failed (status 4) now.
pub async fn fail_session(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    match state.sessions().fail(&id, Instant::now()) {
        Ok(()) => reply::envelope(Code::SUCCESS, "session failed"),
        Err(e) => (
            StatusCode::NOT_FOUND,
            Json(Envelope::error(Code::PARAM_ERROR, e.to_string())),
        )
            .into_response(),
    }
}
