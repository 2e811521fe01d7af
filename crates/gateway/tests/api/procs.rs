//! The real `faceswap-gateway` binary as a child process, against a test's database, Redis
//! prefix and simulator (shared by the tests that need separate processes).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use faceswap_testkit::private::free_port;
use faceswap_testkit::{TestApp, eventually};
use sqlx::PgPool;

/// The URL of `pool`'s database (the `#[sqlx::test]` one), on the server of `DATABASE_URL`.
pub fn database_url(pool: &PgPool) -> String {
    let db_name = pool.connect_options().get_database().unwrap().to_owned();
    let base = std::env::var("DATABASE_URL").unwrap();
    format!("{}/{db_name}", base.rsplit_once('/').unwrap().0)
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
    // The port is outside the ephemeral range, so nothing else picks it by chance; should the
    // child still fail to bind it, it exits and is started again on another port.
    for _ in 0..5 {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faceswap-gateway"));
        cmd.arg("serve")
            .env("DATABASE_URL", database_url(&app.pool))
            .env("REDIS_URL", faceswap_testkit::redis_url())
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
        let mut gateway = Gateway {
            child: cmd.spawn().unwrap(),
            url: format!("http://127.0.0.1:{port}"),
        };
        if ready(&mut gateway).await {
            return gateway;
        }
    }
    panic!("the gateway process exited before it was ready, five times");
}

/// Waits until `gateway`'s own process answers ready; `false` when it exited first.
async fn ready(gateway: &mut Gateway) -> bool {
    let client = reqwest::Client::new();
    let answer = eventually(
        Duration::from_secs(30),
        "the gateway to be ready or exit",
        || {
            let exited = gateway.child.try_wait().unwrap().is_some();
            let url = format!("{}/readyz", gateway.url);
            let client = &client;
            async move {
                if exited {
                    return Some(false);
                }
                let resp = client.get(url).send().await.ok()?;
                (resp.status() == 200).then_some(true)
            }
        },
    )
    .await;
    answer && gateway.child.try_wait().unwrap().is_none()
}
