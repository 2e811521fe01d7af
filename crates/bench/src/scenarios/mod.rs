//! The seven scenarios. Each measures the gateway and, in the same run, the baseline it is
//! judged against.

pub mod big_body;
pub mod cycles;
pub mod footprint;
pub mod forwarding;
pub mod reaper;
pub mod token_storm;

use std::path::PathBuf;
use std::time::Duration;

use crate::stack::{GatewayEnv, Paths};

/// What every scenario needs.
pub struct Ctx {
    pub paths: Paths,
    pub env: GatewayEnv,
    /// Length of one measured load step.
    pub step: Duration,
}

impl Ctx {
    /// Writes a request body to a file (oha reads bodies from files).
    pub fn body_file(&self, name: &str, body: &[u8]) -> anyhow::Result<PathBuf> {
        let path = self.paths.work.join(name);
        std::fs::write(&path, body)?;
        Ok(path)
    }
}

/// The `p`-quantile (0–1) of `samples` (sorted here), nearest rank.
pub fn quantile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), 50.0);
        assert_eq!(quantile(&mut v, 0.99), 99.0);
        assert_eq!(quantile(&mut v, 1.0), 100.0);
        assert!(quantile(&mut [], 0.5).is_nan());
    }
}
