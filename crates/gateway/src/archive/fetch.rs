//! Downloading generated resources from the upstream's URLs, under the SSRF rules: the URL is
//! checked before the request (IP literals, schemes), the client resolves names through the
//! guard at connect time, and redirects and proxies are not followed.

use std::time::Duration;

use faceswap_upstream::ssrf::SsrfGuard;

/// Why a download could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The URL is refused for good (scheme, private address): retrying cannot help.
    #[error("refused: {0}")]
    Refused(String),
    /// The attempt failed (connection, timeout, HTTP status); a later one may work.
    #[error("{0}")]
    Failed(String),
}

/// The HTTP client of the archiver.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    ssrf: SsrfGuard,
}

impl Fetcher {
    /// A client applying `ssrf`; a connection idle for `read_timeout` fails the attempt (there
    /// is no limit on the whole download: resources may be large).
    pub fn new(
        ssrf: SsrfGuard,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let client = faceswap_upstream::tls::shared_tls(reqwest::Client::builder())
            .connect_timeout(connect_timeout)
            .read_timeout(read_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(crate::net_guard::GuardedResolver::new(ssrf.clone()))
            .user_agent(concat!(
                "faceswap-gateway-archiver/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Self { client, ssrf })
    }

    /// Starts the download of `url`: a response with a 2xx status whose body is still to read.
    pub async fn open(&self, url: &str) -> Result<reqwest::Response, FetchError> {
        let url = self.ssrf.check(url).await.map_err(|e| match e {
            faceswap_upstream::ssrf::SsrfError::Unresolvable { .. } => {
                FetchError::Failed(e.to_string())
            }
            other => FetchError::Refused(other.to_string()),
        })?;
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| FetchError::Failed(describe(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(FetchError::Failed(format!(
                "the upstream answered HTTP {}",
                status.as_u16()
            )));
        }
        Ok(resp)
    }
}

/// A transport error in a line, with its causes (the resolver's refusal is one).
pub fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn private_urls_are_refused_for_good_and_bad_schemes_too() {
        let f = Fetcher::new(
            SsrfGuard::default(),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap();
        for url in [
            "http://127.0.0.1:1/x.png",
            "http://169.254.169.254/latest",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(f.open(url).await, Err(FetchError::Refused(_))),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn an_allowed_but_closed_port_is_a_retryable_failure() {
        let guard = SsrfGuard::new(&["127.0.0.1/32".into()]).unwrap();
        let f = Fetcher::new(guard, Duration::from_secs(1), Duration::from_secs(1)).unwrap();
        assert!(matches!(
            f.open("http://127.0.0.1:1/x.png").await,
            Err(FetchError::Failed(_))
        ));
    }
}
