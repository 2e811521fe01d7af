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
/// Each storm is sent this many times (one expiry per round); figures are the rounds' median,
/// because one storm lasts tens of milliseconds and a neighbour's hiccup moves it.
pub const ROUNDS: usize = 3;
/// The simulator's token lifetime during the scenario.
pub const TOKEN_TTL_SECONDS: u64 = 6;
const PORT: u16 = 19181;

/// One kind of storm over the rounds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Storms {
    /// Median over the rounds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p99_by_round_ms: Vec<f64>,
}

impl Storms {
    fn of(rounds: &mut [Vec<f64>]) -> Self {
        let mut p50: Vec<f64> = rounds.iter_mut().map(|r| quantile(r, 0.5)).collect();
        let p99: Vec<f64> = rounds.iter_mut().map(|r| quantile(r, 0.99)).collect();
        Self {
            p50_ms: quantile(&mut p50, 0.5),
            p99_ms: quantile(&mut p99.clone(), 0.5),
            p99_by_round_ms: p99,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Storm {
    pub requests: usize,
    pub rounds: usize,
    /// Storms on a fresh token.
    pub fresh: Storms,
    pub fresh_get_token_calls: u64,
    /// Storms sent as the token in use when the round began dies.
    pub expiry: Storms,
    /// Per round, getToken calls from the end of the fresh-token storm to the end of the
    /// expiry storm: the token's one replacement.
    pub expiry_get_token_calls: Vec<u64>,
    /// getToken calls while the expiry storms were in flight (the replacement came before).
    pub get_token_calls_during_expiry_storms: u64,
    /// Latest an expiry storm was sent after the token's death.
    pub sent_after_expiry_ms: f64,
    /// Storms sent right after the simulator began refusing the token.
    pub refused: Storms,
    pub refused_get_token_calls: Vec<u64>,
    /// The same storms straight to the simulator (its `info` with the upstream id).
    pub direct: Storms,
    /// The simulator's getToken, called directly (median of 50).
    pub get_token_ms: f64,
    pub failures: usize,
}

impl Storm {
    /// What arriving at the expiry added to the storm's p99: the median over the rounds of the
    /// expiry storm's p99 less the same round's fresh-token storm's.
    pub fn added_p99_ms(&self) -> f64 {
        let mut added: Vec<f64> = (self.expiry.p99_by_round_ms.iter())
            .zip(&self.fresh.p99_by_round_ms)
            .map(|(e, f)| e - f)
            .collect();
        quantile(&mut added, 0.5)
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
    let sim = stack::sim_url();
    let gateway_info = Target {
        url: format!("{url}/api/open/v3/faceswap/live/info"),
        bearer: token,
        id,
    };
    let mut direct_info = Target {
        url: format!("{sim}/api/open/v3/faceswap/live/info"),
        bearer: String::new(),
        id: upstream_id,
    };
    // This gateway's own getToken calls: the simulator's count would include the other
    // gateway's, whose token the refused storms kill too.
    let gets = || stack::gateway_token_fetches(&url);
    let mut failures = 0;
    let (mut fresh, mut expiry, mut refused, mut direct) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut fresh_get_token_calls, mut expiry_get_token_calls, mut during_expiry) =
        (0, Vec::new(), 0);
    let mut refused_get_token_calls = Vec::new();
    let mut sent_after_expiry_ms = 0.0_f64;
    for _ in 0..ROUNDS {
        let shared = shared_token(ctx, &gateway).await?;
        // Open every connection before the storms, so they measure requests, not handshakes:
        // an unmeasured storm opens the client's and the gateway's own to the simulator.
        failures += fire(&client, &gateway_info).await.1;

        let fresh_before = gets().await?;
        let (latencies, failed) = fire(&client, &gateway_info).await;
        let fresh_after = gets().await?;
        if Instant::now() >= shared.refresh_at {
            bail!(
                "the fresh-token storm ran past the token's refresh point; a slower machine needs a longer TOKEN_TTL_SECONDS"
            );
        }
        fresh.push(latencies);
        fresh_get_token_calls += fresh_after - fresh_before;
        failures += failed;

        // Idle until the token dies (no request in its last tenth of life), then the storm.
        tokio::time::sleep_until(shared.expires_at.into()).await;
        sent_after_expiry_ms =
            sent_after_expiry_ms.max(shared.expires_at.elapsed().as_secs_f64() * 1000.0);
        let storm_before = gets().await?;
        let (latencies, failed) = fire(&client, &gateway_info).await;
        let expiry_after = gets().await?;
        expiry.push(latencies);
        expiry_get_token_calls.push(expiry_after - fresh_after);
        during_expiry += expiry_after - storm_before;
        failures += failed;

        stack::sim_expire_tokens().await?;
        let (latencies, failed) = fire(&client, &gateway_info).await;
        refused.push(latencies);
        refused_get_token_calls.push(gets().await? - expiry_after);
        failures += failed;

        direct_info.bearer = stack::sim_token(&sim).await?;
        failures += fire(&client, &direct_info).await.1;
        let (latencies, failed) = fire(&client, &direct_info).await;
        direct.push(latencies);
        failures += failed;
    }

    let mut get_token = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        stack::sim_token(&sim).await?;
        get_token.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(Storm {
        requests: REQUESTS,
        rounds: ROUNDS,
        fresh: Storms::of(&mut fresh),
        fresh_get_token_calls,
        expiry: Storms::of(&mut expiry),
        expiry_get_token_calls,
        get_token_calls_during_expiry_storms: during_expiry,
        sent_after_expiry_ms,
        refused: Storms::of(&mut refused),
        refused_get_token_calls,
        direct: Storms::of(&mut direct),
        get_token_ms: quantile(&mut get_token, 0.5),
        failures,
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
