//! The call policy around every upstream attempt: a circuit breaker per upstream host, a bound
//! on attempts in flight, and the retry settings that [`crate::retry`] applies.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;

use crate::breaker::{Admission, Breaker, BreakerSettings, BreakerState, Transition, Verdict};
use crate::{Call, UpstreamError};

/// How upstream calls are retried, cut off and bounded.
#[derive(Debug, Clone, PartialEq)]
pub struct CallPolicy {
    /// Attempts per call, the first included (1 = no retries). Only calls that cannot open a
    /// second upstream session are retried (see [`crate::is_retryable`]).
    pub retry_attempts: u32,
    /// Wait before the first retry; it doubles for each further one, plus jitter.
    pub retry_base: Duration,
    /// When each host's breaker opens and for how long.
    pub breaker: BreakerSettings,
    /// Upstream attempts in flight at once, over all calls and hosts.
    pub max_concurrency: usize,
    /// How long an attempt may wait for a free slot before failing with
    /// [`UpstreamError::Busy`].
    pub queue_timeout: Duration,
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            retry_attempts: 3,
            retry_base: Duration::from_millis(100),
            breaker: BreakerSettings::default(),
            max_concurrency: 512,
            queue_timeout: Duration::from_millis(250),
        }
    }
}

impl CallPolicy {
    /// Checks the values; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_attempts == 0 {
            return Err("retry_attempts must be at least 1".to_owned());
        }
        if self.max_concurrency == 0 || self.max_concurrency > Semaphore::MAX_PERMITS {
            return Err("max_concurrency must be at least 1".to_owned());
        }
        self.breaker.validate()
    }
}

/// Something the policy did, for metrics and logs.
#[derive(Debug)]
pub enum PolicyEvent<'a> {
    /// `call` failed with `error` and will be sent again after `delay`.
    Retry {
        /// The call retried.
        call: Call,
        /// Why the attempt failed.
        error: &'a UpstreamError,
        /// The wait before the next attempt.
        delay: Duration,
    },
    /// The breaker of `host` is now in `state` (also sent once per host when the observer is
    /// installed, so gauges start at the current state).
    Breaker {
        /// `host:port` of the upstream.
        host: &'a str,
        /// The new state.
        state: BreakerState,
    },
}

/// Told about retries and breaker changes.
pub type PolicyObserver = Arc<dyn Fn(&PolicyEvent<'_>) + Send + Sync>;

/// The breakers and the concurrency bound of one client (shared by its clones).
pub(crate) struct Guard {
    policy: CallPolicy,
    base: Arc<Breaker>,
    detect: Arc<Breaker>,
    permits: Arc<Semaphore>,
    observer: Option<PolicyObserver>,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("policy", &self.policy)
            .field("hosts", &self.hosts().len())
            .finish()
    }
}

/// `host:port`, the breaker's key and metric label.
fn host_key(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// Leave to send one attempt: the breaker's admission and a concurrency slot.
pub(crate) struct Pass {
    breaker: Arc<Breaker>,
    admission: Admission,
    _permit: OwnedSemaphorePermit,
}

impl Guard {
    pub(crate) fn new(policy: CallPolicy, base_url: &Url, detect_url: &Url) -> Self {
        let base = Arc::new(Breaker::new(host_key(base_url), policy.breaker));
        let detect_host = host_key(detect_url);
        // One host, one breaker, however many of its calls there are.
        let detect = if detect_host == base.host() {
            Arc::clone(&base)
        } else {
            Arc::new(Breaker::new(detect_host, policy.breaker))
        };
        Self {
            permits: Arc::new(Semaphore::new(policy.max_concurrency)),
            policy,
            base,
            detect,
            observer: None,
        }
    }

    pub(crate) fn policy(&self) -> &CallPolicy {
        &self.policy
    }

    /// The same breakers and bound, with `observer` told about changes from now on.
    pub(crate) fn with_observer(&self, observer: Option<PolicyObserver>) -> Self {
        let guard = Self {
            policy: self.policy.clone(),
            base: Arc::clone(&self.base),
            detect: Arc::clone(&self.detect),
            permits: Arc::clone(&self.permits),
            observer,
        };
        let now = Instant::now();
        for b in guard.hosts() {
            guard.emit(&PolicyEvent::Breaker {
                host: b.host(),
                state: b.state(now),
            });
        }
        guard
    }

    fn hosts(&self) -> Vec<&Arc<Breaker>> {
        if Arc::ptr_eq(&self.base, &self.detect) {
            vec![&self.base]
        } else {
            vec![&self.base, &self.detect]
        }
    }

    fn breaker(&self, call: Call) -> &Arc<Breaker> {
        match call {
            Call::Detect => &self.detect,
            _ => &self.base,
        }
    }

    pub(crate) fn emit(&self, event: &PolicyEvent<'_>) {
        if let Some(observe) = &self.observer {
            observe(event);
        }
    }

    fn transition(&self, breaker: &Breaker, transition: Transition) {
        let Some(state) = transition else { return };
        match state {
            BreakerState::Open => {
                tracing::warn!(
                    host = breaker.host(),
                    cool_down_ms = self.policy.breaker.cool_down.as_millis() as u64,
                    "upstream circuit breaker opened"
                );
            }
            BreakerState::HalfOpen => {
                tracing::info!(host = breaker.host(), "upstream circuit breaker probing");
            }
            BreakerState::Closed => {
                tracing::info!(host = breaker.host(), "upstream circuit breaker closed");
            }
        }
        self.emit(&PolicyEvent::Breaker {
            host: breaker.host(),
            state,
        });
    }

    /// Leave for one attempt of `call`, or the reason it must not be sent now.
    pub(crate) async fn pass(&self, call: Call) -> Result<Pass, UpstreamError> {
        let breaker = self.breaker(call);
        let admission = match breaker.admit(Instant::now()) {
            Ok((admission, transition)) => {
                self.transition(breaker, transition);
                admission
            }
            Err(retry_after) => {
                return Err(UpstreamError::CircuitOpen {
                    call,
                    host: breaker.host().to_owned(),
                    retry_after,
                });
            }
        };
        let permit = tokio::time::timeout(
            self.policy.queue_timeout,
            Arc::clone(&self.permits).acquire_owned(),
        )
        .await;
        match permit {
            Ok(Ok(permit)) => Ok(Pass {
                breaker: Arc::clone(breaker),
                admission,
                _permit: permit,
            }),
            // The semaphore is never closed; a closed one reads as full.
            Ok(Err(_)) | Err(_) => Err(UpstreamError::Busy { call }),
        }
    }

    /// Tells the breaker how the attempt sent under `pass` ended.
    pub(crate) fn settle(&self, pass: Pass, result: Result<(), &UpstreamError>) {
        let Pass {
            breaker, admission, ..
        } = pass;
        let transition = breaker.record(admission, Verdict::of(result), Instant::now());
        self.transition(&breaker, transition);
    }

    /// Attempts in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.policy.max_concurrency - self.permits.available_permits()
    }

    /// Each upstream host and its breaker's state.
    pub(crate) fn breaker_states(&self) -> Vec<(String, BreakerState)> {
        let now = Instant::now();
        self.hosts()
            .into_iter()
            .map(|b| (b.host().to_owned(), b.state(now)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_share_a_breaker_only_when_they_are_the_same_host_and_port() {
        let url = |s: &str| Url::parse(s).unwrap();
        let same = Guard::new(
            CallPolicy::default(),
            &url("http://up.example/api"),
            &url("http://up.example:80/detect"),
        );
        assert_eq!(
            same.breaker_states(),
            [("up.example:80".to_owned(), BreakerState::Closed)]
        );
        let apart = Guard::new(
            CallPolicy::default(),
            &url("https://up.example/"),
            &url("http://up.example:8080/detect"),
        );
        let hosts: Vec<_> = apart.breaker_states().into_iter().map(|(h, _)| h).collect();
        assert_eq!(hosts, ["up.example:443", "up.example:8080"]);
        assert!(Arc::ptr_eq(
            apart.breaker(Call::Info),
            apart.breaker(Call::Create)
        ));
        assert!(!Arc::ptr_eq(
            apart.breaker(Call::Info),
            apart.breaker(Call::Detect)
        ));
    }

    #[test]
    fn policies_are_validated() {
        assert!(CallPolicy::default().validate().is_ok());
        for bad in [
            CallPolicy {
                retry_attempts: 0,
                ..Default::default()
            },
            CallPolicy {
                max_concurrency: 0,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_full_bound_refuses_after_the_queue_time() {
        let url = Url::parse("http://up.example/").unwrap();
        let guard = Guard::new(
            CallPolicy {
                max_concurrency: 1,
                queue_timeout: Duration::from_millis(20),
                ..Default::default()
            },
            &url,
            &url,
        );
        let held = guard.pass(Call::Info).await.unwrap();
        assert_eq!(guard.in_flight(), 1);
        let started = Instant::now();
        assert!(matches!(
            guard.pass(Call::Info).await,
            Err(UpstreamError::Busy { call: Call::Info })
        ));
        assert!(started.elapsed() >= Duration::from_millis(20));
        guard.settle(held, Ok(()));
        assert_eq!(guard.in_flight(), 0);
        assert!(guard.pass(Call::Info).await.is_ok());
    }
}
