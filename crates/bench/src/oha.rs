//! Load from `oha`: keep-alive connections on loopback, either as fast as the target answers
//! (peak) or at a fixed offered rate with latency correction (no coordinated omission).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;

/// One HTTP call to drive.
#[derive(Clone)]
pub struct Call {
    /// Which of direct / nginx / gateway.
    pub target: &'static str,
    pub url: String,
    pub bearer: String,
    /// A file holding the JSON body.
    pub body: PathBuf,
    /// The proxy between the load and the simulator (its workers are counted with it), whose
    /// CPU time per request the run reports; `None` for direct calls.
    pub proxy: Option<u32>,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub target: String,
    /// Offered rate, `None` for a peak run.
    pub offered_rps: Option<f64>,
    pub rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// Answers by HTTP status, and transport errors by kind.
    pub statuses: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    /// The proxy's CPU time (user and system) over the run per request answered, in µs.
    pub proxy_cpu_us: Option<f64>,
}

impl Measured {
    /// Every request answered with the expected status.
    pub fn check(&self, expected: u16) -> anyhow::Result<()> {
        let good = self
            .statuses
            .get(&expected.to_string())
            .copied()
            .unwrap_or(0);
        if good == 0 || good != self.requests || !self.errors.is_empty() {
            bail!(
                "{}: {} of {} answered {expected}; statuses {:?}, errors {:?}",
                self.target,
                good,
                self.requests,
                self.statuses,
                self.errors
            );
        }
        Ok(())
    }
}

/// Drives `call` for `duration` over `connections` keep-alive connections.
pub async fn run(
    call: &Call,
    connections: usize,
    duration: Duration,
    rate: Option<f64>,
) -> anyhow::Result<Measured> {
    let mut cmd = Command::new("oha");
    cmd.args(["--no-tui", "--output-format", "json", "-m", "POST"])
        .arg("-c")
        .arg(connections.to_string())
        .arg("-z")
        .arg(format!("{}ms", duration.as_millis()))
        .args(["-H", "content-type: application/json"])
        .arg("-H")
        .arg(format!("authorization: Bearer {}", call.bearer))
        .arg("-D")
        .arg(&call.body);
    if let Some(rate) = rate {
        cmd.arg("-q")
            .arg(format!("{rate:.0}"))
            .arg("--latency-correction");
    }
    cmd.arg(&call.url);
    let cpu_before = call.proxy.map(crate::stack::cpu_ticks).transpose()?;
    // On a blocking thread, so that the run can be stopped between load steps (see `main`).
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("running oha (cargo install oha)")?;
    let cpu_after = call.proxy.map(crate::stack::cpu_ticks).transpose()?;
    if !out.status.success() {
        bail!("oha failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("oha's JSON")?;
    let mut measured = parse(call.target, rate, &v)?;
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        measured.proxy_cpu_us = per_request_us(after.saturating_sub(before), measured.requests);
    }
    Ok(measured)
}

/// CPU ticks (of [`crate::stack::TICKS_PER_SECOND`]) spread over `requests`, in µs each.
fn per_request_us(ticks: u64, requests: u64) -> Option<f64> {
    (requests > 0)
        .then(|| ticks as f64 * 1e6 / crate::stack::TICKS_PER_SECOND as f64 / requests as f64)
}

fn parse(target: &str, rate: Option<f64>, v: &Value) -> anyhow::Result<Measured> {
    let secs_to_ms = |k: &str| -> anyhow::Result<f64> {
        Ok(v["latencyPercentiles"][k]
            .as_f64()
            .with_context(|| format!("oha output without latencyPercentiles.{k}: {v}"))?
            * 1000.0)
    };
    let counts = |k: &str| -> BTreeMap<String, u64> {
        v[k].as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let statuses = counts("statusCodeDistribution");
    let errors = counts("errorDistribution");
    // `oha -z` cuts requests still in flight at the deadline; they are not failures.
    let errors: BTreeMap<String, u64> = errors
        .into_iter()
        .filter(|(k, _)| !k.contains("aborted due to deadline"))
        .collect();
    Ok(Measured {
        target: target.to_owned(),
        offered_rps: rate,
        rps: v["summary"]["requestsPerSec"]
            .as_f64()
            .context("oha output without summary.requestsPerSec")?,
        p50_ms: secs_to_ms("p50")?,
        p90_ms: secs_to_ms("p90")?,
        p99_ms: secs_to_ms("p99")?,
        requests: statuses.values().sum(),
        statuses,
        errors,
        proxy_cpu_us: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oha_report_reads_as_milliseconds_and_counts() {
        let v = serde_json::json!({
            "summary": {"requestsPerSec": 1234.5},
            "latencyPercentiles": {"p50": 0.001, "p90": 0.002, "p99": 0.0035},
            "statusCodeDistribution": {"200": 10, "429": 2},
            "errorDistribution": {"aborted due to deadline": 3, "connection reset": 1}
        });
        let m = parse("gateway", Some(1000.0), &v).unwrap();
        assert_eq!(m.rps, 1234.5);
        assert!((m.p99_ms - 3.5).abs() < 1e-9);
        assert_eq!(m.requests, 12);
        assert_eq!(m.errors.len(), 1, "deadline cuts are not errors");
        assert!(m.check(200).is_err(), "429s and resets fail the check");
    }
}
