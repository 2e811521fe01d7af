use std::time::Duration;

use faceswap_testkit::{TestApp, b64, eventually, testdata};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_whole_flow_works_from_token_to_close(pool: PgPool) {
    let app = TestApp::builder()
        .sim_flags(&["--queue-delay-ms", "200"])
        .spawn(pool)
        .await;
    let tenant = app.tenant(5, None).await;

    let (status, token_body) = app
        .post(
            "/api/open/v3/getToken",
            &json!({"clientId": tenant.client_id, "clientSecret": tenant.client_secret}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{token_body}");
    assert_eq!(token_body["code"], 1000);
    let token = token_body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        token_body["data"]["token"], token,
        "the token is also inside data"
    );
    assert!(token_body["data"]["expires_at"].as_i64().unwrap() > 0);

    let (status, detected) = app
        .post(
            "/detect",
            &json!({"single_face": true, "img": b64(&testdata("face.jpg"))}),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{detected}");
    assert_eq!(detected["error_code"], 0);
    let opts = detected["landmarks_str"][0].as_str().unwrap().to_owned();

    let (status, created) = app
        .post(
            "/api/open/v3/faceswap/live/create",
            &json!({"sourceImage": [{"path": "https://images.example/face.jpg", "opts": opts}]}),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let data = &created["data"];
    let id = data["_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ses_"), "the gateway's own id: {id}");
    assert_eq!(data["faceswap_status"], 1);
    assert_eq!(data["state"], "open");
    for field in ["channel_id", "front_user_id", "front_rtc_token"] {
        assert!(
            data[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field}: {data}"
        );
    }
    let upstream_ids = app.sim_stats().await.open_sessions;
    assert_eq!(upstream_ids.len(), 1);
    assert_ne!(upstream_ids[0], id, "the upstream id is never shown");

    eventually(Duration::from_secs(5), "status 2", || async {
        let (_, info) = app
            .post(
                "/api/open/v3/faceswap/live/info",
                &json!({"_id": id}),
                Some(&token),
            )
            .await;
        (info["data"]["faceswap_status"] == 2).then_some(())
    })
    .await;

    let (status, updated) = app
        .post(
            "/api/open/v3/faceswap/live/update",
            &json!({"_id": id, "sourceImage": [{"path": "https://images.example/other.jpg", "opts": opts}]}),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        updated["data"]["sourceImage"][0]["path"],
        "https://images.example/other.jpg"
    );

    let (status, closed) = app
        .post(
            "/api/open/v3/faceswap/live/close",
            &json!({"_id": id}),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["code"], 1000);
    assert_eq!(closed["data"]["state"], "closed");
    assert_eq!(closed["data"]["close_reason"], "client");
    assert_eq!(closed["data"]["faceswap_status"], 3);
    assert!(
        app.sim_stats().await.open_sessions.is_empty(),
        "closed upstream too"
    );

    let charged: i64 = sqlx::query_scalar("select count(*) from usage_ledger")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(charged, 1, "the session is charged once");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn unknown_paths_and_methods_answer_with_the_envelope(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (status, body) = app.get("/nope", None).await;
    assert_eq!((status, body["code"].as_i64()), (404, Some(4004)), "{body}");
    let (status, body) = app.get("/api/open/v3/faceswap/live/create", None).await;
    assert_eq!((status, body["code"].as_i64()), (405, Some(4005)), "{body}");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn probes_and_jwks_answer(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let resp = app.client.get(app.url("/livez")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (status, ready) = app.get("/readyz", None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["postgres"], "ok");
    assert_eq!(ready["redis"], "ok");
    let (status, jwks) = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(status, 200);
    let key = &jwks["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["alg"].as_str()),
        (Some("EC"), Some("ES256"))
    );
}
