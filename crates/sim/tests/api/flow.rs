use std::time::Duration;

use serde_json::json;

use crate::helpers::{b64, eventually, spawn_sim, testdata};

#[tokio::test]
async fn the_whole_call_sequence_works_end_to_end() {
    let sim = spawn_sim(&["--queue-delay-ms", "100"]).await;
    let token = sim.token().await;

    let detected = sim
        .post(
            "/detect",
            &json!({"single_face": true, "img": b64(&testdata("face.jpg"))}),
            &token,
        )
        .await;
    assert_eq!(detected["error_code"], 0, "{detected}");
    let opts = detected["landmarks_str"][0].as_str().unwrap().to_owned();

    let created = sim
        .post(
            "/api/open/v3/faceswap/live/create",
            &json!({"sourceImage": [{"path": "https://example.test/face.jpg", "opts": opts}]}),
            &token,
        )
        .await;
    assert_eq!(created["code"], 1000, "{created}");
    let data = &created["data"];
    assert_eq!(data["faceswap_status"], 1);
    for field in [
        "_id",
        "channel_id",
        "front_user_id",
        "front_rtc_token",
        "algorithm_user_id",
        "app_id",
    ] {
        assert!(
            data[field].as_str().is_some_and(|s| !s.is_empty()),
            "create lacks {field}: {data}"
        );
    }
    let id = data["_id"].as_str().unwrap().to_owned();

    eventually(Duration::from_secs(5), "status 2", || async {
        let info = sim.info(&token, &id).await;
        (info["data"]["faceswap_status"] == 2).then_some(())
    })
    .await;

    let updated = sim
        .post(
            "/api/open/v3/faceswap/live/update",
            &json!({"_id": id, "sourceImage": [{"path": "https://example.test/other.jpg", "opts": "1,2:3,4:5,6:7,8"}]}),
            &token,
        )
        .await;
    assert_eq!(updated["code"], 1000, "{updated}");
    assert_eq!(
        updated["data"]["sourceImage"][0]["path"],
        "https://example.test/other.jpg"
    );

    let closed = sim
        .post(
            "/api/open/v3/faceswap/live/close",
            &json!({"_id": id}),
            &token,
        )
        .await;
    assert_eq!(closed, json!({"code": 1000, "msg": "success"}));

    let info = sim.info(&token, &id).await;
    assert_eq!(info["data"]["faceswap_status"], 3);
    assert!(info["data"]["closed_at"].is_i64());
    assert_eq!(info["data"]["resources"].as_array().unwrap().len(), 2);

    let stats = sim.stats().await;
    assert_eq!(stats.calls.get_token, 1);
    assert_eq!(stats.calls.detect, 1);
    assert_eq!(stats.calls.create, 1);
    assert_eq!(stats.calls.update, 1);
    assert_eq!(stats.calls.close, 1);
    assert!(stats.calls.info >= 2);
    assert!(stats.open_sessions.is_empty());
}

#[tokio::test]
async fn stats_count_the_connections_accepted() {
    let sim = spawn_sim(&[]).await;
    let before = sim.stats().await.connections;
    for _ in 0..3 {
        // A client of its own per call: a new connection each.
        let status = reqwest::get(sim.url("/sim/stats")).await.unwrap().status();
        assert!(status.is_success());
    }
    // Read on the helper's kept-alive connection, which `before` already counted.
    assert_eq!(sim.stats().await.connections - before, 3);
}

#[tokio::test]
async fn stats_count_every_call_and_list_exactly_the_open_sessions() {
    let sim = spawn_sim(&[]).await;
    let token = sim.token().await;
    let a = sim.create_session(&token).await["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = sim.create_session(&token).await["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.post(
        "/api/open/v3/faceswap/live/close",
        &json!({"_id": a}),
        &token,
    )
    .await;
    sim.info(&token, &b).await;
    sim.info(&token, &b).await;
    // A refused call is still a call received.
    sim.post_with("/api/open/v3/faceswap/live/info", &json!({"_id": b}), &[])
        .await;

    let stats = sim.stats().await;
    assert_eq!(stats.calls.get_token, 1);
    assert_eq!(stats.calls.create, 2);
    assert_eq!(stats.calls.close, 1);
    assert_eq!(stats.calls.info, 3);
    assert_eq!(stats.calls.detect, 0);
    assert_eq!(stats.open_sessions, vec![b]);
    assert_eq!(stats.sessions_created, 2);

    let raw: serde_json::Value = sim
        .client
        .get(sim.url("/sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for name in ["getToken", "detect", "create", "update", "close", "info"] {
        assert!(
            raw["calls"][name].is_u64(),
            "/sim/stats lacks calls.{name}: {raw}"
        );
    }
    assert!(raw["open_sessions"].is_array());
}

#[tokio::test]
async fn unknown_paths_get_the_envelope_with_404() {
    let sim = spawn_sim(&[]).await;
    let resp = sim.client.get(sim.url("/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 1003);
}
