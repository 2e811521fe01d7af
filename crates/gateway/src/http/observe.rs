//! The one middleware around every route (fallbacks included): it gives each request an id,
//! opens the request span, returns the id in `x-request-id`, and counts the request in the
//! HTTP metrics. Inside the span it runs the idempotency step and the request deadline around
//! the route. Also `GET /metrics`.
//!
//! One middleware rather than one per concern: each `from_fn` layer clones the service stack
//! below it and boxes its future on every request. Folding three into one saved about 5% of
//! the gateway's CPU per proxied `info` call (benchmark scenario 3).
//!
//! An incoming `x-request-id` is kept when it is printable ASCII of at most
//! [`MAX_REQUEST_ID_LEN`] characters, and replaced by a fresh UUIDv7 otherwise. tower-http's
//! request-id layers would not validate the incoming value, so this is done here, in the same
//! place that opens the span.
//!
//! The span (`request`) carries `request_id`, `method`, `route` (the matched template, never the
//! raw path), then `status`, and `tenant_id` / `session_id` once the [`Tenant`] extractor and
//! the session handlers know them (see [`record_tenant`], [`record_session`]).
//!
//! [`Tenant`]: super::extract::Tenant

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Extensions, HeaderName, HeaderValue};
use axum::middleware::{FromFnLayer, Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use tracing::Instrument;
use tracing::field::{Empty, display};

use super::AppState;
use crate::domain::ids::{SessionId, TenantId};
use crate::metrics::{self, MAX_TENANT_LABELS, TenantLabels};

/// The request id header, read and written.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest accepted incoming request id.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// The route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// The request's id, in the request extensions for handlers that want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The envelope code of an error answer, left in the response extensions by `ApiError` for
/// the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub i64);

/// Where the `Tenant` extractor leaves the authenticated tenant for the metrics.
#[derive(Debug, Clone, Default)]
struct TenantSlot(Arc<OnceLock<String>>);

/// What the middleware holds: the router's tenant label budget and the application state.
#[derive(Clone)]
pub struct Around(Arc<(TenantLabels, AppState)>);

type ObserveFn = fn(State<Around>, Request, Next) -> BoxFuture<'static, Response>;

/// The middleware as a layer; each router gets its own tenant label budget.
pub fn layer(state: AppState) -> FromFnLayer<ObserveFn, Around, (State<Around>, Request)> {
    let around = Around(Arc::new((TenantLabels::new(MAX_TENANT_LABELS), state)));
    metrics::install();
    let observe: ObserveFn = |around, req, next| Box::pin(observe(around, req, next));
    from_fn_with_state(around, observe)
}

/// Whether `value` may be used as a request id as sent.
pub fn valid_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value.iter().all(|b| (0x20..=0x7e).contains(b))
        && value.iter().any(|b| *b != b' ')
}

fn request_id(req: &Request) -> String {
    match req.headers().get(&X_REQUEST_ID) {
        Some(v) if valid_request_id(v.as_bytes()) => {
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        }
        sent => {
            let id = uuid::Uuid::now_v7().to_string();
            if let Some(bad) = sent {
                tracing::debug!(
                    request_id = %id,
                    sent_len = bad.len(),
                    "incoming x-request-id refused; replaced"
                );
            }
            id
        }
    }
}

async fn observe(State(around): State<Around>, mut req: Request, next: Next) -> Response {
    let (labels, state) = &*around.0;
    let started = Instant::now();
    let id = request_id(&req);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let method = metrics::method_label(req.method());
    let tenant = TenantSlot::default();
    req.extensions_mut().insert(tenant.clone());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method,
        route = %route,
        status = Empty,
        tenant_id = Empty,
        session_id = Empty,
        trace_id = Empty,
        otel.name = Empty,
        otel.kind = Empty,
    );
    if let Some(parent) = crate::telemetry::extract_context(req.headers()) {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        span.record("otel.name", format!("{} {route}", req.method()));
        span.record("otel.kind", "server");
        let _ = span.set_parent(parent);
        let trace_id = span.context().span().span_context().trace_id();
        span.record("trace_id", display(trace_id));
    }
    let inner = async |req| super::limits::within_deadline(state, req, next).await;
    let mut resp = super::idempotency::around(state, req, inner)
        .instrument(span.clone())
        .await;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    span.record("status", status);
    let code = resp.extensions().get::<ErrorCode>().map(|c| c.0);
    span.in_scope(|| {
        let latency_ms = elapsed.as_secs_f64() * 1e3;
        // Probes and scrapes come every few seconds; they stay out of the info log.
        if matches!(route.as_str(), "/livez" | "/readyz" | "/metrics") {
            tracing::debug!(status, latency_ms, "request finished");
        } else {
            tracing::info!(status, latency_ms, code, "request finished");
        }
    });
    let tenant = labels.label(tenant.0.get().map(String::as_str));
    metrics::http_request(&route, method, status, tenant, code, elapsed);
    if let Ok(value) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    resp
}

/// Notes the authenticated tenant: in the request span and for the request metrics.
pub fn record_tenant(extensions: &Extensions, tenant: TenantId) {
    tracing::Span::current().record("tenant_id", display(tenant));
    if let Some(slot) = extensions.get::<TenantSlot>() {
        let _ = slot.0.set(tenant.to_string());
    }
}

/// Notes the session a request names, in the request span.
pub fn record_session(session: SessionId) {
    tracing::Span::current().record("session_id", display(session));
}

/// The metrics in the Prometheus text format. The session gauges are counted in Postgres at
/// most every few seconds per process, on scrape.
pub async fn get_metrics(State(state): State<AppState>) -> Response {
    metrics::refresh_session_gauges(&state).await;
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        metrics::render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_must_be_printable_and_short() {
        assert!(valid_request_id(b"abc-123"));
        assert!(valid_request_id(b"a b"));
        assert!(valid_request_id(&[b'x'; MAX_REQUEST_ID_LEN]));
        assert!(!valid_request_id(&[b'x'; MAX_REQUEST_ID_LEN + 1]));
        assert!(!valid_request_id(b""));
        assert!(!valid_request_id(b"   "));
        assert!(!valid_request_id(b"a\tb"));
        assert!(!valid_request_id("é".as_bytes()));
    }
}
