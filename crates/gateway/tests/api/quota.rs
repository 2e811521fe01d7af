use faceswap_testkit::TestApp;
use futures_util::future::join_all;
use serde_json::json;
use sqlx::PgPool;

async fn active_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select count(*) from sessions where state in ('creating', 'open', 'closing')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn concurrent_creates_never_exceed_the_tenants_limit(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let token = app.token(&tenant).await;
    let answers = join_all((0..40).map(|_| app.create_session(&token))).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(ok, 5, "{answers:?}");
    assert_eq!(refused.len(), 35);
    assert!(refused.iter().all(|(_, b)| b["code"] == 1104));
    let stats = app.sim_stats().await;
    assert_eq!(
        stats.calls.create, 5,
        "refused creates never reach the upstream"
    );
    assert_eq!(stats.open_sessions.len(), 5);
    assert_eq!(active_rows(&app.pool).await, 5);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_spent_session_seconds_budget_refuses_creates(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5, Some(0)).await;
    let token = app.token(&tenant).await;
    let (status, resp) = app.create_session(&token).await;
    assert_eq!((status, resp["code"].as_i64()), (429, Some(1104)), "{resp}");
    assert!(
        resp["msg"].as_str().unwrap().contains("session-seconds"),
        "{resp}"
    );
    assert_eq!(app.sim_stats().await.calls.create, 0);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_upstreams_quota_answer_is_passed_on_and_the_slot_released(pool: PgPool) {
    let app = TestApp::builder()
        .sim_flags(&["--max-open-sessions", "1"])
        .spawn(pool)
        .await;
    let first = app.tenant(5, None).await;
    let second = app.tenant(5, None).await;
    let (status, _) = app.create_session(&app.token(&first).await).await;
    assert_eq!(status, 200);
    let (status, resp) = app.create_session(&app.token(&second).await).await;
    assert_eq!((status, resp["code"].as_i64()), (429, Some(1104)), "{resp}");
    assert_eq!(
        active_rows(&app.pool).await,
        1,
        "the refused create holds no slot"
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_failed_upstream_create_releases_the_reservation(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(1, None).await;
    let token = app.token(&tenant).await;

    app.sim_config(json!({"error_rate": 1.0})).await;
    let (status, resp) = app.create_session(&token).await;
    assert_eq!((status, resp["code"].as_i64()), (502, Some(5002)), "{resp}");
    assert_eq!(active_rows(&app.pool).await, 0);
    let rows: i64 = sqlx::query_scalar("select count(*) from sessions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "a refused create leaves no row");

    // A dropped connection may have created the session upstream: the row stays as `lost`.
    app.sim_config(json!({"error_rate": 0.0, "drop_rate": 1.0}))
        .await;
    let (status, _) = app.create_session(&token).await;
    assert_eq!(status, 502);
    let lost: i64 = sqlx::query_scalar("select count(*) from sessions where state = 'lost'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(lost, 1);
    assert_eq!(active_rows(&app.pool).await, 0);

    app.sim_config(json!({"drop_rate": 0.0})).await;
    let (status, resp) = app.create_session(&token).await;
    assert_eq!(status, 200, "the slot is free again: {resp}");
}
