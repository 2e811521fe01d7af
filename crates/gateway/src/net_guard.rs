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
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    ssrf: SsrfGuard,
}

impl GuardedResolver {
    /// A resolver that applies `ssrf`.
    pub fn new(ssrf: SsrfGuard) -> Self {
        Self { ssrf }
    }

    /// The allowed addresses of `host`; an error when there are none.
    pub async fn lookup(&self, host: &str) -> Result<Vec<SocketAddr>, String> {
        let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 0)))
            .await
            .map_err(|_| {
                format!(
                    "`{host}` did not resolve within {} s",
                    RESOLVE_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("`{host}` could not be resolved: {e}"))?;
        let any = self.ssrf.allows_host(host);
        let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
            found.partition(|a| any || self.ssrf.check_addr(a.ip()).is_ok());
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

    use super::*;

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
