//! The HTTP surface: one file per resource, each with its handlers; this module builds the
//! router and the OpenAPI document from the same registrations.

pub mod admin;
mod demo;
mod detect;
mod doc_common;
pub mod error;
mod events;
pub mod extract;
mod idempotency;
pub mod limits;
mod live;
mod meta;
pub mod observe;
pub mod resources;
mod sessions;
mod signing_keys;
mod token;
mod webhooks;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use faceswap_upstream::UpstreamClient;
use faceswap_upstream::ssrf::SsrfGuard;
use faceswap_wire::SourceImage;
use sqlx::PgPool;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::error::ApiError;
use crate::auth::api_keys::ApiKeyCache;
use crate::auth::jwt::TokenKeys;
use crate::cache::Cache;
use crate::upstream_token::UpstreamTokens;

/// Settings the handlers read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Request body cap.
    pub max_body_bytes: usize,
    /// Body caps per route and request deadlines.
    pub limits: limits::HttpLimits,
    /// First delay of an upstream close retry.
    pub close_retry_base: std::time::Duration,
    /// How long a claim on a session lasts.
    pub lease: std::time::Duration,
    /// How long an idempotency key holds its answer.
    pub idempotency_ttl: std::time::Duration,
}

/// Everything the handlers share, behind one reference count: every request clones the state
/// (extractors, middleware), and one atomic increment costs less than one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state of a process.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    /// Postgres.
    pub db: PgPool,
    /// Redis.
    pub cache: Cache,
    /// The upstream API.
    pub upstream: UpstreamClient,
    /// The upstream token, shared through Redis.
    pub upstream_tokens: Arc<UpstreamTokens>,
    /// The gateway's token keys.
    pub token_keys: Arc<TokenKeys>,
    /// Recently verified API keys.
    pub api_keys: Arc<ApiKeyCache>,
    /// The URL guard.
    pub ssrf: Arc<SsrfGuard>,
    /// Settings.
    pub settings: Arc<Settings>,
    /// Set on shutdown: `/readyz` answers 503 so load balancers stop sending.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Revoked credentials and suspended tenants.
    pub revocations: Arc<crate::auth::revocation::Revocations>,
    /// Admin API credentials.
    pub admins: Arc<Vec<crate::auth::admin::AdminToken>>,
    /// Object storage and the archiver's download client.
    pub archive: Arc<crate::archive::Archive>,
    /// Per-tenant request rates.
    pub rate_limits: Arc<crate::rate_limit::RateLimiter>,
    /// Open sessions read recently (filled only while change announcements are followed).
    pub session_cache: Arc<crate::session_cache::SessionCache>,
    /// Activity on sessions served from that cache, not yet written.
    pub activity: Arc<crate::activity::PendingActivity>,
}

impl AppState {
    /// Refuses source image URLs the upstream must not fetch (see
    /// [`SsrfGuard::check_upstream_fetched`]: names are resolved, concurrently and briefly,
    /// and a name that does not resolve from here passes).
    pub async fn ssrf_check_sources(&self, sources: &[SourceImage]) -> Result<(), ApiError> {
        let paths: Vec<&str> = sources.iter().map(|s| s.path.trim()).collect();
        self.ssrf
            .check_all_upstream_fetched(&paths)
            .await
            .map(drop)
            .map_err(|(i, e)| {
                ApiError::BadRequest(e.message_for(&format!("sourceImage[{i}].path")))
            })
    }
}

/// The auth schemes the document refers to.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A gateway token from getToken, or an API key (`fsk_…`)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "An API key (`fsk_…`) or a gateway token; Authorization wins when both are sent",
            ))),
        );
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An admin token from GATEWAY_ADMIN_TOKENS (never a tenant token)",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    modifiers(&SecuritySchemes),
    info(
        title = "Live Face Swap gateway",
        description = "A multi-tenant, drop-in gateway for the Live Face Swap API."
    ),
    tags(
        (name = "token", description = "Client credentials for gateway tokens"),
        (name = "detect", description = "Face detection"),
        (name = "live", description = "Live face swap sessions (drop-in)"),
        (name = "sessions", description = "Gateway extensions for sessions and usage"),
        (name = "events", description = "Session events: SSE stream and signed webhooks"),
        (name = "admin", description = "Operators: tenants, credentials, usage, sessions (admin credential)"),
        (name = "resources", description = "Generated resources, archived to object storage"),
        (name = "meta", description = "Keys and probes"),
    )
)]
struct ApiDoc;

/// Probes, served by every role.
fn probe_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(meta::livez))
        .routes(routes!(meta::readyz))
        // Prometheus scrapes, not tenants: kept out of the OpenAPI document.
        .route("/metrics", axum::routing::get(observe::get_metrics))
}

/// Every route, registered with its documentation.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(probe_routes())
        .routes(routes!(token::get_token))
        .routes(routes!(detect::detect))
        .routes(routes!(detect::detect_faces))
        .routes(routes!(live::create_session))
        .routes(routes!(live::update_session))
        .routes(routes!(live::close_session))
        .routes(routes!(live::session_info))
        .routes(routes!(sessions::list_sessions))
        .routes(routes!(sessions::heartbeat_session))
        .routes(routes!(sessions::get_usage))
        .routes(routes!(events::stream_events))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(webhooks::delete_webhook))
        .routes(routes!(resources::list_session_resources))
        .routes(routes!(resources::list_resources))
        .routes(routes!(resources::get_resource))
        .routes(routes!(meta::jwks))
        .routes(routes!(admin::create_tenant, admin::list_tenants))
        .routes(routes!(admin::get_tenant, admin::update_tenant))
        .routes(routes!(admin::suspend_tenant))
        .routes(routes!(admin::resume_tenant))
        .routes(routes!(admin::list_credentials, admin::issue_credential))
        .routes(routes!(admin::revoke_credential))
        .routes(routes!(admin::rotate_credential))
        .routes(routes!(admin::usage_report))
        .routes(routes!(admin::admin_list_sessions))
        .routes(routes!(admin::admin_close_session))
        .routes(routes!(admin::audit_log))
        .routes(routes!(signing_keys::list_signing_keys))
        .routes(routes!(signing_keys::rotate_signing_key))
}

/// The OpenAPI document, built without any I/O.
pub fn openapi() -> utoipa::openapi::OpenApi {
    split(routes()).1
}

/// The router and its document, with the answers every tenant route shares (they can only be
/// added once every route is registered).
fn split(routes: OpenApiRouter<AppState>) -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = routes.split_for_parts();
    utoipa::Modify::modify(&doc_common::CommonAnswers, &mut doc);
    (router, doc)
}

/// The application router: the whole API, or only the probes (worker processes).
pub fn router(state: AppState, serve_api: bool) -> axum::Router {
    let max_body = state.settings.max_body_bytes;
    let (router, doc) = split(if serve_api { routes() } else { probe_routes() });
    let router = if serve_api {
        // Swagger UI's files are compiled into the binary: /docs works offline.
        router
            .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", doc))
            .merge(demo::routes())
    } else {
        router
    };
    router
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(observe::layer(state.clone()))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_openapi_document_matches_the_code() {
        let generated = super::openapi().to_pretty_json().unwrap();
        let committed = include_str!("../../../../openapi/openapi.json");
        assert!(
            committed.trim_end() == generated.trim_end(),
            "openapi/openapi.json is stale: run `faceswap-gateway openapi > openapi/openapi.json`"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_with_both_auth_schemes() {
        let doc: serde_json::Value = serde_json::to_value(super::openapi()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["api_key"]["name"], "x-api-key");
    }
}
