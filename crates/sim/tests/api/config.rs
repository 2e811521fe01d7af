use serde_json::json;

use crate::helpers::spawn_sim;

#[tokio::test]
async fn config_shows_every_documented_knob_and_changes_a_subset() {
    let sim = spawn_sim(&["--latency-ms", "7"]).await;
    let shown: serde_json::Value = sim
        .client
        .get(sim.url("/sim/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for knob in [
        "token_ttl_seconds",
        "queue_delay_ms",
        "max_open_sessions",
        "resource_retention_seconds",
        "failure_rate",
        "latency_ms",
        "error_rate",
    ] {
        assert!(
            shown.get(knob).is_some(),
            "/sim/config lacks {knob}: {shown}"
        );
    }
    assert_eq!(shown["latency_ms"], 7);

    let (status, after) = sim
        .set_config(json!({"latency_ms": 200, "error_rate": 0.3}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(after["latency_ms"], 200);
    assert_eq!(after["error_rate"], 0.3);
    assert_eq!(after["queue_delay_ms"], shown["queue_delay_ms"]);
}

#[tokio::test]
async fn an_invalid_config_change_is_refused_whole() {
    let sim = spawn_sim(&[]).await;
    for bad in [
        json!({"error_rate": 2.0}),
        json!({"latency_ms": -1}),
        json!({"unknown": 1}),
        json!([1]),
    ] {
        let (status, body) = sim.set_config(bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {body}");
        assert_eq!(body["code"], 1003);
    }
    let (_, body) = sim
        .set_config(json!({"latency_ms": 5, "failure_rate": 9}))
        .await;
    assert!(body["msg"].as_str().unwrap().contains("failure_rate"));
    let shown: serde_json::Value = sim
        .client
        .get(sim.url("/sim/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        shown["latency_ms"], 0,
        "nothing of a refused change applies"
    );
}

#[tokio::test]
async fn invalid_start_up_settings_are_refused() {
    use clap::Parser;
    let args = faceswap_sim::SimArgs::try_parse_from([
        "faceswap-sim",
        "--bind",
        "127.0.0.1:0",
        "--error-rate",
        "1.5",
    ])
    .unwrap();
    let err = faceswap_sim::spawn(args).await.err().expect("refused");
    assert!(err.to_string().contains("error_rate"), "{err}");
}
