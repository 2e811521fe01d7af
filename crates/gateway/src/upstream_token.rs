//! The upstream access token, shared by every replica through Redis.
//!
//! One caller at a time, across all replicas, fetches a new token (a Redis lock with expiry);
//! the others wait for it to appear. Within a process a mutex keeps the waiting to one task.
//!
//! Requests should never wait for a token. Each process runs a refresher
//! ([`UpstreamTokens::run_until_stopped`]) that replaces the token once a tenth of its life is
//! left, whether or not traffic comes meanwhile, and until then callers keep using the old one
//! (it is still valid). A caller waits only when there is no usable token: at start before the
//! refresher's first fetch, after the upstream refused the token, or while refreshing fails.
//! When Redis is unreachable each process falls back to its own copy and fetches for itself.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use faceswap_upstream::{UpstreamClient, UpstreamError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;

/// How long a fetcher may hold the refresh lock before others may take over.
const LOCK_TTL: Duration = Duration::from_secs(10);
/// How often waiters look for the new token.
const POLL: Duration = Duration::from_millis(20);
/// Longest refresh margin, however long the token lives.
const MAX_MARGIN_MS: i64 = 300_000;
/// The refresher's first wait after a failed refresh; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// A token with its lifetime, as kept locally and in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedToken {
    /// The upstream token.
    pub token: String,
    /// Its `exp`, Unix milliseconds.
    pub expires_at_ms: i64,
    /// When it was fetched, Unix milliseconds.
    pub fetched_at_ms: i64,
}

/// What a token fetched at `fetched` and dying at `expires` (Unix ms) is good for at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Use it.
    Fresh,
    /// Use it, and replace it: a tenth of its lifetime (at most five minutes) is left.
    Due,
    /// Too near its `exp` to send (a request may still be in flight when it dies, and our
    /// clock is not the upstream's): wait for a new one. The last half of the margin.
    Spent,
}

/// The refresh margin of a token fetched at `fetched` and dying at `expires`: a tenth of its
/// lifetime, at most five minutes.
fn margin(fetched: i64, expires: i64) -> i64 {
    ((expires - fetched) / 10).clamp(0, MAX_MARGIN_MS)
}

/// What a token fetched at `fetched` and dying at `expires` is good for at `now`.
pub fn freshness(fetched: i64, expires: i64, now: i64) -> Freshness {
    let margin = margin(fetched, expires);
    if now < expires - margin {
        Freshness::Fresh
    } else if now < expires - margin / 2 {
        Freshness::Due
    } else {
        Freshness::Spent
    }
}

/// When (Unix ms) a token fetched at `fetched` and dying at `expires` becomes due.
pub fn due_at(fetched: i64, expires: i64) -> i64 {
    expires - margin(fetched, expires)
}

/// The refresher's wait after `failures` refreshes in a row failed (at least one).
pub fn retry_after(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_RETRY)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl CachedToken {
    fn freshness(&self, now: i64) -> Freshness {
        freshness(self.fetched_at_ms, self.expires_at_ms, now)
    }

    fn is_fresh(&self, now: i64) -> bool {
        self.freshness(now) == Freshness::Fresh
    }

    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

// Deletes the shared token only if it is still the one the caller saw refused, so a token that
// another replica already replaced is not thrown away.
const DELETE_IF_EQUAL: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0";

/// Provides the upstream token to every upstream call.
pub struct UpstreamTokens {
    client: UpstreamClient,
    client_id: String,
    client_secret: String,
    cache: Cache,
    local: Mutex<Option<CachedToken>>,
    refresh: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
}

impl UpstreamTokens {
    /// Tokens for the account `client_id`.
    pub fn new(
        client: UpstreamClient,
        client_id: String,
        client_secret: String,
        cache: Cache,
    ) -> Self {
        Self {
            client,
            client_id,
            client_secret,
            cache,
            local: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        }
    }

    /// getToken calls this process has made.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn local(&self) -> Option<CachedToken> {
        self.local.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn local_fresh(&self, now: i64) -> Option<CachedToken> {
        self.local().filter(|t| t.is_fresh(now))
    }

    fn set_local(&self, token: CachedToken) {
        *self.local.lock().unwrap_or_else(|e| e.into_inner()) = Some(token);
    }

    /// Runs `call` with the current token; when the upstream refuses the token, refreshes it
    /// and runs `call` once more.
    pub async fn with_token<T, F, Fut>(&self, call: F) -> Result<T, UpstreamError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let token = self.current().await?;
        match call(token.token.clone()).await {
            Err(e) if e.is_token_rejected() => {
                tracing::info!("upstream refused its token; refreshing");
                crate::metrics::upstream_token_refused(e.call());
                self.invalidate(&token).await;
                let fresh = self.current().await?;
                call(fresh.token).await
            }
            other => other,
        }
    }

    /// A token to send: the one held while it is usable (a due one is being replaced by the
    /// refresher), else a new one, fetched once for all the callers waiting.
    pub async fn current(&self) -> Result<CachedToken, UpstreamError> {
        if let Some(t) = self
            .local()
            .filter(|t| t.freshness(now_ms()) != Freshness::Spent)
        {
            return Ok(t);
        }
        self.refresh_unless_fresh().await
    }

    /// The held token if it is fresh, else a new one (from Redis, or fetched), one caller at a
    /// time.
    async fn refresh_unless_fresh(&self) -> Result<CachedToken, UpstreamError> {
        let _single_flight = self.refresh.lock().await;
        if let Some(t) = self.local_fresh(now_ms()) {
            return Ok(t);
        }
        let token = self.shared_or_local().await?;
        self.set_local(token.clone());
        Ok(token)
    }

    /// Keeps a fresh token until `stop`: takes one at once, then replaces each as it becomes
    /// due. A failed refresh is retried with a growing wait ([`retry_after`]); meanwhile
    /// callers use the old token while it lasts, then try for themselves.
    pub async fn run_until_stopped(&self, stop: CancellationToken) {
        let mut failures = 0;
        loop {
            let wait = if failures > 0 {
                retry_after(failures)
            } else {
                self.local().map_or(Duration::ZERO, |t| {
                    let ms = due_at(t.fetched_at_ms, t.expires_at_ms) - now_ms();
                    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
                })
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            match self.refresh_unless_fresh().await {
                Ok(t) if t.is_fresh(now_ms()) => failures = 0,
                // Due as soon as fetched (the upstream's clock is ahead of ours, or its tokens
                // live under a few ms): refreshing again at once would loop on getToken.
                Ok(t) => {
                    failures += 1;
                    tracing::warn!(
                        expires_at_ms = t.expires_at_ms,
                        failures,
                        "the new upstream token is already due; retrying later"
                    );
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "refreshing the upstream token failed; retrying");
                }
            }
        }
    }

    /// The token through Redis: the fresh shared one, or a new one fetched under the lock.
    async fn shared_token(&self) -> Result<CachedToken, SharedError> {
        let key = self.cache.key("upstream:token");
        let lock_key = self.cache.key("upstream:token:lock");
        let deadline = tokio::time::Instant::now() + LOCK_TTL * 2;
        loop {
            if let Some(t) = self.fresh_shared(&key).await? {
                return Ok(t);
            }
            let nonce = uuid::Uuid::new_v4().to_string();
            let acquired: Option<String> = self
                .cache
                .query(
                    redis::cmd("SET")
                        .arg(&lock_key)
                        .arg(&nonce)
                        .arg("NX")
                        .arg("PX")
                        .arg(LOCK_TTL.as_millis() as u64),
                )
                .await?;
            if acquired.is_some() {
                // Another replica may have stored a token and released the lock between our
                // read above and taking the lock: look again before paying for a fetch.
                let (fetched, new) = match self.fresh_shared(&key).await {
                    Ok(Some(t)) => (Ok(t), false),
                    _ => (self.fetch().await, true),
                };
                if new && let Ok(t) = &fetched {
                    let ttl_ms = (t.expires_at_ms - now_ms()).max(1);
                    let stored: Result<(), _> = self
                        .cache
                        .query(
                            redis::cmd("SET")
                                .arg(&key)
                                .arg(t.encode())
                                .arg("PX")
                                .arg(ttl_ms),
                        )
                        .await;
                    if let Err(e) = stored {
                        tracing::warn!(error = %e, "could not share the upstream token");
                    }
                }
                let released: Result<i64, _> = self
                    .cache
                    .script(
                        &redis::Script::new(DELETE_IF_EQUAL),
                        &[&lock_key],
                        &[&nonce],
                    )
                    .await;
                if let Err(e) = released {
                    tracing::warn!(error = %e, "could not release the token lock; it expires by itself");
                }
                return fetched.map_err(SharedError::Upstream);
            }
            if tokio::time::Instant::now() >= deadline {
                // The holder is stuck or gone and its lock has not lapsed yet: fetch ourselves.
                return self.fetch().await.map_err(SharedError::Upstream);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The token stored under `key`, if it is not due for refresh.
    async fn fresh_shared(&self, key: &str) -> Result<Option<CachedToken>, SharedError> {
        let stored: Option<String> = self.cache.query(redis::cmd("GET").arg(key)).await?;
        Ok(stored
            .and_then(|s| serde_json::from_str::<CachedToken>(&s).ok())
            .filter(|t| t.is_fresh(now_ms())))
    }

    async fn fetch(&self) -> Result<CachedToken, UpstreamError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fetched_at_ms = now_ms();
        let issued = self
            .client
            .get_token(&self.client_id, &self.client_secret)
            .await;
        crate::metrics::upstream_token_fetched(issued.is_ok());
        let issued = issued?;
        tracing::info!(
            expires_at = issued.expires_at,
            "fetched a new upstream token"
        );
        Ok(CachedToken {
            token: issued.token,
            expires_at_ms: issued.expires_at.saturating_mul(1000),
            fetched_at_ms,
        })
    }

    /// Forgets a token the upstream refused, locally and (if still the same) in Redis.
    pub async fn invalidate(&self, refused: &CachedToken) {
        {
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            if local.as_ref() == Some(refused) {
                *local = None;
            }
        }
        let key = self.cache.key("upstream:token");
        let deleted: Result<i64, _> = self
            .cache
            .script(
                &redis::Script::new(DELETE_IF_EQUAL),
                &[&key],
                &[&refused.encode()],
            )
            .await;
        if let Err(e) = deleted {
            tracing::warn!(error = %e, "could not drop the refused token from redis");
        }
    }
}

/// Why the shared path did not give a token.
#[derive(Debug, thiserror::Error)]
enum SharedError {
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error(transparent)]
    Upstream(UpstreamError),
}

impl UpstreamTokens {
    /// Unwraps the shared path: upstream errors are final, cache errors mean "go local".
    async fn shared_or_local(&self) -> Result<CachedToken, UpstreamError> {
        match self.shared_token().await {
            Ok(t) => Ok(t),
            Err(SharedError::Upstream(e)) => Err(e),
            Err(SharedError::Cache(e)) => {
                tracing::warn!(error = %e, "redis unavailable; using a per-process upstream token");
                self.fetch().await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Freshness::{Due, Fresh, Spent};

    #[test]
    fn a_day_long_token_is_due_five_minutes_early_and_used_for_half_of_them() {
        let day = 86_400_000;
        assert_eq!(due_at(0, day), day - MAX_MARGIN_MS);
        assert_eq!(freshness(0, day, day - MAX_MARGIN_MS - 1), Fresh);
        assert_eq!(freshness(0, day, day - MAX_MARGIN_MS), Due);
        assert_eq!(freshness(0, day, day - MAX_MARGIN_MS / 2 - 1), Due);
        assert_eq!(freshness(0, day, day - MAX_MARGIN_MS / 2), Spent);
    }

    #[test]
    fn a_short_token_is_due_with_a_tenth_of_its_life_left() {
        assert_eq!(due_at(0, 3_000), 2_700);
        assert_eq!(freshness(0, 3_000, 2_699), Fresh);
        assert_eq!(freshness(0, 3_000, 2_700), Due);
        assert_eq!(freshness(0, 3_000, 2_849), Due);
        assert_eq!(freshness(0, 3_000, 2_850), Spent);
        assert_eq!(freshness(0, 3_000, 5_000), Spent);
    }

    #[test]
    fn a_token_already_dead_when_fetched_is_spent_at_once() {
        assert_eq!(due_at(10_000, 5_000), 5_000);
        assert_eq!(freshness(10_000, 5_000, 10_000), Spent);
    }

    #[test]
    fn the_refresher_retries_after_a_wait_that_doubles_up_to_thirty_seconds() {
        let waits: Vec<u64> = (1..=7).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(retry_after(u32::MAX), MAX_RETRY);
    }
}
