use std::time::Duration;

use faceswap_gateway::workers::reaper;
use faceswap_testkit::{TestApp, eventually};
use serde_json::json;
use sqlx::PgPool;

const CLOSE: &str = "/api/open/v3/faceswap/live/close";

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn closing_twice_or_updating_a_closed_session_is_a_conflict(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.token(&app.tenant(2, None).await).await;
    let (_, created) = app.create_session(&token).await;
    let id = created["data"]["_id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.post(CLOSE, &json!({"_id": id}), Some(&token)).await.0,
        200
    );
    let (status, resp) = app.post(CLOSE, &json!({"_id": id}), Some(&token)).await;
    assert_eq!((status, resp["code"].as_i64()), (409, Some(4009)), "{resp}");
    let (status, resp) = app
        .post(
            "/api/open/v3/faceswap/live/update",
            &json!({"_id": id, "sourceImage": [{"path": "https://images.example/a.jpg", "opts": "1,2:3,4:5,6:7,8"}]}),
            Some(&token),
        )
        .await;
    assert_eq!((status, resp["code"].as_i64()), (409, Some(4009)), "{resp}");
    let (status, resp) = app
        .post(
            &format!("/v1/sessions/{id}/heartbeat"),
            &json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(status, 409, "{resp}");
    let (status, resp) = app.post(CLOSE, &json!({"_id": ""}), Some(&token)).await;
    assert_eq!((status, resp["code"].as_i64()), (400, Some(1003)), "{resp}");
    let (status, resp) = app.post(CLOSE, &json!({}), Some(&token)).await;
    assert_eq!((status, resp["code"].as_i64()), (400, Some(1003)), "{resp}");
    assert_eq!(app.sim_stats().await.calls.close, 1);
    let charges: i64 = sqlx::query_scalar("select count(*) from usage_ledger")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(charges, 1);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn concurrent_closes_close_upstream_once_and_charge_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.token(&app.tenant(2, None).await).await;
    let (_, created) = app.create_session(&token).await;
    let id = created["data"]["_id"].as_str().unwrap().to_owned();
    let body = json!({"_id": id});
    let answers =
        futures_util::future::join_all((0..10).map(|_| app.post(CLOSE, &body, Some(&token)))).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 1, "{answers:?}");
    assert!(answers.iter().all(|(s, _)| *s == 200 || *s == 409));
    assert_eq!(app.sim_stats().await.calls.close, 1);
    let charges: i64 = sqlx::query_scalar("select count(*) from usage_ledger")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(charges, 1);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_failed_upstream_close_is_retried_until_the_upstream_agrees(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.token(&app.tenant(2, None).await).await;
    let (_, created) = app.create_session(&token).await;
    let id = created["data"]["_id"].as_str().unwrap().to_owned();
    app.sim_config(json!({"error_rate": 1.0})).await;
    let (status, resp) = app.post(CLOSE, &json!({"_id": id}), Some(&token)).await;
    assert_eq!((status, resp["code"].as_i64()), (502, Some(5002)), "{resp}");
    let (_, page) = app.get("/v1/sessions", Some(&token)).await;
    assert_eq!(
        page["data"]["sessions"][0]["state"], "closing",
        "not reported closed: {page}"
    );
    assert_eq!(app.sim_stats().await.open_sessions.len(), 1);

    // The reaper retries with backoff while the upstream keeps failing...
    let settings = app.workers.clone();
    eventually(
        Duration::from_secs(10),
        "a second failed attempt",
        || async {
            reaper::run_once(&app.state, &settings).await.unwrap();
            let attempts: i32 = sqlx::query_scalar("select close_attempts from sessions")
                .fetch_one(&app.pool)
                .await
                .unwrap();
            (attempts >= 2).then_some(())
        },
    )
    .await;
    // ...and closes it once the upstream recovers.
    app.sim_config(json!({"error_rate": 0.0})).await;
    eventually(Duration::from_secs(10), "the retried close", || async {
        reaper::run_once(&app.state, &settings).await.unwrap();
        app.sim_stats().await.open_sessions.is_empty().then_some(())
    })
    .await;
    let (_, page) = app.get("/v1/sessions", Some(&token)).await;
    let session = &page["data"]["sessions"][0];
    assert_eq!(
        (session["state"].as_str(), session["close_reason"].as_str()),
        (Some("closed"), Some("client"))
    );
    let charges: i64 = sqlx::query_scalar("select count(*) from usage_ledger")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(charges, 1);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_list_pages_newest_first_and_filters(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.token(&app.tenant(10, None).await).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (_, created) = app.create_session(&token).await;
        ids.push(created["data"]["_id"].as_str().unwrap().to_owned());
    }
    app.post(CLOSE, &json!({"_id": ids[0]}), Some(&token)).await;

    let (status, page) = app.get("/v1/sessions?limit=2", Some(&token)).await;
    assert_eq!(status, 200, "{page}");
    let first: Vec<&str> = page["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["_id"].as_str().unwrap())
        .collect();
    assert_eq!(first, [ids[4].as_str(), ids[3].as_str()]);
    let cursor = page["data"]["next_cursor"].as_str().unwrap().to_owned();
    let (_, page) = app
        .get(
            &format!("/v1/sessions?limit=2&cursor={cursor}"),
            Some(&token),
        )
        .await;
    let second: Vec<&str> = page["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["_id"].as_str().unwrap())
        .collect();
    assert_eq!(second, [ids[2].as_str(), ids[1].as_str()]);
    let cursor = page["data"]["next_cursor"].as_str().unwrap().to_owned();
    let (_, page) = app
        .get(
            &format!("/v1/sessions?limit=2&cursor={cursor}"),
            Some(&token),
        )
        .await;
    assert_eq!(page["data"]["sessions"].as_array().unwrap().len(), 1);
    assert!(
        page["data"].get("next_cursor").is_none(),
        "the last page has no cursor"
    );

    let (_, closed) = app.get("/v1/sessions?state=closed", Some(&token)).await;
    assert_eq!(closed["data"]["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(closed["data"]["sessions"][0]["_id"], ids[0]);
    let (_, queuing) = app
        .get("/v1/sessions?faceswap_status=1&state=open", Some(&token))
        .await;
    assert_eq!(queuing["data"]["sessions"].as_array().unwrap().len(), 4);

    for bad in [
        "state=nope",
        "faceswap_status=9",
        "limit=0",
        "limit=1000",
        "cursor=xyz",
        "limit=abc",
    ] {
        let (status, resp) = app.get(&format!("/v1/sessions?{bad}"), Some(&token)).await;
        assert_eq!(
            (status, resp["code"].as_i64()),
            (400, Some(1003)),
            "{bad}: {resp}"
        );
    }
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn heartbeat_records_activity_and_usage_counts_sessions(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.token(&app.tenant(3, Some(3600)).await).await;
    let (_, created) = app.create_session(&token).await;
    let id = created["data"]["_id"].as_str().unwrap().to_owned();
    sqlx::query("update sessions set last_activity_at = now() - interval '1 hour'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, beat) = app
        .post(
            &format!("/v1/sessions/{id}/heartbeat"),
            &json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{beat}");
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now - beat["data"]["last_activity_at"].as_i64().unwrap()).abs() <= 2,
        "{beat}"
    );

    let (status, usage) = app.get("/v1/usage", Some(&token)).await;
    assert_eq!(status, 200);
    let u = &usage["data"];
    assert_eq!(u["max_concurrent_sessions"], 3);
    assert_eq!(u["active_sessions"], 1);
    assert_eq!(u["session_seconds_budget"], 3600);
    let used = u["session_seconds_used"].as_i64().unwrap();
    assert!((0..=5).contains(&used), "{u}");
    assert_eq!(
        u["session_seconds_remaining"].as_i64().unwrap(),
        3600 - used
    );
}
