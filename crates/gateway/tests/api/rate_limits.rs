//! Per-tenant rate limits: 429/1005 with `Retry-After`, one allowance shared by every replica
//! through Redis, a per-process limit while Redis is down, and rates set by CLI and admin API.

use std::time::{Duration, Instant};

use faceswap_testkit::{TenantSettings, TestApp, TestTenant};
use serde_json::{Value, json};
use sqlx::PgPool;

const ADMIN: &str = "ops-token-0123456789abcdefghij";

async fn tenant_with_rate(app: &TestApp, per_second: i32, burst: i32) -> TestTenant {
    let mut settings = TenantSettings::named("rated");
    settings.requests_per_second = per_second;
    settings.burst = burst;
    app.tenant_with(&settings).await
}

/// One `GET /v1/usage`: status, body and `Retry-After`.
async fn usage(app: &TestApp, token: &str) -> (u16, Value, Option<u64>) {
    let resp = app
        .client
        .get(app.url("/v1/usage"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, resp.json().await.unwrap(), retry_after)
}

/// Most requests a GCRA limiter may allow in `elapsed`: the burst plus what refilled.
fn allowance(per_second: u32, burst: u32, elapsed: Duration) -> usize {
    burst as usize + (elapsed.as_secs_f64() * f64::from(per_second)).ceil() as usize
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn over_its_rate_a_tenant_gets_429_1005_with_retry_after_then_is_let_through(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = tenant_with_rate(&app, 1, 4).await;
    let started = Instant::now();
    let token = app.token(&tenant).await; // getToken counts too
    let mut answers = Vec::new();
    for _ in 0..12 {
        answers.push(usage(&app, &token).await);
    }
    let allowed = 1 + answers.iter().filter(|a| a.0 == 200).count();
    assert!(
        allowed <= allowance(1, 4, started.elapsed()),
        "{allowed} allowed in {:?}",
        started.elapsed()
    );
    let refused: Vec<_> = answers.iter().filter(|a| a.0 != 200).collect();
    assert!(!refused.is_empty(), "{answers:?}");
    for (status, body, retry_after) in &refused {
        assert_eq!(
            (*status, body["code"].as_i64()),
            (429, Some(1005)),
            "{body}"
        );
        assert!(
            body["msg"].as_str().unwrap().contains("rate limit"),
            "{body}"
        );
        // One request per second: the next one is at most a second away.
        assert_eq!(*retry_after, Some(1), "{body}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        usage(&app, &token).await.0,
        200,
        "let through after Retry-After"
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn replicas_share_one_allowance_through_redis(pool: PgPool) {
    let first = TestApp::spawn(pool).await;
    let second = first.spawn_replica().await;
    let tenant = tenant_with_rate(&first, 1, 6).await;
    let started = Instant::now();
    let token = first.token(&tenant).await;
    let mut allowed = 1;
    for i in 0..20 {
        let app = if i % 2 == 0 { &first } else { &second };
        if usage(app, &token).await.0 == 200 {
            allowed += 1;
        }
    }
    // Two separate allowances would let about twice the burst through.
    assert!(
        allowed <= allowance(1, 6, started.elapsed()),
        "{allowed} allowed across two replicas in {:?}",
        started.elapsed()
    );
    assert!(allowed >= 6, "the burst is allowed: {allowed}");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn without_redis_each_process_still_enforces_the_rate(pool: PgPool) {
    // Nothing listens on port 1: Redis is down from the start.
    let app = TestApp::builder()
        .redis_url("redis://127.0.0.1:1")
        .spawn(pool)
        .await;
    let tenant = tenant_with_rate(&app, 1, 3).await;
    let started = Instant::now();
    let token = app.token(&tenant).await;
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.push(usage(&app, &token).await);
    }
    let allowed = 1 + answers.iter().filter(|a| a.0 == 200).count();
    assert!(
        allowed <= allowance(1, 3, started.elapsed()),
        "{allowed} allowed in {:?}: {answers:?}",
        started.elapsed()
    );
    assert!(
        answers
            .iter()
            .any(|(s, b, r)| *s == 429 && b["code"] == 1005 && r.is_some()),
        "{answers:?}"
    );
    let metrics = app.metrics_page().await;
    assert!(
        metrics.contains(r#"faceswap_rate_limit_decisions_total{source="local",result="limited"}"#),
        "{metrics}"
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_admin_api_sets_a_tenants_rate_and_refuses_nonsense(pool: PgPool) {
    let app = TestApp::builder()
        .args(&["--admin-tokens", &format!("ops:{ADMIN}")])
        .spawn(pool)
        .await;
    let tenant = app.tenant(5, None).await;
    let path = format!("/admin/tenants/{}", tenant.tenant_id);
    let (status, body) = app
        .admin_call(
            ADMIN,
            "PATCH",
            &path,
            Some(json!({"requests_per_second": 0})),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1003)), "{body}");
    assert!(
        body["msg"]
            .as_str()
            .unwrap()
            .contains("requests_per_second")
    );

    let (_, body) = app
        .admin_call(
            ADMIN,
            "PATCH",
            &path,
            Some(json!({"requests_per_second": 1, "burst": 2})),
        )
        .await;
    assert_eq!(
        (
            body["data"]["requests_per_second"].as_i64(),
            body["data"]["burst"].as_i64()
        ),
        (Some(1), Some(2)),
        "{body}"
    );
    // The replica that made the change applies it at once.
    let token = app.token(&tenant).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(usage(&app, &token).await.0);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn tenant_create_takes_the_rate_flags(pool: PgPool) {
    let db_name = pool.connect_options().get_database().unwrap().to_owned();
    let base = std::env::var("DATABASE_URL").unwrap();
    let url = format!("{}/{db_name}", base.rsplit_once('/').unwrap().0);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_faceswap-gateway"))
            .args(args)
            .env("DATABASE_URL", &url)
            .output()
            .unwrap()
    };
    let out = run(&[
        "tenant",
        "create",
        "--name",
        "metered",
        "--requests-per-second",
        "7",
        "--burst",
        "9",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = faceswap_gateway::domain::ids::TenantId::parse(printed["tenant_id"].as_str().unwrap())
        .unwrap()
        .0;
    let (rps, burst): (i32, i32) =
        sqlx::query_as("select requests_per_second, burst from tenants where tenant_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((rps, burst), (7, 9));

    let refused = run(&["tenant", "create", "--name", "x", "--burst", "0"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("burst must be at least 1"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
