//! Scenario 5: 1,000 concurrent requests arriving as the upstream token expires. The same storm
//! with a fresh token, in the same run, is the baseline: the difference is what the expiry costs
//! (the gateway replaces the token ahead of its expiry, so it should cost nothing).
//! The same storm arriving as the upstream refuses the token shows what the one unavoidable
//! wait costs: every request needs the one new token.
//! The same storm sent straight to the simulator is the floor: what 1,000 requests at once cost
//! on this machine with no gateway at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Ctx, cycles, quantile};
use crate::stack::{self, Tenant};

pub const REQUESTS: usize = 1000;
/// The simulator's token lifetime during the scenario.
pub const TOKEN_TTL_SECONDS: u64 = 6;
const PORT: u16 = 19181;

#[derive(Debug, Clone, Serialize)]
pub struct Storm {
    pub requests: usize,
    pub fresh_p50_ms: f64,
    pub fresh_p99_ms: f64,
    pub fresh_get_token_calls: u64,
    pub expiry_p50_ms: f64,
    pub expiry_p99_ms: f64,
    /// getToken calls from the end of the fresh-token storm to the end of the expiry storm:
    /// the token's one replacement.
    pub expiry_get_token_calls: u64,
    /// The storm sent right after the simulator began refusing the token.
    pub refused_p50_ms: f64,
    pub refused_p99_ms: f64,
    pub refused_get_token_calls: u64,
    /// How late after the token's expiry the storm was sent.
    pub sent_after_expiry_ms: f64,
    /// The same storm straight to the simulator (its `info` with the upstream id).
    pub direct_p50_ms: f64,
    pub direct_p99_ms: f64,
    /// The simulator's getToken, called directly (median of 50).
    pub get_token_ms: f64,
    pub failures: usize,
}

impl Storm {
    /// What arriving at the expiry added to the storm's p99.
    pub fn added_p99_ms(&self) -> f64 {
        self.expiry_p99_ms - self.fresh_p99_ms
    }
}

pub async fn run(ctx: &Ctx, tenant: &Tenant) -> anyhow::Result<Storm> {
    stack::sim_config(json!({"token_ttl_seconds": TOKEN_TTL_SECONDS})).await?;
    let result = storm(ctx, tenant).await;
    stack::sim_config(json!({"token_ttl_seconds": 86_400})).await?;
    result
}

async fn storm(ctx: &Ctx, tenant: &Tenant) -> anyhow::Result<Storm> {
    // A gateway of its own: a new Redis prefix, so it starts by fetching a token that lives
    // TOKEN_TTL_SECONDS; API role only, so no worker calls the upstream in between.
    let gateway = stack::start_gateway(
        &ctx.paths,
        &ctx.env,
        "gateway-storm",
        PORT,
        &[("GATEWAY_ROLE", "api")],
    )
    .await?;
    let url = gateway.url.clone();
    let token = stack::gateway_token(&url, tenant).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(REQUESTS)
        .timeout(Duration::from_secs(30))
        .build()?;
    let (id, upstream_id) = cycles::open_session(&client, &ctx.env, &url, &token).await?;
    let shared = shared_token(ctx, &gateway).await?;
    let gateway_info = Target {
        url: format!("{url}/api/open/v3/faceswap/live/info"),
        bearer: token,
        id,
    };
    // Open every connection before the storms, so they measure requests, not handshakes: the
    // first storm opens the client's and the gateway's own to the simulator.
    let (_, warm_failures) = fire(&client, &gateway_info).await;
    if warm_failures > 0 {
        bail!("{warm_failures} of the warm-up storm's {REQUESTS} requests failed");
    }

    let fresh_before = stack::sim_get_token_calls().await?;
    let (mut fresh, fresh_failures) = fire(&client, &gateway_info).await;
    let expiry_before = stack::sim_get_token_calls().await?;
    let fresh_get_token_calls = expiry_before - fresh_before;
    if Instant::now() >= shared.refresh_at {
        bail!(
            "the fresh-token storm ran past the token's refresh point; a slower machine needs a longer TOKEN_TTL_SECONDS"
        );
    }

    // Idle until the token dies (no request in its refresh margin), then the storm.
    tokio::time::sleep_until(shared.expires_at.into()).await;
    let sent_after_expiry_ms = shared.expires_at.elapsed().as_secs_f64() * 1000.0;
    let (mut expiry, expiry_failures) = fire(&client, &gateway_info).await;
    let refused_before = stack::sim_get_token_calls().await?;
    let expiry_get_token_calls = refused_before - expiry_before;

    stack::sim_expire_tokens().await?;
    let (mut refused, refused_failures) = fire(&client, &gateway_info).await;
    let refused_get_token_calls = stack::sim_get_token_calls().await? - refused_before;

    let sim = stack::sim_url();
    let direct_info = Target {
        url: format!("{sim}/api/open/v3/faceswap/live/info"),
        bearer: stack::sim_token(&sim).await?,
        id: upstream_id,
    };
    let (_, warm_failures) = fire(&client, &direct_info).await;
    let (mut direct_storm, direct_failures) = fire(&client, &direct_info).await;

    let mut direct = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        stack::sim_token(&sim).await?;
        direct.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(Storm {
        requests: REQUESTS,
        fresh_p50_ms: quantile(&mut fresh, 0.5),
        fresh_p99_ms: quantile(&mut fresh, 0.99),
        fresh_get_token_calls,
        expiry_p50_ms: quantile(&mut expiry, 0.5),
        expiry_p99_ms: quantile(&mut expiry, 0.99),
        expiry_get_token_calls,
        sent_after_expiry_ms,
        refused_p50_ms: quantile(&mut refused, 0.5),
        refused_p99_ms: quantile(&mut refused, 0.99),
        refused_get_token_calls,
        direct_p50_ms: quantile(&mut direct_storm, 0.5),
        direct_p99_ms: quantile(&mut direct_storm, 0.99),
        get_token_ms: quantile(&mut direct, 0.5),
        failures: fresh_failures
            + expiry_failures
            + refused_failures
            + warm_failures
            + direct_failures,
    })
}

/// When the gateway's shared upstream token is due for refresh and when it dies, on this
/// process's clock.
struct SharedToken {
    refresh_at: Instant,
    expires_at: Instant,
}

async fn shared_token(ctx: &Ctx, gateway: &stack::Gateway) -> anyhow::Result<SharedToken> {
    let key = format!("{}upstream:token", stack::redis_prefix(&gateway.proc.name));
    let mut redis = redis::Client::open(ctx.env.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let stored: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut redis).await?;
    let stored: Value =
        serde_json::from_str(&stored.with_context(|| format!("no token under {key}"))?)?;
    let ms = |k: &str| stored[k].as_i64().with_context(|| format!("{k} missing"));
    let (fetched, expires) = (ms("fetched_at_ms")?, ms("expires_at_ms")?);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let at = |unix_ms: i64| {
        Instant::now() + Duration::from_millis(u64::try_from(unix_ms - now_ms).unwrap_or(0))
    };
    Ok(SharedToken {
        refresh_at: at(expires - (expires - fetched) / 10),
        expires_at: at(expires),
    })
}

/// Where a storm's `info` calls go: the gateway, or the simulator straight.
struct Target {
    url: String,
    bearer: String,
    /// The session's id there.
    id: String,
}

/// `REQUESTS` info calls at once; their latencies (ms) and how many failed.
async fn fire(client: &reqwest::Client, target: &Target) -> (Vec<f64>, usize) {
    let body = Arc::new(json!({ "_id": target.id }));
    let calls = (0..REQUESTS).map(|_| {
        let (client, body) = (client.clone(), body.clone());
        let (url, token) = (target.url.clone(), target.bearer.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let ok = match client
                .post(url)
                .bearer_auth(token)
                .json(&*body)
                .send()
                .await
            {
                Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
                Err(_) => false,
            };
            (started.elapsed().as_secs_f64() * 1000.0, ok)
        })
    });
    let done = futures_util::future::join_all(calls).await;
    let mut latencies = Vec::with_capacity(REQUESTS);
    let mut failures = 0;
    for r in done {
        match r {
            Ok((ms, true)) => latencies.push(ms),
            _ => failures += 1,
        }
    }
    (latencies, failures)
}
