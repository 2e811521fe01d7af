//! A tenant's request rate: a sustained rate with a burst, as the generic cell rate algorithm
//! (GCRA) reads it. One request costs one emission interval; a tenant may run up to `burst`
//! intervals ahead of the clock.

use std::time::Duration;

/// Default sustained rate of a new tenant, requests per second.
pub const DEFAULT_REQUESTS_PER_SECOND: i32 = 100;
/// Default burst of a new tenant, requests.
pub const DEFAULT_BURST: i32 = 200;
/// Highest rate or burst accepted: beyond it the emission interval (in microseconds) would
/// round to nothing.
pub const MAX_RATE: i32 = 1_000_000;

/// Requests per second and burst, both at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests that may arrive at once after a quiet period.
    pub burst: u32,
}

/// Why a rate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// Zero or negative.
    #[error("{0} must be at least 1")]
    NotPositive(&'static str),
    /// Too large to enforce.
    #[error("{0} must be at most {MAX_RATE}")]
    TooLarge(&'static str),
}

impl Rate {
    /// A rate from stored or requested values.
    pub fn new(per_second: i32, burst: i32) -> Result<Self, RateError> {
        let check = |v: i32, name| {
            if v < 1 {
                Err(RateError::NotPositive(name))
            } else if v > MAX_RATE {
                Err(RateError::TooLarge(name))
            } else {
                Ok(v.unsigned_abs())
            }
        };
        Ok(Self {
            per_second: check(per_second, "requests_per_second")?,
            burst: check(burst, "burst")?,
        })
    }

    /// Time one request costs.
    pub fn emission_interval(self) -> Duration {
        Duration::from_secs(1) / self.per_second
    }
}

impl Default for Rate {
    fn default() -> Self {
        Self {
            per_second: DEFAULT_REQUESTS_PER_SECOND.unsigned_abs(),
            burst: DEFAULT_BURST.unsigned_abs(),
        }
    }
}

/// The answer of a rate check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused; the earliest a request would be allowed.
    Deny {
        /// Time until then.
        retry_after: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_must_be_positive_and_bounded() {
        assert_eq!(
            Rate::new(5, 10),
            Ok(Rate {
                per_second: 5,
                burst: 10
            })
        );
        assert_eq!(
            Rate::new(0, 10),
            Err(RateError::NotPositive("requests_per_second"))
        );
        assert_eq!(Rate::new(5, -1), Err(RateError::NotPositive("burst")));
        assert_eq!(
            Rate::new(MAX_RATE + 1, 1),
            Err(RateError::TooLarge("requests_per_second"))
        );
    }

    #[test]
    fn the_emission_interval_is_the_inverse_of_the_rate() {
        assert_eq!(
            Rate::new(4, 1).unwrap().emission_interval(),
            Duration::from_millis(250)
        );
        assert_eq!(
            Rate::new(MAX_RATE, 1).unwrap().emission_interval(),
            Duration::from_micros(1)
        );
    }
}
