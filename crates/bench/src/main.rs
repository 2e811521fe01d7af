//! `faceswap-bench`: starts the simulator, nginx and the gateway, drives the seven scenarios and
//! writes `docs/benchmarks.md` and the results as JSON (for the chart). `bench/run.sh` builds
//! everything in release mode, installs the tools and runs this.

mod oha;
mod report;
mod scenarios;
mod stack;

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde::Serialize;

use report::Results;
use scenarios::{Ctx, big_body, cycles, footprint, forwarding, reaper, token_storm};
use stack::{GatewayEnv, Paths};

#[derive(Parser)]
struct Args {
    /// Directory holding the release builds of `faceswap-gateway` and `faceswap-sim`.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// The face photo the detection scenarios use.
    #[arg(long, default_value = "testdata/face.jpg")]
    face: PathBuf,
    /// Where the Markdown report goes.
    #[arg(long, default_value = "docs/benchmarks.md")]
    report: PathBuf,
    /// Where the results go as JSON.
    #[arg(long, default_value = "target/bench/results.json")]
    results: PathBuf,
    /// Seconds per measured load step.
    #[arg(long, default_value_t = 8)]
    step_seconds: u64,
    /// Only these scenarios (1–7, comma-separated); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<u8>,
    /// The Postgres server; the run uses its own database `faceswap_bench` on it.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[arg(long, env = "REDIS_URL")]
    redis_url: String,
}

const GATEWAY_PORT: u16 = 19180;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // A stop signal sent to this process alone (not its process group, as Ctrl-C is) would
    // otherwise leave the simulator, nginx and the gateway running, and the next run would
    // find their ports taken. Aborting the run drops their handles, which stops them.
    let mut run = tokio::spawn(run(args));
    tokio::select! {
        joined = &mut run => joined.context("the benchmark panicked")?,
        signal = stop_signal() => {
            eprintln!(
                "bench: {signal}: stopping the simulator, nginx and the gateway; \
                 exiting once the load step in progress ends"
            );
            run.abort();
            let _ = run.await;
            anyhow::bail!("stopped by {signal}; the simulator, nginx and the gateway were stopped")
        }
    }
}

/// The first of SIGINT and SIGTERM, by name.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without handlers the default actions apply, as before.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let work = PathBuf::from("target/bench/run");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let (server, _) = args
        .database_url
        .rsplit_once('/')
        .context("DATABASE_URL without a database name")?;
    let database_url = format!("{server}/faceswap_bench");
    stack::psql(
        &args.database_url,
        "drop database if exists faceswap_bench with (force)",
    )?;
    stack::psql(&args.database_url, "create database faceswap_bench")?;
    let ctx = Ctx {
        paths: Paths {
            bin_dir: args.bin_dir.clone(),
            work: std::fs::canonicalize(&work)?,
        },
        env: GatewayEnv {
            database_url,
            redis_url: args.redis_url.clone(),
        },
        step: Duration::from_secs(args.step_seconds),
    };
    let wanted = |n: u8| args.only.is_empty() || args.only.contains(&n);

    let _sim = stack::start_sim(&ctx.paths).await?;
    let nginx_proc = stack::start_nginx(&ctx.paths, &args.face).await?;
    stack::gateway_cli(&ctx.paths, &ctx.env, &["migrate"])?;
    let tenant = stack::create_tenant(&ctx.paths, &ctx.env, "bench", 100)?;
    let gateway = stack::start_gateway(&ctx.paths, &ctx.env, "gateway", GATEWAY_PORT, &[]).await?;
    let jwt = stack::gateway_token(&gateway.url, &tenant).await?;
    let sim_jwt = stack::sim_token(&stack::sim_url()).await?;
    let nginx = format!("http://127.0.0.1:{}", stack::NGINX_PROXY_PORT);
    let three = |path: &str, body: PathBuf, upstream_path: &str| {
        vec![
            oha::Call {
                target: "direct",
                url: format!("{}{upstream_path}", stack::sim_url()),
                bearer: sim_jwt.clone(),
                body: body.clone(),
                proxy: None,
            },
            oha::Call {
                target: "nginx",
                url: format!("{nginx}{upstream_path}"),
                bearer: sim_jwt.clone(),
                body: body.clone(),
                proxy: Some(nginx_proc.pid()),
            },
            oha::Call {
                target: "gateway",
                url: format!("{}{path}", gateway.url),
                bearer: jwt.clone(),
                body,
                proxy: Some(gateway.proc.pid()),
            },
        ]
    };

    let mut results = Results {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        cpu: cpu_model(),
        revision: revision(),
        step_seconds: args.step_seconds,
        ..Results::default()
    };

    if wanted(1) {
        let body = serde_json::to_vec(&serde_json::json!({
            "image_url": format!("http://127.0.0.1:{}/face.jpg", stack::NGINX_STATIC_PORT)
        }))?;
        let calls = three(
            "/detect",
            ctx.body_file("detect-small.json", &body)?,
            "/detect",
        );
        results.detect_small = scenario(&mut results.failed, "1 detect (image_url)", async {
            forwarding::run(&calls, ctx.step, &[0.1, 0.25, 0.5, 0.75, 0.9], Some(0.5)).await
        })
        .await;
    }
    if wanted(2) {
        results.detect_big = scenario(&mut results.failed, "2 detect (10 MB img)", async {
            let body = big_body::body(&args.face)?;
            let calls = three(
                "/detect",
                ctx.body_file("detect-big.json", &body)?,
                "/detect",
            );
            big_body::run(&calls, &gateway.proc, body.len(), ctx.step).await
        })
        .await;
    }
    if wanted(3) {
        results.info = scenario(&mut results.failed, "3 info", async {
            let (gateway_id, upstream_id) =
                cycles::open_session(&reqwest::Client::new(), &ctx.env, &gateway.url, &jwt).await?;
            let info = "/api/open/v3/faceswap/live/info";
            let mut calls = three(
                info,
                ctx.body_file(
                    "info-upstream.json",
                    &serde_json::to_vec(&serde_json::json!({"_id": upstream_id}))?,
                )?,
                info,
            );
            calls[2].body = ctx.body_file(
                "info-gateway.json",
                &serde_json::to_vec(&serde_json::json!({"_id": gateway_id}))?,
            )?;
            forwarding::run(&calls, ctx.step, &[0.5], None).await
        })
        .await;
    }
    if wanted(4) {
        results.cycles = scenario(&mut results.failed, "4 create → close", async {
            cycles::run(&ctx, &gateway.url, &jwt).await
        })
        .await;
    }
    if wanted(5) {
        results.storm = scenario(&mut results.failed, "5 token expiry storm", async {
            token_storm::run(&ctx, &tenant).await
        })
        .await;
    }
    if wanted(6) {
        results.reaper = scenario(&mut results.failed, "6 reaper", async {
            let many = stack::create_tenant(
                &ctx.paths,
                &ctx.env,
                "bench-reaper",
                2 * reaper::SESSIONS as u32,
            )?;
            reaper::run(&ctx, &gateway.url, &many).await
        })
        .await;
    }
    drop(gateway);
    if wanted(7) {
        results.footprint = scenario(&mut results.failed, "7 idle footprint", async {
            footprint::run(&ctx).await
        })
        .await;
    }

    write(&args.results, &results)?;
    if let Some(dir) = args.report.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.report, report::markdown(&results))?;
    eprintln!(
        "bench: wrote {} and {}",
        args.report.display(),
        args.results.display()
    );
    if !results.failed.is_empty() {
        anyhow::bail!("scenarios not measured: {:?}", results.failed);
    }
    Ok(())
}

/// Runs one scenario; a failure is recorded and the run goes on with the next.
async fn scenario<T: Serialize>(
    failed: &mut Vec<String>,
    name: &str,
    run: impl Future<Output = anyhow::Result<T>>,
) -> Option<T> {
    eprintln!("bench: scenario {name}");
    match run.await {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("bench: scenario {name} failed: {e:#}");
            failed.push(format!("{name}: {e:#}"));
            None
        }
    }
}

fn write(path: &PathBuf, results: &Results) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(results)?)?;
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn revision() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}
