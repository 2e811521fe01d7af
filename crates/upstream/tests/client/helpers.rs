//! A simulator on port 0 and an upstream client pointed at it.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use clap::Parser;
use faceswap_sim::{SimArgs, SimHandle};
use faceswap_upstream::{IssuedToken, UpstreamClient, UpstreamConfig};
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

/// A client for `base` whose detect URL is the provider's long detect path on the same host.
pub fn client_for(base: &str, timeout: Duration) -> UpstreamClient {
    let base_url = Url::parse(base).unwrap();
    UpstreamClient::new(UpstreamConfig {
        detect_url: base_url.join("/interface/detect-api/detect_faces").unwrap(),
        base_url,
        timeout,
        connect_timeout: Duration::from_secs(2),
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
