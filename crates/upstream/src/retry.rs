//! Which failed attempts are tried again, and how long to wait first.

use std::time::Duration;

use backon::ExponentialBuilder;

use crate::{Call, UpstreamError};

/// Longest wait between two attempts, however many there are.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Whether `call` may be sent again after failing with `err`.
///
/// Only calls whose repetition cannot open a second upstream session: getToken, detect, info
/// and close (a repeated close of a closed session answers 1003, which callers read as "already
/// closed"). Create and update never: a create that reached the upstream would bill a second
/// session, and an update races the tenant's next one.
///
/// Only failures a second attempt can cure: no connection (nothing was sent), a broken
/// exchange (typically a pooled keep-alive connection the upstream had just closed), and the
/// gateway-class statuses 502/503/504. Timeouts are not retried: a slow upstream is a loaded
/// one, and another full-length attempt would multiply both its load (detect carries up to
/// 16 MiB) and the caller's wait; the breaker counts them instead. Business answers, other
/// statuses and unreadable answers would come back the same.
pub fn is_retryable(call: Call, err: &UpstreamError) -> bool {
    let idempotent = matches!(
        call,
        Call::GetToken | Call::Detect | Call::Info | Call::Close
    );
    idempotent
        && match err {
            UpstreamError::Connect { .. } | UpstreamError::Transport { .. } => true,
            UpstreamError::Status { status, .. } => matches!(status, 502..=504),
            UpstreamError::Timeout { .. }
            | UpstreamError::Business { .. }
            | UpstreamError::Decode { .. }
            | UpstreamError::Config(_)
            | UpstreamError::CircuitOpen { .. }
            | UpstreamError::Busy { .. } => false,
        }
}

/// The waits between `attempts` attempts: `base`, doubling, each plus a random jitter of up to
/// itself (so concurrent callers spread out), at most [`MAX_DELAY`].
pub(crate) fn backoff(attempts: u32, base: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(base)
        .with_max_delay(MAX_DELAY.max(base))
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(attempts.saturating_sub(1) as usize)
}

#[cfg(test)]
mod tests {
    use backon::BackoffBuilder;
    use faceswap_wire::Code;

    use super::*;

    fn errors(call: Call) -> Vec<(UpstreamError, &'static str)> {
        let status = |status| UpstreamError::Status {
            call,
            status,
            code: None,
            msg: String::new(),
        };
        vec![
            (
                UpstreamError::Connect {
                    call,
                    message: String::new(),
                },
                "connect",
            ),
            (
                UpstreamError::Transport {
                    call,
                    message: String::new(),
                },
                "transport",
            ),
            (status(502), "502"),
            (status(503), "503"),
            (status(504), "504"),
            (status(500), "500"),
            (status(429), "429"),
            (status(400), "400"),
            (UpstreamError::Timeout { call }, "timeout"),
            (
                UpstreamError::Business {
                    call,
                    code: Code::PARAM_ERROR,
                    msg: String::new(),
                },
                "business",
            ),
            (
                UpstreamError::Decode {
                    call,
                    message: String::new(),
                },
                "decode",
            ),
            (UpstreamError::Busy { call }, "busy"),
            (
                UpstreamError::CircuitOpen {
                    call,
                    host: String::new(),
                    retry_after: Duration::from_secs(1),
                },
                "circuit_open",
            ),
            (UpstreamError::Config(String::new()), "config"),
        ]
    }

    #[test]
    fn idempotent_calls_retry_connect_transport_and_gateway_statuses_only() {
        for call in [Call::GetToken, Call::Detect, Call::Info, Call::Close] {
            let retried: Vec<_> = errors(call)
                .into_iter()
                .filter(|(e, _)| is_retryable(call, e))
                .map(|(_, name)| name)
                .collect();
            assert_eq!(
                retried,
                ["connect", "transport", "502", "503", "504"],
                "{call}"
            );
        }
    }

    #[test]
    fn create_and_update_are_never_retried() {
        for call in [Call::Create, Call::Update] {
            for (e, name) in errors(call) {
                assert!(!is_retryable(call, &e), "{call} after {name}");
            }
        }
    }

    #[test]
    fn delays_double_from_the_base_with_jitter_and_stop_after_the_attempts() {
        let base = Duration::from_millis(100);
        let delays: Vec<_> = backoff(4, base).build().collect();
        assert_eq!(delays.len(), 3, "three waits between four attempts");
        for (i, d) in delays.iter().enumerate() {
            let floor = base * 2u32.pow(i as u32);
            assert!(*d >= floor && *d <= floor * 2, "wait {i}: {d:?}");
        }
        assert_eq!(backoff(1, base).build().count(), 0);
        let capped: Vec<_> = backoff(10, Duration::from_secs(2)).build().collect();
        assert!(capped.iter().all(|d| *d <= MAX_DELAY * 2), "{capped:?}");
    }
}
