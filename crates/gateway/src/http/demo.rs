//! `/demo`: a browser console for tenants, compiled into the binary.
//!
//! The page calls the tenant API from the browser with the tenant's own credentials; the
//! gateway only serves three static files. They are plain routes, kept out of the OpenAPI
//! document: they are not part of the API.

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

/// Everything comes from the gateway itself; the photo is drawn from a `blob:` URL and
/// `data:` covers canvas exports. No inline script or style, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("demo/index.html");
const DEMO_JS: &str = include_str!("demo/demo.js");
const DEMO_CSS: &str = include_str!("demo/demo.css");

/// The console's routes; unknown `/demo/…` paths fall through to the envelope 404.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/demo",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/demo/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/demo/demo.js",
            get(|| async { asset(DEMO_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/demo/demo.css",
            get(|| async { asset(DEMO_CSS, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            // The files change only with the binary; a reload after an upgrade must see it.
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
