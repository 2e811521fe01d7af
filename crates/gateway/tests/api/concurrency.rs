//! 500 concurrent creates from five tenants with different quotas and rates: no tenant gets
//! more sessions than its quota or more requests than its rate, every answer is a documented
//! one, and the gateway's records reconcile with the simulator's counts.

use std::collections::HashMap;
use std::time::Instant;

use faceswap_testkit::{TenantSettings, TestApp};
use futures_util::future::join_all;
use sqlx::PgPool;

struct Plan {
    max_concurrent: i32,
    per_second: i32,
    burst: i32,
}

const PLANS: [Plan; 5] = [
    Plan {
        max_concurrent: 3,
        per_second: 1_000,
        burst: 1_000,
    },
    Plan {
        max_concurrent: 200,
        per_second: 5,
        burst: 20,
    },
    Plan {
        max_concurrent: 25,
        per_second: 1_000,
        burst: 1_000,
    },
    Plan {
        max_concurrent: 200,
        per_second: 2,
        burst: 35,
    },
    Plan {
        max_concurrent: 60,
        per_second: 1_000,
        burst: 1_000,
    },
];
const CREATES_PER_TENANT: usize = 100;

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn five_hundred_concurrent_creates_respect_every_quota_and_rate(pool: PgPool) {
    let app = TestApp::builder()
        .sim_flags(&["--max-open-sessions", "1000"])
        .spawn(pool)
        .await;
    let mut tokens = Vec::new();
    for (i, plan) in PLANS.iter().enumerate() {
        let mut settings = TenantSettings::named(&format!("tenant {i}"));
        settings.max_concurrent_sessions = plan.max_concurrent;
        settings.requests_per_second = plan.per_second;
        settings.burst = plan.burst;
        let tenant = app.tenant_with(&settings).await;
        tokens.push(app.token(&tenant).await);
    }
    let started = Instant::now();
    let app_ref = &app;
    let calls = tokens.iter().enumerate().flat_map(|(i, token)| {
        (0..CREATES_PER_TENANT)
            .map(move |_| async move { (i, app_ref.create_session(token).await) })
    });
    let answers = join_all(calls).await;
    let elapsed = started.elapsed();

    let mut by_tenant: HashMap<usize, HashMap<(u16, i64), usize>> = HashMap::new();
    for (i, (status, body)) in &answers {
        let code = body["code"].as_i64().expect("every answer is an envelope");
        *by_tenant
            .entry(*i)
            .or_default()
            .entry((*status, code))
            .or_default() += 1;
    }
    let mut created_total = 0;
    for (i, plan) in PLANS.iter().enumerate() {
        let counts = &by_tenant[&i];
        let created = counts.get(&(200, 1000)).copied().unwrap_or(0);
        let over_quota = counts.get(&(429, 1104)).copied().unwrap_or(0);
        let over_rate = counts.get(&(429, 1005)).copied().unwrap_or(0);
        assert_eq!(
            created + over_quota + over_rate,
            CREATES_PER_TENANT,
            "tenant {i}: only documented answers: {counts:?}"
        );
        assert!(
            created <= plan.max_concurrent as usize,
            "tenant {i} exceeded its quota: {counts:?}"
        );
        // Requests let through by the limiter, plus the token request (counted too), fit the
        // allowance.
        let allowance = plan.burst as usize
            + (elapsed.as_secs_f64() * f64::from(plan.per_second)).ceil() as usize;
        assert!(
            created + over_quota < allowance,
            "tenant {i} exceeded its rate in {elapsed:?}: {counts:?}"
        );
        assert_eq!(
            created,
            (plan.max_concurrent as usize).min(created + over_quota),
            "tenant {i}: a slot was free but a create was refused: {counts:?}"
        );
        let open: i64 = sqlx::query_scalar(
            "select count(*) from sessions s join tenants t using (tenant_id)
             where t.name = $1 and s.state = 'open'",
        )
        .bind(format!("tenant {i}"))
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(open as usize, created, "tenant {i}");
        created_total += created;
    }
    let stats = app.sim_stats().await;
    assert_eq!(
        stats.calls.create as usize, created_total,
        "one upstream create per success"
    );
    assert_eq!(stats.open_sessions.len(), created_total);
    let recorded: Vec<String> =
        sqlx::query_scalar("select upstream_id from sessions where state = 'open'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let mut upstream = stats.open_sessions.clone();
    let mut ours = recorded.clone();
    upstream.sort();
    ours.sort();
    assert_eq!(
        ours, upstream,
        "the gateway's records and the upstream's agree"
    );
    let leftover: i64 = sqlx::query_scalar(
        "select count(*) from sessions where state in ('creating', 'closing', 'lost')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(leftover, 0, "no reservation of a finished request is held");
    println!(
        "500 creates in {elapsed:?}: {created_total} created, {} refused ({:?})",
        answers.len() - created_total,
        by_tenant
    );
}
