//! The real `faceswap-gateway` binary as a child process, against a test's database, Redis
//! prefix and simulator (shared by the tests that need separate processes).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use faceswap_testkit::{TestApp, eventually};
use sqlx::PgPool;

/// The URL of `pool`'s database (the `#[sqlx::test]` one), on the server of `DATABASE_URL`.
pub fn database_url(pool: &PgPool) -> String {
    let db_name = pool.connect_options().get_database().unwrap().to_owned();
    let base = std::env::var("DATABASE_URL").unwrap();
    format!("{}/{db_name}", base.rsplit_once('/').unwrap().0)
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running gateway process; killed (SIGKILL) when dropped.
pub struct Gateway {
    pub child: Child,
    pub url: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real binary (`serve`, every role unless `extra_env` names one) against the test's
/// database, Redis prefix and simulator, once its `/readyz` answers 200.
pub async fn spawn_binary(app: &TestApp, extra_env: &[(&str, &str)]) -> Gateway {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faceswap-gateway"));
    cmd.arg("serve")
        .env("DATABASE_URL", database_url(&app.pool))
        .env(
            "REDIS_URL",
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        )
        .env("GATEWAY_REDIS_PREFIX", &app.redis_prefix)
        .env("GATEWAY_BIND", format!("127.0.0.1:{port}"))
        .env("UPSTREAM_BASE_URL", app.sim.base_url())
        .env("UPSTREAM_CLIENT_ID", "sim-client")
        .env("UPSTREAM_CLIENT_SECRET", "sim-secret")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let gateway = Gateway {
        child: cmd.spawn().unwrap(),
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    eventually(
        Duration::from_secs(30),
        "the gateway to be ready",
        || async {
            let resp = client
                .get(format!("{}/readyz", gateway.url))
                .send()
                .await
                .ok()?;
            (resp.status() == 200).then_some(())
        },
    )
    .await;
    gateway
}
