//! A simulator on port 0 and an upstream client pointed at it.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use clap::Parser;
use faceswap_sim::{SimArgs, SimHandle};
use faceswap_upstream::{CallPolicy, IssuedToken, UpstreamClient, UpstreamConfig};
use faceswap_wire::{CreateRequest, SourceImage};
use url::Url;

pub const CLIENT_ID: &str = "sim-client";
pub const CLIENT_SECRET: &str = "sim-secret";

pub struct TestSim {
    pub handle: SimHandle,
    pub client: UpstreamClient,
}

/// Starts a simulator with the default account and the given extra flags, and a client with
/// a 10 s timeout.
pub async fn spawn_sim(flags: &[&str]) -> TestSim {
    spawn_sim_with_timeout(flags, Duration::from_secs(10)).await
}

pub async fn spawn_sim_with_timeout(flags: &[&str], timeout: Duration) -> TestSim {
    let mut argv = vec![
        "faceswap-sim",
        "--bind",
        "127.0.0.1:0",
        "--queue-delay-ms",
        "0",
    ];
    argv.extend_from_slice(flags);
    let args = SimArgs::try_parse_from(argv).expect("test flags parse");
    let handle = faceswap_sim::spawn(args).await.expect("simulator starts");
    let client = client_for(&handle.base_url(), timeout);
    TestSim { handle, client }
}

/// A client for `base` whose detect URL is the provider's long detect path on the same host,
/// with the default call policy.
pub fn client_for(base: &str, timeout: Duration) -> UpstreamClient {
    client_with_policy(base, timeout, CallPolicy::default())
}

/// A client for `base` with the given call policy.
pub fn client_with_policy(base: &str, timeout: Duration, policy: CallPolicy) -> UpstreamClient {
    client_with(base, timeout, Duration::from_secs(2), policy)
}

/// A client for `base` with the given timeouts and call policy.
pub fn client_with(
    base: &str,
    timeout: Duration,
    connect_timeout: Duration,
    policy: CallPolicy,
) -> UpstreamClient {
    let base_url = Url::parse(base).unwrap();
    UpstreamClient::new(UpstreamConfig {
        detect_url: base_url.join("/interface/detect-api/detect_faces").unwrap(),
        base_url,
        timeout,
        connect_timeout,
        policy,
    })
    .unwrap()
}

impl TestSim {
    pub async fn token(&self) -> IssuedToken {
        self.client
            .get_token(CLIENT_ID, CLIENT_SECRET)
            .await
            .unwrap()
    }

    /// Changes simulator knobs at run time through `POST /sim/config`.
    pub async fn set_config(&self, patch: serde_json::Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/sim/config", self.handle.base_url()))
            .json(&patch)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    pub async fn post_control(&self, path: &str) {
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", self.handle.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
}

/// A create request with plausible landmarks, as a detection of the test photo gives.
pub fn create_request() -> CreateRequest {
    CreateRequest {
        source_image: vec![SourceImage {
            path: "https://example.test/face.jpg".into(),
            opts: "150,170:230,170:190,215:190,255".into(),
        }],
    }
}

pub fn testdata(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

/// What the client's observers heard: every attempt, every retry, every breaker change.
#[derive(Default)]
pub struct Recorder {
    pub attempts: std::sync::Mutex<
        Vec<(
            faceswap_upstream::Call,
            Option<faceswap_upstream::UpstreamError>,
        )>,
    >,
    pub retries: std::sync::Mutex<Vec<faceswap_upstream::Call>>,
    pub breaker: std::sync::Mutex<Vec<faceswap_upstream::BreakerState>>,
}

impl Recorder {
    /// Attempts of `call` reported to the call observer, refused ones included.
    pub fn attempts_of(&self, call: faceswap_upstream::Call) -> usize {
        self.attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| *c == call)
            .count()
    }

    /// Retries of `call` reported to the policy observer.
    pub fn retries_of(&self, call: faceswap_upstream::Call) -> usize {
        self.retries
            .lock()
            .unwrap()
            .iter()
            .filter(|c| **c == call)
            .count()
    }
}

/// `client` with both observers reporting to a fresh recorder.
pub fn recorded(client: UpstreamClient) -> (UpstreamClient, std::sync::Arc<Recorder>) {
    use faceswap_upstream::PolicyEvent;
    let rec = std::sync::Arc::new(Recorder::default());
    let (a, b) = (rec.clone(), rec.clone());
    let client = client
        .with_observer(std::sync::Arc::new(move |call, _, result| {
            a.attempts
                .lock()
                .unwrap()
                .push((call, result.err().cloned()));
        }))
        .with_policy_observer(std::sync::Arc::new(move |event| match event {
            PolicyEvent::Retry { call, .. } => b.retries.lock().unwrap().push(*call),
            PolicyEvent::Breaker { state, .. } => b.breaker.lock().unwrap().push(*state),
        }));
    (client, rec)
}

/// The simulator's `/sim/stats`.
pub async fn sim_stats(base: &str) -> faceswap_sim::StatsReport {
    reqwest::get(format!("{base}/sim/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `check` until it gives a value, failing the test after `limit`.
#[track_caller]
pub fn eventually<T, F, Fut>(
    limit: Duration,
    what: &'static str,
    mut check: F,
) -> impl Future<Output = T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let caller = std::panic::Location::caller();
    async move {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{caller}: not within {limit:?}: {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
