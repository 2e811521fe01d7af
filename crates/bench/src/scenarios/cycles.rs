//! Scenario 4: create → close cycles through the gateway (Postgres on the path of both calls),
//! against `pgbench -b simple-update` with the same number of clients on the same server.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Ctx, quantile};
use crate::stack::GatewayEnv;

/// Clients for both sides.
pub const CLIENTS: usize = 8;

#[derive(Debug, Clone, Serialize)]
pub struct Cycles {
    pub clients: usize,
    pub cycles_per_second: f64,
    pub cycle_p50_ms: f64,
    pub cycle_p99_ms: f64,
    pub failures: u64,
    pub pgbench_tps: f64,
}

impl Cycles {
    pub fn ratio(&self) -> f64 {
        self.cycles_per_second / self.pgbench_tps
    }
}

pub async fn run(ctx: &Ctx, gateway_url: &str, token: &str) -> anyhow::Result<Cycles> {
    // Warm-up, then the measured step.
    drive(gateway_url, token, Duration::from_secs(2)).await?;
    let (cycles, mut latencies, failures) = drive(gateway_url, token, ctx.step).await?;
    let cycles_per_second = cycles as f64 / ctx.step.as_secs_f64();
    // On a blocking thread, so that the run can be stopped between load steps (see `main`).
    let (database_url, step) = (ctx.env.database_url.clone(), ctx.step);
    let pgbench_tps = tokio::task::spawn_blocking(move || pgbench(&database_url, step)).await??;
    Ok(Cycles {
        clients: CLIENTS,
        cycles_per_second,
        cycle_p50_ms: quantile(&mut latencies, 0.5),
        cycle_p99_ms: quantile(&mut latencies, 0.99),
        failures,
        pgbench_tps,
    })
}

/// `CLIENTS` loops of create then close for `length`: cycles done, their latencies (ms) and
/// failed calls.
async fn drive(url: &str, token: &str, length: Duration) -> anyhow::Result<(u64, Vec<f64>, u64)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()?;
    let failures = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + length;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, token, failures) = (
            client.clone(),
            url.to_owned(),
            token.to_owned(),
            failures.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let started = Instant::now();
                match cycle(&client, &url, &token).await {
                    Ok(()) => latencies.push(started.elapsed().as_secs_f64() * 1000.0),
                    Err(e) => {
                        if failures.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("  first failed cycle: {e:#}");
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    Ok((all.len() as u64, all, failures.load(Ordering::Relaxed)))
}

async fn cycle(client: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<()> {
    let id = create_session(client, url, token).await?;
    post(
        client,
        &format!("{url}/api/open/v3/faceswap/live/close"),
        token,
        &json!({"_id": id}),
    )
    .await?;
    Ok(())
}

/// Opens a session through the gateway at `url`; its id.
pub async fn create_session(
    client: &reqwest::Client,
    url: &str,
    token: &str,
) -> anyhow::Result<String> {
    let created = post(
        client,
        &format!("{url}/api/open/v3/faceswap/live/create"),
        token,
        &create_body(),
    )
    .await?;
    created["data"]["_id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no _id in {created}"))
}

/// A session opened through the gateway: its gateway id and its upstream id (read from the
/// gateway's database, which the tenant never sees).
pub async fn open_session(
    client: &reqwest::Client,
    env: &GatewayEnv,
    url: &str,
    token: &str,
) -> anyhow::Result<(String, String)> {
    let id = create_session(client, url, token).await?;
    let uuid = id
        .strip_prefix("ses_")
        .with_context(|| format!("{id} is not a session id"))?;
    let pool = sqlx::PgPool::connect(&env.database_url).await?;
    let upstream: Option<String> =
        sqlx::query_scalar("select upstream_id from sessions where session_id = $1::uuid")
            .bind(uuid)
            .fetch_one(&pool)
            .await?;
    pool.close().await;
    Ok((id, upstream.context("the new session has no upstream id")?))
}

/// A create naming the face photo on the static server (a literal address: no DNS lookup).
pub fn create_body() -> Value {
    json!({"sourceImage": [{
        "path": format!("http://127.0.0.1:{}/face.jpg", crate::stack::NGINX_STATIC_PORT),
        "opts": "150,170:230,170:190,215:190,255"
    }]})
}

pub async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    let resp = client
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await?;
    let status = resp.status();
    let answer: Value = resp.json().await?;
    if !status.is_success() || answer["code"] != 1000 {
        bail!("{url}: {status} {answer}");
    }
    Ok(answer)
}

/// pgbench's simple-update transactions per second on a scratch database of the same server.
fn pgbench(database_url: &str, length: Duration) -> anyhow::Result<f64> {
    let (server, _) = database_url
        .rsplit_once('/')
        .context("DATABASE_URL without a database name")?;
    let url = format!("{server}/faceswap_bench_pgbench");
    let psql = |sql: &str| crate::stack::psql(database_url, sql);
    psql("drop database if exists faceswap_bench_pgbench")?;
    psql("create database faceswap_bench_pgbench")?;
    let init = Command::new("pgbench")
        .args(["-i", "-q", "-s", "10", &url])
        .output()?;
    if !init.status.success() {
        bail!("pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    }
    let out = Command::new("pgbench")
        .args(["-b", "simple-update", "-n", "-j", "2"])
        .arg("-c")
        .arg(CLIENTS.to_string())
        .arg("-T")
        .arg(length.as_secs().max(1).to_string())
        .arg(&url)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    psql("drop database if exists faceswap_bench_pgbench")?;
    if !out.status.success() {
        bail!("pgbench: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_tps(&text).with_context(|| format!("no tps in pgbench's output: {text}"))
}

/// `tps = 1234.5 (without initial connection time)`.
fn parse_tps(text: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with("tps = "))?
        .trim_start_matches("tps = ")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_tps_is_read_from_its_summary() {
        let out = "number of failed transactions: 0 (0.000%)\nlatency average = 1.2 ms\ninitial connection time = 5.1 ms\ntps = 6543.21 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(6543.21));
        assert_eq!(parse_tps("nothing"), None);
    }
}
