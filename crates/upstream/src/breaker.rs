//! A circuit breaker per upstream host.
//!
//! A small state machine rather than a crate: the maintained Rust breakers (`failsafe`, the
//! tower middlewares) either lack a failure-ratio window with a minimum call count, or want
//! to own the call as a `tower::Service`, which would split the failure classification
//! (timeout, connect, 5xx — never a business answer) from [`UpstreamError`] where it lives.
//!
//! Closed: attempts run and their outcomes fill a window of the last [`BreakerSettings::window`]
//! attempts; once it holds at least `min_calls` outcomes with a failure share of at least
//! `failure_ratio`, the breaker opens. Open: attempts fail fast until `cool_down` has passed.
//! Half-open: one probe goes through (the rest still fail fast); its success closes the
//! breaker with an empty window, its failure opens it for another cool-down.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::UpstreamError;

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Share of failed attempts in the window (0 < ratio <= 1) that opens the breaker.
    pub failure_ratio: f64,
    /// Attempts the window must hold before the ratio counts, so a few early failures do not
    /// open it.
    pub min_calls: u32,
    /// How many recent attempts the window holds.
    pub window: u32,
    /// How long an open breaker fails calls fast before letting a probe through.
    pub cool_down: Duration,
}

impl Default for BreakerSettings {
    /// 70% of at least 20 attempts out of the last 100. At a 30% upstream error rate the
    /// chance that 20 attempts show 70% failures is about 1e-4, so the breaker stays closed
    /// while retries succeed; an upstream that is down fails 20 attempts (about 7 calls with
    /// their retries) and opens it.
    fn default() -> Self {
        Self {
            failure_ratio: 0.7,
            min_calls: 20,
            window: 100,
            cool_down: Duration::from_secs(5),
        }
    }
}

impl BreakerSettings {
    /// Checks the values; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            return Err("breaker failure_ratio must be above 0 and at most 1".to_owned());
        }
        if self.min_calls == 0 || self.window < self.min_calls {
            return Err("breaker min_calls must be at least 1 and at most the window".to_owned());
        }
        if self.cool_down.is_zero() {
            return Err("breaker cool_down must be above zero".to_owned());
        }
        Ok(())
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast.
    Open,
    /// One probe is allowed through; the rest fail fast.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// What an attempt's outcome says about the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The host answered (a business refusal or a 4xx included).
    Healthy,
    /// The host failed: no connection, no answer in time, a broken exchange or a 5xx.
    Failed,
    /// Says nothing about the host (nothing was sent).
    Neutral,
}

impl Verdict {
    pub(crate) fn of(result: Result<(), &UpstreamError>) -> Self {
        match result {
            Ok(()) => Self::Healthy,
            Err(
                UpstreamError::Timeout { .. }
                | UpstreamError::Connect { .. }
                | UpstreamError::Transport { .. },
            ) => Self::Failed,
            Err(UpstreamError::Status { status, .. }) if *status >= 500 => Self::Failed,
            Err(
                UpstreamError::Config(_)
                | UpstreamError::CircuitOpen { .. }
                | UpstreamError::Busy { .. },
            ) => Self::Neutral,
            Err(
                UpstreamError::Status { .. }
                | UpstreamError::Business { .. }
                | UpstreamError::Decode { .. },
            ) => Self::Healthy,
        }
    }
}

#[derive(Debug)]
enum Mode {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    mode: Mode,
    /// `true` = failed, newest last.
    window: VecDeque<bool>,
    failures: u32,
}

/// One host's breaker. The clock is passed in, so the state machine is tested without waiting.
#[derive(Debug)]
pub(crate) struct Breaker {
    host: String,
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

/// Leave to run one attempt. Dropped without [`Breaker::record`] (the caller gave up), a probe
/// hands its turn to the next caller.
#[derive(Debug)]
pub(crate) struct Admission {
    breaker: Arc<Breaker>,
    probe: bool,
    done: bool,
}

/// A state change, for the observer.
pub(crate) type Transition = Option<BreakerState>;

impl Breaker {
    pub(crate) fn new(host: String, settings: BreakerSettings) -> Self {
        Self {
            host,
            settings,
            inner: Mutex::new(Inner {
                mode: Mode::Closed,
                window: VecDeque::with_capacity(settings.window as usize),
                failures: 0,
            }),
        }
    }

    /// `host:port` this breaker guards.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state now (an open breaker whose cool-down has passed reads half-open).
    pub(crate) fn state(&self, now: Instant) -> BreakerState {
        match self.lock().mode {
            Mode::Closed => BreakerState::Closed,
            Mode::Open { until } if now < until => BreakerState::Open,
            Mode::Open { .. } | Mode::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// Lets an attempt through, or says how long until the breaker may let one through.
    pub(crate) fn admit(
        self: &Arc<Self>,
        now: Instant,
    ) -> Result<(Admission, Transition), Duration> {
        let mut inner = self.lock();
        let (probe, transition) = match inner.mode {
            Mode::Closed => (false, None),
            Mode::Open { until } if now < until => return Err(until - now),
            Mode::Open { .. } => {
                inner.mode = Mode::HalfOpen;
                (true, Some(BreakerState::HalfOpen))
            }
            // The probe is out; its answer comes within one call's time. One second is a hint
            // to the client, not a promise.
            Mode::HalfOpen => return Err(Duration::from_secs(1)),
        };
        Ok((
            Admission {
                breaker: Arc::clone(self),
                probe,
                done: false,
            },
            transition,
        ))
    }

    /// Records an admitted attempt's outcome; returns the state change it caused.
    pub(crate) fn record(
        &self,
        mut admission: Admission,
        verdict: Verdict,
        now: Instant,
    ) -> Transition {
        admission.done = true;
        let mut inner = self.lock();
        if admission.probe {
            return match verdict {
                Verdict::Healthy => {
                    inner.mode = Mode::Closed;
                    inner.window.clear();
                    inner.failures = 0;
                    Some(BreakerState::Closed)
                }
                Verdict::Failed => {
                    inner.mode = Mode::Open {
                        until: now + self.settings.cool_down,
                    };
                    Some(BreakerState::Open)
                }
                Verdict::Neutral => {
                    // Nothing learnt: the next caller probes.
                    inner.mode = Mode::Open { until: now };
                    None
                }
            };
        }
        // An attempt admitted before the breaker opened says nothing the probe will not.
        if !matches!(inner.mode, Mode::Closed) || verdict == Verdict::Neutral {
            return None;
        }
        let failed = verdict == Verdict::Failed;
        if inner.window.len() >= self.settings.window as usize
            && inner.window.pop_front() == Some(true)
        {
            inner.failures -= 1;
        }
        inner.window.push_back(failed);
        inner.failures += u32::from(failed);
        let seen = inner.window.len() as u32;
        if seen >= self.settings.min_calls
            && f64::from(inner.failures) >= self.settings.failure_ratio * f64::from(seen)
        {
            inner.mode = Mode::Open {
                until: now + self.settings.cool_down,
            };
            return Some(BreakerState::Open);
        }
        None
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.probe && !self.done {
            let mut inner = self.breaker.lock();
            if matches!(inner.mode, Mode::HalfOpen) {
                inner.mode = Mode::Open {
                    until: Instant::now(),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use faceswap_wire::Code;

    use super::*;
    use crate::Call;

    const COOL: Duration = Duration::from_secs(5);

    fn breaker() -> Arc<Breaker> {
        Arc::new(Breaker::new(
            "up:80".into(),
            BreakerSettings {
                failure_ratio: 0.5,
                min_calls: 4,
                window: 8,
                cool_down: COOL,
            },
        ))
    }

    /// Runs one attempt with `verdict`; `Err` if the breaker refused it.
    fn attempt(b: &Arc<Breaker>, verdict: Verdict, now: Instant) -> Result<Transition, Duration> {
        let (admission, _) = b.admit(now)?;
        Ok(b.record(admission, verdict, now))
    }

    #[test]
    fn opens_once_the_window_holds_enough_calls_with_enough_failures() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(attempt(&b, Verdict::Failed, t), Ok(None), "below min_calls");
        }
        assert_eq!(
            attempt(&b, Verdict::Failed, t),
            Ok(Some(BreakerState::Open))
        );
        assert_eq!(b.state(t), BreakerState::Open);
        assert_eq!(
            attempt(&b, Verdict::Healthy, t + Duration::from_secs(2)),
            Err(COOL - Duration::from_secs(2))
        );
    }

    #[test]
    fn failures_below_the_ratio_keep_it_closed_and_old_ones_slide_out() {
        let b = breaker();
        let t = Instant::now();
        // Never half of the window failing, up to 3 failures in 8: stays closed.
        for v in [false, false, true, false, false, true, false, true] {
            let verdict = if v { Verdict::Failed } else { Verdict::Healthy };
            assert_eq!(attempt(&b, verdict, t), Ok(None));
        }
        // Eight successes push every failure out; then three failures are 3 in 8.
        for _ in 0..8 {
            attempt(&b, Verdict::Healthy, t).unwrap();
        }
        for _ in 0..3 {
            assert_eq!(attempt(&b, Verdict::Failed, t), Ok(None));
        }
        assert_eq!(b.state(t), BreakerState::Closed);
        assert_eq!(
            attempt(&b, Verdict::Failed, t),
            Ok(Some(BreakerState::Open)),
            "4 in 8 is the ratio"
        );
    }

    #[test]
    fn business_answers_and_4xx_never_count_as_failures() {
        let call = Call::Info;
        let healthy = [
            UpstreamError::Business {
                call,
                code: Code::PARAM_ERROR,
                msg: String::new(),
            },
            UpstreamError::Business {
                call,
                code: Code::QUOTA_EXCEEDED,
                msg: String::new(),
            },
            UpstreamError::Status {
                call,
                status: 404,
                code: None,
                msg: String::new(),
            },
            UpstreamError::Decode {
                call,
                message: String::new(),
            },
        ];
        for e in &healthy {
            assert_eq!(Verdict::of(Err(e)), Verdict::Healthy, "{e:?}");
        }
        let failed = [
            UpstreamError::Timeout { call },
            UpstreamError::Connect {
                call,
                message: String::new(),
            },
            UpstreamError::Transport {
                call,
                message: String::new(),
            },
            UpstreamError::Status {
                call,
                status: 503,
                code: Some(Code(1503)),
                msg: String::new(),
            },
        ];
        for e in &failed {
            assert_eq!(Verdict::of(Err(e)), Verdict::Failed, "{e:?}");
        }
        let neutral = [
            UpstreamError::Config(String::new()),
            UpstreamError::Busy { call },
            UpstreamError::CircuitOpen {
                call,
                host: String::new(),
                retry_after: COOL,
            },
        ];
        for e in &neutral {
            assert_eq!(Verdict::of(Err(e)), Verdict::Neutral, "{e:?}");
        }
        assert_eq!(Verdict::of(Ok(())), Verdict::Healthy);
    }

    fn opened() -> (Arc<Breaker>, Instant) {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..4 {
            attempt(&b, Verdict::Failed, t).unwrap();
        }
        assert_eq!(b.state(t), BreakerState::Open);
        (b, t)
    }

    #[test]
    fn after_the_cool_down_one_probe_goes_through_and_its_success_closes_it() {
        let (b, t) = opened();
        let later = t + COOL;
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        let (probe, transition) = b.admit(later).unwrap();
        assert_eq!(transition, Some(BreakerState::HalfOpen));
        assert!(b.admit(later).is_err(), "only one probe at a time");
        assert_eq!(
            b.record(probe, Verdict::Healthy, later),
            Some(BreakerState::Closed)
        );
        assert_eq!(b.state(later), BreakerState::Closed);
        // The window starts empty: three failures do not reopen it.
        for _ in 0..3 {
            assert_eq!(attempt(&b, Verdict::Failed, later), Ok(None));
        }
    }

    #[test]
    fn a_failed_probe_reopens_it_for_another_cool_down() {
        let (b, t) = opened();
        let later = t + COOL + Duration::from_millis(1);
        assert_eq!(
            attempt(&b, Verdict::Failed, later),
            Ok(Some(BreakerState::Open))
        );
        assert_eq!(attempt(&b, Verdict::Healthy, later), Err(COOL));
        assert!(attempt(&b, Verdict::Healthy, later + COOL).is_ok());
    }

    #[test]
    fn an_abandoned_probe_hands_its_turn_on() {
        let (b, t) = opened();
        let later = t + COOL;
        let (probe, _) = b.admit(later).unwrap();
        drop(probe);
        let (next, transition) = b.admit(Instant::now().max(later)).unwrap();
        assert_eq!(transition, Some(BreakerState::HalfOpen));
        assert_eq!(
            b.record(next, Verdict::Healthy, later),
            Some(BreakerState::Closed)
        );
    }

    #[test]
    fn late_answers_of_calls_admitted_before_it_opened_change_nothing() {
        let b = breaker();
        let t = Instant::now();
        let (late, _) = b.admit(t).unwrap();
        for _ in 0..4 {
            attempt(&b, Verdict::Failed, t).unwrap();
        }
        assert_eq!(b.record(late, Verdict::Healthy, t), None);
        assert_eq!(b.state(t), BreakerState::Open);
    }

    #[test]
    fn settings_are_validated() {
        assert!(BreakerSettings::default().validate().is_ok());
        let bad = [
            BreakerSettings {
                failure_ratio: 0.0,
                ..Default::default()
            },
            BreakerSettings {
                failure_ratio: 1.5,
                ..Default::default()
            },
            BreakerSettings {
                min_calls: 0,
                ..Default::default()
            },
            BreakerSettings {
                min_calls: 200,
                ..Default::default()
            },
            BreakerSettings {
                cool_down: Duration::ZERO,
                ..Default::default()
            },
        ];
        for s in bad {
            assert!(s.validate().is_err(), "{s:?}");
        }
    }
}
