//! The upstream calls over one shared keep-alive pool.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::Retryable;
use bytes::Bytes;
use faceswap_wire::{
    Code, CreateRequest, LiveSession, SessionIdRequest, TokenRequest, TokenResponse, UpdateRequest,
};
use http::StatusCode;
use http::header::HeaderMap;
use serde::Deserialize;
use url::Url;

use crate::answer::{decode, status_error, success_data, success_envelope, to_json};
use crate::breaker::BreakerState;
use crate::endpoints::Endpoints;
use crate::policy::{CallPolicy, Guard, PolicyEvent, PolicyObserver};
use crate::transport::Transport;
use crate::{Call, IssuedToken, UpstreamError, retry};

/// Where the upstream is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Base of every call but detect; the call paths are appended to its path.
    pub base_url: Url,
    /// The detection URL, used exactly as given.
    pub detect_url: Url,
    /// Total time allowed per call, from connecting to the last byte of the answer.
    pub timeout: Duration,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Retries, circuit breakers and the bound on calls in flight.
    pub policy: CallPolicy,
}

/// A client of the upstream API. Clones share one connection pool.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    http: Transport,
    endpoints: Arc<Endpoints>,
    observer: Observer,
    header_hook: Hook,
    guard: Arc<Guard>,
    timeout: Duration,
}

/// Told about every finished attempt: which call, how long it took, and how it ended (for
/// metrics). A call retried twice reports three attempts; a call the breaker or the
/// concurrency bound held back reports its `CircuitOpen` or `Busy` without being sent.
pub type CallObserver = Arc<dyn Fn(Call, Duration, Result<(), &UpstreamError>) + Send + Sync>;

/// Adds headers to every upstream request, inside the call's span (the gateway injects the
/// W3C `traceparent` this way, so this crate needs no OpenTelemetry dependency).
pub type HeaderHook = Arc<dyn Fn(&mut HeaderMap) + Send + Sync>;

#[derive(Clone, Default)]
struct Observer(Option<CallObserver>);

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Observer" } else { "None" })
    }
}

#[derive(Clone, Default)]
struct Hook(Option<HeaderHook>);

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "HeaderHook"
        } else {
            "None"
        })
    }
}

/// A detection answer the upstream gave with HTTP 2xx, to pass through to the tenant.
#[derive(Clone, PartialEq, Eq)]
pub struct DetectOutcome {
    /// The answer's `error_code`: 0 for success, or a detection failure such as 2002 (no face).
    pub error_code: i64,
    /// The upstream's body, byte for byte.
    pub body: Bytes,
}

impl fmt::Debug for DetectOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Landmark arrays make noisy logs; the size is what matters when debugging.
        f.debug_struct("DetectOutcome")
            .field("error_code", &self.error_code)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl UpstreamClient {
    /// Builds the client; fails on URLs that are not http(s), a zero timeout, or an unusable
    /// policy.
    pub fn new(cfg: UpstreamConfig) -> Result<Self, UpstreamError> {
        if cfg.timeout.is_zero() || cfg.connect_timeout.is_zero() {
            return Err(UpstreamError::Config(
                "upstream timeout and connect timeout must be above zero".to_owned(),
            ));
        }
        cfg.policy
            .validate()
            .map_err(|e| UpstreamError::Config(format!("upstream call policy: {e}")))?;
        let endpoints =
            Endpoints::new(&cfg.base_url, &cfg.detect_url).map_err(UpstreamError::Config)?;
        // An environment proxy would silently reroute upstream traffic and its tokens, and the
        // upstream never redirects (following one would re-post a body, maybe 14 MB of image,
        // somewhere unvetted; a 3xx surfaces as a Status error): the transport does neither.
        let http = Transport::new(cfg.timeout, cfg.connect_timeout, cfg.policy.max_concurrency)
            .map_err(|e| UpstreamError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            endpoints: Arc::new(endpoints),
            observer: Observer::default(),
            header_hook: Hook::default(),
            guard: Arc::new(Guard::new(cfg.policy, &cfg.base_url, &cfg.detect_url)),
            timeout: cfg.timeout,
        })
    }

    /// Reports every finished call to `observer`.
    pub fn with_observer(mut self, observer: CallObserver) -> Self {
        self.observer = Observer(Some(observer));
        self
    }

    /// Lets `hook` add headers to every request (`None` leaves requests as they are).
    pub fn with_header_hook(mut self, hook: Option<HeaderHook>) -> Self {
        self.header_hook = Hook(hook);
        self
    }

    /// Reports retries and breaker changes to `observer`; it hears each host's current
    /// breaker state at once.
    pub fn with_policy_observer(mut self, observer: PolicyObserver) -> Self {
        self.guard = Arc::new(self.guard.with_observer(Some(observer)));
        self
    }

    /// Upstream attempts in flight now (bounded by the policy's `max_concurrency`).
    pub fn in_flight(&self) -> usize {
        self.guard.in_flight()
    }

    /// Each upstream host (`host:port`) and the state of its circuit breaker.
    pub fn breaker_states(&self) -> Vec<(String, BreakerState)> {
        self.guard.breaker_states()
    }

    /// Runs `call` under the policy: each attempt passes the host's breaker and the
    /// concurrency bound and is reported to the observer; failures worth it are retried with
    /// backoff while the call is younger than one timeout, so a call (retries and waits
    /// included) ends within about two timeouts.
    async fn run<T, F, Fut>(&self, call: Call, mut attempt: F) -> Result<T, UpstreamError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let guard = &*self.guard;
        let policy = guard.policy();
        let started = Instant::now();
        let once = || {
            let send = attempt();
            async move {
                let began = Instant::now();
                let result = match guard.pass(call).await {
                    Ok(pass) => {
                        let result = send.await;
                        guard.settle(pass, result.as_ref().map(drop));
                        result
                    }
                    Err(refused) => Err(refused),
                };
                if let Some(observe) = &self.observer.0 {
                    observe(call, began.elapsed(), result.as_ref().map(drop));
                }
                result
            }
        };
        once.retry(retry::backoff(policy.retry_attempts, policy.retry_base))
            .when(|e| retry::is_retryable(call, e) && started.elapsed() < self.timeout)
            .notify(|error, delay| {
                tracing::debug!(call = call.name(), %error, ?delay, "retrying upstream call");
                guard.emit(&PolicyEvent::Retry { call, error, delay });
            })
            .await
    }

    /// The URL `call` posts to.
    pub fn endpoint(&self, call: Call) -> &Url {
        self.endpoints.get(call)
    }

    /// Exchanges the account's credentials for an access token.
    pub async fn get_token(
        &self,
        client_id: &str,
        client_secret: &str,
    ) -> Result<IssuedToken, UpstreamError> {
        self.run(Call::GetToken, || {
            self.get_token_once(client_id, client_secret)
        })
        .await
    }

    async fn get_token_once(
        &self,
        client_id: &str,
        client_secret: &str,
    ) -> Result<IssuedToken, UpstreamError> {
        let call = Call::GetToken;
        let req = TokenRequest {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
        };
        let (status, body) = self.post(call, None, to_json(call, &req)?).await?;
        success_envelope(call, status, &body)?;
        let answer: TokenResponse = serde_json::from_slice(&body).map_err(|e| decode(call, e))?;
        let token = answer.token().ok_or_else(|| UpstreamError::Decode {
            call,
            message: "code 1000 but no token in the answer".to_owned(),
        })?;
        Ok(IssuedToken::from_jwt(token.to_owned()))
    }

    /// Forwards a detection request body untouched. Detection failures (no face, unreadable
    /// image) are answers, not errors: they come back in the outcome for pass-through. Only
    /// 1101/1102 become [`UpstreamError::Business`], so token refresh works as for other calls.
    pub async fn detect(&self, token: &str, body: Bytes) -> Result<DetectOutcome, UpstreamError> {
        self.run(Call::Detect, || self.detect_once(token, body.clone()))
            .await
    }

    async fn detect_once(&self, token: &str, body: Bytes) -> Result<DetectOutcome, UpstreamError> {
        #[derive(Deserialize)]
        struct Head {
            error_code: i64,
            #[serde(default)]
            error_msg: String,
        }
        let call = Call::Detect;
        let (status, body) = self.post(call, Some(token), body).await?;
        if !status.is_success() {
            return Err(status_error(call, status, &body));
        }
        let head: Head = serde_json::from_slice(&body).map_err(|e| decode(call, e))?;
        let code = Code(head.error_code);
        if code == Code::TOKEN_INVALID || code == Code::AUTH_MISSING {
            return Err(UpstreamError::Business {
                call,
                code,
                msg: head.error_msg,
            });
        }
        Ok(DetectOutcome {
            error_code: head.error_code,
            body,
        })
    }

    /// Creates a live session.
    pub async fn create(
        &self,
        token: &str,
        req: &CreateRequest,
    ) -> Result<LiveSession, UpstreamError> {
        self.session_call(Call::Create, token, req).await
    }

    /// Replaces a live session's source faces.
    pub async fn update(
        &self,
        token: &str,
        req: &UpdateRequest,
    ) -> Result<LiveSession, UpstreamError> {
        self.session_call(Call::Update, token, req).await
    }

    /// Closes a live session, releasing its upstream resources (and billing).
    pub async fn close(&self, token: &str, upstream_id: &str) -> Result<(), UpstreamError> {
        let call = Call::Close;
        let req = SessionIdRequest {
            id: upstream_id.to_owned(),
        };
        let req = &req;
        self.run(call, || async move {
            let (status, body) = self.post(call, Some(token), to_json(call, req)?).await?;
            success_envelope(call, status, &body).map(drop)
        })
        .await
    }

    /// Reads a live session.
    pub async fn info(&self, token: &str, upstream_id: &str) -> Result<LiveSession, UpstreamError> {
        let req = SessionIdRequest {
            id: upstream_id.to_owned(),
        };
        self.session_call(Call::Info, token, &req).await
    }

    async fn session_call(
        &self,
        call: Call,
        token: &str,
        req: &impl serde::Serialize,
    ) -> Result<LiveSession, UpstreamError> {
        self.run(call, || self.session_call_once(call, token, req))
            .await
    }

    async fn session_call_once(
        &self,
        call: Call,
        token: &str,
        req: &impl serde::Serialize,
    ) -> Result<LiveSession, UpstreamError> {
        let (status, body) = self.post(call, Some(token), to_json(call, req)?).await?;
        success_data(call, status, &body)
    }

    /// Sends one POST and reads the whole answer, whatever its status. One span per call
    /// (`upstream`, a client span when traces are exported).
    #[tracing::instrument(
        name = "upstream",
        skip_all,
        fields(call = call.name(), otel.name = call.name(), otel.kind = "client", status = tracing::field::Empty)
    )]
    async fn post(
        &self,
        call: Call,
        token: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), UpstreamError> {
        let started = Instant::now();
        let extra = self.header_hook.0.as_ref().map(|hook| {
            let mut headers = HeaderMap::new();
            hook(&mut headers);
            headers
        });
        let result = self
            .http
            .post(self.endpoints.uri(call), token, extra, body)
            .await;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok((status, body)) => {
                tracing::Span::current().record("status", status.as_u16());
                tracing::debug!(
                    call = call.name(),
                    status = status.as_u16(),
                    elapsed_ms,
                    response_bytes = body.len(),
                    "upstream call"
                );
                Ok((status, body))
            }
            Err(e) => {
                let err = UpstreamError::from_send(call, e);
                tracing::debug!(call = call.name(), elapsed_ms, error = %err, "upstream call failed");
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_timeouts_and_non_http_urls_are_configuration_errors() {
        let cfg = |base: &str, timeout_ms| UpstreamConfig {
            base_url: Url::parse(base).unwrap(),
            detect_url: Url::parse("http://d/detect").unwrap(),
            timeout: Duration::from_millis(timeout_ms),
            connect_timeout: Duration::from_millis(100),
            policy: CallPolicy::default(),
        };
        assert!(matches!(
            UpstreamClient::new(cfg("http://h/", 0)),
            Err(UpstreamError::Config(_))
        ));
        assert!(matches!(
            UpstreamClient::new(cfg("ftp://h/", 100)),
            Err(UpstreamError::Config(_))
        ));
        let client = UpstreamClient::new(cfg("http://h/prefix", 100)).unwrap();
        assert_eq!(
            client.endpoint(Call::GetToken).as_str(),
            "http://h/prefix/api/open/v3/getToken"
        );
        assert_eq!(client.endpoint(Call::Detect).as_str(), "http://d/detect");
    }

    #[test]
    fn detect_outcome_debug_shows_the_size_not_the_body() {
        let outcome = DetectOutcome {
            error_code: 0,
            body: Bytes::from_static(br#"{"error_code":0}"#),
        };
        assert_eq!(
            format!("{outcome:?}"),
            "DetectOutcome { error_code: 0, body_bytes: 16 }"
        );
    }
}
