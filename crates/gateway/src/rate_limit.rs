//! Per-tenant rate limits, shared by every replica through Redis.
//!
//! The algorithm is GCRA, run as a Lua script on one key per tenant (the tenant's "theoretical
//! arrival time"), with Redis's own clock so replicas with skewed clocks agree. A replica sends
//! at most one script per tenant at a time: requests arriving while it runs wait and are
//! counted together by the next one (the script grants the first `n` it can), so a busy tenant
//! costs one Redis round trip per batch instead of per request, and the answer per request is
//! the same as if each had been counted alone, in arrival order. While Redis cannot be reached,
//! each process enforces the same rate on its own (governor's GCRA): with N replicas a tenant
//! gets at most N times its rate during an outage, never an unbounded one. After a Redis failure the process stays on its own limiter for
//! [`REDIS_RETRY`] instead of paying Redis's timeout on every request.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cache::Cache;
use crate::domain::rate::{Decision, Rate};

/// How long the process uses its own limiter after Redis failed.
pub const REDIS_RETRY: Duration = Duration::from_secs(1);
/// How often every tenant's rate is reloaded from Postgres (a change made through the admin
/// API or the CLI applies everywhere within this period).
pub const RATES_REFRESH: Duration = Duration::from_secs(2);

/// GCRA for `n` requests at once. KEYS[1]: the tenant's arrival-time key. ARGV[1]: emission
/// interval, µs. ARGV[2]: burst. ARGV[3]: n. Returns {granted, µs until the first refused one
/// would be allowed (0 when all were granted)}. Granting `n` in one step equals granting them
/// one by one: each advances the arrival time by one interval while it stays within the burst.
/// Times are µs since the epoch, exact in Lua's doubles until the year 2255.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local granted = math.floor((now + tolerance - tat) / interval)
if granted > n then granted = n end
if granted < 0 then granted = 0 end
local wait = 0
if granted < n then wait = tat + (granted + 1) * interval - tolerance - now end
if granted > 0 then
  local next_tat = tat + granted * interval
  redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
end
return {granted, wait}
";

/// Every tenant's rate, as Postgres has it.
#[derive(Default)]
pub struct TenantRates {
    rates: RwLock<HashMap<Uuid, Rate>>,
}

impl TenantRates {
    /// The tenant's rate: from memory, or read once from Postgres for a tenant created since
    /// the last reload. `None` when there is no such tenant.
    pub async fn get(&self, db: &PgPool, tenant: Uuid) -> sqlx::Result<Option<Rate>> {
        if let Some(rate) = self.read().get(&tenant) {
            return Ok(Some(*rate));
        }
        let row: Option<(i32, i32)> =
            sqlx::query_as("select requests_per_second, burst from tenants where tenant_id = $1")
                .bind(tenant)
                .fetch_optional(db)
                .await?;
        let rate = row.map(|(rps, burst)| Rate::new(rps, burst).unwrap_or_default());
        if let Some(rate) = rate {
            self.write().insert(tenant, rate);
        }
        Ok(rate)
    }

    /// Reloads every tenant's rate.
    pub async fn refresh(&self, db: &PgPool) -> sqlx::Result<()> {
        let rows: Vec<(Uuid, i32, i32)> =
            sqlx::query_as("select tenant_id, requests_per_second, burst from tenants")
                .fetch_all(db)
                .await?;
        let fresh = rows
            .into_iter()
            .map(|(id, rps, burst)| (id, Rate::new(rps, burst).unwrap_or_default()))
            .collect();
        *self.write() = fresh;
        Ok(())
    }

    /// Sets one tenant's rate at once (the replica that changed it need not wait).
    pub fn set(&self, tenant: Uuid, rate: Rate) {
        self.write().insert(tenant, rate);
    }

    /// Reloads every [`RATES_REFRESH`] until `stop` fires.
    pub async fn run_until_stopped(&self, db: PgPool, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RATES_REFRESH) => {}
            }
            if let Err(e) = self.refresh(&db).await {
                tracing::warn!(error = %e, "reloading tenant rates failed; keeping the last ones");
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Uuid, Rate>> {
        self.rates.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Uuid, Rate>> {
        self.rates.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where a decision was made, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Redis, shared by every replica.
    Shared,
    /// This process alone, because Redis could not be reached.
    Local,
}

impl Source {
    /// Label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Shared => "redis",
            Self::Local => "local",
        }
    }
}

/// Checks requests against their tenant's rate.
pub struct RateLimiter {
    /// Every tenant's rate.
    pub rates: TenantRates,
    shared: Arc<SharedLimiter>,
    local: Mutex<HashMap<Uuid, (Rate, DefaultDirectRateLimiter)>>,
    redis_failed_at: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A limiter storing its counters in `cache`.
    pub fn new(cache: Cache) -> Self {
        Self {
            rates: TenantRates::default(),
            shared: Arc::new(SharedLimiter {
                cache,
                script: redis::Script::new(GCRA),
                queues: Mutex::default(),
                scripts: AtomicU64::new(0),
            }),
            local: Mutex::default(),
            redis_failed_at: Mutex::default(),
        }
    }

    /// Counts one request of `tenant` against `rate`.
    pub async fn check(&self, tenant: Uuid, rate: Rate) -> (Decision, Source) {
        if !self.redis_recently_failed() {
            match self.shared.check(tenant, rate).await {
                Ok(decision) => return (decision, Source::Shared),
                Err(e) => {
                    tracing::warn!(error = %e, "rate limiting without Redis for now; each replica limits on its own");
                    *self.lock_failed() = Some(Instant::now());
                }
            }
        }
        (self.check_local(tenant, rate), Source::Local)
    }

    /// Scripts this process has sent to Redis (each decides a batch of requests).
    pub fn redis_scripts(&self) -> u64 {
        self.shared.scripts.load(Ordering::Relaxed)
    }

    fn check_local(&self, tenant: Uuid, rate: Rate) -> Decision {
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let entry = local
            .entry(tenant)
            .or_insert_with(|| (rate, direct_limiter(rate)));
        if entry.0 != rate {
            *entry = (rate, direct_limiter(rate));
        }
        match entry.1.check() {
            Ok(()) => Decision::Allow,
            Err(not_until) => Decision::Deny {
                retry_after: not_until
                    .wait_time_from(governor::clock::Clock::now(
                        &governor::clock::DefaultClock::default(),
                    ))
                    .max(Duration::from_millis(1)),
            },
        }
    }

    fn redis_recently_failed(&self) -> bool {
        let mut failed = self.lock_failed();
        match *failed {
            Some(at) if at.elapsed() < REDIS_RETRY => true,
            Some(_) => {
                *failed = None;
                false
            }
            None => false,
        }
    }

    fn lock_failed(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.redis_failed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// A decision, or why Redis gave none (as text: every waiter of a batch gets a copy).
type Answer = Result<Decision, Arc<str>>;

/// One tenant's requests waiting for the next script.
struct Queue {
    rate: Rate,
    waiting: Vec<oneshot::Sender<Answer>>,
}

/// The Redis side: one script in flight per tenant, batching the requests that wait for it.
struct SharedLimiter {
    cache: Cache,
    script: redis::Script,
    /// Tenants with a script in flight, and who waits for the next one.
    queues: Mutex<HashMap<Uuid, Queue>>,
    /// Scripts sent so far.
    scripts: AtomicU64,
}

impl SharedLimiter {
    async fn check(self: &Arc<Self>, tenant: Uuid, rate: Rate) -> Answer {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut queues = self.lock();
            match queues.get_mut(&tenant) {
                Some(queue) => {
                    queue.rate = rate;
                    queue.waiting.push(tx);
                    false
                }
                None => {
                    queues.insert(
                        tenant,
                        Queue {
                            rate,
                            waiting: vec![tx],
                        },
                    );
                    true
                }
            }
        };
        if start {
            // Its own task: a request that goes away must not strand the others.
            tokio::spawn(Arc::clone(self).drain(tenant));
        }
        rx.await
            .unwrap_or_else(|_| Err("the rate limit batch was dropped".into()))
    }

    /// Runs scripts for `tenant` until nobody waits; the entry is removed with the last batch.
    async fn drain(self: Arc<Self>, tenant: Uuid) {
        loop {
            let (rate, batch) = {
                let mut queues = self.lock();
                let Some(queue) = queues.get_mut(&tenant) else {
                    return;
                };
                if queue.waiting.is_empty() {
                    queues.remove(&tenant);
                    return;
                }
                (queue.rate, std::mem::take(&mut queue.waiting))
            };
            match self.run(tenant, rate, batch.len()).await {
                Ok((granted, retry_after)) => {
                    for (i, waiter) in batch.into_iter().enumerate() {
                        let decision = if i < granted {
                            Decision::Allow
                        } else {
                            Decision::Deny { retry_after }
                        };
                        // A waiter that went away leaves its grant unused.
                        let _ = waiter.send(Ok(decision));
                    }
                }
                Err(e) => {
                    let e: Arc<str> = e.to_string().into();
                    for waiter in batch {
                        let _ = waiter.send(Err(Arc::clone(&e)));
                    }
                }
            }
        }
    }

    /// One script for `n` requests: how many are granted, and when the rest may retry.
    async fn run(
        &self,
        tenant: Uuid,
        rate: Rate,
        n: usize,
    ) -> Result<(usize, Duration), crate::cache::CacheError> {
        let key = self.cache.key(&format!("rate:{tenant}"));
        let interval = rate.emission_interval().as_micros().max(1).to_string();
        let burst = rate.burst.to_string();
        self.scripts.fetch_add(1, Ordering::Relaxed);
        crate::metrics::rate_limit_script();
        let (granted, wait_us): (i64, i64) = self
            .cache
            .script(&self.script, &[&key], &[&interval, &burst, &n.to_string()])
            .await?;
        Ok((
            usize::try_from(granted).unwrap_or(0),
            Duration::from_micros(wait_us.max(1).unsigned_abs()),
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Queue>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn direct_limiter(rate: Rate) -> DefaultDirectRateLimiter {
    let per_second = NonZeroU32::new(rate.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
    governor::RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> RateLimiter {
        // Nothing listens on port 1: every Redis call fails at once.
        RateLimiter::new(Cache::new("redis://127.0.0.1:1", "test:").unwrap())
    }

    #[tokio::test]
    async fn without_redis_the_process_enforces_the_burst_on_its_own() {
        let limiter = limiter();
        let rate = Rate::new(1, 3).unwrap();
        let tenant = Uuid::new_v4();
        let mut decisions = Vec::new();
        for _ in 0..4 {
            decisions.push(limiter.check(tenant, rate).await);
        }
        assert!(decisions.iter().all(|(_, s)| *s == Source::Local));
        assert!(decisions[..3].iter().all(|(d, _)| *d == Decision::Allow));
        let (Decision::Deny { retry_after }, _) = decisions[3] else {
            panic!("the fourth request within a second must be refused: {decisions:?}");
        };
        assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
        // Another tenant has its own allowance.
        assert_eq!(limiter.check(Uuid::new_v4(), rate).await.0, Decision::Allow);
    }

    /// A limiter on the test Redis (`REDIS_URL`), under a prefix of its own.
    fn shared_limiter() -> RateLimiter {
        let url = faceswap_testkit::redis_url();
        let prefix = format!("test-{}:", Uuid::new_v4());
        RateLimiter::new(Cache::new(&url, &prefix).unwrap())
    }

    #[tokio::test]
    async fn concurrent_requests_of_a_tenant_are_decided_by_one_script_in_arrival_order() {
        let limiter = shared_limiter();
        let tenant = Uuid::new_v4();
        let rate = Rate::new(1, 20).unwrap();
        // On this single-threaded runtime all 50 are queued before the first script is sent.
        let decisions =
            futures_util::future::join_all((0..50).map(|_| limiter.check(tenant, rate))).await;
        assert!(
            decisions.iter().all(|(_, s)| *s == Source::Shared),
            "{decisions:?}"
        );
        assert_eq!(limiter.redis_scripts(), 1, "one round trip for the batch");
        // The burst, to the first twenty; the rest are told when the next one is allowed.
        assert!(
            decisions[..20].iter().all(|(d, _)| *d == Decision::Allow),
            "{decisions:?}"
        );
        for (decision, _) in &decisions[20..] {
            let Decision::Deny { retry_after } = decision else {
                panic!("beyond the burst: {decisions:?}");
            };
            assert!(*retry_after <= Duration::from_secs(1), "{retry_after:?}");
        }
    }

    #[tokio::test]
    async fn a_changed_rate_replaces_the_local_limiter() {
        let limiter = limiter();
        let tenant = Uuid::new_v4();
        let one = Rate::new(1, 1).unwrap();
        assert_eq!(limiter.check(tenant, one).await.0, Decision::Allow);
        assert_ne!(limiter.check(tenant, one).await.0, Decision::Allow);
        let more = Rate::new(1, 5).unwrap();
        assert_eq!(limiter.check(tenant, more).await.0, Decision::Allow);
    }
}
