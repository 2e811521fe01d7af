//! The run's results, and `docs/benchmarks.md` written from them.

use std::fmt::Write as _;

use serde::Serialize;

use crate::scenarios::big_body::{BigBody, IN_FLIGHT};
use crate::scenarios::cycles::Cycles;
use crate::scenarios::footprint::Footprint;
use crate::scenarios::forwarding::{CONNECTIONS, Forwarding};
use crate::scenarios::reaper::Reaped;
use crate::scenarios::token_storm::Storm;

#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub date: String,
    pub cores: usize,
    pub cpu: String,
    pub revision: String,
    pub step_seconds: u64,
    pub detect_small: Option<Forwarding>,
    pub detect_big: Option<BigBody>,
    pub info: Option<Forwarding>,
    pub cycles: Option<Cycles>,
    pub storm: Option<Storm>,
    pub reaper: Option<Reaped>,
    pub footprint: Option<Footprint>,
    /// Scenarios that could not be measured, with the reason.
    pub failed: Vec<String>,
}

/// One line of the summary: a figure, what it is judged against, and the verdict.
struct Verdict {
    scenario: &'static str,
    figure: String,
    baseline: String,
    target: &'static str,
    met: bool,
}

const MIB: f64 = 1024.0 * 1024.0;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

/// The gateway's peak against nginx's: the median of the rounds' ratios, with their range.
fn peak_verdict(f: &Forwarding, scenario: &'static str) -> Option<Verdict> {
    let (gw, ng) = (f.peak("gateway")?, f.peak("nginx")?);
    let ratio = f.peak_ratio("gateway", "nginx")?;
    Some(Verdict {
        scenario,
        figure: format!("gateway {:.0} req/s", gw.rps),
        baseline: format!(
            "nginx {:.0} req/s → **{:.2}×** (median of {} rounds, {:.2}–{:.2}×)",
            ng.rps,
            ratio.median,
            f.rounds.len(),
            ratio.min,
            ratio.max
        ),
        target: "≥ 1.0× nginx",
        met: ratio.median >= 1.0,
    })
}

/// `target`'s p99 in each latency round, e.g. `2.40 / 2.71 / 9.48`.
fn p99_by_round(f: &Forwarding, target: &str) -> String {
    by_round(
        f.latency_rounds
            .iter()
            .filter_map(|round| round.iter().find(|m| m.target == target))
            .map(|m| format!("{:.2}", m.p99_ms)),
    )
}

/// One figure per round, e.g. `1 / 1 / 1`.
fn by_round(values: impl IntoIterator<Item = impl std::fmt::Display>) -> String {
    let values: Vec<String> = values.into_iter().map(|v| v.to_string()).collect();
    values.join(" / ")
}

fn verdicts(r: &Results) -> Vec<Verdict> {
    let mut v = Vec::new();
    if let Some(f) = &r.detect_small
        && let Some(peak) = peak_verdict(f, "1 detect (image_url): peak")
    {
        v.push(peak);
        if let Some(added) = f.added_p99("gateway", "direct") {
            v.push(Verdict {
                scenario: "1 detect (image_url): p99 at 50% load",
                figure: format!("gateway {} ms", p99_by_round(f, "gateway")),
                baseline: format!(
                    "direct {} ms → **{:+.2} ms** (median of {} rounds, {:+.2} to {:+.2} ms)",
                    p99_by_round(f, "direct"),
                    added.median,
                    f.latency_rounds.len(),
                    added.min,
                    added.max
                ),
                target: "≤ +1 ms over direct",
                met: added.median <= 1.0,
            });
        }
    }
    if let Some(b) = &r.detect_big {
        let ratio = b.growth_ratio();
        v.push(Verdict {
            scenario: "2 detect (10 MB img): RSS growth per request in flight",
            figure: mib(b.growth_per_request as u64),
            baseline: format!("body {} → **{ratio:.2}×**", mib(b.body_bytes as u64)),
            target: "≤ 3× the body",
            met: ratio <= 3.0,
        });
    }
    if let Some(f) = &r.info
        && let Some(peak) = peak_verdict(f, "3 info: peak")
    {
        v.push(peak);
    }
    if let Some(c) = &r.cycles {
        let ratio = c.ratio();
        v.push(Verdict {
            scenario: "4 create → close",
            figure: format!(
                "{:.0} cycles/s ({} clients)",
                c.cycles_per_second, c.clients
            ),
            baseline: format!(
                "pgbench simple-update {:.0} tps → **{ratio:.2}×**",
                c.pgbench_tps
            ),
            target: "≥ 0.5× pgbench",
            met: ratio >= 0.5 && c.failures == 0,
        });
    }
    if let Some(s) = &r.storm {
        v.push(Verdict {
            scenario: "5 token expiry storm: upstream getToken calls",
            figure: format!("{} per expiry", by_round(&s.expiry_get_token_calls)),
            baseline: format!(
                "{} requests at once, {} rounds; {} while the storms were in flight",
                s.requests, s.rounds, s.get_token_calls_during_expiry_storms
            ),
            target: "exactly 1",
            met: s.expiry_get_token_calls.iter().all(|&n| n == 1) && s.failures == 0,
        });
        let bound = s.get_token_ms + 5.0;
        v.push(Verdict {
            scenario: "5 token expiry storm: p99",
            figure: format!(
                "{:.1} ms (fresh-token storm {:.1} ms → **{:+.1} ms**; median of {} rounds)",
                s.expiry.p99_ms,
                s.fresh.p99_ms,
                s.added_p99_ms(),
                s.rounds
            ),
            baseline: format!(
                "getToken {:.2} ms + 5 ms = {bound:.2} ms; the same storm straight to the simulator: p99 {:.1} ms",
                s.get_token_ms, s.direct.p99_ms
            ),
            target: "≤ getToken + 5 ms",
            met: s.expiry.p99_ms <= bound,
        });
    }
    if let Some(rp) = &r.reaper {
        v.push(Verdict {
            scenario: "6 reaper",
            figure: format!("{:.1} s", rp.seconds_to_close_all),
            baseline: format!(
                "{} idle sessions, close latency {} ms",
                rp.sessions, rp.close_latency_ms
            ),
            target: "≤ 30 s",
            met: rp.seconds_to_close_all <= 30.0,
        });
    }
    if let Some(f) = &r.footprint {
        v.push(Verdict {
            scenario: "7 idle footprint: RSS",
            figure: mib(f.rss_with_connections),
            baseline: format!(
                "{} keep-alive connections; idle {}",
                f.connections,
                mib(f.rss_idle)
            ),
            target: "≤ 64 MiB",
            met: (f.rss_with_connections as f64) <= 64.0 * MIB,
        });
        v.push(Verdict {
            scenario: "7 idle footprint: start to ready",
            figure: format!("{:.0} ms", f.ready_ms),
            baseline: "migrations applied".into(),
            target: "≤ 300 ms",
            met: f.ready_ms <= 300.0,
        });
    }
    v
}

/// The Markdown report.
pub fn markdown(r: &Results) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `bench/run.sh` on {} at revision `{}`: {} cores ({}), every process on the \
         same machine over loopback, keep-alive connections, {} s per measured step. Absolute \
         numbers drift on shared machines; each figure stands next to a baseline measured in the \
         same run.\n",
        r.date, r.revision, r.cores, r.cpu, r.step_seconds
    );
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(
        md,
        "| Scenario | Gateway | Baseline (same run) | Target | Met |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for v in verdicts(r) {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            v.scenario,
            v.figure,
            v.baseline,
            v.target,
            if v.met { "yes" } else { "**no**" }
        );
    }
    for f in &r.failed {
        let _ = writeln!(md, "| {f} | not measured | | | **no** |");
    }
    if let Some(f) = &r.detect_small {
        let _ = writeln!(
            md,
            "\n## 1. Detect with `image_url`\n\n`POST /detect` with a small JSON body naming a \
             384×384 photo on a static nginx server; the simulator fetches it on every call and \
             answers from its detection memory (the faces were computed on the first call). The \
             gateway checks the JWT, the tenant's rate limit (Redis), the URL (SSRF) and records \
             metrics. {CONNECTIONS} connections. The static server is the proxying nginx \
             itself, so nginx's CPU time also covers serving the photo.\n\n\
             ![p50 and p99 latency against offered load](benchmarks.png)\n"
        );
        forwarding_table(&mut md, f);
    }
    if let Some(b) = &r.detect_big {
        let _ = writeln!(
            md,
            "\n## 2. Detect with a 10 MB base64 `img`\n\nBody {}, {IN_FLIGHT} requests in \
             flight. Gateway RSS before {}, peak {} → {} per request in flight.\n",
            mib(b.body_bytes as u64),
            mib(b.gateway_rss_before),
            mib(b.gateway_rss_peak),
            mib(b.growth_per_request as u64)
        );
        run_table(&mut md, b.runs.iter());
    }
    if let Some(f) = &r.info {
        let _ = writeln!(
            md,
            "\n## 3. `info` on an open session\n\nThe gateway checks the JWT and the tenant's \
             rate limit (Redis), finds the session (in its memory after the first call; \
             Postgres announces changes), asks the upstream, records a changed status and \
             writes the session's activity (batched, twice a second); nginx and direct call the \
             simulator's `info` with the upstream id. {CONNECTIONS} connections.\n"
        );
        forwarding_table(&mut md, f);
    }
    if let Some(c) = &r.cycles {
        let _ = writeln!(
            md,
            "\n## 4. Create → close cycles\n\n{} clients each creating a session and closing \
             it: {:.0} cycles/s, cycle p50 {:.1} ms, p99 {:.1} ms, {} failed. `pgbench -b \
             simple-update -c {} -j 2` on the same Postgres: {:.0} tps.",
            c.clients,
            c.cycles_per_second,
            c.cycle_p50_ms,
            c.cycle_p99_ms,
            c.failures,
            c.clients,
            c.pgbench_tps
        );
    }
    if let Some(s) = &r.storm {
        let ms = |storms: &crate::scenarios::token_storm::Storms| {
            format!(
                "p50 {:.1} ms, p99 {:.1} ms (by round {})",
                storms.p50_ms,
                storms.p99_ms,
                by_round(storms.p99_by_round_ms.iter().map(|v| format!("{v:.1}")))
            )
        };
        let _ = writeln!(
            md,
            "\n## 5. Token expiry storm\n\n{} `info` calls sent at once on open connections, in {} \
             rounds; figures are the rounds' medians. Every connection, the gateway's own to the \
             simulator included, was opened by an unmeasured storm first.\n\n\
             - **Expiry**: sent to a gateway whose upstream token ({}-second life, no traffic in \
             its last tenth) had died (at most {:.1} ms earlier): {}. getToken calls from the end \
             of the round's fresh-token storm to the end of this one: {}; while the storms were \
             in flight: {}. The gateway replaces the token once a tenth of its life is left, \
             traffic or not, and keeps using the old one meanwhile.\n\
             - **Fresh token** (the baseline): {}; {} getToken.\n\
             - **Straight to the simulator** (the floor on this machine): {}.\n\
             - **Refused token**: sent right after the simulator began refusing the token, so \
             that every request waits for the one new token: {}; getToken by round {}.\n\n\
             The simulator's getToken called directly: {:.2} ms (median of 50). Failed \
             requests: {}.",
            s.requests,
            s.rounds,
            crate::scenarios::token_storm::TOKEN_TTL_SECONDS,
            s.sent_after_expiry_ms,
            ms(&s.expiry),
            by_round(&s.expiry_get_token_calls),
            s.get_token_calls_during_expiry_storms,
            ms(&s.fresh),
            s.fresh_get_token_calls,
            ms(&s.direct),
            ms(&s.refused),
            by_round(&s.refused_get_token_calls),
            s.get_token_ms,
            s.failures
        );
    }
    if let Some(rp) = &r.reaper {
        let _ = writeln!(
            md,
            "\n## 6. Reaper\n\n{} sessions created through the API in {:.1} s; then every \
             simulator call takes {} ms and the tenant's idle timeout drops to 1 s, so all are \
             due at once. All closed upstream and settled {:.1} s later (default worker \
             settings, one `--role all` process).",
            rp.sessions, rp.create_seconds, rp.close_latency_ms, rp.seconds_to_close_all
        );
    }
    if let Some(f) = &r.footprint {
        let _ = writeln!(
            md,
            "\n## 7. Idle footprint\n\nA new `faceswap-gateway serve` (migrations already \
             applied) answered `/readyz` {:.0} ms after it was started. RSS idle {}; with {} \
             keep-alive connections that have each made a request {}.",
            f.ready_ms,
            mib(f.rss_idle),
            f.connections,
            mib(f.rss_with_connections)
        );
    }
    md
}

fn forwarding_table(md: &mut String, f: &Forwarding) {
    run_table(md, f.peaks.iter().chain(f.sweep.iter()));
    let _ = writeln!(
        md,
        "\nPeak rows are each target's median of {} interleaved rounds (req/s by round: {}).",
        f.rounds.len(),
        rounds_text(f)
    );
    if let (Some(gateway), Some(nginx)) = (f.proxy_cpu_us("gateway"), f.proxy_cpu_us("nginx")) {
        let _ = writeln!(
            md,
            "CPU time per request at the fixed rate (user and system, median run): \
             gateway {:.1} µs, nginx {:.1} µs (its workers included) → {:.2}×.",
            gateway.median,
            nginx.median,
            gateway.median / nginx.median
        );
    }
}

/// "direct 1 / 2 / 3, nginx …": every peak run, target by target.
fn rounds_text(f: &Forwarding) -> String {
    f.peaks
        .iter()
        .map(|p| {
            let runs: Vec<String> = f
                .rounds
                .iter()
                .flatten()
                .filter(|m| m.target == p.target)
                .map(|m| format!("{:.0}", m.rps))
                .collect();
            format!("{} {}", p.target, runs.join(" / "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn run_table<'a>(md: &mut String, runs: impl Iterator<Item = &'a crate::oha::Measured>) {
    let _ = writeln!(
        md,
        "| Target | Offered | Achieved req/s | p50 ms | p90 ms | p99 ms | proxy CPU µs/req |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for m in runs {
        let offered = m
            .offered_rps
            .map_or_else(|| "peak".to_owned(), |r| format!("{r:.0} req/s"));
        let cpu = m
            .proxy_cpu_us
            .map_or_else(|| "–".to_owned(), |us| format!("{us:.1}"));
        let _ = writeln!(
            md,
            "| {} | {offered} | {:.0} | {:.2} | {:.2} | {:.2} | {cpu} |",
            m.target, m.rps, m.p50_ms, m.p90_ms, m.p99_ms
        );
    }
}
