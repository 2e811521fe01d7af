//! Scenarios 1 and 3: one call driven against the simulator directly, through nginx and through
//! the gateway, first at peak, then at fractions of the gateway's peak.

use std::time::Duration;

use serde::Serialize;

use crate::oha::{self, Call, Measured};

/// Connections for every forwarding run.
pub const CONNECTIONS: usize = 32;

#[derive(Debug, Clone, Serialize)]
pub struct Forwarding {
    /// Peak runs, one per target.
    pub peaks: Vec<Measured>,
    /// Fixed-rate runs: every target at each fraction of the gateway's peak.
    pub sweep: Vec<Measured>,
}

impl Forwarding {
    pub fn peak(&self, target: &str) -> Option<&Measured> {
        self.peaks.iter().find(|m| m.target == target)
    }

    /// The fixed-rate run of `target` at `fraction` of the gateway's peak.
    pub fn at(&self, target: &str, fraction: f64) -> Option<&Measured> {
        let gateway = self.peak("gateway")?.rps;
        self.sweep.iter().find(|m| {
            m.target == target
                && m.offered_rps
                    .is_some_and(|r| (r - fraction * gateway).abs() < 1.0)
        })
    }
}

/// Runs `calls` (direct, nginx, gateway) at peak and then at each of `fractions` of the
/// gateway's peak, every answer checked to be a 200.
pub async fn run(calls: &[Call], step: Duration, fractions: &[f64]) -> anyhow::Result<Forwarding> {
    for call in calls {
        // Warm-up: connections, the tokens, the allocator's pools.
        oha::run(call, CONNECTIONS, Duration::from_secs(2), None)
            .await?
            .check(200)?;
    }
    let mut peaks = Vec::new();
    for call in calls {
        let m = oha::run(call, CONNECTIONS, step, None).await?;
        m.check(200)?;
        eprintln!(
            "  peak {:8}: {:8.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
            m.target, m.rps, m.p50_ms, m.p99_ms
        );
        peaks.push(m);
    }
    let gateway_peak = peaks
        .iter()
        .find(|m| m.target == "gateway")
        .map(|m| m.rps)
        .unwrap_or(0.0);
    let mut sweep = Vec::new();
    for &fraction in fractions {
        let rate = (fraction * gateway_peak).round().max(1.0);
        for call in calls {
            let m = oha::run(call, CONNECTIONS, step, Some(rate)).await?;
            m.check(200)?;
            eprintln!(
                "  {:3.0}% {:8}: {:8.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
                fraction * 100.0,
                m.target,
                m.rps,
                m.p50_ms,
                m.p99_ms
            );
            sweep.push(m);
        }
    }
    Ok(Forwarding { peaks, sweep })
}
