//! The upstream call policy seen by a tenant: retries hide a flaky upstream, and an upstream
//! that is down is answered fast with 503 and `Retry-After` until it heals.

use std::time::{Duration, Instant};

use faceswap_testkit::{TestApp, b64, eventually, testdata};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;

const INFO: &str = "/api/open/v3/faceswap/live/info";

/// The value of `faceswap_upstream_retries_total{call}` on the gateway's metrics page (the
/// recorder is process-wide, so other tests may add to it; it never goes down).
async fn retries_counted(app: &TestApp, call: &str) -> f64 {
    let page = app.metrics_page().await;
    let series = format!("faceswap_upstream_retries_total{{call=\"{call}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn at_a_30_percent_upstream_error_rate_detect_and_info_answer_200(pool: PgPool) {
    // Twelve attempts make a call fail with probability 0.3^12, so no answer may be lost.
    let app = TestApp::builder()
        .args(&[
            "--upstream-retry-attempts",
            "12",
            "--upstream-retry-base-ms",
            "1",
        ])
        .spawn(pool)
        .await;
    let token = app.token(&app.tenant(1, None).await).await;
    let (status, created) = app.create_session(&token).await;
    assert_eq!(status, 200, "{created}");
    let id = created["data"]["_id"].as_str().unwrap().to_owned();
    let before = app.sim_stats().await;
    let retried_before = retries_counted(&app, "info").await;
    app.sim_config(json!({"error_rate": 0.3})).await;

    let face = json!({"img": b64(&testdata("face.jpg"))});
    let info = json!({"_id": id});
    let calls = (0..60)
        .map(|_| (INFO, &info))
        .chain((0..20).map(|_| ("/detect", &face)));
    let answers: Vec<(u16, Value)> = futures_util::stream::iter(calls)
        .map(|(path, body)| app.post(path, body, Some(&token)))
        .buffer_unordered(8)
        .collect()
        .await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }

    let after = app.sim_stats().await;
    let info_attempts = after.calls.info - before.calls.info;
    let detect_attempts = after.calls.detect - before.calls.detect;
    assert!(
        info_attempts > 60,
        "the upstream saw retries: {info_attempts}"
    );
    assert!(detect_attempts >= 20);
    assert!(
        after.faults.errors - before.faults.errors >= info_attempts - 60,
        "each extra attempt followed an injected error"
    );
    assert!(
        retries_counted(&app, "info").await - retried_before >= (info_attempts - 60) as f64,
        "retries are counted in the metrics"
    );
    eprintln!(
        "gateway at 30% upstream errors: 80/80 answered 200 with {} info and {} detect attempts upstream",
        info_attempts, detect_attempts
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_failing_upstream_is_answered_503_with_retry_after_fast_and_recovers(pool: PgPool) {
    let app = TestApp::builder()
        .args(&[
            "--upstream-retry-base-ms",
            "1",
            // Long enough that the refusals below all fall inside it on a loaded machine.
            "--upstream-breaker-cooldown-ms",
            "1500",
        ])
        .spawn(pool)
        .await;
    let token = app.token(&app.tenant(1, None).await).await;
    let (status, created) = app.create_session(&token).await;
    assert_eq!(status, 200, "{created}");
    let info = json!({"_id": created["data"]["_id"]});
    app.sim_config(json!({"error_rate": 1.0})).await;

    // Failures pass through as 502 until the breaker has seen enough of them.
    let mut failed_calls = 0;
    loop {
        let (status, body) = app.post(INFO, &info, Some(&token)).await;
        if status == 503 {
            assert_eq!(body["code"], 5005, "{body}");
            break;
        }
        assert_eq!((status, body["code"].as_i64()), (502, Some(5002)), "{body}");
        failed_calls += 1;
        assert!(failed_calls < 30, "the breaker never opened");
    }

    // While open: 503/5005 with Retry-After, at once, and nothing reaches the upstream.
    let upstream_calls = app.sim_stats().await.calls.info;
    let started = Instant::now();
    for _ in 0..10 {
        let resp = app
            .client
            .post(app.url(INFO))
            .bearer_auth(&token)
            .json(&info)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        let wait: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (1..=2).contains(&wait),
            "the rest of the cool-down: {wait} s"
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 5005, "{body}");
    }
    let fail_fast = started.elapsed() / 10;
    assert!(
        fail_fast < Duration::from_millis(250),
        "{fail_fast:?} per answer"
    );
    let face = json!({"img": b64(&testdata("face.jpg"))});
    let (status, body) = app.post("/detect", &face, Some(&token)).await;
    assert_eq!(
        (status, body["error_code"].as_i64()),
        (503, Some(5005)),
        "detect's own shape, same host: {body}"
    );
    assert_eq!(app.sim_stats().await.calls.info, upstream_calls);

    // The upstream heals: after the cool-down a probe closes the breaker.
    app.sim_config(json!({"error_rate": 0.0})).await;
    let healed = Instant::now();
    eventually(Duration::from_secs(6), "info answers 200 again", || async {
        let (status, _) = app.post(INFO, &info, Some(&token)).await;
        (status == 200).then_some(())
    })
    .await;
    let recovery = healed.elapsed();
    assert!(recovery < Duration::from_secs(3), "{recovery:?}");
    eprintln!(
        "gateway, upstream down: 503/5005 after {failed_calls} failed calls, {fail_fast:?} per answer while open, 200 again {recovery:?} after healing (cool-down 1.5 s)"
    );
}
