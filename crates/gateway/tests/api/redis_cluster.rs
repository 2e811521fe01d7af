//! The gateway on a real Redis Cluster (three masters on loopback, started by the test with the
//! machine's `redis-server`): two replicas serve and share one upstream token through it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use faceswap_testkit::{TestApp, b64, eventually};
use futures_util::future::join_all;
use serde_json::json;
use sqlx::PgPool;

use faceswap_testkit::private::free_port;

/// Three cluster-enabled `redis-server`s made into one cluster; stopped when dropped.
struct RedisCluster {
    ports: Vec<u16>,
    servers: Vec<Child>,
    dir: PathBuf,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start_cluster() -> RedisCluster {
    let dir = std::env::temp_dir().join(format!(
        "faceswap-redis-cluster-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let mut cluster = RedisCluster {
        ports: Vec::new(),
        servers: Vec::new(),
        dir: dir.clone(),
    };
    for _ in 0..3 {
        let (port, server) = start_node(&dir).await;
        cluster.ports.push(port);
        cluster.servers.push(server);
    }
    let ports = cluster.ports.clone();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
        .arg("--cluster-yes")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(created.success(), "redis-cli --cluster create");
    for port in &ports {
        eventually(Duration::from_secs(20), "the cluster to be ok", || async {
            let out = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "cluster", "info"])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("cluster_state:ok")
                .then_some(())
        })
        .await;
    }
    cluster
}

/// Whether a Redis server (not some other test's listener) answers on `port`.
fn answers_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = [0; 7];
    conn.write_all(b"PING\r\n").is_ok()
        && conn.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

/// One cluster-enabled `redis-server`, listening. A free port can be taken by another test
/// between the check and the server's bind; the server then exits, and another port is tried.
async fn start_node(dir: &std::path::Path) -> (u16, Child) {
    for _ in 0..5 {
        let port = free_port();
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).unwrap();
        let mut server = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--save", "", "--appendonly", "no", "--logfile", "redis.log"])
            .current_dir(&node_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect(
                "the Redis Cluster test needs `redis-server` (scripts/dev-services.sh installs it)",
            );
        let listening = eventually(
            Duration::from_secs(10),
            "redis-server to listen or exit",
            || {
                let exited = server.try_wait().unwrap().is_some();
                async move {
                    if exited {
                        return Some(false);
                    }
                    answers_ping(port).then_some(true)
                }
            },
        )
        .await;
        if listening {
            return (port, server);
        }
        let _ = server.wait();
        let log = std::fs::read_to_string(node_dir.join("redis.log")).unwrap_or_default();
        assert!(
            log.contains("Address already in use"),
            "redis-server on port {port} exited: {log}"
        );
    }
    panic!("no free port for a redis-server after 5 tries");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn two_replicas_share_the_upstream_token_through_a_redis_cluster(pool: PgPool) {
    let cluster = start_cluster().await;
    // Two of the three nodes as seeds: the client learns the third from the cluster.
    let url = format!(
        "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
        cluster.ports[0], cluster.ports[1]
    );
    let a = TestApp::builder().redis_url(&url).spawn(pool).await;
    assert!(a.state.cache.is_cluster());
    let b = a.spawn_replica().await;
    for app in [&a, &b] {
        let resp = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "ready with the cluster answering");
    }
    let token = a.token(&a.tenant(1, None).await).await;
    let body = json!({"img": b64(b"not an image")});
    let answers = join_all((0..20).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let (body, token) = (body.clone(), token.clone());
        async move { app.post("/detect", &body, Some(&token)).await }
    }))
    .await;
    for (status, resp) in answers {
        assert_eq!(
            (status, resp["error_code"].as_i64()),
            (422, Some(2001)),
            "{resp}"
        );
    }
    assert_eq!(
        a.sim_stats().await.calls.get_token,
        1,
        "one upstream token for both replicas, shared through the cluster"
    );

    // The token is in the cluster, on whichever node owns its slot.
    let key = format!("{}upstream:token", a.redis_prefix);
    let stored = Command::new("redis-cli")
        .args(["-c", "-p", &cluster.ports[0].to_string(), "exists", &key])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&stored.stdout).trim(), "1");
    drop(cluster);
}
