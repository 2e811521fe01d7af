use faceswap_testkit::TestApp;
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_tenant_cannot_reach_another_tenants_session(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let owner = app.token(&app.tenant(2, None).await).await;
    let other = app.token(&app.tenant(2, None).await).await;
    let (_, created) = app.create_session(&owner).await;
    let id = created["data"]["_id"].as_str().unwrap().to_owned();
    let missing = faceswap_gateway::domain::ids::SessionId::generate().to_string();
    let source = json!([{"path": "https://images.example/a.jpg", "opts": "1,2:3,4:5,6:7,8"}]);

    for target in [id.as_str(), missing.as_str()] {
        for (path, body) in [
            ("/api/open/v3/faceswap/live/info", json!({"_id": target})),
            (
                "/api/open/v3/faceswap/live/update",
                json!({"_id": target, "sourceImage": source}),
            ),
            ("/api/open/v3/faceswap/live/close", json!({"_id": target})),
        ] {
            let (status, resp) = app.post(path, &body, Some(&other)).await;
            assert_eq!(
                (status, resp["code"].as_i64()),
                (404, Some(4004)),
                "{path} {target}: {resp}"
            );
            assert_eq!(resp["msg"], "session not found");
        }
        let (status, resp) = app
            .post(
                &format!("/v1/sessions/{target}/heartbeat"),
                &json!({}),
                Some(&other),
            )
            .await;
        assert_eq!((status, resp["code"].as_i64()), (404, Some(4004)), "{resp}");
    }
    let (_, page) = app.get("/v1/sessions", Some(&other)).await;
    assert_eq!(page["data"]["sessions"], json!([]));
    let (_, page) = app.get("/v1/sessions", Some(&owner)).await;
    assert_eq!(page["data"]["sessions"].as_array().unwrap().len(), 1);
    let (status, info) = app
        .post(
            "/api/open/v3/faceswap/live/info",
            &json!({"_id": id}),
            Some(&owner),
        )
        .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(
        app.sim_stats().await.calls.close,
        0,
        "nothing of the owner's was closed"
    );
}
