//! Test harness: a gateway on a fresh database, the real simulator over HTTP, and a private
//! Redis key prefix per test, all on port 0.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failure is a failed test

pub mod private;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use faceswap_gateway::config::{Config, ServeArgs};
pub use faceswap_gateway::service::tenants::TenantSettings;
use faceswap_gateway::startup::Application;
use faceswap_sim::{SimArgs, SimHandle, StatsReport};
use serde_json::{Value, json};
use sqlx::PgPool;

/// The simulator account the gateway uses.
pub const SIM_CLIENT_ID: &str = "sim-client";
/// Its secret.
pub const SIM_CLIENT_SECRET: &str = "sim-secret";

/// A gateway under test.
pub struct TestApp {
    /// `http://addr`.
    pub base_url: String,
    /// The test's database.
    pub pool: PgPool,
    /// The upstream simulator (shared between replicas).
    pub sim: Arc<SimHandle>,
    /// The Redis key prefix (shared between replicas).
    pub redis_prefix: String,
    /// A plain HTTP client.
    pub client: reqwest::Client,
    /// The running app's state (counters).
    pub state: faceswap_gateway::http::AppState,
    /// Worker settings of this app's configuration, for driving `run_once` in tests.
    pub workers: faceswap_gateway::workers::WorkerSettings,
    builder: Builder,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

/// A tenant created for a test.
#[derive(Debug, Clone)]
pub struct TestTenant {
    /// `ten_…`.
    pub tenant_id: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
}

/// Options of a test gateway.
#[derive(Clone, Default)]
pub struct Builder {
    sim_flags: Vec<String>,
    sim: Option<Arc<SimHandle>>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    extra_args: Vec<String>,
}

impl Builder {
    /// Flags for the simulator this gateway starts.
    pub fn sim_flags(mut self, flags: &[&str]) -> Self {
        self.sim_flags = flags.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Use this Redis URL instead of `REDIS_URL`.
    pub fn redis_url(mut self, url: &str) -> Self {
        self.redis_url = Some(url.to_owned());
        self
    }

    /// Extra `serve` flags (e.g. `--ssrf-allow 127.0.0.1`).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra_args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Lets the gateway fetch from (and hand the upstream URLs on) loopback, where the tests'
    /// image servers, webhook receivers and the simulator's files live. Adds to [`Self::args`].
    pub fn allow_loopback(mut self) -> Self {
        self.extra_args
            .extend(["--ssrf-allow".to_owned(), "127.0.0.1/32".to_owned()]);
        self
    }

    /// Starts the gateway on `pool` (a fresh, migrated database).
    pub async fn spawn(mut self, pool: PgPool) -> TestApp {
        let sim = match &self.sim {
            Some(sim) => sim.clone(),
            None => {
                let mut argv = vec![
                    "faceswap-sim".to_owned(),
                    "--bind".into(),
                    "127.0.0.1:0".into(),
                ];
                argv.extend(self.sim_flags.iter().cloned());
                let args = SimArgs::try_parse_from(argv).expect("simulator flags parse");
                Arc::new(faceswap_sim::spawn(args).await.expect("simulator starts"))
            }
        };
        self.sim = Some(sim.clone());
        let prefix = self
            .redis_prefix
            .get_or_insert_with(|| format!("test:{}:", uuid::Uuid::new_v4().simple()))
            .clone();
        let redis_url = self.redis_url.clone().unwrap_or_else(redis_url);
        let mut extra = self.extra_args.clone();
        if !extra.iter().any(|a| a == "--object-store-url") {
            // A private archive directory per test, unless the test names a store.
            let dir = std::env::temp_dir().join(format!("faceswap-test-archive/{prefix}"));
            extra.extend([
                "--object-store-url".into(),
                format!("file://{}", dir.display()),
            ]);
        }
        let config = config(&sim.base_url(), &redis_url, &prefix, &extra);
        let workers = config.workers.clone();
        let app = Application::build_with_pool(config, pool.clone())
            .await
            .expect("gateway builds");
        let addr = app.local_addr();
        let state = app.state().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        }));
        TestApp {
            base_url: format!("http://{addr}"),
            pool,
            sim,
            redis_prefix: prefix,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            state,
            workers,
            builder: self,
            _shutdown: tx,
        }
    }
}

fn config(sim_url: &str, redis_url: &str, prefix: &str, extra: &[String]) -> Config {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let mut argv: Vec<String> = [
        "gw",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        "postgres://unused",
        "--redis-url",
        redis_url,
        "--redis-prefix",
        prefix,
        "--upstream-base-url",
        sim_url,
        "--upstream-client-id",
        SIM_CLIENT_ID,
        "--upstream-client-secret",
        SIM_CLIENT_SECRET,
        "--upstream-timeout-ms",
        "5000",
        // Tests drive the workers with `run_once`; these keep their timing short. The API-only
        // role keeps background loops from racing the test's own steps.
        "--role",
        "api",
        "--worker-tick-ms",
        "10",
        "--status-poll-ms",
        "0",
        "--close-retry-base-ms",
        "50",
        "--worker-lease-ms",
        "10000",
        "--creating-timeout-seconds",
        "10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(extra.iter().cloned());
    Cli::try_parse_from(argv)
        .expect("test config parses")
        .serve
        .into_config()
        .expect("test config is valid")
}

impl TestApp {
    /// A gateway with default options.
    pub async fn spawn(pool: PgPool) -> Self {
        Self::builder().spawn(pool).await
    }

    /// Options.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A second gateway process sharing this one's database, Redis prefix and simulator, as
    /// another replica would.
    pub async fn spawn_replica(&self) -> TestApp {
        let mut b = self.builder.clone();
        b.redis_prefix = Some(self.redis_prefix.clone());
        b.spawn(self.pool.clone()).await
    }

    /// `base_url + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Creates a tenant through the same code as `faceswap-gateway tenant create`.
    pub async fn tenant(
        &self,
        max_concurrent_sessions: i32,
        session_seconds: Option<i64>,
    ) -> TestTenant {
        let mut settings = TenantSettings::named("test tenant");
        settings.max_concurrent_sessions = max_concurrent_sessions;
        settings.session_seconds_budget = session_seconds;
        self.tenant_with(&settings).await
    }

    /// Creates a tenant with the given settings.
    pub async fn tenant_with(&self, settings: &TenantSettings) -> TestTenant {
        let created = faceswap_gateway::service::tenants::create(&self.pool, settings, "test")
            .await
            .expect("tenant created");
        TestTenant {
            tenant_id: created.tenant_id,
            client_id: created.client_id,
            client_secret: created.client_secret,
        }
    }

    /// A gateway token for `tenant`.
    pub async fn token(&self, tenant: &TestTenant) -> String {
        let (status, body) = self
            .post(
                "/api/open/v3/getToken",
                &json!({"clientId": tenant.client_id, "clientSecret": tenant.client_secret}),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().expect("token").to_owned()
    }

    /// POSTs JSON with an optional bearer token; returns the status and JSON body.
    pub async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.expect("request completes")).await
    }

    /// GETs with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.expect("request completes")).await
    }

    /// Creates a session for the token's tenant; returns status and body.
    pub async fn create_session(&self, token: &str) -> (u16, Value) {
        self.post(
            "/api/open/v3/faceswap/live/create",
            &json!({"sourceImage": [{"path": "https://images.example/face.jpg", "opts": "150,170:230,170:190,215:190,255"}]}),
            Some(token),
        )
        .await
    }

    /// The gateway's Prometheus page.
    pub async fn metrics_page(&self) -> String {
        let resp = self.client.get(self.url("/metrics")).send().await;
        resp.expect("metrics answer")
            .text()
            .await
            .expect("metrics page reads")
    }

    /// An admin API call with `admin_token`: status and JSON body.
    pub async fn admin_call(
        &self,
        admin_token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = method.parse().expect("an HTTP method");
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        read(req.send().await.expect("request completes")).await
    }

    /// The simulator's statistics.
    pub async fn sim_stats(&self) -> StatsReport {
        self.client
            .get(format!("{}/sim/stats", self.sim.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Changes simulator settings.
    pub async fn sim_config(&self, patch: Value) {
        let resp = self
            .client
            .post(format!("{}/sim/config", self.sim.base_url()))
            .json(&patch)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "sim config {patch}");
    }

    /// Calls the simulator directly with the gateway's account, as someone bypassing the
    /// gateway would; returns the JSON answer.
    pub async fn upstream_call(&self, path: &str, body: &Value) -> Value {
        let token: Value = self
            .client
            .post(format!("{}/api/open/v3/getToken", self.sim.base_url()))
            .json(&json!({"clientId": SIM_CLIENT_ID, "clientSecret": SIM_CLIENT_SECRET}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        self.client
            .post(format!("{}{path}", self.sim.base_url()))
            .bearer_auth(token["token"].as_str().expect("a simulator token"))
            .json(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// POSTs to a `/sim/...` control path.
    pub async fn sim_post(&self, path: &str) {
        let resp = self
            .client
            .post(format!("{}{path}", self.sim.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "sim {path}");
    }
}

async fn read(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON answer {status}: {text}"));
    (status, body)
}

/// The Redis the tests use: `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A file of the workspace's `testdata/`.
pub fn testdata(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Base64 of `bytes`.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Polls `check` every 20 ms until it gives `Some`, failing after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A static image host on loopback port 0 serving `/face.jpg`.
pub async fn spawn_image_host() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let face = testdata("face.jpg");
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let face = face.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: image/jpeg\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    face.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&face).await;
            });
        }
    });
    addr
}
