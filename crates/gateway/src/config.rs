//! Settings, from flags or (as operators use them) environment variables.
//!
//! Required settings are `Option`s checked by [`ServeArgs::into_config`], so a missing one stops
//! start-up with one line naming its variable, rather than clap's multi-line usage text.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

/// Settings of `faceswap-gateway serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Postgres connection URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Redis URL (`redis://host:port/db`), or a Redis Cluster's seed nodes
    /// (`redis+cluster://host1:6379,host2:6379`); the upstream token and counters live there.
    #[arg(
        long,
        env = "REDIS_URL",
        value_name = "REDIS_URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,
    /// Address the API listens on.
    #[arg(
        long,
        env = "GATEWAY_BIND",
        value_name = "GATEWAY_BIND",
        default_value = "127.0.0.1:8080"
    )]
    pub bind: SocketAddr,
    /// Base URL of the upstream API (its `/api/open/v3/...` paths are appended).
    #[arg(long, env = "UPSTREAM_BASE_URL", value_name = "UPSTREAM_BASE_URL")]
    pub upstream_base_url: Option<Url>,
    /// Full URL of the upstream's detect call; defaults to `$UPSTREAM_BASE_URL/detect`.
    #[arg(long, env = "UPSTREAM_DETECT_URL", value_name = "UPSTREAM_DETECT_URL")]
    pub upstream_detect_url: Option<Url>,
    /// The gateway's client id at the upstream.
    #[arg(long, env = "UPSTREAM_CLIENT_ID", value_name = "UPSTREAM_CLIENT_ID")]
    pub upstream_client_id: Option<String>,
    /// The gateway's client secret at the upstream.
    #[arg(
        long,
        env = "UPSTREAM_CLIENT_SECRET",
        value_name = "UPSTREAM_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub upstream_client_secret: Option<String>,
    /// Where archived resources go (`file:///path`, `s3://bucket`); a local directory by default.
    #[arg(long, env = "OBJECT_STORE_URL", value_name = "OBJECT_STORE_URL")]
    pub object_store_url: Option<String>,
    /// Time allowed for one upstream call, in milliseconds.
    #[arg(
        long,
        env = "UPSTREAM_TIMEOUT_MS",
        value_name = "UPSTREAM_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub upstream_timeout_ms: u64,
    /// Time allowed to connect to the upstream, in milliseconds.
    #[arg(
        long,
        env = "UPSTREAM_CONNECT_TIMEOUT_MS",
        value_name = "UPSTREAM_CONNECT_TIMEOUT_MS",
        default_value_t = 3_000
    )]
    pub upstream_connect_timeout_ms: u64,
    /// Attempts per upstream call, the first included (1 = no retries). Only getToken, detect,
    /// info and close are retried, after connect errors, broken exchanges and HTTP 502/503/504;
    /// create and update never are.
    #[arg(
        long,
        env = "UPSTREAM_RETRY_ATTEMPTS",
        value_name = "UPSTREAM_RETRY_ATTEMPTS",
        default_value_t = 3
    )]
    pub upstream_retry_attempts: u32,
    /// Wait before the first upstream retry, in milliseconds; it doubles for each further
    /// retry, plus a random jitter of up to itself.
    #[arg(
        long,
        env = "UPSTREAM_RETRY_BASE_MS",
        value_name = "UPSTREAM_RETRY_BASE_MS",
        default_value_t = 100
    )]
    pub upstream_retry_base_ms: u64,
    /// Share of failed attempts (connect errors, timeouts, broken exchanges, HTTP 5xx) among
    /// an upstream host's last 100 that opens its circuit breaker (0 < ratio <= 1).
    #[arg(
        long,
        env = "UPSTREAM_BREAKER_FAILURE_RATIO",
        value_name = "UPSTREAM_BREAKER_FAILURE_RATIO",
        default_value_t = 0.7
    )]
    pub upstream_breaker_failure_ratio: f64,
    /// Attempts an upstream host's breaker must have seen before the failure ratio counts.
    #[arg(
        long,
        env = "UPSTREAM_BREAKER_MIN_CALLS",
        value_name = "UPSTREAM_BREAKER_MIN_CALLS",
        default_value_t = 20
    )]
    pub upstream_breaker_min_calls: u32,
    /// How long an open breaker fails upstream calls fast (HTTP 503, code 5005) before letting
    /// a probe through, in milliseconds.
    #[arg(
        long,
        env = "UPSTREAM_BREAKER_COOLDOWN_MS",
        value_name = "UPSTREAM_BREAKER_COOLDOWN_MS",
        default_value_t = 5_000
    )]
    pub upstream_breaker_cooldown_ms: u64,
    /// Upstream calls in flight at once, per process.
    #[arg(
        long,
        env = "UPSTREAM_MAX_CONCURRENCY",
        value_name = "UPSTREAM_MAX_CONCURRENCY",
        default_value_t = 512
    )]
    pub upstream_max_concurrency: usize,
    /// How long an upstream call waits for a free slot before it is refused (HTTP 503, code
    /// 5006), in milliseconds.
    #[arg(
        long,
        env = "UPSTREAM_QUEUE_TIMEOUT_MS",
        value_name = "UPSTREAM_QUEUE_TIMEOUT_MS",
        default_value_t = 250
    )]
    pub upstream_queue_timeout_ms: u64,
    /// `iss` of the gateway's tokens.
    #[arg(
        long,
        env = "GATEWAY_JWT_ISSUER",
        value_name = "GATEWAY_JWT_ISSUER",
        default_value = "faceswap-gateway"
    )]
    pub jwt_issuer: String,
    /// `aud` of the gateway's tokens.
    #[arg(
        long,
        env = "GATEWAY_JWT_AUDIENCE",
        value_name = "GATEWAY_JWT_AUDIENCE",
        default_value = "faceswap-tenants"
    )]
    pub jwt_audience: String,
    /// Lifetime of the gateway's tokens, in seconds.
    #[arg(
        long,
        env = "GATEWAY_JWT_TTL_SECONDS",
        value_name = "GATEWAY_JWT_TTL_SECONDS",
        default_value_t = 3_600
    )]
    pub jwt_ttl_seconds: u64,
    /// PEM file with a PKCS#8 P-256 private key to sign tokens with. When unset, a key is
    /// generated once and kept in Postgres, so every replica shares it.
    #[arg(
        long,
        env = "GATEWAY_JWT_PRIVATE_KEY_FILE",
        value_name = "GATEWAY_JWT_PRIVATE_KEY_FILE"
    )]
    pub jwt_private_key_file: Option<PathBuf>,
    /// How often each replica reloads the token signing keys from Postgres, in milliseconds:
    /// after a rotation every replica signs with the new key within this period. Retired keys
    /// verify for the token lifetime plus 5 s plus this period, so keep it equal on every
    /// replica.
    #[arg(
        long,
        env = "GATEWAY_JWT_KEY_REFRESH_MS",
        value_name = "GATEWAY_JWT_KEY_REFRESH_MS",
        default_value_t = 10_000
    )]
    pub jwt_key_refresh_ms: u64,
    /// Largest request body, in bytes; the default fits a 10 MB image in base64.
    #[arg(long, env = "GATEWAY_MAX_BODY_BYTES", value_name = "GATEWAY_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest request body of every route but detection (JSON), in bytes.
    #[arg(
        long,
        env = "GATEWAY_MAX_JSON_BODY_BYTES",
        value_name = "GATEWAY_MAX_JSON_BODY_BYTES",
        default_value_t = 128 * 1024
    )]
    pub max_json_body_bytes: usize,
    /// Largest request head (request line and headers), in bytes; over it the answer is 431.
    #[arg(
        long,
        env = "GATEWAY_MAX_HEADER_BYTES",
        value_name = "GATEWAY_MAX_HEADER_BYTES",
        default_value_t = 32 * 1024
    )]
    pub max_header_bytes: usize,
    /// Time allowed to receive a request head, in milliseconds; a connection that sends none
    /// within it (a slow client, or an idle keep-alive connection) is closed.
    #[arg(
        long,
        env = "GATEWAY_HEADER_READ_TIMEOUT_MS",
        value_name = "GATEWAY_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_read_timeout_ms: u64,
    /// Time allowed to receive a whole request body, in milliseconds (then 408, code 4008).
    #[arg(
        long,
        env = "GATEWAY_BODY_READ_TIMEOUT_MS",
        value_name = "GATEWAY_BODY_READ_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub body_read_timeout_ms: u64,
    /// Time allowed for a request to produce its answer, in milliseconds (then 503, code 5003);
    /// the event stream and downloads run on after their first byte.
    #[arg(
        long,
        env = "GATEWAY_REQUEST_TIMEOUT_MS",
        value_name = "GATEWAY_REQUEST_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub request_timeout_ms: u64,
    /// Hosts and CIDRs that `image_url` may point at despite being private or loopback
    /// (comma-separated; for local setups whose image servers sit on loopback). Empty by default.
    #[arg(
        long,
        env = "GATEWAY_SSRF_ALLOW",
        value_name = "GATEWAY_SSRF_ALLOW",
        value_delimiter = ','
    )]
    pub ssrf_allow: Vec<String>,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    #[arg(
        long,
        env = "GATEWAY_REDIS_PREFIX",
        value_name = "GATEWAY_REDIS_PREFIX",
        default_value = "faceswap:"
    )]
    pub redis_prefix: String,
    /// Largest number of Postgres connections this process opens.
    #[arg(
        long,
        env = "GATEWAY_DB_MAX_CONNECTIONS",
        value_name = "GATEWAY_DB_MAX_CONNECTIONS",
        default_value_t = 20
    )]
    pub db_max_connections: u32,
    /// Longest wait for a Postgres connection, in milliseconds; while the database is down,
    /// calls that need it fail after this with 503 (code 5003).
    #[arg(
        long,
        env = "GATEWAY_DB_ACQUIRE_TIMEOUT_MS",
        value_name = "GATEWAY_DB_ACQUIRE_TIMEOUT_MS",
        default_value_t = 2_000
    )]
    pub db_acquire_timeout_ms: u64,
    /// Do not apply migrations at start-up (when a separate job runs `migrate`).
    #[arg(long, env = "GATEWAY_SKIP_MIGRATIONS", default_value_t = false)]
    pub skip_migrations: bool,
    /// What this process runs: the API, the background workers, or both.
    #[arg(
        long,
        env = "GATEWAY_ROLE",
        value_name = "GATEWAY_ROLE",
        value_enum,
        default_value = "all"
    )]
    pub role: Role,
    /// Pause of an idle worker between steps, in milliseconds.
    #[arg(
        long,
        env = "GATEWAY_WORKER_TICK_MS",
        value_name = "GATEWAY_WORKER_TICK_MS",
        default_value_t = 1_000
    )]
    pub worker_tick_ms: u64,
    /// Rows a worker claims per step.
    #[arg(
        long,
        env = "GATEWAY_WORKER_BATCH",
        value_name = "GATEWAY_WORKER_BATCH",
        default_value_t = 100
    )]
    pub worker_batch: i64,
    /// How long a worker's claim on a row lasts, in milliseconds; must exceed the upstream timeout.
    #[arg(
        long,
        env = "GATEWAY_WORKER_LEASE_MS",
        value_name = "GATEWAY_WORKER_LEASE_MS",
        default_value_t = 60_000
    )]
    pub worker_lease_ms: u64,
    /// How often the status monitor asks the upstream about an unsettled session, in milliseconds.
    #[arg(
        long,
        env = "GATEWAY_STATUS_POLL_MS",
        value_name = "GATEWAY_STATUS_POLL_MS",
        default_value_t = 2_000
    )]
    pub status_poll_ms: u64,
    /// A session still queuing (status 1) after this many seconds is closed as failed.
    #[arg(
        long,
        env = "GATEWAY_QUEUE_TIMEOUT_SECONDS",
        value_name = "GATEWAY_QUEUE_TIMEOUT_SECONDS",
        default_value_t = 120
    )]
    pub queue_timeout_seconds: u64,
    /// A reservation still `creating` after this many seconds belongs to a crashed create and is
    /// resolved by reconciliation; must exceed the upstream timeout.
    #[arg(
        long,
        env = "GATEWAY_CREATING_TIMEOUT_SECONDS",
        value_name = "GATEWAY_CREATING_TIMEOUT_SECONDS",
        default_value_t = 90
    )]
    pub creating_timeout_seconds: u64,
    /// First delay of an upstream close retry, in milliseconds (doubling, at most five minutes).
    #[arg(
        long,
        env = "GATEWAY_CLOSE_RETRY_BASE_MS",
        value_name = "GATEWAY_CLOSE_RETRY_BASE_MS",
        default_value_t = 1_000
    )]
    pub close_retry_base_ms: u64,
    /// First delay of a webhook delivery retry, in milliseconds; the schedule (1×, 6×, 24×,
    /// 120×, 360×, 720×, then every 2160×) spans more than a day at the default.
    #[arg(
        long,
        env = "GATEWAY_WEBHOOK_RETRY_BASE_MS",
        value_name = "GATEWAY_WEBHOOK_RETRY_BASE_MS",
        default_value_t = 5_000
    )]
    pub webhook_retry_base_ms: u64,
    /// On SIGTERM, how long `/readyz` reports not-ready before the listener closes, in
    /// milliseconds (give load balancers time to stop sending).
    #[arg(
        long,
        env = "GATEWAY_DRAIN_DELAY_MS",
        value_name = "GATEWAY_DRAIN_DELAY_MS",
        default_value_t = 0
    )]
    pub drain_delay_ms: u64,
    /// How long an `Idempotency-Key` keeps the first answer, in seconds.
    #[arg(
        long,
        env = "GATEWAY_IDEMPOTENCY_TTL_SECONDS",
        value_name = "GATEWAY_IDEMPOTENCY_TTL_SECONDS",
        default_value_t = 86_400
    )]
    pub idempotency_ttl_seconds: u64,
    /// A resource this many seconds from its upstream deadline and still not archived raises
    /// the alarm (a `resource.archive_at_risk` event and an error log line).
    #[arg(
        long,
        env = "GATEWAY_ARCHIVE_ALARM_MARGIN_SECONDS",
        value_name = "GATEWAY_ARCHIVE_ALARM_MARGIN_SECONDS",
        default_value_t = 86_400
    )]
    pub archive_alarm_margin_seconds: u64,
    /// First delay of a failed resource download's retry, in milliseconds (doubling per
    /// failure, at most an hour, with jitter).
    #[arg(
        long,
        env = "GATEWAY_ARCHIVE_RETRY_BASE_MS",
        value_name = "GATEWAY_ARCHIVE_RETRY_BASE_MS",
        default_value_t = 5_000
    )]
    pub archive_retry_base_ms: u64,
    /// Resource downloads in flight at once per archiver step.
    #[arg(
        long,
        env = "GATEWAY_ARCHIVE_CONCURRENCY",
        value_name = "GATEWAY_ARCHIVE_CONCURRENCY",
        default_value_t = 4
    )]
    pub archive_concurrency: usize,
    /// How long the upstream keeps a generated resource whose URL comes without an expiry, in
    /// seconds (7 days).
    #[arg(
        long,
        env = "UPSTREAM_RESOURCE_TTL_SECONDS",
        value_name = "UPSTREAM_RESOURCE_TTL_SECONDS",
        default_value_t = 604_800
    )]
    pub upstream_resource_ttl_seconds: u64,
    /// Admin API credentials, `name:token` pairs separated by commas (tokens of at least 24
    /// characters). The admin API answers 401 to everyone while this is empty.
    #[arg(
        long,
        env = "GATEWAY_ADMIN_TOKENS",
        value_name = "GATEWAY_ADMIN_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_tokens: Vec<String>,
    /// Log format: `pretty` for people, `json` for collectors.
    #[arg(
        long,
        env = "GATEWAY_LOG_FORMAT",
        value_name = "GATEWAY_LOG_FORMAT",
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
}

/// Process roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The HTTP API only (and probes).
    Api,
    /// The background workers only (and probes).
    Worker,
    /// Both.
    All,
}

impl Role {
    /// Whether this process serves the tenant API.
    pub fn serves_api(self) -> bool {
        matches!(self, Self::Api | Self::All)
    }

    /// Whether this process runs the workers.
    pub fn runs_workers(self) -> bool {
        matches!(self, Self::Worker | Self::All)
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Validated settings of a running gateway.
#[derive(Debug, Clone)]
pub struct Config {
    /// Postgres connection URL.
    pub database_url: String,
    /// Redis URL.
    pub redis_url: String,
    /// Listen address.
    pub bind: SocketAddr,
    /// Upstream API base URL.
    pub upstream_base_url: Url,
    /// Upstream detect URL.
    pub upstream_detect_url: Url,
    /// Upstream client id.
    pub upstream_client_id: String,
    /// Upstream client secret.
    pub upstream_client_secret: String,
    /// Upstream call timeout.
    pub upstream_timeout: Duration,
    /// Upstream connect timeout.
    pub upstream_connect_timeout: Duration,
    /// Upstream retries, circuit breakers and concurrency bound.
    pub upstream_policy: faceswap_upstream::CallPolicy,
    /// Token settings.
    pub jwt: JwtSettings,
    /// Request body cap.
    pub max_body_bytes: usize,
    /// Body caps per route, request head size, and request deadlines.
    pub http_limits: crate::http::limits::HttpLimits,
    /// SSRF allow-list entries.
    pub ssrf_allow: Vec<String>,
    /// Redis key prefix.
    pub redis_prefix: String,
    /// Postgres pool size.
    pub db_max_connections: u32,
    /// Longest wait for a Postgres connection.
    pub db_acquire_timeout: Duration,
    /// Skip migrations at start-up.
    pub skip_migrations: bool,
    /// What this process runs.
    pub role: Role,
    /// Worker timing.
    pub workers: crate::workers::WorkerSettings,
    /// Not-ready period before the listener closes on shutdown.
    pub drain_delay: Duration,
    /// How long an idempotency key holds its answer.
    pub idempotency_ttl: Duration,
    /// Where archived resources go (`None`: the default local directory).
    pub object_store_url: Option<String>,
    /// Archiver settings.
    pub archive: crate::archive::ArchiveSettings,
    /// Admin API credentials.
    pub admin_tokens: Vec<crate::auth::admin::AdminToken>,
}

/// How the gateway's own tokens are made.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// `iss` claim.
    pub issuer: String,
    /// `aud` claim.
    pub audience: String,
    /// Lifetime.
    pub ttl: Duration,
    /// A configured private key, PEM.
    pub private_key_file: Option<PathBuf>,
    /// How often the signing keys are reloaded from Postgres.
    pub key_refresh: Duration,
}

/// A setting that is missing or malformed; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn required<T>(value: Option<T>, var: &str, what: &str) -> Result<T, ConfigError> {
    value.ok_or_else(|| ConfigError(format!("missing setting {var}: {what}")))
}

impl ServeArgs {
    /// The upstream call policy, each value checked against the setting that gave it.
    fn upstream_policy(&self) -> Result<faceswap_upstream::CallPolicy, ConfigError> {
        let bad =
            |var: &str, rule: &str| Err(ConfigError(format!("malformed setting {var}: {rule}")));
        if self.upstream_retry_attempts == 0 {
            return bad("UPSTREAM_RETRY_ATTEMPTS", "must be at least 1");
        }
        if !(self.upstream_breaker_failure_ratio > 0.0
            && self.upstream_breaker_failure_ratio <= 1.0)
        {
            return bad(
                "UPSTREAM_BREAKER_FAILURE_RATIO",
                "must be above 0 and at most 1",
            );
        }
        if !(1..=100).contains(&self.upstream_breaker_min_calls) {
            return bad(
                "UPSTREAM_BREAKER_MIN_CALLS",
                "must be 1 to 100 (the window)",
            );
        }
        if self.upstream_breaker_cooldown_ms == 0 {
            return bad("UPSTREAM_BREAKER_COOLDOWN_MS", "must be at least 1");
        }
        if self.upstream_max_concurrency == 0 {
            return bad("UPSTREAM_MAX_CONCURRENCY", "must be at least 1");
        }
        let policy = faceswap_upstream::CallPolicy {
            retry_attempts: self.upstream_retry_attempts,
            retry_base: Duration::from_millis(self.upstream_retry_base_ms),
            breaker: faceswap_upstream::BreakerSettings {
                failure_ratio: self.upstream_breaker_failure_ratio,
                min_calls: self.upstream_breaker_min_calls,
                cool_down: Duration::from_millis(self.upstream_breaker_cooldown_ms),
                ..Default::default()
            },
            max_concurrency: self.upstream_max_concurrency,
            queue_timeout: Duration::from_millis(self.upstream_queue_timeout_ms),
        };
        policy
            .validate()
            .map_err(|e| ConfigError(format!("malformed upstream call policy: {e}")))?;
        Ok(policy)
    }

    /// Checks presence and cross-field rules.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        // Read before the fields below are moved out.
        let upstream_policy = self.upstream_policy()?;
        let database_url = required(self.database_url, "DATABASE_URL", "the Postgres URL")?;
        let redis_url = required(self.redis_url, "REDIS_URL", "the Redis URL")?;
        let upstream_base_url = required(
            self.upstream_base_url,
            "UPSTREAM_BASE_URL",
            "the upstream API's base URL",
        )?;
        let upstream_client_id = required(
            self.upstream_client_id,
            "UPSTREAM_CLIENT_ID",
            "the gateway's client id at the upstream",
        )?;
        let upstream_client_secret = required(
            self.upstream_client_secret,
            "UPSTREAM_CLIENT_SECRET",
            "the gateway's client secret at the upstream",
        )?;
        if !matches!(upstream_base_url.scheme(), "http" | "https") {
            return Err(ConfigError(format!(
                "malformed setting UPSTREAM_BASE_URL: `{upstream_base_url}` is not an http(s) URL"
            )));
        }
        let upstream_detect_url = match self.upstream_detect_url {
            Some(url) => url,
            None => {
                let base = upstream_base_url.as_str().trim_end_matches('/');
                Url::parse(&format!("{base}/detect"))
                    .map_err(|e| ConfigError(format!("malformed setting UPSTREAM_BASE_URL: {e}")))?
            }
        };
        if let Err(e) = crate::cache::RedisTarget::parse(&redis_url) {
            return Err(ConfigError(format!("malformed setting REDIS_URL: {e}")));
        }
        if self.jwt_ttl_seconds == 0 {
            return Err(ConfigError(
                "malformed setting GATEWAY_JWT_TTL_SECONDS: must be at least 1".into(),
            ));
        }
        if self.jwt_key_refresh_ms < 100 {
            return Err(ConfigError(
                "malformed setting GATEWAY_JWT_KEY_REFRESH_MS: must be at least 100".into(),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError(
                "malformed setting GATEWAY_MAX_BODY_BYTES: must be at least 1024".into(),
            ));
        }
        if self.max_json_body_bytes < 1024 {
            return Err(ConfigError(
                "malformed setting GATEWAY_MAX_JSON_BODY_BYTES: must be at least 1024".into(),
            ));
        }
        // hyper's HTTP/1 reader needs at least 8 KiB of buffer.
        if self.max_header_bytes < 8192 {
            return Err(ConfigError(
                "malformed setting GATEWAY_MAX_HEADER_BYTES: must be at least 8192".into(),
            ));
        }
        if self.header_read_timeout_ms == 0
            || self.body_read_timeout_ms == 0
            || self.request_timeout_ms == 0
        {
            return Err(ConfigError(
                "malformed setting GATEWAY_HEADER_READ_TIMEOUT_MS / GATEWAY_BODY_READ_TIMEOUT_MS / GATEWAY_REQUEST_TIMEOUT_MS: must be at least 1".into(),
            ));
        }
        let lease = Duration::from_millis(self.worker_lease_ms);
        let upstream_timeout = Duration::from_millis(self.upstream_timeout_ms);
        if lease <= upstream_timeout {
            return Err(ConfigError(format!(
                "malformed setting GATEWAY_WORKER_LEASE_MS: must exceed UPSTREAM_TIMEOUT_MS ({} ms)",
                self.upstream_timeout_ms
            )));
        }
        if Duration::from_secs(self.creating_timeout_seconds) <= upstream_timeout {
            return Err(ConfigError(format!(
                "malformed setting GATEWAY_CREATING_TIMEOUT_SECONDS: must exceed UPSTREAM_TIMEOUT_MS ({} ms)",
                self.upstream_timeout_ms
            )));
        }
        if self.worker_batch < 1 || self.worker_tick_ms == 0 {
            return Err(ConfigError(
                "malformed setting GATEWAY_WORKER_BATCH / GATEWAY_WORKER_TICK_MS: must be at least 1".into(),
            ));
        }
        let ssrf_allow: Vec<String> = self
            .ssrf_allow
            .into_iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        faceswap_upstream::ssrf::SsrfGuard::new(&ssrf_allow)
            .map_err(|e| ConfigError(format!("malformed setting GATEWAY_SSRF_ALLOW: {e}")))?;
        let admin_tokens = crate::auth::admin::parse_tokens(&self.admin_tokens)
            .map_err(|e| ConfigError(format!("malformed setting GATEWAY_ADMIN_TOKENS: {e}")))?;
        Ok(Config {
            admin_tokens,
            database_url,
            redis_url,
            bind: self.bind,
            upstream_base_url,
            upstream_detect_url,
            upstream_client_id,
            upstream_client_secret,
            upstream_timeout: Duration::from_millis(self.upstream_timeout_ms),
            upstream_connect_timeout: Duration::from_millis(self.upstream_connect_timeout_ms),
            upstream_policy,
            jwt: JwtSettings {
                issuer: self.jwt_issuer,
                audience: self.jwt_audience,
                ttl: Duration::from_secs(self.jwt_ttl_seconds),
                private_key_file: self.jwt_private_key_file,
                key_refresh: Duration::from_millis(self.jwt_key_refresh_ms),
            },
            max_body_bytes: self.max_body_bytes,
            http_limits: crate::http::limits::HttpLimits {
                max_body_bytes: self.max_body_bytes,
                // No route takes more than the overall cap.
                max_json_body_bytes: self.max_json_body_bytes.min(self.max_body_bytes),
                max_header_bytes: self.max_header_bytes,
                header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
                body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
                request_timeout: Duration::from_millis(self.request_timeout_ms),
            },
            ssrf_allow,
            redis_prefix: self.redis_prefix,
            db_max_connections: self.db_max_connections,
            db_acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms.max(1)),
            skip_migrations: self.skip_migrations,
            role: self.role,
            workers: crate::workers::WorkerSettings {
                tick: Duration::from_millis(self.worker_tick_ms),
                batch: self.worker_batch,
                lease,
                poll_interval: Duration::from_millis(self.status_poll_ms),
                queue_timeout: Duration::from_secs(self.queue_timeout_seconds),
                creating_timeout: Duration::from_secs(self.creating_timeout_seconds),
                close_retry_base: Duration::from_millis(self.close_retry_base_ms),
                webhook_retry_base: Duration::from_millis(self.webhook_retry_base_ms),
            },
            drain_delay: Duration::from_millis(self.drain_delay_ms),
            idempotency_ttl: Duration::from_secs(self.idempotency_ttl_seconds.max(1)),
            object_store_url: self.object_store_url,
            archive: crate::archive::ArchiveSettings::checked(
                self.archive_alarm_margin_seconds,
                self.archive_retry_base_ms,
                self.archive_concurrency,
                self.upstream_resource_ttl_seconds,
            )
            .map_err(ConfigError)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["gw"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .map_err(|e| ConfigError(e.to_string()))?
            .serve
            .into_config()
    }

    const FULL: &[&str] = &[
        "--database-url",
        "postgres://localhost/db",
        "--redis-url",
        "redis://127.0.0.1:6379",
        "--upstream-base-url",
        "http://127.0.0.1:9090",
        "--upstream-client-id",
        "id",
        "--upstream-client-secret",
        "secret",
    ];

    #[test]
    fn a_complete_configuration_gets_working_defaults() {
        let cfg = parse(FULL).unwrap();
        assert_eq!(cfg.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(
            cfg.upstream_detect_url.as_str(),
            "http://127.0.0.1:9090/detect"
        );
        assert!(cfg.ssrf_allow.is_empty());
        assert_eq!(cfg.max_body_bytes, 16 * 1024 * 1024);
    }

    #[test]
    fn each_missing_setting_is_named() {
        // Built from explicit flags, then emptied field by field: the process environment
        // (which clap would consult for an absent flag) plays no part.
        let full = || Cli::try_parse_from([&["gw"], FULL].concat()).unwrap().serve;
        type Clear = fn(&mut ServeArgs);
        let cases: [(&str, Clear); 5] = [
            ("DATABASE_URL", |a| a.database_url = None),
            ("REDIS_URL", |a| a.redis_url = None),
            ("UPSTREAM_BASE_URL", |a| a.upstream_base_url = None),
            ("UPSTREAM_CLIENT_ID", |a| a.upstream_client_id = None),
            ("UPSTREAM_CLIENT_SECRET", |a| {
                a.upstream_client_secret = None
            }),
        ];
        for (var, clear) in cases {
            let mut args = full();
            clear(&mut args);
            let err = args.into_config().unwrap_err();
            assert!(
                err.0.starts_with(&format!("missing setting {var}")),
                "{err}"
            );
            assert!(!err.0.contains('\n'));
        }
    }

    #[test]
    fn malformed_settings_are_named() {
        let mut args = FULL.to_vec();
        args.extend(["--ssrf-allow", "10.0.0.0/99"]);
        assert!(parse(&args).unwrap_err().0.contains("GATEWAY_SSRF_ALLOW"));
        let mut args = FULL.to_vec();
        args[3] = "http://not-redis";
        assert!(parse(&args).unwrap_err().0.contains("REDIS_URL"));
        let mut args = FULL.to_vec();
        args.extend(["--bind", "nope"]);
        assert!(parse(&args).unwrap_err().0.contains("GATEWAY_BIND"));
    }

    #[test]
    fn input_limits_have_defaults_and_name_bad_values() {
        let cfg = parse(FULL).unwrap();
        let limits = &cfg.http_limits;
        assert_eq!(limits.body_cap("/detect"), 16 * 1024 * 1024);
        assert_eq!(limits.body_cap("/api/open/v3/getToken"), 128 * 1024);
        assert_eq!(limits.max_header_bytes, 32 * 1024);
        assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.body_read_timeout, Duration::from_secs(30));
        assert_eq!(limits.request_timeout, Duration::from_secs(60));
        assert_eq!(cfg.db_acquire_timeout, Duration::from_secs(2));
        // The JSON cap never exceeds the overall one.
        let mut args = FULL.to_vec();
        args.extend(["--max-body-bytes", "4096"]);
        assert_eq!(
            parse(&args).unwrap().http_limits.body_cap("/v1/webhooks"),
            4096
        );
        for (flag, value, var) in [
            ("--max-header-bytes", "4096", "GATEWAY_MAX_HEADER_BYTES"),
            (
                "--max-json-body-bytes",
                "100",
                "GATEWAY_MAX_JSON_BODY_BYTES",
            ),
            ("--request-timeout-ms", "0", "GATEWAY_REQUEST_TIMEOUT_MS"),
        ] {
            let mut args = FULL.to_vec();
            args.extend([flag, value]);
            assert!(parse(&args).unwrap_err().0.contains(var), "{flag} {value}");
        }
    }

    #[test]
    fn the_upstream_call_policy_has_defaults_and_names_bad_values() {
        let cfg = parse(FULL).unwrap();
        assert_eq!(
            cfg.upstream_policy,
            faceswap_upstream::CallPolicy::default()
        );
        let mut args = FULL.to_vec();
        args.extend([
            "--upstream-retry-attempts",
            "5",
            "--upstream-breaker-cooldown-ms",
            "250",
            "--upstream-max-concurrency",
            "8",
        ]);
        let policy = parse(&args).unwrap().upstream_policy;
        assert_eq!(
            (
                policy.retry_attempts,
                policy.breaker.cool_down,
                policy.max_concurrency
            ),
            (5, Duration::from_millis(250), 8)
        );
        for (flag, value, var) in [
            ("--upstream-retry-attempts", "0", "UPSTREAM_RETRY_ATTEMPTS"),
            (
                "--upstream-breaker-failure-ratio",
                "1.5",
                "UPSTREAM_BREAKER_FAILURE_RATIO",
            ),
            (
                "--upstream-breaker-min-calls",
                "0",
                "UPSTREAM_BREAKER_MIN_CALLS",
            ),
            (
                "--upstream-breaker-cooldown-ms",
                "0",
                "UPSTREAM_BREAKER_COOLDOWN_MS",
            ),
            (
                "--upstream-max-concurrency",
                "0",
                "UPSTREAM_MAX_CONCURRENCY",
            ),
        ] {
            let mut args = FULL.to_vec();
            args.extend([flag, value]);
            let err = parse(&args).unwrap_err();
            assert!(err.0.contains(var), "{flag}: {err}");
        }
    }

    #[test]
    fn the_detect_url_can_be_set_apart_from_the_base() {
        let mut args = FULL.to_vec();
        args.extend([
            "--upstream-detect-url",
            "http://detect.example/x/detect_faces",
        ]);
        let cfg = parse(&args).unwrap();
        assert_eq!(
            cfg.upstream_detect_url.as_str(),
            "http://detect.example/x/detect_faces"
        );
    }
}
