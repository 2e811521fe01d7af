use faceswap_testkit::TestApp;
use futures_util::future::join_all;
use serde_json::{Value, json};
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

/// The tenant's running totals (kept by triggers, per shard) against a count of its rows.
async fn assert_totals_match_a_recount(pool: &PgPool) {
    type Totals = Vec<(uuid::Uuid, i16, i64, i64, i64)>;
    let kept: Totals = sqlx::query_as(
        "select tenant_id, shard, active_sessions, active_since_ms, seconds_charged
         from tenant_usage order by tenant_id, shard",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let counted: Totals =
        sqlx::query_as("select * from tenant_usage_recount() order by tenant_id, shard")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(kept, counted, "totals drifted from the rows");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn usage_totals_follow_every_session_change(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(8, Some(1_000_000)).await;
    let other = app.tenant(8, None).await;
    let (token, other_token) = (app.token(&tenant).await, app.token(&other).await);

    let token_for = |i: usize| {
        if i.is_multiple_of(2) {
            &token
        } else {
            &other_token
        }
    };

    let created = join_all((0..12).map(|i| app.create_session(token_for(i)))).await;
    assert!(created.iter().all(|(s, _)| *s == 200), "{created:?}");
    assert_totals_match_a_recount(&app.pool).await;

    // Concurrent closes (each charges the ledger), then more creates.
    let bodies: Vec<_> = created
        .iter()
        .take(6)
        .map(|(_, body)| json!({"_id": body["data"]["_id"]}))
        .collect();
    let calls = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| app.post("/api/open/v3/faceswap/live/close", body, Some(token_for(i))));
    let closed = join_all(calls).await;
    assert!(closed.iter().all(|(s, _)| *s == 200), "{closed:?}");
    let more = join_all((0..4).map(|_| app.create_session(&token))).await;
    assert!(more.iter().all(|(s, _)| *s == 200), "{more:?}");
    assert_totals_match_a_recount(&app.pool).await;

    // A refused create (reservation deleted) and one whose outcome is unknown (marked lost).
    app.sim_config(json!({"error_rate": 1.0})).await;
    assert_eq!(app.create_session(&token).await.0, 502);
    app.sim_config(json!({"error_rate": 0.0, "drop_rate": 1.0}))
        .await;
    assert_eq!(app.create_session(&token).await.0, 502);
    app.sim_config(json!({"drop_rate": 0.0})).await;
    assert_totals_match_a_recount(&app.pool).await;

    let (status, usage) = app.get("/v1/usage", Some(&token)).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["data"]["active_sessions"], 7, "{usage}");
    let charged: i64 = sqlx::query_scalar(
        "select coalesce(sum(seconds), 0)::bigint from usage_ledger where tenant_id = $1",
    )
    .bind(
        faceswap_gateway::domain::ids::TenantId::parse(&tenant.tenant_id)
            .unwrap()
            .0,
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let used = usage["data"]["session_seconds_used"].as_i64().unwrap();
    assert!(
        (charged..=charged + 7 * 5).contains(&used),
        "charged {charged}, used {used}"
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn seconds_of_sessions_holding_a_slot_count_against_the_budget(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5, Some(100)).await;
    let token = app.token(&tenant).await;
    assert_eq!(app.create_session(&token).await.0, 200);
    // The open session was reserved 150 s ago: the budget of 100 is spent.
    sqlx::query("update sessions set created_at = created_at - interval '150 seconds'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_totals_match_a_recount(&app.pool).await;
    let (_, usage) = app.get("/v1/usage", Some(&token)).await;
    let used = usage["data"]["session_seconds_used"].as_i64().unwrap();
    assert!((150..=155).contains(&used), "{usage}");
    let (status, resp) = app.create_session(&token).await;
    assert_eq!((status, resp["code"].as_i64()), (429, Some(1104)), "{resp}");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn creates_and_closes_racing_on_two_replicas_never_exceed_the_limit(pool: PgPool) {
    let a = TestApp::spawn(pool).await;
    let b = a.spawn_replica().await;
    let tenant = a.tenant(3, None).await;
    let token = a.token(&tenant).await;
    let replica = |i: usize| if i.is_multiple_of(2) { &a } else { &b };
    let mut open: Vec<Value> = Vec::new();
    let mut created_total = 0;
    for round in 0..8 {
        // The sessions open so far are closed while six creates race them, across replicas.
        let closes = open
            .iter()
            .enumerate()
            .map(|(i, id)| replica(i).post("/api/open/v3/faceswap/live/close", id, Some(&token)));
        let creates = (0..6).map(|i| replica(i).create_session(&token));
        let (closed, created) = futures_util::join!(join_all(closes), join_all(creates));
        assert!(closed.iter().all(|(s, _)| *s == 200), "{closed:?}");
        assert!(
            created
                .iter()
                .all(|(s, body)| *s == 200 || (*s == 429 && body["code"] == 1104)),
            "{created:?}"
        );
        open = created
            .iter()
            .filter(|(s, _)| *s == 200)
            .map(|(_, body)| json!({"_id": body["data"]["_id"]}))
            .collect();
        assert!(open.len() <= 3, "round {round}: {created:?}");
        if round == 0 {
            assert_eq!(open.len(), 3, "three free slots at first");
        }
        created_total += open.len();
        assert!(active_rows(&a.pool).await <= 3);
        assert!(a.sim_stats().await.open_sessions.len() <= 3);
    }
    // A round that got no slot leaves all three free for the next, so slots freed by closes
    // were taken again: at least 3 + 7.
    assert!(created_total >= 10, "{created_total}");
    assert_totals_match_a_recount(&a.pool).await;
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_quota_read_and_the_usage_triggers_call_no_sql_function_at_run_time(pool: PgPool) {
    // A SQL function the planner does not inline is parsed and planned on every call.
    let plan: serde_json::Value =
        sqlx::query_scalar("explain (format json) select * from tenant_quota_usage($1)")
            .bind(uuid::Uuid::new_v4())
            .fetch_one(&pool)
            .await
            .unwrap();
    let plan = plan.to_string();
    assert!(
        plan.contains("tenant_usage") && !plan.contains("Function Scan"),
        "the quota read is not inlined: {plan}"
    );
    let calling: Vec<String> = sqlx::query_scalar(
        "select tgname::text from pg_trigger
         where tgrelid = 'sessions'::regclass and pg_get_triggerdef(oid) like '%session_holds_slot%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        calling.is_empty(),
        "WHEN clauses calling a SQL function: {calling:?}"
    );
}

/// A session's gateway id as stored.
fn session_uuid(created: &Value) -> uuid::Uuid {
    let id = created["data"]["_id"].as_str().unwrap();
    faceswap_gateway::domain::ids::SessionId::parse(id)
        .unwrap()
        .0
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_close_waits_neither_for_the_tenants_reservations_nor_for_closes_counted_elsewhere(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(20, None).await;
    let tenant_id = faceswap_gateway::domain::ids::TenantId::parse(&tenant.tenant_id)
        .unwrap()
        .0;
    let token = app.token(&tenant).await;
    let shard_of = async |id: uuid::Uuid| -> i16 {
        sqlx::query_scalar("select usage_shard($1)")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    // Two open sessions counted in different shards (ids are random: a few tries at most).
    let mut opened: Vec<(uuid::Uuid, i16)> = Vec::new();
    while !opened.iter().any(|(_, s)| *s != opened[0].1) {
        assert!(
            opened.len() < 20,
            "every session landed in one shard: {opened:?}"
        );
        let (status, body) = app.create_session(&token).await;
        assert_eq!(status, 200, "{body}");
        let id = session_uuid(&body);
        opened.push((id, shard_of(id).await));
    }
    let (to_close, its_shard) = opened[0];
    let (_, busy_shard) = *opened.iter().find(|(_, s)| *s != its_shard).unwrap();

    // A reservation of the tenant holds its gate, and a close counted in another shard holds
    // that shard, both until they commit.
    let lock = "select 1 from tenant_usage where tenant_id = $1 and shard = $2 for update";
    let mut reserving = app.pool.begin().await.unwrap();
    sqlx::query(lock)
        .bind(tenant_id)
        .bind(0_i16)
        .execute(&mut *reserving)
        .await
        .unwrap();
    let mut closing = app.pool.begin().await.unwrap();
    sqlx::query(lock)
        .bind(tenant_id)
        .bind(busy_shard)
        .execute(&mut *closing)
        .await
        .unwrap();

    let body = json!({"_id": faceswap_gateway::domain::ids::SessionId(to_close).to_string()});
    let close = app.post("/api/open/v3/faceswap/live/close", &body, Some(&token));
    let (status, body) = tokio::time::timeout(std::time::Duration::from_secs(10), close)
        .await
        .expect("the close waited for another transaction's totals");
    assert_eq!(status, 200, "{body}");
    // Released now: the create below may count in that shard.
    closing.rollback().await.unwrap();

    // Creates still take the gate one at a time: this one waits for the reservation in flight.
    let create = app.create_session(&token);
    tokio::pin!(create);
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut create).await;
    assert!(
        early.is_err(),
        "a create passed a reservation in flight: {early:?}"
    );
    reserving.rollback().await.unwrap();
    let (status, body) = create.await;
    assert_eq!(status, 200, "{body}");
    assert_totals_match_a_recount(&app.pool).await;
}

#[sqlx::test(migrations = false)]
async fn upgrading_to_sharded_totals_keeps_every_tenants_use(pool: PgPool) {
    // The schema as it was before the totals were split, in a directory of its own.
    let before = std::env::temp_dir().join(format!("faceswap-migrations-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&before).unwrap();
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0012" {
            std::fs::copy(&path, before.join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(before.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    std::fs::remove_dir_all(&before).unwrap();

    // Two tenants with sessions in every state, the closed ones charged.
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    sqlx::query(
        "insert into tenants (tenant_id, name, max_concurrent_sessions)
         values ($1, 'a', 100), ($2, 'b', 100)",
    )
    .bind(a)
    .bind(b)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into sessions (session_id, tenant_id, state, source_image, created_at,
                               closed_at, close_reason)
         select gen_random_uuid(), case when i % 3 = 0 then $1 else $2 end, state, '[]',
                now() - make_interval(secs => i),
                case when state in ('closed', 'lost') then now() end,
                case when state in ('closed', 'lost') then 'client' end
           from generate_series(1, 80) i,
                lateral (select (array['creating', 'open', 'closing', 'closed', 'lost'])[1 + i % 5]
                         as state) s",
    )
    .bind(a)
    .bind(b)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into usage_ledger (tenant_id, session_id, seconds)
         select tenant_id, session_id, 1 + get_byte(uuid_send(session_id), 0) % 60 from sessions
          where state = 'closed'",
    )
    .execute(&pool)
    .await
    .unwrap();
    type Use = Vec<(uuid::Uuid, i64, i64, i64)>;
    let kept_before: Use = sqlx::query_as(
        "select tenant_id, active_sessions, active_since_ms, seconds_charged
         from tenant_usage order by tenant_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(kept_before.len(), 2);
    assert!(
        kept_before
            .iter()
            .all(|(_, active, _, charged)| *active > 0 && *charged > 0)
    );

    faceswap_gateway::MIGRATOR.run(&pool).await.unwrap();
    let kept_after: Use = sqlx::query_as(
        "select tenant_id, sum(active_sessions)::int8, sum(active_since_ms)::int8,
                sum(seconds_charged)::int8
         from tenant_usage group by tenant_id order by tenant_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        kept_after, kept_before,
        "the upgrade changed a tenant's use"
    );
    assert_totals_match_a_recount(&pool).await;
    let gates_hold_nothing: bool = sqlx::query_scalar(
        "select bool_and(active_sessions = 0 and active_since_ms = 0 and seconds_charged = 0)
         from tenant_usage where shard = 0",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(gates_hold_nothing);
}
