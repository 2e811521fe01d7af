use std::time::Duration;

use faceswap_testkit::{TestApp, b64};
use futures_util::future::join_all;
use serde_json::json;
use sqlx::PgPool;

/// `n` detections spread over both replicas at once, each reaching the upstream with the
/// token. The image is not one (the upstream answers 2001 at once), so the burst is short.
async fn burst(a: &TestApp, b: &TestApp, token: &str, n: usize) {
    let body = json!({"img": b64(b"not an image")});
    let answers = join_all((0..n).map(|i| {
        let app = if i % 2 == 0 { a } else { b };
        let body = body.clone();
        async move { app.post("/detect", &body, Some(token)).await }
    }))
    .await;
    for (status, resp) in answers {
        assert_eq!(
            (status, resp["error_code"].as_i64()),
            (422, Some(2001)),
            "{resp}"
        );
    }
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn two_replicas_fetch_the_upstream_token_once_and_replace_it_once_before_it_expires_without_traffic(
    pool: PgPool,
) {
    let a = TestApp::builder()
        .sim_flags(&["--token-ttl-seconds", "10"])
        .spawn(pool)
        .await;
    let b = a.spawn_replica().await;
    let token = a.token(&a.tenant(1, None).await).await;

    burst(&a, &b, &token, 20).await;
    assert_eq!(
        a.sim_stats().await.calls.get_token,
        1,
        "one fetch for all requests of both replicas"
    );

    // No request until the token's exp (10 s, second resolution): the replicas' refreshers
    // replace it in its last tenth of life (once for both), so no request waits for it.
    let first = a.state.upstream_tokens.current().await.unwrap();
    let until_exp = first.expires_at_ms - chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(u64::try_from(until_exp).unwrap_or(0))).await;
    assert_eq!(
        a.sim_stats().await.calls.get_token,
        2,
        "replaced once, before the old token's exp"
    );
    for app in [&a, &b] {
        let held = app.state.upstream_tokens.current().await.unwrap();
        assert_ne!(held.token, first.token);
        assert!(held.expires_at_ms > first.expires_at_ms);
    }
    burst(&a, &b, &token, 20).await;
    assert_eq!(
        a.sim_stats().await.calls.get_token,
        2,
        "the requests after the exp used the new token"
    );
    assert_eq!(
        a.state.upstream_tokens.fetches() + b.state.upstream_tokens.fetches(),
        2
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_refused_token_is_replaced_once_and_the_calls_retried(pool: PgPool) {
    let a = TestApp::spawn(pool).await;
    let b = a.spawn_replica().await;
    let token = a.token(&a.tenant(1, None).await).await;
    burst(&a, &b, &token, 4).await;
    assert_eq!(a.sim_stats().await.calls.get_token, 1);

    a.sim_post("/sim/expire-tokens").await;
    burst(&a, &b, &token, 20).await;
    let stats = a.sim_stats().await;
    assert_eq!(
        stats.calls.get_token, 2,
        "one refresh for all the refused calls"
    );
    assert!(
        stats.calls.detect > 24,
        "refused calls were retried: {}",
        stats.calls.detect
    );
}
