//! Per-tenant rate limits, shared by every replica through Redis.
//!
//! The algorithm is GCRA, run as a Lua script on one key per tenant (the tenant's "theoretical
//! arrival time"), with Redis's own clock so replicas with skewed clocks agree. A replica sends
//! at most one script per tenant at a time: requests arriving while it runs wait and are
//! counted together by the next one (the script grants the first `n` it can, in arrival order).
//!
//! A busy tenant would still cost a script per batch, and the script is the most expensive
//! thing Redis does for a request. So a replica whose tenant keeps it busy also takes grants
//! ahead of demand: about what the tenant asked of it in the last [`LEASE`], spent locally
//! without asking Redis until the lease ends. Leased grants are counted in Redis when they are
//! taken, so every replica together never grants more than the rate allows; a grant is spent at
//! most [`LEASE`] after Redis counted it, and what a lease leaves unspent is handed back with
//! the replica's next script. The next lease is asked for while the current one still serves
//! (a quarter of its grants or of its time left), so a steadily busy tenant's requests do not
//! wait for Redis at all. A lease never takes the last half of a tenant's burst: near its
//! limit a tenant's requests are decided one by one, in arrival order, as if there were no
//! leases, and no replica holds grants another one is refused.
//!
//! While Redis cannot be reached, each process enforces the same rate on its own (governor's
//! GCRA): with N replicas a tenant gets at most N times its rate during an outage, never an
//! unbounded one. After a Redis failure the process stays on its own limiter for
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

/// How long leased grants may be spent after they were taken: the most a tenant's requests
/// can run ahead of Redis's count. Short enough that, at any rate a tenant could notice, it is
/// a fraction of one request's interval; long enough that a replica busy with one tenant sends
/// it a script every few milliseconds rather than every few requests.
pub const LEASE: Duration = Duration::from_millis(10);
/// Most grants one lease takes.
pub const MAX_LEASE: u32 = 512;

/// GCRA for `n` requests at once, with a lease and a refund. KEYS[1]: the tenant's arrival-time
/// key. ARGV: emission interval (µs), burst, `n`, grants wanted ahead of demand, unspent grants
/// handed back. Returns {granted of the `n`, µs until the first refused one would be allowed
/// (0 when all were granted), grants leased}. Granting `n` in one step equals granting them one
/// by one: each advances the arrival time by one interval while it stays within the burst. A
/// refund moves it back by the intervals those grants took. Grants ahead of demand are given
/// only when all `n` were, and only from the first half of the burst. Times are µs since the
/// epoch, exact in Lua's doubles until the year 2255.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tolerance = interval * burst
local n = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local refund = tonumber(ARGV[5])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') - refund * interval
if tat < now then tat = now end
local available = math.floor((now + tolerance - tat) / interval)
local granted = math.min(math.max(available, 0), n)
local wait = 0
if granted < n then wait = tat + (granted + 1) * interval - tolerance - now end
local leased = 0
if granted == n then
  leased = math.max(0, math.min(want, available - n - math.ceil(burst / 2)))
end
local taken = granted + leased
if taken > 0 or refund > 0 then
  local next_tat = tat + taken * interval
  if next_tat > now then
    redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
  else
    redis.call('DEL', KEYS[1])
  end
end
return {granted, wait, leased}
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
                tenants: Mutex::default(),
                scripts: AtomicU64::new(0),
                leased: AtomicU64::new(0),
                waited: AtomicU64::new(0),
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

    /// Grants this process has leased from Redis ahead of demand.
    pub fn leased_grants(&self) -> u64 {
        self.shared.leased.load(Ordering::Relaxed)
    }

    /// Requests this process decided only after waiting for a script.
    pub fn waited_for_redis(&self) -> u64 {
        self.shared.waited.load(Ordering::Relaxed)
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

/// Grants a replica took from Redis ahead of demand.
#[derive(Debug, Clone, Copy)]
struct Lease {
    grants: u32,
    /// Grants it came with.
    size: u32,
    rate: Rate,
    until: Instant,
}

impl Lease {
    /// Whether the next lease should be asked for now, while this one still serves: a
    /// quarter of its grants or of its time is left, about ten times Redis's round trip.
    fn running_low(&self, now: Instant) -> bool {
        self.grants <= self.size / 4 || now + LEASE / 4 >= self.until
    }

    /// Spends one grant, if the lease has one left for this rate.
    fn spend(&mut self, rate: Rate, now: Instant) -> bool {
        let usable = self.grants > 0 && self.rate == rate && now < self.until;
        if usable {
            self.grants -= 1;
        }
        usable
    }

    /// The grants to hand back when the lease ends (none when the rate changed, as they were
    /// counted at another interval).
    fn unspent(self, rate: Rate) -> u32 {
        if self.rate == rate { self.grants } else { 0 }
    }
}

/// What one replica knows of one tenant's limit.
#[derive(Default)]
struct TenantLimit {
    /// Whether a script is in flight (its task also sends the ones after it).
    in_flight: bool,
    /// The rate the next script applies.
    rate: Rate,
    /// Who waits for the next script.
    waiting: Vec<oneshot::Sender<Answer>>,
    lease: Option<Lease>,
    /// What leases replaced before they ran out left unspent, to hand back with the next
    /// script.
    retired: Option<Lease>,
    /// Requests since the last script was sent, and when that was.
    demand: u32,
    last_script: Option<Instant>,
}

impl TenantLimit {
    fn spend_lease(&mut self, rate: Rate, now: Instant) -> bool {
        self.lease.as_mut().is_some_and(|l| l.spend(rate, now))
    }

    /// Ends `lease`; its unspent grants go back with the next script.
    fn retire(&mut self, lease: Lease) {
        self.retired = Some(match self.retired {
            Some(r) if r.rate == lease.rate => Lease {
                grants: r.grants.saturating_add(lease.grants),
                ..lease
            },
            _ => lease,
        });
    }

    /// Grants to ask for ahead of demand: what the tenant asked of this replica in the last
    /// [`LEASE`], judged from the requests since the last script. Starts the next count.
    fn next_lease_size(&mut self, now: Instant) -> u32 {
        let size = self.last_script.map_or(0, |at| {
            lease_size(self.demand, now.saturating_duration_since(at))
        });
        self.demand = 0;
        self.last_script = Some(now);
        size
    }
}

/// Grants wanted for the next [`LEASE`] when `demand` requests came in `elapsed`: none for a
/// tenant slower than one request per lease, at most [`MAX_LEASE`].
fn lease_size(demand: u32, elapsed: Duration) -> u32 {
    let per_lease = u128::from(demand) * LEASE.as_micros() / elapsed.as_micros().max(1);
    u32::try_from(per_lease).unwrap_or(u32::MAX).min(MAX_LEASE)
}

/// What one script decided.
struct Verdict {
    granted: usize,
    retry_after: Duration,
    leased: u32,
}

/// The Redis side: one script in flight per tenant, batching the requests that wait for it,
/// and the grants leased ahead of demand.
struct SharedLimiter {
    cache: Cache,
    script: redis::Script,
    tenants: Mutex<HashMap<Uuid, TenantLimit>>,
    /// Scripts sent so far.
    scripts: AtomicU64,
    /// Grants leased so far.
    leased: AtomicU64,
    /// Requests decided after waiting for a script.
    waited: AtomicU64,
}

impl SharedLimiter {
    async fn check(self: &Arc<Self>, tenant: Uuid, rate: Rate) -> Answer {
        let (rx, start) = {
            let mut tenants = self.lock();
            let limit = tenants.entry(tenant).or_default();
            limit.demand = limit.demand.saturating_add(1);
            let now = Instant::now();
            // Nobody waits ahead of this request: a leased grant keeps arrival order.
            if limit.waiting.is_empty() && limit.spend_lease(rate, now) {
                let renew = !limit.in_flight && limit.lease.is_some_and(|l| l.running_low(now));
                if renew {
                    limit.in_flight = true;
                    limit.rate = rate;
                }
                drop(tenants);
                if renew {
                    tokio::spawn(Arc::clone(self).drain(tenant, true));
                }
                return Ok(Decision::Allow);
            }
            let (tx, rx) = oneshot::channel();
            limit.rate = rate;
            limit.waiting.push(tx);
            (rx, !std::mem::replace(&mut limit.in_flight, true))
        };
        self.waited.fetch_add(1, Ordering::Relaxed);
        if start {
            // Its own task: a request that goes away must not strand the others.
            tokio::spawn(Arc::clone(self).drain(tenant, false));
        }
        rx.await
            .unwrap_or_else(|_| Err("the rate limit batch was dropped".into()))
    }

    /// Decides `tenant`'s waiting requests, from the lease while it lasts and by scripts,
    /// until nobody waits. `renewing`: first asks for the next lease, even with nobody waiting.
    async fn drain(self: Arc<Self>, tenant: Uuid, mut renewing: bool) {
        loop {
            let (rate, batch, want, refund, sent) = {
                let mut tenants = self.lock();
                let Some(limit) = tenants.get_mut(&tenant) else {
                    return;
                };
                let now = Instant::now();
                let rate = limit.rate;
                let mut batch = std::mem::take(&mut limit.waiting);
                // The first waiters, in arrival order, while the lease lasts.
                let from_lease = batch
                    .iter()
                    .take_while(|_| limit.spend_lease(rate, now))
                    .count();
                for waiter in batch.drain(..from_lease) {
                    let _ = waiter.send(Ok(Decision::Allow));
                }
                if batch.is_empty() && !std::mem::take(&mut renewing) {
                    limit.in_flight = false;
                    return;
                }
                // Someone waits: the lease no longer serves this rate.
                if !batch.is_empty()
                    && let Some(lease) = limit.lease.take()
                {
                    limit.retire(lease);
                }
                let refund = limit.retired.take().map_or(0, |l| l.unspent(rate));
                (rate, batch, limit.next_lease_size(now), refund, now)
            };
            match self.run(tenant, rate, batch.len(), want, refund).await {
                Ok(verdict) => {
                    if verdict.leased > 0 {
                        self.leased
                            .fetch_add(u64::from(verdict.leased), Ordering::Relaxed);
                        if let Some(limit) = self.lock().get_mut(&tenant) {
                            let next = Lease {
                                grants: verdict.leased,
                                size: verdict.leased,
                                rate,
                                // From when the script was sent: Redis counted the grants later.
                                until: sent + LEASE,
                            };
                            if let Some(replaced) = limit.lease.replace(next) {
                                limit.retire(replaced);
                            }
                        }
                    }
                    for (i, waiter) in batch.into_iter().enumerate() {
                        let decision = if i < verdict.granted {
                            Decision::Allow
                        } else {
                            Decision::Deny {
                                retry_after: verdict.retry_after,
                            }
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

    /// One script for `n` requests, wanting `want` more ahead of demand and handing back
    /// `refund` unspent ones.
    async fn run(
        &self,
        tenant: Uuid,
        rate: Rate,
        n: usize,
        want: u32,
        refund: u32,
    ) -> Result<Verdict, crate::cache::CacheError> {
        let key = self.cache.key(&format!("rate:{tenant}"));
        let interval = rate.emission_interval().as_micros().max(1).to_string();
        let burst = rate.burst.to_string();
        self.scripts.fetch_add(1, Ordering::Relaxed);
        crate::metrics::rate_limit_script();
        let (granted, wait_us, leased): (i64, i64, i64) = self
            .cache
            .script(
                &self.script,
                &[&key],
                &[
                    &interval,
                    &burst,
                    &n.to_string(),
                    &want.to_string(),
                    &refund.to_string(),
                ],
            )
            .await?;
        Ok(Verdict {
            granted: usize::try_from(granted).unwrap_or(0),
            retry_after: Duration::from_micros(wait_us.max(1).unsigned_abs()),
            leased: u32::try_from(leased).unwrap_or(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, TenantLimit>> {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
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
    use crate::domain::rate::MAX_RATE;

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

    #[test]
    fn a_lease_covers_the_demand_of_one_lease_period_up_to_a_cap() {
        assert_eq!(lease_size(1, Duration::from_secs(1)), 0, "a slow tenant");
        assert_eq!(lease_size(10, LEASE), 10);
        assert_eq!(lease_size(10, LEASE / 2), 20, "demand grows");
        assert_eq!(lease_size(u32::MAX, Duration::ZERO), MAX_LEASE);
    }

    #[tokio::test]
    async fn a_busy_tenant_spends_leased_grants_without_a_script_each() {
        let limiter = shared_limiter();
        let tenant = Uuid::new_v4();
        let rate = Rate::new(MAX_RATE, MAX_RATE).unwrap();
        for _ in 0..300 {
            assert_eq!(
                limiter.check(tenant, rate).await,
                (Decision::Allow, Source::Shared)
            );
        }
        assert!(limiter.leased_grants() > 0);
        // One script per request without leases.
        assert!(
            limiter.redis_scripts() < 30,
            "{} scripts for 300 requests",
            limiter.redis_scripts()
        );
    }

    #[tokio::test]
    async fn a_busy_tenant_asks_for_its_next_lease_while_the_current_one_still_serves() {
        let limiter = shared_limiter();
        let tenant = Uuid::new_v4();
        let rate = Rate::new(MAX_RATE, MAX_RATE).unwrap();
        let allowed = (Decision::Allow, Source::Shared);
        while limiter.leased_grants() == 0 {
            assert_eq!(limiter.check(tenant, rate).await, allowed);
        }
        let (waited, scripts, leased) = (
            limiter.waited_for_redis(),
            limiter.redis_scripts(),
            limiter.leased_grants(),
        );
        let mut spent = 0;
        while limiter.redis_scripts() == scripts {
            assert_eq!(limiter.check(tenant, rate).await, allowed);
            spent += 1;
            assert!(
                spent <= leased,
                "the lease ran out before its renewal was sent"
            );
            // Lets the renewal's task run on this single-threaded runtime.
            tokio::task::yield_now().await;
        }
        assert_eq!(
            limiter.waited_for_redis(),
            waited,
            "the renewal was sent while requests were still served from the lease"
        );
        let renewed = tokio::time::timeout(Duration::from_secs(5), async {
            while limiter.leased_grants() == leased {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(renewed.is_ok(), "no new lease");
        for _ in 0..10 {
            assert_eq!(limiter.check(tenant, rate).await, allowed);
        }
        assert_eq!(
            limiter.waited_for_redis(),
            waited,
            "served from the new lease"
        );
    }

    /// Two limiters on one Redis prefix, as two replicas.
    fn replicas() -> (RateLimiter, RateLimiter) {
        let url = faceswap_testkit::redis_url();
        let prefix = format!("test-{}:", Uuid::new_v4());
        (
            RateLimiter::new(Cache::new(&url, &prefix).unwrap()),
            RateLimiter::new(Cache::new(&url, &prefix).unwrap()),
        )
    }

    /// What a rate of one per second with `burst` may grant from `started` until now: the
    /// burst, plus one refill per second begun.
    fn burst_and_refill(burst: usize, started: Instant) -> std::ops::RangeInclusive<usize> {
        burst..=burst + started.elapsed().as_secs_f64().ceil() as usize
    }

    #[tokio::test]
    async fn replicas_with_leases_grant_the_burst_once_between_them() {
        let (a, b) = replicas();
        let tenant = Uuid::new_v4();
        let rate = Rate::new(1, 40).unwrap();
        let started = Instant::now();
        let mut allowed = 0;
        for i in 0..200 {
            let replica = if i % 4 == 3 { &b } else { &a };
            if replica.check(tenant, rate).await.0 == Decision::Allow {
                allowed += 1;
            }
        }
        assert!(a.leased_grants() > 0, "the busier replica leased grants");
        assert!(
            burst_and_refill(40, started).contains(&allowed),
            "{allowed} allowed in {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn an_unspent_lease_is_handed_back_with_the_next_script() {
        let (a, b) = replicas();
        let tenant = Uuid::new_v4();
        let rate = Rate::new(1, 20).unwrap();
        let started = Instant::now();
        let mut a_allowed = 0;
        while a.leased_grants() == 0 {
            assert_eq!(a.check(tenant, rate).await.0, Decision::Allow);
            a_allowed += 1;
            assert!(a_allowed < 10, "no lease taken");
        }
        // The lease ends unspent; the next script hands it back.
        tokio::time::sleep(2 * LEASE).await;
        assert_eq!(a.check(tenant, rate).await.0, Decision::Allow);
        a_allowed += 1;
        let mut b_allowed = 0;
        for _ in 0..20 {
            if b.check(tenant, rate).await.0 == Decision::Allow {
                b_allowed += 1;
            }
        }
        assert!(
            burst_and_refill(20, started).contains(&(a_allowed + b_allowed)),
            "{a_allowed} + {b_allowed} allowed, {} leased",
            a.leased_grants()
        );
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
