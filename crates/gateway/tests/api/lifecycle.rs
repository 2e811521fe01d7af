use faceswap_gateway::workers::{Outcome, monitor, reaper};
use std::time::Duration;

use faceswap_testkit::{TenantSettings, TestApp, TestTenant, eventually};
use serde_json::{Value, json};
use sqlx::PgPool;

async fn open_session(app: &TestApp, token: &str) -> String {
    let (status, created) = app.create_session(token).await;
    assert_eq!(status, 200, "{created}");
    created["data"]["_id"].as_str().unwrap().to_owned()
}

fn uuid_of(id: &str) -> uuid::Uuid {
    faceswap_gateway::domain::ids::SessionId::parse(id)
        .unwrap()
        .0
}

/// Runs the reaper until it has nothing left to do.
async fn reap(app: &TestApp) {
    for _ in 0..50 {
        if reaper::run_once(&app.state, &app.workers).await.unwrap() == Outcome::Idle {
            return;
        }
    }
    panic!("the reaper never went idle");
}

async fn session(app: &TestApp, token: &str, id: &str) -> Value {
    let (_, page) = app.get("/v1/sessions?limit=200", Some(token)).await;
    page["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["_id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not listed"))
}

async fn events_of(app: &TestApp, id: &str) -> Vec<(String, Value)> {
    sqlx::query_as::<_, (String, sqlx::types::Json<Value>)>(
        "select event_type, payload from session_events where session_id = $1 order by event_id",
    )
    .bind(uuid_of(id))
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(t, p)| (t, p.0))
    .collect()
}

async fn tenant_with(app: &TestApp, f: impl FnOnce(&mut TenantSettings)) -> (TestTenant, String) {
    let mut settings = TenantSettings::named("lifecycle");
    f(&mut settings);
    let tenant = app.tenant_with(&settings).await;
    let token = app.token(&tenant).await;
    (tenant, token)
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn an_idle_session_is_closed_as_idle_and_a_heartbeated_one_is_not(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = tenant_with(&app, |t| t.idle_timeout_seconds = 60).await;
    let idle = open_session(&app, &token).await;
    let alive = open_session(&app, &token).await;
    // Both were last active two minutes ago; then one gets a heartbeat.
    sqlx::query("update sessions set last_activity_at = now() - interval '2 minutes'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, _) = app
        .post(
            &format!("/v1/sessions/{alive}/heartbeat"),
            &json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200);

    reap(&app).await;
    let closed = session(&app, &token, &idle).await;
    assert_eq!(
        (closed["state"].as_str(), closed["close_reason"].as_str()),
        (Some("closed"), Some("idle"))
    );
    assert_eq!(session(&app, &token, &alive).await["state"], "open");
    assert_eq!(
        app.sim_stats().await.open_sessions.len(),
        1,
        "closed upstream too"
    );
    let events = events_of(&app, &idle).await;
    let (kind, payload) = events.last().unwrap();
    assert_eq!(
        (kind.as_str(), payload["reason"].as_str()),
        ("session.closed", Some("idle"))
    );
}

/// The row version (`xmin`) and stored activity of a session: a new `xmin` means a write.
async fn row_version(app: &TestApp, id: &str) -> (String, chrono::DateTime<chrono::Utc>) {
    sqlx::query_as("select xmin::text, last_activity_at from sessions where session_id = $1")
        .bind(uuid_of(id))
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn calls_on_a_busy_session_record_its_activity_at_most_once_a_second(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = tenant_with(&app, |t| t.idle_timeout_seconds = 60).await;
    let id = open_session(&app, &token).await;
    sqlx::query("update sessions set last_activity_at = now() - interval '5 seconds'")
        .execute(&app.pool)
        .await
        .unwrap();
    let url = format!("/v1/sessions/{id}/heartbeat");
    let beat = || async {
        let (status, body) = app.post(&url, &json!({}), Some(&token)).await;
        assert_eq!(status, 200, "{body}");
    };
    let before = row_version(&app, &id).await;
    beat().await;
    let first = row_version(&app, &id).await;
    assert_ne!(first.0, before.0, "stale activity is written");
    assert!(first.1 > before.1 + chrono::Duration::seconds(4));
    for _ in 0..5 {
        beat().await;
    }
    assert_eq!(
        row_version(&app, &id).await,
        first,
        "calls within a second of the stored activity write nothing"
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_reaper_allows_for_the_resolution_of_recorded_activity(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = tenant_with(&app, |t| t.idle_timeout_seconds = 60).await;
    let within = open_session(&app, &token).await;
    let past = open_session(&app, &token).await;
    // The last call may have come up to 1.5 s after the stored activity (the resolution, plus
    // the batching of calls served from memory): 61 s ago is not surely idle for 60 s, 62 s
    // ago is.
    for (id, ago) in [(&within, 61.0), (&past, 62.0)] {
        sqlx::query(
            "update sessions set last_activity_at = now() - make_interval(secs => $2) \
             where session_id = $1",
        )
        .bind(uuid_of(id))
        .bind(ago)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    reap(&app).await;
    assert_eq!(session(&app, &token, &within).await["state"], "open");
    let closed = session(&app, &token, &past).await;
    assert_eq!(
        (closed["state"].as_str(), closed["close_reason"].as_str()),
        (Some("closed"), Some("idle"))
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_session_open_past_the_maximum_duration_is_closed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = tenant_with(&app, |t| t.max_session_seconds = 600).await;
    let old = open_session(&app, &token).await;
    let young = open_session(&app, &token).await;
    sqlx::query(
        "update sessions set opened_at = now() - interval '11 minutes' where session_id = $1",
    )
    .bind(uuid_of(&old))
    .execute(&app.pool)
    .await
    .unwrap();
    reap(&app).await;
    assert_eq!(
        session(&app, &token, &old).await["close_reason"],
        "max_duration"
    );
    assert_eq!(session(&app, &token, &young).await["state"], "open");
    let charged: i64 = sqlx::query_scalar("select seconds from usage_ledger")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        (660..=670).contains(&charged),
        "charged {charged} s for an 11-minute session"
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_session_failed_upstream_is_seen_by_the_monitor_and_closed_by_the_reaper(pool: PgPool) {
    let app = TestApp::builder()
        .sim_flags(&["--queue-delay-ms", "100", "--failure-rate", "1.0"])
        .spawn(pool)
        .await;
    let (_, token) = tenant_with(&app, |_| {}).await;
    let id = open_session(&app, &token).await;
    assert_eq!(session(&app, &token, &id).await["faceswap_status"], 1);
    eventually(
        Duration::from_secs(5),
        "the monitor to see status 4",
        || async {
            assert_eq!(
                monitor::run_once(&app.state, &app.workers).await.unwrap(),
                Outcome::Worked(1)
            );
            (session(&app, &token, &id).await["faceswap_status"] == 4).then_some(())
        },
    )
    .await;
    reap(&app).await;
    let s = session(&app, &token, &id).await;
    assert_eq!(
        (s["state"].as_str(), s["close_reason"].as_str()),
        (Some("closed"), Some("failed"))
    );
    assert_eq!(s["faceswap_status"], 4, "a failed session stays failed");
    assert!(app.sim_stats().await.open_sessions.is_empty());
    let kinds: Vec<String> = events_of(&app, &id)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(kinds, ["session.status_changed", "session.closed"]);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_monitor_records_each_transition_once(pool: PgPool) {
    let app = TestApp::builder()
        .sim_flags(&["--queue-delay-ms", "100"])
        .spawn(pool)
        .await;
    let (_, token) = tenant_with(&app, |_| {}).await;
    let id = open_session(&app, &token).await;
    eventually(
        Duration::from_secs(5),
        "the monitor to see status 2",
        || async {
            monitor::run_once(&app.state, &app.workers).await.unwrap();
            (session(&app, &token, &id).await["faceswap_status"] == 2).then_some(())
        },
    )
    .await;
    monitor::run_once(&app.state, &app.workers).await.unwrap();
    monitor::run_once(&app.state, &app.workers).await.unwrap();
    let events = events_of(&app, &id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1["from"], 1);
    assert_eq!(events[0].1["faceswap_status"], 2);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_session_stuck_queuing_is_closed_as_failed(pool: PgPool) {
    let app = TestApp::builder()
        .sim_flags(&["--queue-delay-ms", "600000"])
        .spawn(pool)
        .await;
    let (_, token) = tenant_with(&app, |_| {}).await;
    let id = open_session(&app, &token).await;
    reap(&app).await;
    assert_eq!(
        session(&app, &token, &id).await["state"],
        "open",
        "not stuck yet"
    );
    sqlx::query("update sessions set created_at = now() - interval '1 hour'")
        .execute(&app.pool)
        .await
        .unwrap();
    reap(&app).await;
    assert_eq!(session(&app, &token, &id).await["close_reason"], "failed");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_spent_budget_closes_open_sessions_and_refuses_new_ones(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = tenant_with(&app, |t| t.session_seconds_budget = Some(100)).await;
    let a = open_session(&app, &token).await;
    let b = open_session(&app, &token).await;
    reap(&app).await;
    assert_eq!(
        session(&app, &token, &a).await["state"],
        "open",
        "within budget"
    );
    // Both sessions were reserved and opened a minute ago: 120 seconds against 100.
    sqlx::query(
        "update sessions set created_at = now() - interval '60 seconds',
            opened_at = now() - interval '60 seconds'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    reap(&app).await;
    for id in [&a, &b] {
        assert_eq!(session(&app, &token, id).await["close_reason"], "budget");
    }
    assert!(app.sim_stats().await.open_sessions.is_empty());
    let (status, resp) = app.create_session(&token).await;
    assert_eq!((status, resp["code"].as_i64()), (429, Some(1104)), "{resp}");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn two_workers_close_every_reaped_session_upstream_exactly_once(pool: PgPool) {
    let a = TestApp::builder()
        .sim_flags(&["--latency-ms", "5"])
        .spawn(pool)
        .await;
    let b = a.spawn_replica().await;
    let (_, token) = tenant_with(&a, |t| t.max_concurrent_sessions = 40).await;
    for _ in 0..40 {
        open_session(&a, &token).await;
    }
    sqlx::query("update sessions set last_activity_at = now() - interval '1 hour'")
        .execute(&a.pool)
        .await
        .unwrap();
    let before = a.sim_stats().await.calls.close;
    let mut settings = a.workers.clone();
    settings.batch = 7;
    let worker = |app: &TestApp| {
        let settings = settings.clone();
        let state = app.state.clone();
        async move { while reaper::run_once(&state, &settings).await.unwrap() != Outcome::Idle {} }
    };
    tokio::join!(worker(&a), worker(&b), worker(&a), worker(&b));
    let stats = a.sim_stats().await;
    assert_eq!(
        stats.calls.close - before,
        40,
        "each session closed upstream once"
    );
    assert!(stats.open_sessions.is_empty());
    let (closed, charges): (i64, i64) = sqlx::query_as(
        "select (select count(*) from sessions where state = 'closed' and close_reason = 'idle'),
                (select count(*) from usage_ledger)",
    )
    .fetch_one(&a.pool)
    .await
    .unwrap();
    assert_eq!((closed, charges), (40, 40));
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_reservation_left_by_a_dead_create_is_marked_lost_and_frees_its_slot(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (tenant, token) = tenant_with(&app, |t| t.max_concurrent_sessions = 1).await;
    let tenant_id = faceswap_gateway::domain::ids::TenantId::parse(&tenant.tenant_id)
        .unwrap()
        .0;
    // What a process killed between reserving and hearing back from the upstream leaves.
    let dead = faceswap_gateway::domain::ids::SessionId::generate().0;
    sqlx::query(
        "insert into sessions (session_id, tenant_id, state, source_image, created_at)
         values ($1, $2, 'creating', '[]', now() - interval '5 minutes')",
    )
    .bind(dead)
    .bind(tenant_id)
    .execute(&app.pool)
    .await
    .unwrap();
    let (status, _) = app.create_session(&token).await;
    assert_eq!(status, 429, "the dead reservation holds the only slot");
    reap(&app).await;
    let state: String = sqlx::query_scalar("select state from sessions where session_id = $1")
        .bind(dead)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "lost");
    let kinds: Vec<String> =
        sqlx::query_scalar("select event_type from session_events where session_id = $1")
            .bind(dead)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(kinds, ["session.lost"]);
    let (status, resp) = app.create_session(&token).await;
    assert_eq!(status, 200, "the slot is free again: {resp}");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_session_closed_upstream_behind_our_back_is_settled(pool: PgPool) {
    let app = TestApp::builder()
        .sim_flags(&["--queue-delay-ms", "0"])
        .spawn(pool)
        .await;
    let (_, token) = tenant_with(&app, |_| {}).await;
    let id = open_session(&app, &token).await;
    let upstream_id: String = sqlx::query_scalar("select upstream_id from sessions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // Someone with the account's credentials closes it directly at the upstream.
    let closed = app
        .upstream_call(
            "/api/open/v3/faceswap/live/close",
            &json!({"_id": upstream_id}),
        )
        .await;
    assert_eq!(closed["code"], 1000);

    monitor::run_once(&app.state, &app.workers).await.unwrap();
    let s = session(&app, &token, &id).await;
    assert_eq!(
        (s["state"].as_str(), s["close_reason"].as_str()),
        (Some("closed"), Some("reconciled"))
    );
    assert_eq!(
        app.sim_stats().await.calls.close,
        1,
        "no second close was sent"
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_dead_create_whose_upstream_id_was_recorded_is_closed_upstream(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (tenant, _token) = tenant_with(&app, |_| {}).await;
    let tenant_id = faceswap_gateway::domain::ids::TenantId::parse(&tenant.tenant_id)
        .unwrap()
        .0;
    // The upstream created the session and its id was stored, then the process died.
    let created = app
        .upstream_call(
            "/api/open/v3/faceswap/live/create",
            &json!({"sourceImage": [{"path": "https://images.example/a.jpg", "opts": "1,2:3,4:5,6:7,8"}]}),
        )
        .await;
    let upstream_id = created["data"]["_id"].as_str().unwrap().to_owned();
    let dead = faceswap_gateway::domain::ids::SessionId::generate().0;
    sqlx::query(
        "insert into sessions (session_id, tenant_id, upstream_id, state, source_image, created_at)
         values ($1, $2, $3, 'creating', '[]', now() - interval '5 minutes')",
    )
    .bind(dead)
    .bind(tenant_id)
    .bind(&upstream_id)
    .execute(&app.pool)
    .await
    .unwrap();

    reap(&app).await;
    assert!(
        app.sim_stats().await.open_sessions.is_empty(),
        "closed upstream"
    );
    let (state, reason): (String, Option<String>) =
        sqlx::query_as("select state, close_reason from sessions where session_id = $1")
            .bind(dead)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (state.as_str(), reason.as_deref()),
        ("closed", Some("reconciled"))
    );
    let charges: i64 = sqlx::query_scalar("select count(*) from usage_ledger")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(charges, 1);
}
