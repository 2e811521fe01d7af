use std::time::{Duration, Instant};

use bytes::Bytes;
use faceswap_upstream::{Call, CallPolicy, UpstreamClient, UpstreamError};
use faceswap_wire::Code;

use crate::helpers::{
    CLIENT_ID, CLIENT_SECRET, client_for, client_with, create_request, sim_stats, spawn_sim,
    spawn_sim_with_timeout,
};

/// Asks `client` for a token, which must fail to connect (so nothing was delivered).
async fn get_token_fails_to_connect(client: &UpstreamClient) -> UpstreamError {
    let err = client
        .get_token(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Connect {
                call: Call::GetToken,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.maybe_delivered());
    err
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error_that_was_not_delivered() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = client_for(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5));
    let msg = get_token_fails_to_connect(&client).await.to_string();
    assert!(
        msg.to_lowercase().contains("refused"),
        "the source chain is kept: {msg}"
    );
    assert!(
        !msg.contains(&port.to_string()),
        "no URL in the message: {msg}"
    );
}

#[tokio::test]
async fn a_slow_upstream_times_out_and_may_have_acted() {
    let sim = spawn_sim_with_timeout(&["--latency-ms", "2000"], Duration::from_millis(300)).await;
    let started = Instant::now();
    let err = sim
        .client
        .get_token(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        UpstreamError::Timeout {
            call: Call::GetToken
        }
    );
    assert!(err.maybe_delivered());
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_upstream_that_never_answers_times_out() {
    let sim = spawn_sim_with_timeout(&[], Duration::from_millis(300)).await;
    let token = sim.token().await;
    sim.set_config(serde_json::json!({"timeout_rate": 1.0}))
        .await;
    let err = sim
        .client
        .create(&token.token, &create_request())
        .await
        .unwrap_err();
    assert_eq!(err, UpstreamError::Timeout { call: Call::Create });
    assert!(err.maybe_delivered());
}

#[tokio::test]
async fn injected_errors_are_status_503_with_code_1503() {
    let sim = spawn_sim(&["--error-rate", "1.0"]).await;
    let err = sim
        .client
        .get_token(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Status {
                call: Call::GetToken,
                status: 503,
                code: Some(Code(1503)),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.maybe_delivered());
    let err = sim
        .client
        .detect("t", Bytes::from_static(br#"{"img":"x"}"#))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Status {
                call: Call::Detect,
                status: 503,
                code: Some(Code(1503)),
                ..
            }
        ),
        "detect's error_code shape: {err:?}"
    );
    let err = sim.client.close("t", "x").await.unwrap_err();
    assert!(
        matches!(err, UpstreamError::Status { status: 503, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_dropped_connection_may_have_been_delivered() {
    let sim = spawn_sim(&[]).await;
    let token = sim.token().await;
    sim.set_config(serde_json::json!({"drop_rate": 1.0})).await;
    for _ in 0..3 {
        let err = sim.client.info(&token.token, "x").await.unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::Transport {
                    call: Call::Info,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.maybe_delivered(), "{err:?}");
    }
    sim.set_config(serde_json::json!({"drop_rate": 0.0})).await;
    let err = sim.client.info(&token.token, "x").await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Business {
                code: Code::PARAM_ERROR,
                ..
            }
        ),
        "the pool recovers after drops: {err:?}"
    );
}

/// A client whose connect timeout is far below its call timeout.
fn quick_to_connect(base: &str) -> UpstreamClient {
    client_with(
        base,
        Duration::from_secs(10),
        Duration::from_millis(200),
        CallPolicy::default(),
    )
}

#[tokio::test]
async fn a_host_that_never_completes_the_tls_handshake_is_a_connect_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts connections and holds them open without saying a word.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let client = quick_to_connect(&format!("https://127.0.0.1:{port}/"));
    let started = Instant::now();
    let err = get_token_fails_to_connect(&client).await;
    assert!(err.to_string().contains("timed out"), "{err}");
    // Three attempts of 200 ms and their backoff, far from the 10 s call timeout.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    holder.abort();
}

#[tokio::test]
async fn https_to_a_plain_http_upstream_fails_to_connect_and_sends_nothing() {
    let sim = spawn_sim(&[]).await;
    let base = sim.handle.base_url();
    let client = quick_to_connect(&base.replacen("http://", "https://", 1));
    // A failed TLS handshake: nothing was sent.
    get_token_fails_to_connect(&client).await;
    assert_eq!(
        sim_stats(&base).await.calls.get_token,
        0,
        "the simulator read no request"
    );
}
