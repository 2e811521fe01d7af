//! Scenarios 1 and 3: one call driven against the simulator directly, through nginx and through
//! the gateway, first at peak, then at fractions of the gateway's peak.
//!
//! Peaks are measured in [`PEAK_ROUNDS`] interleaved rounds (direct, nginx, gateway, then again).
//! On a shared machine one peak step swings by a third from one minute to the next; the targets
//! of a round run seconds apart and see the same machine, so the ratio of a round is steadier
//! than any single figure, and the median round's ratio is what the report judges. The
//! fixed-rate step whose latency a target judges (scenario 1's 50%) is run in
//! [`LATENCY_ROUNDS`] interleaved rounds the same way: one hiccup of the machine in an 8 s step
//! moves its p99 by several milliseconds.

use std::time::Duration;

use serde::Serialize;

use crate::oha::{self, Call, Measured};

/// Connections for every forwarding run.
pub const CONNECTIONS: usize = 32;
/// Peak steps per target.
pub const PEAK_ROUNDS: usize = 3;
/// Steps per target at the fixed rate whose latency is judged.
pub const LATENCY_ROUNDS: usize = 3;

#[derive(Debug, Clone, Serialize)]
pub struct Forwarding {
    /// The median peak run of each target (by requests/s).
    pub peaks: Vec<Measured>,
    /// Every peak run, round by round, in the order of the calls.
    pub rounds: Vec<Vec<Measured>>,
    /// Fixed-rate runs: every target at each fraction of the gateway's peak.
    pub sweep: Vec<Measured>,
    /// Fixed-rate runs at the judged fraction, round by round (the first is the sweep's).
    pub latency_rounds: Vec<Vec<Measured>>,
}

impl Forwarding {
    pub fn peak(&self, target: &str) -> Option<&Measured> {
        self.peaks.iter().find(|m| m.target == target)
    }

    /// `target`'s peak over `baseline`'s, round by round.
    pub fn peak_ratio(&self, target: &str, baseline: &str) -> Option<Spread> {
        per_round(&self.rounds, target, baseline, |t, b| t.rps / b.rps)
    }

    /// `target`'s CPU time per request at the fixed rate whose latency is judged (or, without
    /// one, over the sweep), run by run (µs).
    pub fn proxy_cpu_us(&self, target: &str) -> Option<Spread> {
        let runs = if self.latency_rounds.is_empty() {
            self.sweep.iter().collect::<Vec<_>>()
        } else {
            self.latency_rounds.iter().flatten().collect()
        };
        Spread::of(
            runs.into_iter()
                .filter(|m| m.target == target)
                .filter_map(|m| m.proxy_cpu_us)
                .collect(),
        )
    }

    /// `target`'s p99 minus `baseline`'s at the judged fraction, round by round (ms).
    pub fn added_p99(&self, target: &str, baseline: &str) -> Option<Spread> {
        per_round(&self.latency_rounds, target, baseline, |t, b| {
            t.p99_ms - b.p99_ms
        })
    }
}

/// `compare(target's run, baseline's run)` in every round where both ran.
fn per_round(
    rounds: &[Vec<Measured>],
    target: &str,
    baseline: &str,
    compare: impl Fn(&Measured, &Measured) -> f64,
) -> Option<Spread> {
    let figures = rounds
        .iter()
        .filter_map(|round| {
            let run = |t: &str| round.iter().find(|m| m.target == t);
            Some(compare(run(target)?, run(baseline)?))
        })
        .collect();
    Spread::of(figures)
}

/// A figure measured in several rounds: its median round and its range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` without rounds; the median of an even count is the lower middle one.
    pub fn of(mut rounds: Vec<f64>) -> Option<Self> {
        rounds.retain(|r| r.is_finite());
        rounds.sort_by(f64::total_cmp);
        Some(Self {
            median: *rounds.get((rounds.len().checked_sub(1)?) / 2)?,
            min: *rounds.first()?,
            max: *rounds.last()?,
        })
    }
}

/// The run with the median requests/s (the lower middle one of an even count).
fn median_run(mut runs: Vec<Measured>) -> Option<Measured> {
    runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    let middle = runs.len().checked_sub(1)? / 2;
    runs.into_iter().nth(middle)
}

/// Runs `calls` (direct, nginx, gateway) at peak, [`PEAK_ROUNDS`] times each, interleaved, then
/// at each of `fractions` of the gateway's median peak, and at `judged` (one of `fractions`)
/// [`LATENCY_ROUNDS`] times in all, interleaved; every answer is checked to be a 200.
pub async fn run(
    calls: &[Call],
    step: Duration,
    fractions: &[f64],
    judged: Option<f64>,
) -> anyhow::Result<Forwarding> {
    for call in calls {
        // Warm-up: connections, the tokens, the allocator's pools.
        oha::run(call, CONNECTIONS, Duration::from_secs(2), None)
            .await?
            .check(200)?;
    }
    let mut rounds = Vec::new();
    for round in 1..=PEAK_ROUNDS {
        let mut runs = Vec::new();
        for call in calls {
            let m = oha::run(call, CONNECTIONS, step, None).await?;
            m.check(200)?;
            eprintln!(
                "  peak {:8} (round {round}): {:8.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
                m.target, m.rps, m.p50_ms, m.p99_ms
            );
            runs.push(m);
        }
        rounds.push(runs);
    }
    let peaks: Vec<Measured> = calls
        .iter()
        .filter_map(|call| {
            median_run(
                rounds
                    .iter()
                    .flatten()
                    .filter(|m| m.target == call.target)
                    .cloned()
                    .collect(),
            )
        })
        .collect();
    let gateway_peak = peaks
        .iter()
        .find(|m| m.target == "gateway")
        .map(|m| m.rps)
        .unwrap_or(0.0);
    let rate_at = |fraction: f64| (fraction * gateway_peak).round().max(1.0);
    let mut sweep = Vec::new();
    for &fraction in fractions {
        sweep.extend(fixed_rate(calls, step, fraction, rate_at(fraction)).await?);
    }
    let mut latency_rounds = Vec::new();
    if let Some(fraction) = judged {
        let first: Vec<Measured> = sweep
            .iter()
            .filter(|m| m.offered_rps == Some(rate_at(fraction)))
            .cloned()
            .collect();
        latency_rounds.push(first);
        for _ in 1..LATENCY_ROUNDS {
            latency_rounds.push(fixed_rate(calls, step, fraction, rate_at(fraction)).await?);
        }
    }
    Ok(Forwarding {
        peaks,
        rounds,
        sweep,
        latency_rounds,
    })
}

/// One fixed-rate step of every call, in order.
async fn fixed_rate(
    calls: &[Call],
    step: Duration,
    fraction: f64,
    rate: f64,
) -> anyhow::Result<Vec<Measured>> {
    let mut runs = Vec::new();
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
        runs.push(m);
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: &str, rps: f64) -> Measured {
        Measured {
            target: target.to_owned(),
            offered_rps: None,
            rps,
            p50_ms: 0.0,
            p90_ms: 0.0,
            p99_ms: 0.0,
            requests: 0,
            statuses: Default::default(),
            errors: Default::default(),
            proxy_cpu_us: None,
        }
    }

    #[test]
    fn ratios_pair_the_targets_of_each_round_and_take_the_median_round() {
        let f = Forwarding {
            peaks: vec![],
            rounds: vec![
                vec![run("nginx", 100.0), run("gateway", 50.0)],
                vec![run("nginx", 200.0), run("gateway", 160.0)],
                vec![run("nginx", 150.0), run("gateway", 90.0)],
            ],
            sweep: vec![],
            latency_rounds: vec![],
        };
        let r = f.peak_ratio("gateway", "nginx").unwrap();
        // Per round 0.5, 0.8, 0.6: the median round, not the ratio of the medians (150 / 90).
        assert_eq!((r.min, r.median, r.max), (0.5, 0.6, 0.8));
        assert_eq!(f.peak_ratio("gateway", "direct"), None);
    }

    #[test]
    fn the_median_run_of_an_even_count_is_the_lower_middle_one() {
        let runs = vec![run("a", 3.0), run("a", 1.0), run("a", 4.0), run("a", 2.0)];
        assert_eq!(median_run(runs).unwrap().rps, 2.0);
        assert!(median_run(vec![]).is_none());
        assert_eq!(Spread::of(vec![0.9, f64::NAN]).unwrap().median, 0.9);
    }

    fn at_p99(target: &str, p99_ms: f64) -> Measured {
        Measured {
            p99_ms,
            ..run(target, 0.0)
        }
    }

    #[test]
    fn added_p99_pairs_the_targets_of_each_round_and_takes_the_median_round() {
        let f = Forwarding {
            peaks: vec![],
            rounds: vec![],
            sweep: vec![],
            latency_rounds: vec![
                vec![at_p99("direct", 1.5), at_p99("gateway", 9.5)],
                vec![at_p99("direct", 3.0), at_p99("gateway", 3.5)],
                vec![at_p99("direct", 1.0), at_p99("gateway", 2.0)],
            ],
        };
        let added = f.added_p99("gateway", "direct").unwrap();
        // Per round +8.0, +0.5, +1.0: one slow round does not decide.
        assert_eq!((added.min, added.median, added.max), (0.5, 1.0, 8.0));
        assert_eq!(f.added_p99("gateway", "nginx"), None);
    }
}
