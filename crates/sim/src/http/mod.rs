//! The simulator's HTTP surface: the upstream API, its resources, and the `/sim/*` controls.

mod api;
mod auth;
mod control;
mod middleware;
mod reply;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use faceswap_wire::paths;

use crate::state::SimState;

/// The whole router.
pub fn router(state: Arc<SimState>, max_body_bytes: usize) -> Router {
    let upstream = Router::new()
        .route(paths::GET_TOKEN, post(api::get_token))
        .route(paths::DETECT, post(api::detect))
        .route(paths::DETECT_FACES, post(api::detect))
        .route(paths::LIVE_CREATE, post(api::create))
        .route(paths::LIVE_UPDATE, post(api::update))
        .route(paths::LIVE_CLOSE, post(api::close))
        .route(paths::LIVE_INFO, post(api::info))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::count_and_inject_faults,
        ));
    Router::new()
        .merge(upstream)
        .route("/resources/{*path}", get(api::get_resource))
        .route(
            "/sim/config",
            get(control::get_config).post(control::set_config),
        )
        .route("/sim/stats", get(control::get_stats))
        .route("/sim/expire-tokens", post(control::expire_tokens))
        .route("/sim/sessions/{id}/fail", post(control::fail_session))
        .route("/sim/health", get(|| async { "ok" }))
        .fallback(reply::not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(middleware::log_request))
        .with_state(state)
}
