//! How the gateway process opens its connections.

use std::net::SocketAddr;
use std::time::Duration;

use faceswap_testkit::{TestApp, eventually};
use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
use sqlx::{ConnectOptions, PgPool};

use super::procs::spawn_binary;

/// The `TCP_NODELAY` setting of every TCP socket the process `pid` has open to `port`.
fn nodelay_of_sockets_to(pid: Pid, port: u16) -> Vec<bool> {
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).expect("pidfd_open");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{}/fd", pid.as_raw_nonzero())).unwrap() {
        let Ok(target) = entry.as_ref().map(std::fs::DirEntry::path) else {
            continue;
        };
        let is_socket = std::fs::read_link(&target)
            .is_ok_and(|link| link.to_string_lossy().starts_with("socket:"));
        let fd = target.file_name().and_then(|n| n.to_str()?.parse().ok());
        let (true, Some(fd)) = (is_socket, fd) else {
            continue;
        };
        // The fd may have closed since it was listed: skip what cannot be read.
        let Ok(copy) = pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let peer = rustix::net::getpeername(&copy)
            .ok()
            .flatten()
            .and_then(|a| SocketAddr::try_from(a).ok());
        if peer.is_some_and(|p| p.port() == port) {
            found.push(rustix::net::sockopt::tcp_nodelay(&copy).expect("getsockopt"));
        }
    }
    found
}

/// Waits until the process `pid` has a connection to `port` and checks that all have
/// `TCP_NODELAY` set.
async fn assert_nodelay_on_connections_to(pid: Pid, port: u16, what: &str) {
    let settings = eventually(Duration::from_secs(10), what, || async {
        Some(nodelay_of_sockets_to(pid, port)).filter(|s| !s.is_empty())
    })
    .await;
    assert!(settings.iter().all(|on| *on), "{what}: {settings:?}");
}

/// Nagle's algorithm would hold the second of two small writes of the TLS handshake until the
/// server's delayed ACK (~40 ms, twice per connection).
#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn connections_to_postgres_are_opened_with_tcp_nodelay(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let port = app.pool.connect_options().get_port();
    let gateway = spawn_binary(&app, &[]).await;
    let pid = Pid::from_child(&gateway.child);
    assert_nodelay_on_connections_to(pid, port, "the gateway's connections to Postgres").await;
}

/// Commands share one connection: a command written while another's answer is outstanding
/// would wait for that answer's ACK.
#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn connections_to_redis_are_opened_with_tcp_nodelay(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let redis_url = faceswap_testkit::redis_url();
    let port = url::Url::parse(&redis_url).unwrap().port().unwrap_or(6379);
    // Ready means Postgres answered and Redis was pinged, so the connection is open.
    let gateway = spawn_binary(&app, &[]).await;
    let pid = Pid::from_child(&gateway.child);
    assert_nodelay_on_connections_to(pid, port, "the gateway's connections to Redis").await;
}

/// A transaction dropped without commit (a handler cancelled by the request deadline or a
/// closed connection) still ends as its connection goes back to the pool: the queued rollback
/// is sent then, not when the connection is next used, so its locks go at once.
#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_dropped_transaction_releases_its_locks_when_its_connection_is_handed_back(pool: PgPool) {
    let url = pool.connect_options().to_url_lossy();
    let gateway_pool = faceswap_gateway::startup::connect_db(url.as_str(), 1)
        .await
        .unwrap();
    let mut tx = gateway_pool.begin().await.unwrap();
    sqlx::query("select pg_advisory_xact_lock(4242)")
        .execute(&mut *tx)
        .await
        .unwrap();
    drop(tx);
    eventually(
        Duration::from_secs(5),
        "the advisory lock released",
        || async {
            let held: i64 = sqlx::query_scalar(
                "select count(*) from pg_locks
                 where locktype = 'advisory' and objid = 4242
                   and database = (select oid from pg_database where datname = current_database())",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            (held == 0).then_some(())
        },
    )
    .await;
}

#[test]
fn a_malformed_worker_count_stops_start_up_with_one_line_naming_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faceswap-gateway"))
        .arg("serve")
        .env("TOKIO_WORKER_THREADS", "two")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TOKIO_WORKER_THREADS") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
}
