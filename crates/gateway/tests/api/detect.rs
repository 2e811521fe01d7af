use faceswap_testkit::{TestApp, b64, spawn_image_host, testdata};
use serde_json::json;
use sqlx::PgPool;

async fn token(app: &TestApp) -> String {
    let tenant = app.tenant(1, None).await;
    app.token(&tenant).await
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn detection_is_forwarded_on_both_paths_and_keeps_the_detection_shape(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = token(&app).await;
    for path in ["/detect", "/interface/detect-api/detect_faces"] {
        let (status, resp) = app
            .post(
                path,
                &json!({"img": b64(&testdata("face.jpg"))}),
                Some(&token),
            )
            .await;
        assert_eq!(status, 200, "{path}: {resp}");
        assert_eq!(resp["error_code"], 0);
        assert_eq!(resp["region"].as_array().unwrap().len(), 1);
        assert_eq!(resp["landmarks"][0].as_array().unwrap().len(), 6);
    }
    let (status, resp) = app
        .post(
            "/detect",
            &json!({"img": b64(&testdata("landscape.jpg"))}),
            Some(&token),
        )
        .await;
    assert_eq!(
        (status, resp["error_code"].as_i64()),
        (422, Some(2002)),
        "{resp}"
    );
    let (status, resp) = app
        .post("/detect", &json!({"single_face": true}), Some(&token))
        .await;
    assert_eq!(
        (status, resp["error_code"].as_i64()),
        (400, Some(1003)),
        "{resp}"
    );
    let (status, resp) = app.post("/detect", &json!({"img": "x"}), None).await;
    assert_eq!(
        (status, resp["error_code"].as_i64()),
        (401, Some(1102)),
        "{resp}"
    );
    assert_eq!(
        app.sim_stats().await.calls.detect,
        3,
        "refused calls never reach the upstream"
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn image_urls_into_private_space_are_refused_before_the_upstream(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = token(&app).await;
    let host = spawn_image_host().await;
    for url in [
        format!("http://{host}/face.jpg"),
        format!("http://localhost:{}/face.jpg", host.port()),
        "http://2130706433/face.jpg".to_owned(),
        "http://[::1]/face.jpg".to_owned(),
        "http://[::ffff:127.0.0.1]/face.jpg".to_owned(),
        "http://10.0.0.8/face.jpg".to_owned(),
        "http://192.168.1.1/face.jpg".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://0.0.0.0/face.jpg".to_owned(),
        "file:///etc/passwd".to_owned(),
    ] {
        let (status, resp) = app
            .post("/detect", &json!({"image_url": url}), Some(&token))
            .await;
        assert_eq!(
            (status, resp["error_code"].as_i64()),
            (400, Some(1003)),
            "{url}: {resp}"
        );
    }
    assert_eq!(app.sim_stats().await.calls.detect, 0);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_operator_allow_list_lets_a_loopback_image_host_through(pool: PgPool) {
    let app = TestApp::builder()
        .args(&["--ssrf-allow", "127.0.0.1/32"])
        .spawn(pool)
        .await;
    let token = token(&app).await;
    let host = spawn_image_host().await;
    let (status, resp) = app
        .post(
            "/detect",
            &json!({"image_url": format!("http://{host}/face.jpg")}),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["region"].as_array().unwrap().len(), 1);
    let (status, _) = app
        .post(
            "/detect",
            &json!({"image_url": "http://10.0.0.8/x.jpg"}),
            Some(&token),
        )
        .await;
    assert_eq!(status, 400, "only the listed network is allowed");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn bodies_over_the_cap_get_413_and_a_10_mb_image_fits_the_default(pool: PgPool) {
    let small = TestApp::builder()
        .args(&["--max-body-bytes", "100000"])
        .spawn(pool.clone())
        .await;
    let token = token(&small).await;
    let (status, resp) = small
        .post(
            "/detect",
            &json!({"img": "A".repeat(200_000)}),
            Some(&token),
        )
        .await;
    assert_eq!(
        (status, resp["error_code"].as_i64()),
        (413, Some(4013)),
        "{resp}"
    );
    let (status, resp) = small
        .post(
            "/api/open/v3/faceswap/live/create",
            &json!({"sourceImage": [{"path": "x".repeat(200_000), "opts": "1,1:2,2:3,3:4,4"}]}),
            Some(&token),
        )
        .await;
    assert_eq!((status, resp["code"].as_i64()), (413, Some(4013)), "{resp}");

    let app = TestApp::spawn(pool).await;
    // 10 MB of bytes in base64: accepted by the gateway, then judged by the upstream.
    let ten_mb = vec![0x42u8; 10 * 1024 * 1024];
    let (status, resp) = app
        .post("/detect", &json!({"img": b64(&ten_mb)}), Some(&token))
        .await;
    assert_eq!(
        (status, resp["error_code"].as_i64()),
        (422, Some(2001)),
        "{resp}"
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn detection_is_still_served_when_redis_is_down(pool: PgPool) {
    let app = TestApp::builder()
        .redis_url("redis://127.0.0.1:1")
        .spawn(pool)
        .await;
    let token = token(&app).await;
    for _ in 0..3 {
        let (status, resp) = app
            .post(
                "/detect",
                &json!({"img": b64(&testdata("face.jpg"))}),
                Some(&token),
            )
            .await;
        assert_eq!(status, 200, "{resp}");
    }
    assert_eq!(
        app.sim_stats().await.calls.get_token,
        1,
        "the per-process token is reused"
    );
    let (status, ready) = app.get("/readyz", None).await;
    assert_eq!(status, 200);
    assert!(
        ready["redis"].as_str().unwrap().starts_with("degraded"),
        "{ready}"
    );
}
