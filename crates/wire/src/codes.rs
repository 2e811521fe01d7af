//! Business codes carried in the `code` (or, for detection, `error_code`) field.

use serde::{Deserialize, Serialize};

/// A business code of the envelope. The provider's codes are listed as associated constants;
/// other values pass through untouched so nothing the upstream says is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct Code(pub i64);

impl Code {
    /// The call succeeded.
    pub const SUCCESS: Code = Code(1000);
    /// A parameter is missing, empty or malformed.
    pub const PARAM_ERROR: Code = Code(1003);
    /// Too many requests (the provider's other APIs use this code for rate limiting).
    pub const RATE_LIMITED: Code = Code(1005);
    /// The token is invalid or has expired, or the credentials are wrong.
    pub const TOKEN_INVALID: Code = Code(1101);
    /// No authorization was sent.
    pub const AUTH_MISSING: Code = Code(1102);
    /// The account's quota is spent.
    pub const QUOTA_EXCEEDED: Code = Code(1104);

    /// Gateway: the named session does not exist (or belongs to another tenant). HTTP 404.
    pub const NOT_FOUND: Code = Code(4004);
    /// Gateway: the path exists but not with this method. HTTP 405.
    pub const METHOD_NOT_ALLOWED: Code = Code(4005);
    /// Gateway: the session is not in a state that allows the call (e.g. already closed).
    /// HTTP 409.
    pub const CONFLICT: Code = Code(4009);
    /// Gateway: the tenant is suspended by an operator. HTTP 403.
    pub const TENANT_SUSPENDED: Code = Code(4003);
    /// Gateway: the request body exceeds the configured limit. HTTP 413.
    pub const PAYLOAD_TOO_LARGE: Code = Code(4013);
    /// Gateway: the client took too long to send its request. HTTP 408.
    pub const REQUEST_TIMEOUT: Code = Code(4008);
    /// Gateway: an unexpected internal error; the log has the cause. HTTP 500.
    pub const INTERNAL: Code = Code(5000);
    /// Gateway: the upstream failed or could not be reached. HTTP 502.
    pub const UPSTREAM_UNAVAILABLE: Code = Code(5002);
    /// Gateway: a dependency of the gateway (the database) is unavailable. HTTP 503.
    pub const SERVICE_UNAVAILABLE: Code = Code(5003);
    /// Gateway: the upstream did not answer in time. HTTP 504.
    pub const UPSTREAM_TIMEOUT: Code = Code(5004);
    /// Gateway: the upstream has been failing, so calls to it are paused (circuit breaker
    /// open); `Retry-After` says when it will be tried again. HTTP 503.
    pub const UPSTREAM_CIRCUIT_OPEN: Code = Code(5005);
    /// Gateway: too many upstream calls are in flight; retry after `Retry-After`. HTTP 503.
    pub const UPSTREAM_BUSY: Code = Code(5006);

    /// Whether this is the success code.
    pub fn is_success(self) -> bool {
        self == Self::SUCCESS
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// `error_code` values of the detection call. `0` is success; auth and parameter failures reuse
/// the envelope codes (1101, 1102, 1003) so one table explains both shapes.
pub mod detect {
    /// Detection succeeded and found at least one face.
    pub const SUCCESS: i64 = 0;
    /// The bytes are not an image in a supported format (JPEG, PNG), or it is truncated.
    pub const IMAGE_UNREADABLE: i64 = 2001;
    /// The image decoded, but no face was found in it.
    pub const NO_FACE: i64 = 2002;
    /// `image_url` could not be fetched (unreachable, timeout, non-2xx answer).
    pub const IMAGE_FETCH_FAILED: i64 = 2003;
    /// The image is larger than the service accepts (bytes or pixels).
    pub const IMAGE_TOO_LARGE: i64 = 2004;
    /// The image is smaller than the smallest face the detector can see.
    pub const IMAGE_TOO_SMALL: i64 = 2005;
}
