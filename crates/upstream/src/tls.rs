//! One TLS client configuration for every HTTP client of the process.
//!
//! reqwest builds its certificate verifier per client, and on Linux that reads and parses every
//! file under `/etc/ssl/certs`: tens of milliseconds each time. The gateway builds several
//! clients (upstream, webhooks, archiver), so building the verifier once takes most of that off
//! the time from start to ready. Verification is unchanged: the platform's roots, through
//! `rustls-platform-verifier`, as reqwest does by default.

use std::sync::{Arc, LazyLock};

/// Built on first use; `None` when the platform verifier cannot be built (reqwest then builds
/// its own per client, which fails in the same way and reports it).
static SHARED: LazyLock<Option<rustls::ClientConfig>> = LazyLock::new(|| {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone()).ok()?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // What reqwest offers by default with HTTP/2 enabled.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Some(config)
});

/// The shared configuration without ALPN protocols, for a connector that sets its own.
pub(crate) fn client_config() -> Option<rustls::ClientConfig> {
    let mut config = SHARED.as_ref()?.clone();
    config.alpn_protocols.clear();
    Some(config)
}

/// `builder` using the shared TLS configuration.
pub fn shared_tls(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    match SHARED.as_ref() {
        Some(config) => builder.tls_backend_preconfigured(config.clone()),
        None => builder,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_configuration_verifies_with_the_platform_roots() {
        let config = SHARED.as_ref().expect("the platform verifier builds here");
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(shared_tls(reqwest::Client::builder()).build().is_ok());
        assert!(client_config().unwrap().alpn_protocols.is_empty());
    }
}
