//! The one error type of the client.

use std::time::Duration;

use faceswap_wire::Code;

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The gateway answered with a business error: the envelope's `code` and `msg` (for
    /// detection, its `error_code` and `error_msg`), the HTTP status, and `Retry-After` when
    /// the gateway sent one.
    #[error("the gateway answered {status} with code {code}: {msg}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Envelope code, e.g. [`Code::QUOTA_EXCEEDED`], or a detection `error_code`
        /// (see [`faceswap_wire::codes::detect`]).
        code: Code,
        /// The gateway's message.
        msg: String,
        /// How long the gateway asks to wait before retrying.
        retry_after: Option<Duration>,
    },
    /// The request could not be sent or the answer could not be read (connection refused,
    /// timeout, TLS, a stream cut short).
    #[error("the request failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// The answer was not the JSON the call expects.
    #[error("the answer (HTTP {status}) is not what the call expects: {source}; body: {body}")]
    Decode {
        /// HTTP status.
        status: u16,
        /// The parse error.
        source: serde_json::Error,
        /// The start of the body, for diagnosis.
        body: String,
    },
    /// A local file (for detection from a path) could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The client was given something unusable (an empty base URL, a missing environment
    /// variable).
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl Error {
    /// The business code, for [`Error::Api`].
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The HTTP status, when the gateway answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Decode { status, .. } => Some(*status),
            Self::Transport(e) => e.status().map(|s| s.as_u16()),
            _ => None,
        }
    }

    /// Whether the tenant's request rate was exceeded (1005, HTTP 429).
    pub fn is_rate_limited(&self) -> bool {
        self.code() == Some(Code::RATE_LIMITED)
    }

    /// Whether the tenant's (or the upstream's) quota is spent (1104).
    pub fn is_quota_exceeded(&self) -> bool {
        self.code() == Some(Code::QUOTA_EXCEEDED)
    }

    /// Whether the named session or resource does not exist for this tenant (4004).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(Code::NOT_FOUND)
    }

    /// Whether the credentials or token were refused (1101) or missing (1102).
    pub fn is_auth(&self) -> bool {
        matches!(self.code(), Some(Code::TOKEN_INVALID | Code::AUTH_MISSING))
    }

    /// How long the gateway asked to wait before retrying (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the same request may succeed later: rate limits, a busy or failing upstream,
    /// an unavailable gateway dependency, or a transport failure.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { code, .. } => matches!(
                *code,
                Code::RATE_LIMITED
                    | Code::UPSTREAM_UNAVAILABLE
                    | Code::SERVICE_UNAVAILABLE
                    | Code::UPSTREAM_TIMEOUT
                    | Code::UPSTREAM_CIRCUIT_OPEN
                    | Code::UPSTREAM_BUSY
            ),
            Self::Transport(e) => e.is_timeout() || e.is_connect(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: Code, retry_after: Option<Duration>) -> Error {
        Error::Api {
            status: 429,
            code,
            msg: "m".into(),
            retry_after,
        }
    }

    #[test]
    fn the_helpers_read_the_envelope_code_and_retry_after() {
        let limited = api(Code::RATE_LIMITED, Some(Duration::from_secs(2)));
        assert!(limited.is_rate_limited());
        assert!(limited.is_retryable());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(limited.status(), Some(429));
        let quota = api(Code::QUOTA_EXCEEDED, None);
        assert!(quota.is_quota_exceeded() && !quota.is_rate_limited() && !quota.is_retryable());
        assert!(api(Code::TOKEN_INVALID, None).is_auth());
        assert!(api(Code::NOT_FOUND, None).is_not_found());
        assert_eq!(Error::Config("x".into()).code(), None);
    }
}
