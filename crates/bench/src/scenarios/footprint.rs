//! Scenario 7: a fresh gateway process (migrations already applied): time to ready, resident
//! memory idle and with 1,000 open keep-alive connections that have each made a request.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Ctx;
use crate::stack;

pub const CONNECTIONS: usize = 1000;
const PORT: u16 = 19182;

#[derive(Debug, Clone, Serialize)]
pub struct Footprint {
    pub ready_ms: f64,
    pub rss_idle: u64,
    pub connections: usize,
    pub rss_with_connections: u64,
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Footprint> {
    let gateway = stack::start_gateway(&ctx.paths, &ctx.env, "gateway-idle", PORT, &[]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = gateway.proc.memory()?.rss;
    let addr = format!("127.0.0.1:{PORT}");
    let mut open = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        open.push(healthz(&addr).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_with_connections = gateway.proc.memory()?.rss;
    // Still open: a read now would block, not see an end of stream.
    let mut byte = [0u8; 1];
    let closed = open
        .iter_mut()
        .filter(|s| matches!(s.try_read(&mut byte), Ok(0)))
        .count();
    if closed > 0 {
        bail!("{closed} of {CONNECTIONS} connections were closed by the gateway");
    }
    Ok(Footprint {
        ready_ms: gateway.ready_after.as_secs_f64() * 1000.0,
        rss_idle,
        connections: CONNECTIONS,
        rss_with_connections,
    })
}

/// A keep-alive connection that has made one `GET /livez`.
async fn healthz(addr: &str) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nhost: bench\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("connection closed before an answer");
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&answer);
    let status = head.lines().next().context("empty answer")?;
    if !status.starts_with("HTTP/1.1 200") {
        bail!("GET /livez: {status}");
    }
    Ok(stream)
}
