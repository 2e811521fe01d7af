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

/// The tenant's id as stored (the test database holds one tenant).
async fn only_tenant(pool: &PgPool) -> uuid::Uuid {
    sqlx::query_scalar("select tenant_id from tenants")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_create_does_not_wait_for_another_creates_reservation_of_the_same_tenant(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let token = app.token(&tenant).await;
    let tenant_id = only_tenant(&app.pool).await;
    // Hold the tenant's row the way a create holds it until its reservation commits.
    let mut reservation = app.pool.begin().await.unwrap();
    sqlx::query("select 1 from tenants where tenant_id = $1 for share")
        .bind(tenant_id)
        .execute(&mut *reservation)
        .await
        .unwrap();
    let (status, resp) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        app.create_session(&token),
    )
    .await
    .expect("the create went ahead while the other reservation was open");
    assert_eq!(status, 200, "{resp}");
    reservation.commit().await.unwrap();
    assert_eq!(active_rows(&app.pool).await, 1);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_limit_lowered_under_sessions_in_high_slots_admits_only_the_room_left(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let token = app.token(&tenant).await;
    let tenant_id = only_tenant(&app.pool).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (status, resp) = app.create_session(&token).await;
        assert_eq!(status, 200, "{resp}");
        ids.push(resp["data"]["_id"].as_str().unwrap().to_owned());
    }
    // Close the sessions in slots 0–2: the two left hold slots 3 and 4.
    let low: Vec<uuid::Uuid> =
        sqlx::query_scalar("select session_id from sessions where tenant_id = $1 and slot < 3")
            .bind(tenant_id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(low.len(), 3, "five sessions, one per slot");
    for id in &ids {
        let uuid = faceswap_gateway::domain::ids::SessionId::parse(id)
            .unwrap()
            .0;
        if low.contains(&uuid) {
            let (status, resp) = app
                .post(
                    "/api/open/v3/faceswap/live/close",
                    &json!({"_id": id}),
                    Some(&token),
                )
                .await;
            assert_eq!(status, 200, "{resp}");
        }
    }
    sqlx::query("update tenants set max_concurrent_sessions = 3 where tenant_id = $1")
        .bind(tenant_id)
        .execute(&app.pool)
        .await
        .unwrap();

    // Slots 0–2 are free, but only one more session fits under the new limit.
    let answers = join_all((0..20).map(|_| app.create_session(&token))).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .filter(|(s, _)| *s != 200)
            .all(|(s, b)| *s == 429 && b["code"] == 1104),
        "{answers:?}"
    );
    assert_eq!(active_rows(&app.pool).await, 3);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_one_free_slot_among_thousands_taken_is_found_and_then_the_tenant_is_full(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5000, None).await;
    let token = app.token(&tenant).await;
    let tenant_id = only_tenant(&app.pool).await;
    // Every slot but 3210 held by an open session.
    sqlx::query(
        "insert into sessions (session_id, tenant_id, state, source_image, slot)
         select gen_random_uuid(), $1, 'open', '[]', s
         from generate_series(0, 4999) s where s <> 3210",
    )
    .bind(tenant_id)
    .execute(&app.pool)
    .await
    .unwrap();

    let (status, resp) = app.create_session(&token).await;
    assert_eq!(status, 200, "{resp}");
    let slot: i32 = sqlx::query_scalar("select slot from sessions where upstream_id is not null")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(slot, 3210);
    let (status, resp) = app.create_session(&token).await;
    assert_eq!((status, resp["code"].as_i64()), (429, Some(1104)), "{resp}");
    assert_eq!(active_rows(&app.pool).await, 5000);
}
