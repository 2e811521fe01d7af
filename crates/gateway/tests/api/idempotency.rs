//! `Idempotency-Key`: a retry gets the first answer and creates nothing new upstream; the same
//! key with another request is refused; keys are per tenant and expire.

use std::time::Duration;

use faceswap_testkit::TestApp;
use futures_util::future::join_all;
use serde_json::{Value, json};
use sqlx::PgPool;

const CREATE: &str = "/api/open/v3/faceswap/live/create";

fn create_body(path: &str) -> Value {
    json!({"sourceImage": [{"path": path, "opts": "150,170:230,170:190,215:190,255"}]})
}

/// POSTs with an `Idempotency-Key`: status, body, and whether it was a replay.
async fn post_keyed(
    app: &TestApp,
    path: &str,
    body: &Value,
    token: &str,
    key: &str,
) -> (u16, Value, bool) {
    let resp = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    (status, resp.json().await.unwrap(), replayed)
}

async fn session_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from sessions")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_retried_create_returns_the_first_answer_and_creates_nothing_new(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.token(&app.tenant(5, None).await).await;
    let body = create_body("https://images.example/a.jpg");
    let (status, first, replayed) = post_keyed(&app, CREATE, &body, &token, "order-1").await;
    assert_eq!((status, replayed), (200, false), "{first}");
    for _ in 0..3 {
        let (status, again, replayed) = post_keyed(&app, CREATE, &body, &token, "order-1").await;
        assert_eq!((status, replayed), (200, true));
        assert_eq!(
            again, first,
            "the replay is the first answer, byte for byte"
        );
    }
    assert_eq!(app.sim_stats().await.calls.create, 1);
    assert_eq!(session_rows(&app.pool).await, 1);

    // A new key is a new request.
    let (status, other, _) = post_keyed(&app, CREATE, &body, &token, "order-2").await;
    assert_eq!(status, 200);
    assert_ne!(other["data"]["_id"], first["data"]["_id"]);
    assert_eq!(app.sim_stats().await.calls.create, 2);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_same_key_with_another_body_is_refused_and_changes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.token(&app.tenant(5, None).await).await;
    let (status, _, _) = post_keyed(
        &app,
        CREATE,
        &create_body("https://images.example/a.jpg"),
        &token,
        "k",
    )
    .await;
    assert_eq!(status, 200);
    let (status, refused, _) = post_keyed(
        &app,
        CREATE,
        &create_body("https://images.example/b.jpg"),
        &token,
        "k",
    )
    .await;
    assert_eq!(
        (status, refused["code"].as_i64()),
        (422, Some(1003)),
        "{refused}"
    );
    assert!(refused["msg"].as_str().unwrap().contains("Idempotency-Key"));
    // The same key on another route is another request too.
    let (status, _, _) = post_keyed(
        &app,
        "/api/open/v3/faceswap/live/info",
        &json!({"_id": "x"}),
        &token,
        "k",
    )
    .await;
    assert_ne!(status, 200);
    assert_eq!(app.sim_stats().await.calls.create, 1);
    assert_eq!(session_rows(&app.pool).await, 1);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn concurrent_retries_with_one_key_create_one_session(pool: PgPool) {
    let app = TestApp::builder()
        .sim_flags(&["--latency-ms", "300"])
        .spawn(pool)
        .await;
    let token = app.token(&app.tenant(5, None).await).await;
    let body = create_body("https://images.example/a.jpg");
    let answers =
        join_all((0..10).map(|_| post_keyed(&app, CREATE, &body, &token, "burst-key"))).await;
    let created: Vec<_> = answers.iter().filter(|a| a.0 == 200).collect();
    assert!(!created.is_empty(), "{answers:?}");
    let ids: std::collections::HashSet<_> = created
        .iter()
        .map(|a| a.1["data"]["_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "every success names the same session: {answers:?}"
    );
    for (status, body, _) in answers.iter().filter(|a| a.0 != 200) {
        // Those that arrived while the first ran are told to retry.
        assert_eq!(
            (*status, body["code"].as_i64()),
            (409, Some(4009)),
            "{body}"
        );
    }
    assert_eq!(app.sim_stats().await.calls.create, 1);
    assert_eq!(session_rows(&app.pool).await, 1);
    // After the first finished, a retry is a replay.
    let (status, replay, replayed) = post_keyed(&app, CREATE, &body, &token, "burst-key").await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(
        replay["data"]["_id"].as_str(),
        ids.iter().next().map(String::as_str)
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn keys_belong_to_one_tenant(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let a = app.token(&app.tenant(5, None).await).await;
    let b = app.token(&app.tenant(5, None).await).await;
    let body = create_body("https://images.example/a.jpg");
    let (_, first, _) = post_keyed(&app, CREATE, &body, &a, "shared").await;
    let (status, second, replayed) = post_keyed(&app, CREATE, &body, &b, "shared").await;
    assert_eq!((status, replayed), (200, false));
    assert_ne!(first["data"]["_id"], second["data"]["_id"]);
    assert_eq!(app.sim_stats().await.calls.create, 2);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_failed_request_keeps_no_answer_and_may_be_retried(pool: PgPool) {
    let app = TestApp::builder()
        .sim_flags(&["--max-open-sessions", "0"])
        .spawn(pool)
        .await;
    let token = app.token(&app.tenant(5, None).await).await;
    let body = create_body("https://images.example/a.jpg");
    let (status, refused, _) = post_keyed(&app, CREATE, &body, &token, "retry-me").await;
    assert_eq!(
        (status, refused["code"].as_i64()),
        (429, Some(1104)),
        "{refused}"
    );
    app.sim_config(json!({"max_open_sessions": 5})).await;
    let (status, created, replayed) = post_keyed(&app, CREATE, &body, &token, "retry-me").await;
    assert_eq!((status, replayed), (200, false), "{created}");
    assert_eq!(app.sim_stats().await.calls.create, 2);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn keys_expire_after_their_lifetime(pool: PgPool) {
    let app = TestApp::builder()
        .args(&["--idempotency-ttl-seconds", "1"])
        .spawn(pool)
        .await;
    let token = app.token(&app.tenant(5, None).await).await;
    let body = create_body("https://images.example/a.jpg");
    let (_, first, _) = post_keyed(&app, CREATE, &body, &token, "short-lived").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, second, replayed) = post_keyed(&app, CREATE, &body, &token, "short-lived").await;
    assert_eq!((status, replayed), (200, false), "{second}");
    assert_ne!(first["data"]["_id"], second["data"]["_id"]);
    assert_eq!(app.sim_stats().await.calls.create, 2);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_retried_close_replays_and_a_malformed_key_is_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.token(&app.tenant(5, None).await).await;
    let (_, created) = app.create_session(&token).await;
    let id = created["data"]["_id"].as_str().unwrap();
    let close = json!({"_id": id});
    let path = "/api/open/v3/faceswap/live/close";
    let (status, first, _) = post_keyed(&app, path, &close, &token, "close-1").await;
    assert_eq!(status, 200, "{first}");
    let (status, again, replayed) = post_keyed(&app, path, &close, &token, "close-1").await;
    assert_eq!(
        (status, replayed),
        (200, true),
        "a retry does not hit 4009 'already closed'"
    );
    assert_eq!(again, first);
    assert_eq!(app.sim_stats().await.calls.close, 1);

    let (status, bad, _) = post_keyed(&app, path, &close, &token, "a b").await;
    assert_eq!((status, bad["code"].as_i64()), (400, Some(1003)), "{bad}");
}
