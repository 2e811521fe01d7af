//! The SSRF guard at connect time, for every outbound call whose URL comes from outside (webhook
//! endpoints, generated resources): a DNS resolver that keeps only the addresses the guard
//! allows, so a name that turns private between a check and the connection is refused too.
//!
//! A resolver does not see IP literals (reqwest connects to them directly), so callers check
//! the URL with [`SsrfGuard::check`] first, and do not follow redirects.

use std::net::SocketAddr;
use std::time::Duration;

use faceswap_upstream::ssrf::SsrfGuard;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Longest wait for DNS at connect time.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Resolves names for an outbound client and keeps only the addresses the guard allows (all
/// of them for an allow-listed host name, as [`SsrfGuard::check`] does).
#[derive(Clone)]
pub struct GuardedResolver {
    ssrf: SsrfGuard,
    /// Unit tests stand in for DNS (to make a name change its answer between two lookups);
    /// outside them the system resolver is the only path.
    #[cfg(test)]
    lookup: Option<tests::Lookup>,
}

impl std::fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedResolver")
            .field("ssrf", &self.ssrf)
            .finish_non_exhaustive()
    }
}

impl GuardedResolver {
    /// A resolver that applies `ssrf`.
    pub fn new(ssrf: SsrfGuard) -> Self {
        Self {
            ssrf,
            #[cfg(test)]
            lookup: None,
        }
    }

    async fn resolve_name(&self, host: &str) -> std::io::Result<Vec<SocketAddr>> {
        #[cfg(test)]
        if let Some(lookup) = &self.lookup {
            return lookup(host.to_owned()).await;
        }
        Ok(tokio::net::lookup_host((host, 0)).await?.collect())
    }

    /// The allowed addresses of `host`; an error when there are none.
    pub async fn lookup(&self, host: &str) -> Result<Vec<SocketAddr>, String> {
        let found = tokio::time::timeout(RESOLVE_TIMEOUT, self.resolve_name(host))
            .await
            .map_err(|_| {
                format!(
                    "`{host}` did not resolve within {} s",
                    RESOLVE_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("`{host}` could not be resolved: {e}"))?;
        let any = self.ssrf.allows_host(host);
        let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = found
            .into_iter()
            .partition(|a| any || self.ssrf.check_addr(a.ip()).is_ok());
        if allowed.is_empty() {
            let refused: Vec<String> = refused.iter().map(|a| a.ip().to_string()).collect();
            return Err(format!(
                "`{host}` resolves to no public address (refused: {})",
                refused.join(", ")
            ));
        }
        Ok(allowed)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.lookup(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::future::BoxFuture;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A stand-in for DNS.
    pub(super) type Lookup =
        Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> + Send + Sync>;

    /// A name that answers `first` to the first lookup and `later` to every other: DNS
    /// rebinding.
    fn rebinding(first: SocketAddr, later: SocketAddr) -> (Lookup, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let lookup: Lookup = Arc::new(move |_host| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { Ok(vec![if n == 0 { first } else { later }]) })
        });
        (lookup, calls)
    }

    /// A server on `ip` that counts the connections it accepts and answers each with 200.
    async fn counting_server(ip: &str) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        (addr, hits)
    }

    #[tokio::test]
    async fn a_name_that_turns_private_after_passing_a_check_is_refused_at_connect_time() {
        let (private, hits) = counting_server("127.0.0.2").await;
        // A public first answer, never connected to: the connection resolves again.
        let public: SocketAddr = "93.184.215.14:0".parse().unwrap();
        let (lookup, calls) = rebinding(public, private);
        let resolver = GuardedResolver {
            ssrf: SsrfGuard::new(&["127.0.0.1/32".into()]).unwrap(),
            lookup: Some(lookup),
        };
        let first = resolver.lookup("rebind.test").await.unwrap();
        assert_eq!(first, [public], "the earlier check passes");

        let client = reqwest::Client::builder()
            .dns_resolver(resolver)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap();
        let err = client
            .get(format!("http://rebind.test:{}/", private.port()))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        assert!(
            crate::http::error::error_chain(&err).contains("no public address"),
            "{err:?}"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "resolved again at connect time"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached 127.0.0.2");
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_that_resolves_to_loopback() {
        let strict = GuardedResolver::new(SsrfGuard::default());
        let err = strict.lookup("localhost").await.unwrap_err();
        assert!(err.contains("no public address"), "{err}");
    }

    #[tokio::test]
    async fn the_resolver_lets_allow_listed_addresses_and_names_through() {
        let by_net = GuardedResolver::new(
            SsrfGuard::new(&["127.0.0.0/8".into(), "::1/128".into()]).unwrap(),
        );
        let addrs = by_net.lookup("localhost").await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        let by_name = GuardedResolver::new(SsrfGuard::new(&["localhost".into()]).unwrap());
        assert!(!by_name.lookup("localhost").await.unwrap().is_empty());
    }
}
