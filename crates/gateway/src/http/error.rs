//! The one error type of the HTTP layer, and the one place that picks a status and a code.

use std::sync::Arc;

use axum::Json;
use axum::http::header::{CONNECTION, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use faceswap_upstream::{UpstreamError, ssrf::SsrfError};
use faceswap_wire::{Code, DetectResponse, Envelope};

use crate::domain::quota::QuotaError;

/// Everything a tenant call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter is missing, empty or malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The body is over the limit.
    #[error("request body exceeds this endpoint's limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The client did not send its body within the body read timeout.
    #[error("the request body was not received within {} ms", .0.as_millis())]
    BodyTimeout(std::time::Duration),
    /// The request did not produce an answer within the request timeout.
    #[error("the request did not complete within {} ms; retry shortly", .0.as_millis())]
    Deadline(std::time::Duration),
    /// No credentials were sent.
    #[error("authorization cannot be empty")]
    AuthMissing,
    /// The credentials are wrong, expired or revoked.
    #[error("invalid authorization: {0}")]
    AuthInvalid(&'static str),
    /// The tenant is suspended.
    #[error("the tenant is suspended; contact the operator")]
    Suspended,
    /// The admin API refused the credential (or is disabled).
    #[error("{0}")]
    AdminAuth(&'static str),
    /// No such object (named by the field) for this tenant; another tenant's looks the same.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// No such route.
    #[error("no such endpoint")]
    NoRoute,
    /// The route exists, the method does not.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// The session is not in a state that allows the call.
    #[error("{0}")]
    Conflict(String),
    /// The tenant's quota is spent.
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// An `Idempotency-Key` reused with a different request.
    #[error(
        "Idempotency-Key was already used with a different request; use a new key for a new request"
    )]
    IdempotencyMismatch,
    /// The first request with this `Idempotency-Key` is still running.
    #[error("a request with this Idempotency-Key is still in progress; retry shortly")]
    IdempotencyInProgress,
    /// The tenant sent more requests than its rate allows.
    #[error("rate limit exceeded: retry after {} s", retry_after_seconds(*retry_after))]
    RateLimited {
        /// When the next request would be allowed.
        retry_after: std::time::Duration,
    },
    /// The URL points somewhere the upstream must not be sent.
    #[error(transparent)]
    Ssrf(#[from] SsrfError),
    /// The upstream failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Postgres failed (shared: one failed read can fail every call that waited for it).
    #[error("database error")]
    Database(#[source] Arc<sqlx::Error>),
    /// Anything else.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(Arc::new(e))
    }
}

impl ApiError {
    /// The HTTP status, envelope code and tenant-facing message. Nothing else in the crate
    /// chooses a code.
    pub fn parts(&self) -> (StatusCode, Code, String) {
        use StatusCode as S;
        match self {
            Self::BadRequest(_) | Self::Ssrf(_) => {
                (S::BAD_REQUEST, Code::PARAM_ERROR, self.to_string())
            }
            Self::PayloadTooLarge(_) => (
                S::PAYLOAD_TOO_LARGE,
                Code::PAYLOAD_TOO_LARGE,
                self.to_string(),
            ),
            Self::BodyTimeout(_) => (S::REQUEST_TIMEOUT, Code::REQUEST_TIMEOUT, self.to_string()),
            Self::Deadline(_) => (
                S::SERVICE_UNAVAILABLE,
                Code::SERVICE_UNAVAILABLE,
                self.to_string(),
            ),
            Self::AuthMissing => (S::UNAUTHORIZED, Code::AUTH_MISSING, self.to_string()),
            Self::Suspended => (S::FORBIDDEN, Code::TENANT_SUSPENDED, self.to_string()),
            Self::AdminAuth(_) => (S::UNAUTHORIZED, Code::TOKEN_INVALID, self.to_string()),
            Self::AuthInvalid(_) => (S::UNAUTHORIZED, Code::TOKEN_INVALID, self.to_string()),
            Self::NotFound(_) | Self::NoRoute => (S::NOT_FOUND, Code::NOT_FOUND, self.to_string()),
            Self::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                Code::METHOD_NOT_ALLOWED,
                self.to_string(),
            ),
            Self::Conflict(_) => (S::CONFLICT, Code::CONFLICT, self.to_string()),
            Self::Quota(_) => (S::TOO_MANY_REQUESTS, Code::QUOTA_EXCEEDED, self.to_string()),
            Self::IdempotencyMismatch => {
                (S::UNPROCESSABLE_ENTITY, Code::PARAM_ERROR, self.to_string())
            }
            Self::IdempotencyInProgress => (S::CONFLICT, Code::CONFLICT, self.to_string()),
            Self::RateLimited { .. } => {
                (S::TOO_MANY_REQUESTS, Code::RATE_LIMITED, self.to_string())
            }
            Self::Upstream(e) => upstream_parts(e),
            Self::Database(_) => (
                S::SERVICE_UNAVAILABLE,
                Code::SERVICE_UNAVAILABLE,
                "the gateway's database is unavailable; retry shortly".to_owned(),
            ),
            Self::Internal(_) => (
                S::INTERNAL_SERVER_ERROR,
                Code::INTERNAL,
                "internal error".to_owned(),
            ),
        }
    }

    /// How long the client should wait before retrying, sent as `Retry-After`.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::RateLimited { retry_after } => Some(*retry_after),
            Self::Upstream(UpstreamError::Busy { .. }) => Some(UPSTREAM_BUSY_RETRY_AFTER),
            Self::Upstream(e) => e.retry_after(),
            Self::IdempotencyInProgress => Some(std::time::Duration::from_secs(1)),
            _ => None,
        }
    }

    /// The status, the code for metrics and the `Retry-After` header, around `body`.
    fn respond(self, body: impl IntoResponse) -> Response {
        let (status, code, _) = self.parts();
        self.log(status);
        let metric = axum::Extension(super::observe::ErrorCode(code.0));
        let mut resp = (status, metric, body).into_response();
        if let Some(wait) = self.retry_after() {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_seconds(wait)));
        }
        if self.leaves_body_unread() {
            // The rest of the body would be read as the next request: the connection ends
            // here, and the client must not send another on it.
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    /// Answered before the request body was read to its end.
    fn leaves_body_unread(&self) -> bool {
        matches!(self, Self::PayloadTooLarge(_) | Self::BodyTimeout(_))
    }

    fn log(&self, status: StatusCode) {
        if status.is_server_error() {
            tracing::error!(error = %error_chain(self), status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "request refused");
        }
    }

    /// The answer in the detection shape (`error_code`, `error_msg`).
    pub fn into_detect_response(self) -> Response {
        let (_, code, msg) = self.parts();
        self.respond(Json(DetectResponse::error(code.0, msg, "")))
    }
}

/// `Retry-After` of a call refused because too many upstream calls were in flight: slots free
/// up within one upstream call's time, usually far sooner.
const UPSTREAM_BUSY_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Upstream failures, classified once: the upstream's quota stays 1104, its parameter
/// complaints are the tenant's, a timeout is 504, calls held back by the breaker or the
/// concurrency bound are 503 (with `Retry-After`), and everything else is 502.
fn upstream_parts(e: &UpstreamError) -> (StatusCode, Code, String) {
    use StatusCode as S;
    match e {
        UpstreamError::CircuitOpen { retry_after, .. } => (
            S::SERVICE_UNAVAILABLE,
            Code::UPSTREAM_CIRCUIT_OPEN,
            format!(
                "the upstream is failing, so calls to it are paused; retry after {} s",
                retry_after_seconds(*retry_after)
            ),
        ),
        UpstreamError::Busy { .. } => (
            S::SERVICE_UNAVAILABLE,
            Code::UPSTREAM_BUSY,
            format!(
                "too many upstream calls in flight; retry after {} s",
                retry_after_seconds(UPSTREAM_BUSY_RETRY_AFTER)
            ),
        ),
        UpstreamError::Business { code, msg, .. } if *code == Code::QUOTA_EXCEEDED => (
            S::TOO_MANY_REQUESTS,
            Code::QUOTA_EXCEEDED,
            format!("insufficient quota upstream: {msg}"),
        ),
        UpstreamError::Business { code, msg, .. } if *code == Code::PARAM_ERROR => {
            (S::BAD_REQUEST, Code::PARAM_ERROR, msg.clone())
        }
        UpstreamError::Timeout { .. } => (
            S::GATEWAY_TIMEOUT,
            Code::UPSTREAM_TIMEOUT,
            "the upstream did not answer in time".to_owned(),
        ),
        _ => (
            S::BAD_GATEWAY,
            Code::UPSTREAM_UNAVAILABLE,
            "the upstream is unavailable; retry shortly".to_owned(),
        ),
    }
}

/// Whole seconds for `Retry-After`, rounded up so a client that waits them is let through.
pub fn retry_after_seconds(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// `err` and its sources, joined.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (_, code, msg) = self.parts();
        self.respond(Json(Envelope::error(code, msg)))
    }
}

#[cfg(test)]
mod tests {
    use faceswap_upstream::Call;

    use super::*;

    #[test]
    fn answers_sent_before_the_body_was_read_close_the_connection() {
        let closes = |e: ApiError| {
            e.into_response()
                .headers()
                .get(CONNECTION)
                .is_some_and(|v| v == "close")
        };
        assert!(closes(ApiError::PayloadTooLarge(10)));
        assert!(closes(ApiError::BodyTimeout(
            std::time::Duration::from_secs(1)
        )));
        assert!(!closes(ApiError::BadRequest("x".into())));
        assert!(!closes(ApiError::AuthMissing));
    }

    #[test]
    fn each_error_has_its_documented_status_and_code() {
        let cases: Vec<(ApiError, u16, i64)> = vec![
            (ApiError::BadRequest("x".into()), 400, 1003),
            (ApiError::PayloadTooLarge(10), 413, 4013),
            (
                ApiError::BodyTimeout(std::time::Duration::from_secs(1)),
                408,
                4008,
            ),
            (
                ApiError::Deadline(std::time::Duration::from_secs(1)),
                503,
                5003,
            ),
            (ApiError::AuthMissing, 401, 1102),
            (ApiError::AuthInvalid("expired"), 401, 1101),
            (ApiError::NotFound("session"), 404, 4004),
            (ApiError::Conflict("closed".into()), 409, 4009),
            (
                ApiError::Quota(QuotaError::ConcurrentLimit { active: 1, max: 1 }),
                429,
                1104,
            ),
            (
                ApiError::Upstream(UpstreamError::Business {
                    call: Call::Create,
                    code: Code::QUOTA_EXCEEDED,
                    msg: "spent".into(),
                }),
                429,
                1104,
            ),
            (
                ApiError::Upstream(UpstreamError::Timeout { call: Call::Info }),
                504,
                5004,
            ),
            (
                ApiError::Upstream(UpstreamError::Connect {
                    call: Call::Info,
                    message: "refused".into(),
                }),
                502,
                5002,
            ),
            (
                ApiError::Upstream(UpstreamError::Business {
                    call: Call::Info,
                    code: Code::TOKEN_INVALID,
                    msg: "bad".into(),
                }),
                502,
                5002,
            ),
            (ApiError::Internal(anyhow::anyhow!("boom")), 500, 5000),
            (
                ApiError::Upstream(UpstreamError::CircuitOpen {
                    call: Call::Detect,
                    host: "up:80".into(),
                    retry_after: std::time::Duration::from_millis(2500),
                }),
                503,
                5005,
            ),
            (
                ApiError::Upstream(UpstreamError::Busy { call: Call::Info }),
                503,
                5006,
            ),
            (
                ApiError::RateLimited {
                    retry_after: std::time::Duration::from_millis(1),
                },
                429,
                1005,
            ),
            (ApiError::IdempotencyMismatch, 422, 1003),
            (ApiError::IdempotencyInProgress, 409, 4009),
        ];
        for (err, status, code) in cases {
            let (s, c, msg) = err.parts();
            assert_eq!((s.as_u16(), c.0), (status, code), "{err:?}");
            assert!(!msg.is_empty());
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_reaches_the_header() {
        use std::time::Duration;
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
        let resp = ApiError::RateLimited {
            retry_after: Duration::from_millis(1500),
        }
        .into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[RETRY_AFTER], "2");
    }

    #[test]
    fn calls_held_back_upstream_say_when_to_come_back() {
        use std::time::Duration;
        let open = ApiError::Upstream(UpstreamError::CircuitOpen {
            call: Call::Create,
            host: "up:80".into(),
            retry_after: Duration::from_millis(2500),
        });
        assert_eq!(open.retry_after(), Some(Duration::from_millis(2500)));
        assert!(
            open.parts().2.contains("retry after 3 s"),
            "{}",
            open.parts().2
        );
        let resp = open.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[RETRY_AFTER], "3");
        let busy = ApiError::Upstream(UpstreamError::Busy { call: Call::Info });
        assert_eq!(busy.into_response().headers()[RETRY_AFTER], "1");
        let other = ApiError::Upstream(UpstreamError::Timeout { call: Call::Info });
        assert_eq!(other.retry_after(), None);
    }

    #[test]
    fn internal_details_never_reach_the_message() {
        let (_, _, msg) = ApiError::Internal(anyhow::anyhow!("password=hunter2")).parts();
        assert_eq!(msg, "internal error");
    }
}
