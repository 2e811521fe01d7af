//! The HTTP exchange under every upstream call: one POST, the whole answer read.
//!
//! Built on hyper's pooled client rather than reqwest: every call goes to one of six URLs
//! known at start, with no redirects, proxies or cookies to follow, so the per-request work
//! reqwest adds (its redirect and retry layers, a URL parsed again per request, a client
//! clone) buys nothing here and was a quarter of the gateway's CPU on a proxied `info`.
//! Connections, TLS (the process's shared configuration, HTTP/2 by ALPN) and timeouts are
//! what reqwest gave.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Builder, Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// How long an idle pooled connection is kept (reqwest's default).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keep-alive probes on upstream connections, so a silently dropped peer is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

const USER_AGENT_VALUE: &str = concat!("faceswap-upstream/", env!("CARGO_PKG_VERSION"));

/// How an exchange failed, before it is tied to a call.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Nothing usable to send (a token that is not a valid header value).
    Request(String),
    /// No connection could be made (refused, unreachable, a failed TLS handshake, or none
    /// within the connect timeout): nothing was sent.
    Connect(String),
    /// The whole exchange took longer than the timeout.
    Timeout,
    /// The exchange broke after the request may have left.
    Transport(String),
}

type HttpClient = Client<ConnectTimeout<HttpsConnector<HttpConnector>>, Full<Bytes>>;

/// Keep-alive pools of HTTP/1.1 and HTTP/2 (by ALPN) connections, one per thread that sends.
/// A connection is driven by a task on the runtime that opened it; a pool shared by threads
/// would hand one thread's connection to another, and every exchange on it would wake the
/// opener's thread. Clones share the pools.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    shared: Arc<Shared>,
    timeout: Duration,
}

/// What every thread's pool of one transport is built from.
#[derive(Debug)]
struct Shared {
    builder: Builder,
    connector: ConnectTimeout<HttpsConnector<HttpConnector>>,
}

thread_local! {
    /// This thread's pool of each live transport.
    static THREAD_POOLS: RefCell<Vec<(Weak<Shared>, HttpClient)>> = const { RefCell::new(Vec::new()) };
}

impl Transport {
    /// Pools whose exchanges last at most `timeout`, connecting (TLS included) within
    /// `connect_timeout`, each keeping up to `max_idle_per_host` idle connections per host.
    ///
    /// The gateway fans many tenants into one or two upstream hosts, so it keeps as many idle
    /// connections as calls it lets in flight: a burst up to that bound finds its connections
    /// open again next time, instead of closing the excess as it ends and reopening it (a
    /// handshake each) at the next burst.
    pub(crate) fn new(
        timeout: Duration,
        connect_timeout: Duration,
        max_idle_per_host: usize,
    ) -> Result<Self, String> {
        let tls = crate::tls::client_config()
            .ok_or("cannot load the platform's TLS certificate verifier")?;
        let mut tcp = HttpConnector::new();
        // The TLS layer decides which schemes it accepts.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(TCP_KEEPALIVE));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_max_idle_per_host(max_idle_per_host)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let shared = Shared {
            builder,
            connector: ConnectTimeout {
                inner: https,
                timeout: connect_timeout,
            },
        };
        Ok(Self {
            shared: Arc::new(shared),
            timeout,
        })
    }

    /// POSTs `body` as JSON to `uri` and reads the whole answer, whatever its status.
    pub(crate) async fn post(
        &self,
        uri: &Uri,
        token: Option<&str>,
        extra: Option<HeaderMap>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), SendError> {
        let req = request(uri, token, extra, body)?;
        let exchange = async {
            let resp = self.request_on_this_thread(req).await.map_err(|e| {
                let message = crate::error::source_chain(&e);
                if e.is_connect() {
                    SendError::Connect(message)
                } else {
                    SendError::Transport(message)
                }
            })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| SendError::Transport(crate::error::source_chain(&e)))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(SendError::Timeout))
    }

    /// Sends `req` on this thread's pool, which is built on the thread's first call.
    fn request_on_this_thread(&self, req: Request<Full<Bytes>>) -> ResponseFuture {
        THREAD_POOLS.with_borrow_mut(|pools| {
            // The weak reference keeps the address from being reused while it is listed.
            let mine = Arc::as_ptr(&self.shared);
            if let Some((_, client)) = pools.iter().find(|(t, _)| std::ptr::eq(t.as_ptr(), mine)) {
                return client.request(req);
            }
            // Pools of transports dropped since are closed when this thread opens its next.
            pools.retain(|(t, _)| t.strong_count() > 0);
            let client = self.shared.builder.build(self.shared.connector.clone());
            let sent = client.request(req);
            pools.push((Arc::downgrade(&self.shared), client));
            sent
        })
    }
}

fn request(
    uri: &Uri,
    token: Option<&str>,
    extra: Option<HeaderMap>,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, SendError> {
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri.clone();
    let headers = req.headers_mut();
    if let Some(extra) = extra {
        headers.extend(extra);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    if let Some(token) = token {
        let mut value = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
            SendError::Request("the access token is not a valid header value".to_owned())
        })?;
        // Kept out of hyper's debug output and HTTP/2 header compression tables.
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(req)
}

/// Bounds the whole connect (TCP and TLS handshake) of the wrapped connector, so a host that
/// accepts connections but never completes a handshake is a connect failure (nothing sent),
/// not a timeout of the call (maybe sent).
#[derive(Debug, Clone)]
struct ConnectTimeout<C> {
    inner: C,
    timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower_service::Service<Uri> for ConnectTimeout<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(format!("connect timed out after {} ms", timeout.as_millis()).into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_json_headers_and_a_sensitive_bearer_token() {
        let uri = Uri::from_static("http://up.example/api/open/v3/faceswap/live/info");
        let mut extra = HeaderMap::new();
        extra.insert("traceparent", HeaderValue::from_static("00-ab-cd-01"));
        // A hook cannot replace the content type the upstream parses.
        extra.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let req = request(&uri, Some("tok"), Some(extra), Bytes::from_static(b"{}")).unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), &uri);
        let h = req.headers();
        assert_eq!(h[CONTENT_TYPE], "application/json");
        assert_eq!(h[ACCEPT], "application/json");
        assert_eq!(h["traceparent"], "00-ab-cd-01");
        assert_eq!(h[AUTHORIZATION], "Bearer tok");
        assert!(h[AUTHORIZATION].is_sensitive());
        assert!(
            h[USER_AGENT]
                .to_str()
                .unwrap()
                .starts_with("faceswap-upstream/")
        );
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_refused_before_sending() {
        let uri = Uri::from_static("http://up.example/");
        let err = request(&uri, Some("bad\ntoken"), None, Bytes::new()).unwrap_err();
        assert!(matches!(err, SendError::Request(_)), "{err:?}");
        assert!(request(&uri, None, None, Bytes::new()).is_ok());
    }
}
