//! Upstream failures, classified once so callers choose an HTTP status and a retry policy
//! without inspecting transport details.

use std::fmt;
use std::time::Duration;

use faceswap_wire::Code;

use crate::transport::SendError;

/// One of the upstream calls, named in errors, logs and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// `POST /api/open/v3/getToken`.
    GetToken,
    /// `POST` to the detect URL.
    Detect,
    /// `POST /api/open/v3/faceswap/live/create`.
    Create,
    /// `POST /api/open/v3/faceswap/live/update`.
    Update,
    /// `POST /api/open/v3/faceswap/live/close`.
    Close,
    /// `POST /api/open/v3/faceswap/live/info`.
    Info,
}

impl Call {
    /// Every call, so metric label sets can be pre-registered.
    pub const ALL: [Call; 6] = [
        Call::GetToken,
        Call::Detect,
        Call::Create,
        Call::Update,
        Call::Close,
        Call::Info,
    ];

    /// The provider's name for the call, stable for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Call::GetToken => "getToken",
            Call::Detect => "detect",
            Call::Create => "create",
            Call::Update => "update",
            Call::Close => "close",
            Call::Info => "info",
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an upstream call failed. Messages never contain tokens or request bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The call's total time limit elapsed. The upstream may have acted on the request.
    #[error("upstream {call} timed out")]
    Timeout {
        /// The call that failed.
        call: Call,
    },
    /// No connection could be made (refused, DNS failure, connect timeout): the request was
    /// certainly not delivered, so retrying cannot duplicate it.
    #[error("could not connect to the upstream for {call}: {message}")]
    Connect {
        /// The call that failed.
        call: Call,
        /// The cause, with its whole source chain.
        message: String,
    },
    /// The upstream answered with a non-success envelope code, or detection answered
    /// `error_code` 1101/1102 (so token refresh works the same for every call).
    #[error("upstream {call} answered code {code}: {msg}")]
    Business {
        /// The call that failed.
        call: Call,
        /// The upstream's code.
        code: Code,
        /// The upstream's message.
        msg: String,
    },
    /// The upstream answered a non-2xx HTTP status (an injected 503/1503, a proxy's 502, ...).
    #[error("upstream {call} answered HTTP {status}{}: {msg}", code_suffix(.code))]
    Status {
        /// The call that failed.
        call: Call,
        /// The HTTP status.
        status: u16,
        /// `code` (or detection's `error_code`) from the body, when it is JSON.
        code: Option<Code>,
        /// The body's message, or a description of a non-JSON body.
        msg: String,
    },
    /// The exchange broke after the request was sent (reset, body cut off): the upstream may
    /// have acted on it.
    #[error("upstream {call} failed mid-exchange: {message}")]
    Transport {
        /// The call that failed.
        call: Call,
        /// The cause, with its whole source chain.
        message: String,
    },
    /// A 2xx answer that is not the expected JSON. The upstream did something we cannot read,
    /// so it may have acted on the request.
    #[error("upstream {call} answered something unreadable: {message}")]
    Decode {
        /// The call that failed.
        call: Call,
        /// What was wrong with the answer.
        message: String,
    },
    /// The client is misconfigured (bad URL, unusable header value): nothing was sent.
    #[error("upstream client misconfigured: {0}")]
    Config(String),
    /// The upstream host has been failing, so its circuit breaker holds calls back: nothing
    /// was sent.
    #[error("upstream {call} not sent: the circuit breaker of {host} is open (retry in {} ms)", .retry_after.as_millis())]
    CircuitOpen {
        /// The call refused.
        call: Call,
        /// `host:port` of the upstream.
        host: String,
        /// When the breaker lets a probe through.
        retry_after: Duration,
    },
    /// Too many upstream calls are in flight and no slot freed up in time: nothing was sent.
    #[error("upstream {call} not sent: too many upstream calls in flight")]
    Busy {
        /// The call refused.
        call: Call,
    },
}

fn code_suffix(code: &Option<Code>) -> String {
    code.map(|c| format!(" (code {c})")).unwrap_or_default()
}

impl UpstreamError {
    /// The call that failed; `None` for configuration errors found before any call.
    pub fn call(&self) -> Option<Call> {
        match self {
            Self::Timeout { call }
            | Self::Connect { call, .. }
            | Self::Business { call, .. }
            | Self::Status { call, .. }
            | Self::Transport { call, .. }
            | Self::Decode { call, .. }
            | Self::CircuitOpen { call, .. }
            | Self::Busy { call } => Some(*call),
            Self::Config(_) => None,
        }
    }

    /// The upstream refused the token (1101) or saw none (1102): refresh it and retry once.
    pub fn is_token_rejected(&self) -> bool {
        matches!(
            self,
            Self::Business { code, .. } if *code == Code::TOKEN_INVALID || *code == Code::AUTH_MISSING
        )
    }

    /// How long to wait before calling again, when the client knows (an open breaker).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::CircuitOpen { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether the upstream may have acted on the request even though we got no usable answer.
    /// A caller must not blindly retry a non-idempotent call (create) when this is true.
    /// Calls held back by the breaker or the concurrency bound were never sent.
    pub fn maybe_delivered(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. } | Self::Transport { .. } | Self::Decode { .. }
        )
    }

    /// Ties a failed exchange to its call.
    pub(crate) fn from_send(call: Call, err: SendError) -> Self {
        match err {
            SendError::Request(message) => Self::Config(format!("{call}: {message}")),
            SendError::Connect(message) => Self::Connect { call, message },
            SendError::Timeout => Self::Timeout { call },
            SendError::Transport(message) => Self::Transport { call, message },
        }
    }
}

/// The error and all its sources, `: `-separated, skipping a source whose text its parent
/// already printed.
pub(crate) fn source_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<UpstreamError> {
        let call = Call::Info;
        vec![
            UpstreamError::Timeout { call },
            UpstreamError::Connect {
                call,
                message: "refused".into(),
            },
            UpstreamError::Business {
                call,
                code: Code::PARAM_ERROR,
                msg: "bad".into(),
            },
            UpstreamError::Status {
                call,
                status: 503,
                code: Some(Code(1503)),
                msg: "down".into(),
            },
            UpstreamError::Transport {
                call,
                message: "reset".into(),
            },
            UpstreamError::Decode {
                call,
                message: "junk".into(),
            },
            UpstreamError::Config("bad url".into()),
            UpstreamError::CircuitOpen {
                call,
                host: "up:80".into(),
                retry_after: Duration::from_millis(1500),
            },
            UpstreamError::Busy { call },
        ]
    }

    #[test]
    fn call_names_are_the_providers() {
        let names: Vec<_> = Call::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            ["getToken", "detect", "create", "update", "close", "info"]
        );
        assert_eq!(Call::GetToken.to_string(), "getToken");
    }

    #[test]
    fn only_timeout_transport_and_decode_may_have_been_delivered() {
        let delivered: Vec<_> = every_variant()
            .iter()
            .map(UpstreamError::maybe_delivered)
            .collect();
        assert_eq!(
            delivered,
            [true, false, false, false, true, true, false, false, false],
            "Timeout, Connect, Business, Status, Transport, Decode, Config, CircuitOpen, Busy"
        );
    }

    #[test]
    fn only_an_open_breaker_says_when_to_come_back() {
        let waits: Vec<_> = every_variant()
            .iter()
            .map(UpstreamError::retry_after)
            .collect();
        let mut expected = vec![None; 9];
        expected[7] = Some(Duration::from_millis(1500));
        assert_eq!(waits, expected);
        assert_eq!(
            every_variant()[7].to_string(),
            "upstream info not sent: the circuit breaker of up:80 is open (retry in 1500 ms)"
        );
    }

    #[test]
    fn only_business_1101_and_1102_ask_for_a_new_token() {
        let business = |code| UpstreamError::Business {
            call: Call::Create,
            code,
            msg: String::new(),
        };
        assert!(business(Code::TOKEN_INVALID).is_token_rejected());
        assert!(business(Code::AUTH_MISSING).is_token_rejected());
        assert!(!business(Code::QUOTA_EXCEEDED).is_token_rejected());
        let status = UpstreamError::Status {
            call: Call::Create,
            status: 401,
            code: Some(Code::TOKEN_INVALID),
            msg: String::new(),
        };
        assert!(!status.is_token_rejected(), "only business answers count");
        assert!(
            every_variant()
                .iter()
                .all(|e| e.call() == Some(Call::Info) || matches!(e, UpstreamError::Config(_)))
        );
        assert_eq!(UpstreamError::Config(String::new()).call(), None);
    }

    #[test]
    fn messages_name_the_call_and_the_code() {
        let status = &every_variant()[3];
        assert_eq!(
            status.to_string(),
            "upstream info answered HTTP 503 (code 1503): down"
        );
        let bare = UpstreamError::Status {
            call: Call::Detect,
            status: 502,
            code: None,
            msg: "Bad Gateway".into(),
        };
        assert_eq!(
            bare.to_string(),
            "upstream detect answered HTTP 502: Bad Gateway"
        );
    }

    #[test]
    fn the_source_chain_is_walked_without_repeating_itself() {
        #[derive(Debug)]
        struct Layer(&'static str, Option<Box<Layer>>);
        impl fmt::Display for Layer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|l| l as _)
            }
        }
        let err = Layer(
            "error sending request",
            Some(Box::new(Layer(
                "client error (Connect)",
                Some(Box::new(Layer("Connect", None))),
            ))),
        );
        assert_eq!(
            source_chain(&err),
            "error sending request: client error (Connect)"
        );
    }
}
