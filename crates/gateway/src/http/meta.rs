//! Signing keys and probes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::AppState;

/// The public keys that verify gateway tokens (JWKS).
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "meta",
    responses((status = 200, description = "JWK set", body = Object))
)]
pub async fn jwks(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.token_keys.jwks())
}

/// The process is alive.
#[utoipa::path(get, path = "/livez", tag = "meta", responses((status = 200, description = "Alive", body = String)))]
pub async fn livez() -> &'static str {
    "ok"
}

/// Readiness of each dependency.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ok` when every required dependency answers; `draining` during shutdown.
    pub status: &'static str,
    /// Postgres: `ok` or the error.
    pub postgres: String,
    /// Redis: `ok`, or `degraded: …` (not fatal: the gateway serves without it).
    pub redis: String,
}

/// Ready when Postgres answers and the process is not shutting down; Redis is reported but
/// not required.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready", body = Readiness),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let postgres = match sqlx::query("select 1").execute(&state.db).await {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("unavailable: {e}"),
    };
    let redis = match state.cache.ping().await {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("degraded: {e}"),
    };
    let draining = state.draining.load(std::sync::atomic::Ordering::SeqCst);
    let ready = postgres == "ok" && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: if draining {
                "draining"
            } else if ready {
                "ok"
            } else {
                "unavailable"
            },
            postgres,
            redis,
        }),
    )
}
