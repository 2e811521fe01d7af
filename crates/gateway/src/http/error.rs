//! The one error type of the HTTP layer, and the one place that picks a status and a code.

use axum::Json;
use axum::http::StatusCode;
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
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
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
    /// The URL points somewhere the upstream must not be sent.
    #[error(transparent)]
    Ssrf(#[from] SsrfError),
    /// The upstream failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Postgres failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Anything else.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
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

    fn log(&self, status: StatusCode) {
        if status.is_server_error() {
            tracing::error!(error = %error_chain(self), status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "request refused");
        }
    }

    /// The answer in the detection shape (`error_code`, `error_msg`).
    pub fn into_detect_response(self) -> Response {
        let (status, code, msg) = self.parts();
        self.log(status);
        let metric = axum::Extension(super::observe::ErrorCode(code.0));
        (status, metric, Json(DetectResponse::error(code.0, msg, ""))).into_response()
    }
}

/// Upstream failures, classified once: the upstream's quota stays 1104, its parameter
/// complaints are the tenant's, a timeout is 504 and everything else is 502.
fn upstream_parts(e: &UpstreamError) -> (StatusCode, Code, String) {
    use StatusCode as S;
    match e {
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
        let (status, code, msg) = self.parts();
        self.log(status);
        let metric = axum::Extension(super::observe::ErrorCode(code.0));
        (status, metric, Json(Envelope::error(code, msg))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use faceswap_upstream::Call;

    use super::*;

    #[test]
    fn each_error_has_its_documented_status_and_code() {
        let cases: Vec<(ApiError, u16, i64)> = vec![
            (ApiError::BadRequest("x".into()), 400, 1003),
            (ApiError::PayloadTooLarge(10), 413, 4013),
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
        ];
        for (err, status, code) in cases {
            let (s, c, msg) = err.parts();
            assert_eq!((s.as_u16(), c.0), (status, code), "{err:?}");
            assert!(!msg.is_empty());
        }
    }

    #[test]
    fn internal_details_never_reach_the_message() {
        let (_, _, msg) = ApiError::Internal(anyhow::anyhow!("password=hunter2")).parts();
        assert_eq!(msg, "internal error");
    }
}
