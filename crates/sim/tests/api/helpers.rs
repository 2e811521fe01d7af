//! A simulator on port 0 and a client that speaks to it over HTTP.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use clap::Parser;
use faceswap_sim::{SimArgs, SimHandle, StatsReport};
use serde_json::{Value, json};

pub struct TestSim {
    pub handle: SimHandle,
    pub client: reqwest::Client,
}

/// Starts a simulator with the default account and the given extra flags.
pub async fn spawn_sim(flags: &[&str]) -> TestSim {
    let mut argv = vec!["faceswap-sim", "--bind", "127.0.0.1:0"];
    argv.extend_from_slice(flags);
    let args = SimArgs::try_parse_from(argv).expect("test flags parse");
    let handle = faceswap_sim::spawn(args).await.expect("simulator starts");
    TestSim {
        handle,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    }
}

impl TestSim {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.base_url())
    }

    /// POSTs `body` with optional headers; returns status and JSON body.
    pub async fn post_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self.client.post(self.url(path)).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request completes");
        let status = resp.status().as_u16();
        let body = resp.json().await.expect("JSON body");
        (status, body)
    }

    /// POSTs `body` with a bearer token.
    pub async fn post(&self, path: &str, body: &Value, token: &str) -> Value {
        let auth = format!("Bearer {token}");
        let (status, body) = self
            .post_with(path, body, &[("authorization", auth.as_str())])
            .await;
        assert_eq!(status, 200, "{path} answered {status}: {body}");
        body
    }

    pub async fn token(&self) -> String {
        let (_, body) = self
            .post_with(
                "/api/open/v3/getToken",
                &json!({"clientId": "sim-client", "clientSecret": "sim-secret"}),
                &[],
            )
            .await;
        assert_eq!(body["code"], 1000, "{body}");
        body["token"].as_str().expect("token").to_owned()
    }

    pub async fn stats(&self) -> StatsReport {
        self.client
            .get(self.url("/sim/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn set_config(&self, patch: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url("/sim/config"))
            .json(&patch)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// A valid session, created with the opts of a real detection.
    pub async fn create_session(&self, token: &str) -> Value {
        let body = self
            .post(
                "/api/open/v3/faceswap/live/create",
                &json!({"sourceImage": [{"path": "https://example.test/face.jpg", "opts": "150,170:230,170:190,215:190,255"}]}),
                token,
            )
            .await;
        assert_eq!(body["code"], 1000, "{body}");
        body["data"].clone()
    }

    pub async fn info(&self, token: &str, id: &str) -> Value {
        self.post(
            "/api/open/v3/faceswap/live/info",
            &json!({"_id": id}),
            token,
        )
        .await
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

/// Re-encodes an image in another format.
pub fn reencode(bytes: &[u8], format: image::ImageFormat) -> Vec<u8> {
    let img = image::load_from_memory(bytes).unwrap();
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), format)
        .unwrap();
    out
}

/// Polls `check` until it returns `Some`, failing after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A tiny image host on port 0: `/face.jpg`, `/slow.jpg` (answers after 5 s), `/missing.jpg`.
pub async fn spawn_image_host() -> SocketAddr {
    use axum::routing::get;
    let face = testdata("face.jpg");
    let app = axum::Router::new()
        .route("/face.jpg", get(move || async move { face.clone() }))
        .route(
            "/slow.jpg",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Vec::<u8>::new()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}
