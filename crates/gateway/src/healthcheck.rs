//! `faceswap-gateway healthcheck [--url URL]`: the container health check, with no curl in the
//! image and no configuration loaded. One HTTP/1.0 GET over plain TCP, bounded in time; healthy
//! (exit 0) only on status 200.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The whole check (connect, send, first line of the answer) must finish within this.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// The URL checked when none is given: `/readyz` on loopback, at the port of `bind` (the value
/// of `GATEWAY_BIND`, default port 8080).
pub fn default_url(bind: Option<&str>) -> String {
    let port = bind
        .and_then(|b| b.rsplit_once(':'))
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(8080);
    format!("http://127.0.0.1:{port}/readyz")
}

/// GETs `url` (`http://host:port/path`); `Ok` only when it answers 200.
pub async fn check(url: &str) -> anyhow::Result<()> {
    let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("--url {url}: {e}"))?;
    anyhow::ensure!(
        parsed.scheme() == "http",
        "--url {url}: only http:// is supported"
    );
    let host = parsed
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("--url {url}: no host"))?
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let path = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    let status_line = tokio::time::timeout(TIMEOUT, async {
        let addr = (host.trim_start_matches('[').trim_end_matches(']'), port);
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 4096 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        anyhow::Ok(line.lines().next().unwrap_or_default().to_owned())
    })
    .await
    .map_err(|_| anyhow::anyhow!("unhealthy: GET {url}: no answer within {TIMEOUT:?}"))?
    .map_err(|e| anyhow::anyhow!("unhealthy: GET {url}: {e}"))?;
    let status = status_line.split_whitespace().nth(1);
    anyhow::ensure!(
        status_line.starts_with("HTTP/1.") && status == Some("200"),
        "unhealthy: GET {url} -> {}",
        if status_line.is_empty() {
            "no answer"
        } else {
            &status_line
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_default_url_follows_the_bind_port() {
        assert_eq!(default_url(None), "http://127.0.0.1:8080/readyz");
        assert_eq!(
            default_url(Some("0.0.0.0:9000")),
            "http://127.0.0.1:9000/readyz"
        );
        assert_eq!(default_url(Some("[::]:81")), "http://127.0.0.1:81/readyz");
    }

    /// A one-shot server answering `status` to one request.
    async fn serve_once(status: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                .await;
        });
        format!("http://{addr}/readyz")
    }

    #[tokio::test]
    async fn healthy_only_on_200() {
        assert!(check(&serve_once("200 OK").await).await.is_ok());
        let e = check(&serve_once("503 Service Unavailable").await)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("503"), "{e}");
        let closed = format!("http://127.0.0.1:{}/readyz", {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        });
        assert!(check(&closed).await.is_err());
        assert!(check("https://127.0.0.1/readyz").await.is_err());
    }
}
