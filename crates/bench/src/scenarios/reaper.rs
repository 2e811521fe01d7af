//! Scenario 6: 10,000 open sessions all turn idle at once while every simulator call takes
//! 20 ms; how long until the gateway's workers have closed them all.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

use super::{Ctx, cycles};
use crate::stack::{self, Tenant};

pub const SESSIONS: usize = 10_000;
pub const CLOSE_LATENCY_MS: u64 = 20;
const CREATE_CONCURRENCY: usize = 32;
const GIVE_UP: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Serialize)]
pub struct Reaped {
    pub sessions: usize,
    pub close_latency_ms: u64,
    /// Creating them, through the API, for the record.
    pub create_seconds: f64,
    /// From the moment all turned idle to the last one closed.
    pub seconds_to_close_all: f64,
}

pub async fn run(ctx: &Ctx, gateway_url: &str, tenant: &Tenant) -> anyhow::Result<Reaped> {
    let pool = PgPool::connect(&ctx.env.database_url).await?;
    let token = stack::gateway_token(gateway_url, tenant).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CREATE_CONCURRENCY)
        .build()?;
    let url = format!("{gateway_url}/api/open/v3/faceswap/live/create");
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    futures_util::stream::iter(0..SESSIONS)
        .for_each_concurrent(CREATE_CONCURRENCY, |_| {
            let (client, url, token, failed) = (&client, &url, &token, failed.clone());
            async move {
                if let Err(e) = cycles::post(client, url, token, &cycles::create_body()).await
                    && failed.fetch_add(1, Ordering::Relaxed) == 0
                {
                    eprintln!("  first failed create: {e:#}");
                }
            }
        })
        .await;
    let create_seconds = started.elapsed().as_secs_f64();
    if failed.load(Ordering::Relaxed) > 0 {
        bail!(
            "{} of {SESSIONS} creates failed",
            failed.load(Ordering::Relaxed)
        );
    }
    eprintln!("  {SESSIONS} sessions created in {create_seconds:.1} s");

    stack::sim_config(json!({"latency_ms": CLOSE_LATENCY_MS})).await?;
    // The last create is more than a second old: an idle timeout of one second makes every
    // session due at the same moment.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let result = async {
        stack::gateway_cli(
            &ctx.paths,
            &ctx.env,
            &[
                "tenant",
                "update",
                "--tenant-id",
                &tenant.id,
                "--idle-timeout-seconds",
                "1",
            ],
        )?;
        let idle_from = Instant::now();
        loop {
            let left: i64 = sqlx::query_scalar(
                "select count(*) from sessions s join tenants t using (tenant_id) \
                 where t.name = $1 and s.state <> 'closed'",
            )
            .bind(&tenant.name)
            .fetch_one(&pool)
            .await?;
            if left == 0 {
                break;
            }
            if idle_from.elapsed() > GIVE_UP {
                bail!("{left} sessions still open after {GIVE_UP:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(idle_from.elapsed().as_secs_f64())
    }
    .await;
    stack::sim_config(json!({"latency_ms": 0})).await?;
    Ok(Reaped {
        sessions: SESSIONS,
        close_latency_ms: CLOSE_LATENCY_MS,
        create_seconds,
        seconds_to_close_all: result?,
    })
}
