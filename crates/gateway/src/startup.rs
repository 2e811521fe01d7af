//! Building and running the application from its configuration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use faceswap_upstream::ssrf::SsrfGuard;
use faceswap_upstream::{UpstreamClient, UpstreamConfig};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};
use tokio::net::TcpListener;

use crate::auth::api_keys::ApiKeyCache;
use crate::auth::jwt::TokenKeys;
use crate::cache::Cache;
use crate::config::{Config, Role};
use crate::http::{self, AppState, Settings};
use crate::upstream_token::UpstreamTokens;
use crate::workers::{self, WorkerSettings};

/// A bound, ready-to-run gateway.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    role: Role,
    workers: WorkerSettings,
    drain_delay: Duration,
}

/// A pooled connection idle at least this long is pinged before it is handed out.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Connects to Postgres (failing fast when it is down) without applying migrations.
pub async fn connect_db(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    connect_db_with(url, max_connections, Duration::from_secs(3)).await
}

/// [`connect_db`] with the longest wait for a connection, which is also how long a call that
/// needs the database takes to fail while it is down.
pub async fn connect_db_with(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        // The default pings every connection it hands out: a second round trip for each query
        // on the hot path. Only a connection idle long enough for the server to have dropped
        // it (restart, idle timeout) is pinged; a broken one is replaced before use.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to DATABASE_URL: {e}"))
}

impl Application {
    /// Connects, migrates (unless told not to), and binds `config.bind`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = connect_db_with(
            &config.database_url,
            config.db_max_connections,
            config.db_acquire_timeout,
        )
        .await?;
        if !config.skip_migrations {
            crate::MIGRATOR
                .run(&db)
                .await
                .map_err(|e| anyhow::anyhow!("applying migrations failed: {e}"))?;
        }
        Self::build_with_pool(config, db).await
    }

    /// Builds on an existing (migrated) pool; tests pass a fresh database's pool.
    pub async fn build_with_pool(config: Config, db: PgPool) -> anyhow::Result<Self> {
        let cache = Cache::new(&config.redis_url, &config.redis_prefix)?;
        let upstream = UpstreamClient::new(UpstreamConfig {
            base_url: config.upstream_base_url.clone(),
            detect_url: config.upstream_detect_url.clone(),
            timeout: config.upstream_timeout,
            connect_timeout: config.upstream_connect_timeout,
            policy: config.upstream_policy.clone(),
        })?
        .with_observer(crate::metrics::upstream_observer())
        .with_policy_observer(crate::metrics::upstream_policy_observer())
        .with_header_hook(crate::telemetry::upstream_header_hook());
        let upstream_tokens = Arc::new(UpstreamTokens::new(
            upstream.clone(),
            config.upstream_client_id.clone(),
            config.upstream_client_secret.clone(),
            cache.clone(),
        ));
        let token_keys = TokenKeys::load(
            &db,
            config.jwt.private_key_file.as_deref(),
            config.jwt.issuer.clone(),
            config.jwt.audience.clone(),
            config.jwt.ttl,
            config.jwt.key_refresh,
        )
        .await?;
        let ssrf = SsrfGuard::new(&config.ssrf_allow).map_err(|e| anyhow::anyhow!(e))?;
        let archive = crate::archive::Archive::from_config(&config, &ssrf)?;
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on GATEWAY_BIND {}: {e}", config.bind))?;
        let state = AppState::new(crate::http::Shared {
            db,
            cache: cache.clone(),
            upstream,
            upstream_tokens,
            token_keys: Arc::new(token_keys),
            api_keys: Arc::new(ApiKeyCache::default()),
            ssrf: Arc::new(ssrf),
            settings: Arc::new(Settings {
                max_body_bytes: config.max_body_bytes,
                limits: config.http_limits.clone(),
                close_retry_base: config.workers.close_retry_base,
                lease: config.workers.lease,
                idempotency_ttl: config.idempotency_ttl,
            }),
            draining: Arc::default(),
            archive: Arc::new(archive),
            revocations: Arc::default(),
            rate_limits: Arc::new(crate::rate_limit::RateLimiter::new(cache.clone())),
            admins: Arc::new(config.admin_tokens.clone()),
            session_cache: Arc::default(),
            activity: Arc::default(),
        });
        state.revocations.refresh(&state.db).await?;
        state.rate_limits.rates.refresh(&state.db).await?;
        Ok(Self {
            listener,
            state,
            role: config.role,
            workers: config.workers,
            drain_delay: config.drain_delay,
        })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The shared state (tests read counters from it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// What this process runs.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Serves (and runs the workers, per the role) until `shutdown` resolves. Then readiness
    /// turns false, after the drain delay the listener closes, in-flight requests finish, and
    /// the workers finish their current step (claims they still hold lapse by their lease).
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = tokio_util::sync::CancellationToken::new();
        let mut worker_tasks = if self.role.runs_workers() {
            workers::spawn_all(self.state.clone(), self.workers.clone(), stop.clone())
        } else {
            tokio::task::JoinSet::new()
        };
        {
            let (revocations, db, stop) = (
                self.state.revocations.clone(),
                self.state.db.clone(),
                stop.clone(),
            );
            worker_tasks.spawn(async move { revocations.run_until_stopped(db, stop).await });
        }
        {
            let (tokens, stop) = (self.state.upstream_tokens.clone(), stop.clone());
            worker_tasks.spawn(async move { tokens.run_until_stopped(stop).await });
        }
        {
            let (limits, db, stop) = (
                self.state.rate_limits.clone(),
                self.state.db.clone(),
                stop.clone(),
            );
            worker_tasks.spawn(async move { limits.rates.run_until_stopped(db, stop).await });
        }
        if self.role.serves_api() {
            let state = &self.state;
            worker_tasks.spawn(
                state
                    .session_cache
                    .clone()
                    .run_until_stopped(state.db.clone(), stop.clone()),
            );
            // Flushes once more when stopped, after the last request was answered.
            worker_tasks.spawn(
                state
                    .activity
                    .clone()
                    .run_until_stopped(state.db.clone(), stop.clone()),
            );
        }
        let draining = self.state.draining.clone();
        let drain_delay = self.drain_delay;
        let limits = self.state.settings.limits.clone();
        let app = http::router(self.state, self.role.serves_api());
        let threads = crate::runtime::serving_threads();
        let served = crate::server::serve(self.listener, app, &limits, threads, async move {
            shutdown.await;
            draining.store(true, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(drain_delay).await;
        })
        .await;
        stop.cancel();
        let grace = self.workers.lease;
        if tokio::time::timeout(grace, async {
            while worker_tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!(
                ?grace,
                "workers did not stop within the grace period; their claims lapse by lease"
            );
        }
        // Only now may the serving threads' runtimes end: the workers' last writes above may
        // have used connections opened on them.
        drop(served?);
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; draining");
}
