//! A typed async client for the Live Face Swap gateway's tenant API.
//!
//! It speaks the shared wire types of [`faceswap_wire`] over `reqwest`:
//!
//! - the provider's drop-in calls (token, detect, create / update / close / info), where `_id`
//!   is the gateway's own session id (`ses_…`);
//! - the gateway's additions: the session list, heartbeats, usage, archived resources,
//!   webhook endpoints, and the event stream ([`Client::events`]);
//! - [`webhooks::Verifier`], which checks the signature of webhook deliveries.
//!
//! With client credentials the client fetches a token on first use, replaces it shortly
//! before it expires (concurrent calls share one refresh), and retries a call once with a
//! fresh token when the gateway refuses the old one (1101).
//!
//! ```no_run
//! use faceswap_client::{Client, Credentials};
//!
//! # async fn run() -> Result<(), faceswap_client::Error> {
//! let client = Client::new(
//!     "http://127.0.0.1:8080",
//!     Credentials::Client {
//!         client_id: "cli_…".into(),
//!         client_secret: "…".into(),
//!     },
//! )?;
//! let faces = client.detect_file("testdata/face.jpg").await?;
//! println!("{} face(s)", faces.region.len());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

/// The README's code, compiled as doc tests so it stays correct.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod error;
pub mod sse;
mod token;
pub mod types;
pub mod webhooks;

use std::collections::VecDeque;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
pub use error::Error;
pub use faceswap_wire;
pub use faceswap_wire::Code;
use faceswap_wire::gateway::{SessionPage, SessionView, UsageView};
use faceswap_wire::{
    CreateRequest, DetectRequest, DetectResponse, Envelope, SessionIdRequest, TokenRequest,
    TokenResponse, UpdateRequest,
};
use futures_util::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
pub use sse::{Event, EventKind};
use tokio::sync::Mutex;
use tokio::time::Instant;
pub use types::*;

use crate::sse::{Message, RawEvent, SseParser};
use crate::token::Held;

/// Every route of the gateway's tenant API this client calls, as (method, path template).
/// A test checks it against `openapi/openapi.json`, so a new tenant route fails until the
/// client covers it.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/open/v3/getToken"),
    ("POST", "/detect"),
    ("POST", "/interface/detect-api/detect_faces"),
    ("POST", "/api/open/v3/faceswap/live/create"),
    ("POST", "/api/open/v3/faceswap/live/update"),
    ("POST", "/api/open/v3/faceswap/live/close"),
    ("POST", "/api/open/v3/faceswap/live/info"),
    ("GET", "/v1/sessions"),
    ("POST", "/v1/sessions/{id}/heartbeat"),
    ("GET", "/v1/sessions/{id}/resources"),
    ("GET", "/v1/usage"),
    ("GET", "/v1/resources"),
    ("GET", "/v1/resources/{id}"),
    ("GET", "/v1/events"),
    ("POST", "/v1/webhooks"),
    ("GET", "/v1/webhooks"),
    ("DELETE", "/v1/webhooks/{id}"),
];

/// The default gateway address of the quick-start stack.
pub const DEFAULT_GATEWAY_URL: &str = "http://127.0.0.1:8080";
/// The default time limit of one call (not of the event stream).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The header that makes a create, update or close safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// How the client authenticates.
#[derive(Clone)]
pub enum Credentials {
    /// Client credentials, exchanged for short-lived tokens (`getToken`).
    Client {
        /// Client ID.
        client_id: String,
        /// Client secret.
        client_secret: String,
    },
    /// An API key, sent as is with every call.
    ApiKey(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Client { client_id, .. } => f
                .debug_struct("Client")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            Self::ApiKey(_) => f.write_str("ApiKey(..)"),
        }
    }
}

impl Credentials {
    /// Credentials from variables looked up by `var`: `FACESWAP_API_KEY`, or else
    /// `FACESWAP_CLIENT_ID` and `FACESWAP_CLIENT_SECRET`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let non_empty = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if let Some(key) = non_empty("FACESWAP_API_KEY") {
            return Ok(Self::ApiKey(key));
        }
        match (
            non_empty("FACESWAP_CLIENT_ID"),
            non_empty("FACESWAP_CLIENT_SECRET"),
        ) {
            (Some(client_id), Some(client_secret)) => Ok(Self::Client {
                client_id,
                client_secret,
            }),
            _ => Err(Error::Config(
                "set FACESWAP_CLIENT_ID and FACESWAP_CLIENT_SECRET, or FACESWAP_API_KEY".into(),
            )),
        }
    }
}

/// Per-call options of the calls that change state (create, update, close, webhook
/// registration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// Sent as `Idempotency-Key`: a retry with the same key and body within 24 h gets the
    /// first successful answer again and nothing runs twice.
    pub idempotency_key: Option<String>,
}

impl RequestOptions {
    /// Options carrying `key` as the `Idempotency-Key`.
    pub fn idempotent(key: impl Into<String>) -> Self {
        Self {
            idempotency_key: Some(key.into()),
        }
    }
}

/// Options of a [`Client`].
pub struct ClientBuilder {
    base_url: String,
    credentials: Credentials,
    timeout: Duration,
    http: Option<reqwest::Client>,
    token: Option<String>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("credentials", &self.credentials)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The time limit of one call (default [`DEFAULT_TIMEOUT`]); the event stream has none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Use this `reqwest` client (proxies, TLS roots, connection pool). Give it no overall
    /// timeout, or the event stream will be cut by it.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Start with a token obtained earlier (e.g. kept across restarts). It is used until the
    /// gateway refuses it, then replaced with one from the credentials.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The client.
    pub fn build(self) -> Result<Client, Error> {
        let base = self.base_url.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Config(format!(
                "the gateway URL must start with http:// or https://, not `{base}`"
            )));
        }
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()?,
        };
        let held = self.token.map(|t| Held::given(t, Instant::now()));
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                credentials: self.credentials,
                timeout: self.timeout,
                token: Mutex::new(held),
                token_fetches: AtomicU64::new(0),
            }),
        })
    }
}

/// The client. Cheap to clone; clones share the connection pool and the token.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
    timeout: Duration,
    /// Held across a token fetch, so concurrent callers wait for one refresh.
    token: Mutex<Option<Held>>,
    token_fetches: AtomicU64,
}

/// The event stream of [`Client::events`].
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Error>> + Send>>;

impl Client {
    /// A client for the gateway at `base_url` (e.g. `http://127.0.0.1:8080`) with default
    /// options.
    pub fn new(base_url: impl Into<String>, credentials: Credentials) -> Result<Self, Error> {
        Self::builder(base_url, credentials).build()
    }

    /// Options of a client.
    pub fn builder(base_url: impl Into<String>, credentials: Credentials) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            credentials,
            timeout: DEFAULT_TIMEOUT,
            http: None,
            token: None,
        }
    }

    /// A client configured from the environment: `FACESWAP_GATEWAY_URL` (default
    /// [`DEFAULT_GATEWAY_URL`]) and the credentials of [`Credentials::from_vars`].
    pub fn from_env() -> Result<Self, Error> {
        let var = |name: &str| std::env::var(name).ok();
        let url = var("FACESWAP_GATEWAY_URL")
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_GATEWAY_URL.to_owned());
        Self::new(url, Credentials::from_vars(var)?)
    }

    /// The gateway's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// How many tokens this client has fetched so far.
    pub fn token_fetches(&self) -> u64 {
        self.inner.token_fetches.load(Ordering::Relaxed)
    }

    /// The credential sent with the next call: the API key, or a token that is not about to
    /// expire (fetched or refreshed now if needed).
    pub async fn token(&self) -> Result<String, Error> {
        let (client_id, client_secret) = match &self.inner.credentials {
            Credentials::ApiKey(key) => return Ok(key.clone()),
            Credentials::Client {
                client_id,
                client_secret,
            } => (client_id, client_secret),
        };
        let mut held = self.inner.token.lock().await;
        if let Some(h) = held.as_ref()
            && !h.refresh_due(Instant::now())
        {
            return Ok(h.token.clone());
        }
        let fresh = self.fetch_token(client_id, client_secret).await?;
        let token = fresh.token.clone();
        *held = Some(fresh);
        Ok(token)
    }

    async fn fetch_token(&self, client_id: &str, client_secret: &str) -> Result<Held, Error> {
        let body = TokenRequest {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
        };
        let resp = self
            .inner
            .http
            .post(self.url("/api/open/v3/getToken"))
            .timeout(self.inner.timeout)
            .json(&body)
            .send()
            .await?;
        self.inner.token_fetches.fetch_add(1, Ordering::Relaxed);
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            return Err(api_error(status, &headers, &bytes));
        }
        let answer: TokenResponse = decode(status, &bytes)?;
        match answer.token() {
            Some(token) if answer.code.is_success() => {
                Ok(Held::from_answer(token.to_owned(), &answer, Instant::now()))
            }
            _ => Err(Error::Api {
                status: status.as_u16(),
                code: answer.code,
                msg: answer.msg,
                retry_after: None,
            }),
        }
    }

    /// Forgets `token` if it is still the one held, so the next call fetches another.
    async fn drop_token(&self, token: &str) {
        let mut held = self.inner.token.lock().await;
        if held.as_ref().is_some_and(|h| h.token == token) {
            *held = None;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.base)
    }

    /// Sends an authenticated request built by `build`; a 1101 with client credentials gets
    /// one retry with a fresh token. Non-2xx answers become [`Error::Api`].
    async fn send(
        &self,
        timeout: bool,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let retry_allowed = matches!(self.inner.credentials, Credentials::Client { .. });
        let mut retried = false;
        loop {
            let token = self.token().await?;
            let mut req = build(&self.inner.http).header(AUTHORIZATION, format!("Bearer {token}"));
            if timeout {
                req = req.timeout(self.inner.timeout);
            }
            let resp = req.send().await?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await?;
            let err = api_error(status, &headers, &bytes);
            if err.code() == Some(Code::TOKEN_INVALID) && retry_allowed && !retried {
                retried = true;
                self.drop_token(&token).await;
                continue;
            }
            return Err(err);
        }
    }

    /// A call answered with `{code, msg, data}`; returns `data`.
    async fn envelope<T: DeserializeOwned>(
        &self,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<T, Error> {
        let resp = self.send(true, build).await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let env: Envelope<T> = decode(status, &bytes)?;
        if !env.code.is_success() {
            return Err(Error::Api {
                status: status.as_u16(),
                code: env.code,
                msg: env.msg,
                retry_after: None,
            });
        }
        env.data.ok_or_else(|| Error::Decode {
            status: status.as_u16(),
            source: serde::de::Error::custom("the envelope has no data"),
            body: snippet(&bytes),
        })
    }

    fn post_json<'a, B: Serialize>(
        &'a self,
        path: &'a str,
        body: &'a B,
        opts: &'a RequestOptions,
    ) -> impl Fn(&reqwest::Client) -> RequestBuilder + 'a {
        move |http| {
            let req = http.post(self.url(path)).json(body);
            match &opts.idempotency_key {
                Some(key) => req.header(IDEMPOTENCY_KEY, key),
                None => req,
            }
        }
    }

    /// Face detection with every option of the request; an answer with a non-zero
    /// `error_code` (no face, unreadable image, …) is an [`Error::Api`] carrying it.
    pub async fn detect(&self, req: &DetectRequest) -> Result<DetectResponse, Error> {
        self.detect_at("/detect", req).await
    }

    /// The same as [`Client::detect`], on the provider's detect-host path
    /// (`/interface/detect-api/detect_faces`).
    pub async fn detect_faces(&self, req: &DetectRequest) -> Result<DetectResponse, Error> {
        self.detect_at("/interface/detect-api/detect_faces", req)
            .await
    }

    async fn detect_at(&self, path: &str, req: &DetectRequest) -> Result<DetectResponse, Error> {
        let opts = RequestOptions::default();
        let resp = self.send(true, self.post_json(path, req, &opts)).await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let answer: DetectResponse = decode(status, &bytes)?;
        if answer.error_code != faceswap_wire::codes::detect::SUCCESS {
            return Err(Error::Api {
                status: status.as_u16(),
                code: Code(answer.error_code),
                msg: answer.error_msg,
                retry_after: None,
            });
        }
        Ok(answer)
    }

    /// Detects the faces in an image (JPEG or PNG bytes), sent inline as base64.
    pub async fn detect_bytes(&self, image: &[u8]) -> Result<DetectResponse, Error> {
        self.detect(&DetectRequest {
            img: Some(base64::engine::general_purpose::STANDARD.encode(image)),
            ..DetectRequest::default()
        })
        .await
    }

    /// Detects the faces in an image file.
    pub async fn detect_file(&self, path: impl AsRef<Path>) -> Result<DetectResponse, Error> {
        let path = path.as_ref();
        let image = tokio::fs::read(path).await.map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        self.detect_bytes(&image).await
    }

    /// Detects the faces in an image the gateway fetches from `url` (a public address).
    pub async fn detect_url(&self, url: &str) -> Result<DetectResponse, Error> {
        self.detect(&DetectRequest {
            image_url: Some(url.to_owned()),
            ..DetectRequest::default()
        })
        .await
    }

    /// Creates a live session (status 1, queuing); over quota the error is 1104.
    pub async fn create(&self, req: &CreateRequest) -> Result<SessionView, Error> {
        self.create_with(req, &RequestOptions::default()).await
    }

    /// [`Client::create`] with options (an `Idempotency-Key`).
    pub async fn create_with(
        &self,
        req: &CreateRequest,
        opts: &RequestOptions,
    ) -> Result<SessionView, Error> {
        self.envelope(self.post_json("/api/open/v3/faceswap/live/create", req, opts))
            .await
    }

    /// Replaces the source faces of an open session.
    pub async fn update(&self, req: &UpdateRequest) -> Result<SessionView, Error> {
        self.update_with(req, &RequestOptions::default()).await
    }

    /// [`Client::update`] with options (an `Idempotency-Key`).
    pub async fn update_with(
        &self,
        req: &UpdateRequest,
        opts: &RequestOptions,
    ) -> Result<SessionView, Error> {
        self.envelope(self.post_json("/api/open/v3/faceswap/live/update", req, opts))
            .await
    }

    /// Closes a session (`ses_…`).
    pub async fn close(&self, id: &str) -> Result<SessionView, Error> {
        self.close_with(id, &RequestOptions::default()).await
    }

    /// [`Client::close`] with options (an `Idempotency-Key`).
    pub async fn close_with(&self, id: &str, opts: &RequestOptions) -> Result<SessionView, Error> {
        let body = SessionIdRequest { id: id.to_owned() };
        self.envelope(self.post_json("/api/open/v3/faceswap/live/close", &body, opts))
            .await
    }

    /// A session with its current `faceswap_status`.
    pub async fn info(&self, id: &str) -> Result<SessionView, Error> {
        let body = SessionIdRequest { id: id.to_owned() };
        let opts = RequestOptions::default();
        self.envelope(self.post_json("/api/open/v3/faceswap/live/info", &body, &opts))
            .await
    }

    /// A page of the tenant's sessions, newest first.
    pub async fn list_sessions(&self, query: &ListSessions) -> Result<SessionPage, Error> {
        self.envelope(|http| http.get(self.url("/v1/sessions")).query(query))
            .await
    }

    /// Marks a session active, so idle reaping leaves it open.
    pub async fn heartbeat(&self, id: &str) -> Result<SessionView, Error> {
        let path = format!("/v1/sessions/{}/heartbeat", segment(id));
        self.envelope(|http| http.post(self.url(&path))).await
    }

    /// The tenant's quota and use.
    pub async fn usage(&self) -> Result<UsageView, Error> {
        self.envelope(|http| http.get(self.url("/v1/usage"))).await
    }

    /// A session's generated resources and their archive state.
    pub async fn session_resources(&self, id: &str) -> Result<ResourceList, Error> {
        let path = format!("/v1/sessions/{}/resources", segment(id));
        self.envelope(|http| http.get(self.url(&path))).await
    }

    /// A page of the tenant's resources, newest first.
    pub async fn list_resources(&self, query: &ListResources) -> Result<ResourcePage, Error> {
        self.envelope(|http| http.get(self.url("/v1/resources")).query(query))
            .await
    }

    /// Downloads an archived resource (`res_…`).
    pub async fn resource(&self, id: &str) -> Result<Download, Error> {
        let path = format!("/v1/resources/{}", segment(id));
        let resp = self.send(true, |http| http.get(self.url(&path))).await?;
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Download {
            content_type,
            bytes: resp.bytes().await?,
        })
    }

    /// Registers a webhook endpoint; keep the returned secret to verify deliveries.
    pub async fn create_webhook(&self, url: &str) -> Result<CreatedWebhookEndpoint, Error> {
        self.create_webhook_with(url, &RequestOptions::default())
            .await
    }

    /// [`Client::create_webhook`] with options (an `Idempotency-Key`).
    pub async fn create_webhook_with(
        &self,
        url: &str,
        opts: &RequestOptions,
    ) -> Result<CreatedWebhookEndpoint, Error> {
        let body = CreateWebhookRequest {
            url: url.to_owned(),
        };
        self.envelope(self.post_json("/v1/webhooks", &body, opts))
            .await
    }

    /// The tenant's webhook endpoints.
    pub async fn list_webhooks(&self) -> Result<WebhookEndpointList, Error> {
        self.envelope(|http| http.get(self.url("/v1/webhooks")))
            .await
    }

    /// Deletes a webhook endpoint (`whe_…`).
    pub async fn delete_webhook(&self, id: &str) -> Result<DeletedWebhookEndpoint, Error> {
        let path = format!("/v1/webhooks/{}", segment(id));
        self.envelope(|http| http.delete(self.url(&path))).await
    }

    /// Opens the tenant's event stream. Errors refusing the stream (bad session id, auth)
    /// come from this call; the stream then yields events until the connection ends. Resume
    /// with [`EventsOptions::last_event_id`] set to the last event's id to miss nothing.
    pub async fn events(&self, opts: &EventsOptions) -> Result<EventStream, Error> {
        #[derive(Serialize)]
        struct Query<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            session_id: Option<&'a str>,
            from: EventsFrom,
        }
        let query = Query {
            session_id: opts.session_id.as_deref(),
            from: opts.from,
        };
        let resp = self
            .send(false, |http| {
                let req = http
                    .request(Method::GET, self.url("/v1/events"))
                    .header(reqwest::header::ACCEPT, "text/event-stream")
                    .query(&query);
                match &opts.last_event_id {
                    Some(id) => req.header("last-event-id", id),
                    None => req,
                }
            })
            .await?;
        let state = StreamState {
            body: Box::pin(resp.bytes_stream()),
            parser: SseParser::new(),
            ready: VecDeque::new(),
        };
        Ok(Box::pin(futures_util::stream::unfold(state, next_event)))
    }
}

struct StreamState {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    parser: SseParser,
    ready: VecDeque<RawEvent>,
}

async fn next_event(mut st: StreamState) -> Option<(Result<Event, Error>, StreamState)> {
    loop {
        if let Some(raw) = st.ready.pop_front() {
            let event = serde_json::from_str::<Message>(&raw.data)
                .map(|msg| Event::from_message(raw.id.unwrap_or_default(), msg))
                .map_err(|source| Error::Decode {
                    status: 200,
                    source,
                    body: raw.data.chars().take(512).collect(),
                });
            return Some((event, st));
        }
        match st.body.next().await? {
            Ok(chunk) => {
                let events = st.parser.feed(&chunk);
                st.ready.extend(events);
            }
            Err(e) => return Some((Err(e.into()), st)),
        }
    }
}

/// A path segment from a caller's id: ids are `xxx_…` text, but nothing stops a caller from
/// passing `/` or `?`, which must not change the route.
fn segment(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '~') {
                c.to_string()
            } else {
                let mut buf = [0u8; 4];
                c.encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect()
            }
        })
        .collect()
}

fn decode<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::Decode {
        status: status.as_u16(),
        source,
        body: snippet(bytes),
    })
}

fn snippet(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned()
}

/// The error of a non-2xx answer: the envelope's `code`/`msg`, or detection's
/// `error_code`/`error_msg`, with `Retry-After`.
fn api_error(status: StatusCode, headers: &HeaderMap, bytes: &[u8]) -> Error {
    #[derive(serde::Deserialize)]
    struct Either {
        code: Option<i64>,
        msg: Option<String>,
        error_code: Option<i64>,
        error_msg: Option<String>,
    }
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    match serde_json::from_slice::<Either>(bytes) {
        Ok(e) if e.code.is_some() || e.error_code.is_some() => Error::Api {
            status: status.as_u16(),
            code: Code(e.code.or(e.error_code).unwrap_or_default()),
            msg: e.msg.or(e.error_msg).unwrap_or_default(),
            retry_after,
        },
        Ok(_) => Error::Decode {
            status: status.as_u16(),
            source: serde::de::Error::custom("the error answer has no code"),
            body: snippet(bytes),
        },
        Err(source) => Error::Decode {
            status: status.as_u16(),
            source,
            body: snippet(bytes),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;

    #[test]
    fn error_answers_of_both_shapes_become_api_errors_with_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "3".parse().unwrap());
        let e = api_error(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            br#"{"code":1005,"msg":"slow down"}"#,
        );
        assert!(e.is_rate_limited());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        let e = api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &HeaderMap::new(),
            br#"{"error_code":2002,"error_msg":"no face"}"#,
        );
        assert_eq!(e.code(), Some(Code(2002)));
        assert_eq!(e.status(), Some(422));
        let e = api_error(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"<html>");
        assert!(matches!(e, Error::Decode { status: 502, .. }), "{e}");
    }

    #[test]
    fn ids_cannot_change_the_route() {
        assert_eq!(segment("ses_01ABCxyz-._~"), "ses_01ABCxyz-._~");
        assert_eq!(segment("../admin?x=1"), "..%2Fadmin%3Fx%3D1");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn credentials_come_from_an_api_key_or_a_client_id_and_secret() {
        let vars = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            move |name: &str| map.get(name).cloned()
        };
        let key = Credentials::from_vars(vars(&[
            ("FACESWAP_API_KEY", "fsk_1"),
            ("FACESWAP_CLIENT_ID", "c"),
        ]))
        .unwrap();
        assert!(matches!(key, Credentials::ApiKey(k) if k == "fsk_1"));
        let client = Credentials::from_vars(vars(&[
            ("FACESWAP_CLIENT_ID", "c"),
            ("FACESWAP_CLIENT_SECRET", "s"),
        ]))
        .unwrap();
        assert!(matches!(&client, Credentials::Client { client_id, .. } if client_id == "c"));
        assert!(
            !format!("{client:?}").contains("\"s\""),
            "the secret is not printed"
        );
        assert!(matches!(
            Credentials::from_vars(vars(&[("FACESWAP_CLIENT_ID", "c")])),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn a_base_url_must_be_http_and_loses_its_trailing_slash_and_debug_hides_the_token() {
        let creds = Credentials::ApiKey("k".into());
        let c = Client::builder("http://gw.example/ ", creds.clone())
            .token("tok-123")
            .build()
            .unwrap();
        assert_eq!(c.base_url(), "http://gw.example");
        assert!(
            !format!("{c:?}").contains("tok-123"),
            "the token is not printed"
        );
        assert!(matches!(
            Client::new("gw.example", creds),
            Err(Error::Config(_))
        ));
    }
}
