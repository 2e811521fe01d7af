use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::spawn_sim;

const INFO: &str = "/api/open/v3/faceswap/live/info";

#[tokio::test]
async fn added_latency_delays_every_call() {
    let sim = spawn_sim(&[]).await;
    let token = sim.token().await;
    sim.set_config(json!({"latency_ms": 300})).await;
    let started = Instant::now();
    sim.post(INFO, &json!({"_id": "x"}), &token).await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn error_rate_one_answers_every_call_with_503_in_the_calls_shape() {
    let sim = spawn_sim(&["--error-rate", "1.0"]).await;
    let (status, body) = sim
        .post_with(
            "/api/open/v3/getToken",
            &json!({"clientId": "sim-client", "clientSecret": "sim-secret"}),
            &[],
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (503, Some(1503)), "{body}");
    let (status, body) = sim.post_with("/detect", &json!({}), &[]).await;
    assert_eq!(
        (status, body["error_code"].as_i64()),
        (503, Some(1503)),
        "{body}"
    );
    let stats = sim.stats().await;
    assert_eq!(stats.faults.errors, 2);
    assert_eq!(stats.calls.get_token, 1, "a faulted call is still counted");
    // The controls are never faulted.
    let (status, _) = sim.set_config(json!({"error_rate": 0.0})).await;
    assert_eq!(status, 200);
    sim.token().await;
}

#[tokio::test]
async fn drop_rate_one_drops_the_connection_without_an_answer() {
    let sim = spawn_sim(&["--drop-rate", "1.0"]).await;
    let result = async {
        let resp = sim
            .client
            .post(sim.url(INFO))
            .json(&json!({"_id": "x"}))
            .send()
            .await?;
        resp.bytes().await
    }
    .await;
    assert!(result.is_err(), "got an answer: {result:?}");
    assert_eq!(sim.stats().await.faults.drops, 1);
}

#[tokio::test]
async fn timeout_rate_one_never_answers() {
    let sim = spawn_sim(&["--timeout-rate", "1.0"]).await;
    let err = sim
        .client
        .post(sim.url(INFO))
        .timeout(Duration::from_millis(300))
        .json(&json!({"_id": "x"}))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(sim.stats().await.faults.timeouts, 1);
}

#[tokio::test]
async fn a_fraction_of_calls_fail_under_a_partial_error_rate() {
    let sim = spawn_sim(&["--error-rate", "0.5"]).await;
    let mut failed = 0;
    for _ in 0..200 {
        let (status, _) = sim.post_with(INFO, &json!({"_id": "x"}), &[]).await;
        if status == 503 {
            failed += 1;
        }
    }
    // Binomial(200, 0.5): outside 60..=140 has probability below 1e-8.
    assert!((60..=140).contains(&failed), "{failed} of 200 failed");
}

#[tokio::test]
async fn settings_changed_at_run_time_take_effect() {
    let sim = spawn_sim(&["--queue-delay-ms", "60000"]).await;
    sim.set_config(json!({"token_ttl_seconds": 42, "queue_delay_ms": 0, "max_open_sessions": 1, "resource_retention_seconds": 0}))
        .await;
    let token = sim.token().await;
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        42
    );

    let id = sim.create_session(&token).await["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        sim.info(&token, &id).await["data"]["faceswap_status"],
        2,
        "no queue delay now"
    );
    let refused = sim
        .post(
            "/api/open/v3/faceswap/live/create",
            &json!({"sourceImage": [{"path": "p", "opts": "1,2:3,4:5,6:7,8"}]}),
            &token,
        )
        .await;
    assert_eq!(refused["code"], 1104, "quota of one");

    sim.post(
        "/api/open/v3/faceswap/live/close",
        &json!({"_id": id}),
        &token,
    )
    .await;
    let info = sim.info(&token, &id).await;
    let url = info["data"]["resources"][0]["url"].as_str().unwrap();
    assert_eq!(
        sim.client.get(url).send().await.unwrap().status(),
        404,
        "zero retention"
    );

    sim.set_config(json!({"failure_rate": 1.0})).await;
    let failing = sim.create_session(&token).await;
    assert_eq!(
        sim.info(&token, failing["_id"].as_str().unwrap()).await["data"]["faceswap_status"],
        4
    );
}
