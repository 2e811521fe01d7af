//! Open sessions served from a replica's memory: never stale past an announced change, activity
//! still written, and nothing trusted across a lost listener.

use std::time::Duration;

use faceswap_testkit::{TestApp, eventually};
use serde_json::{Value, json};
use sqlx::PgPool;

/// A gateway whose upstream sessions stay queuing for the whole test: a status change would be
/// recorded, and announced, by whichever `info` saw it first, dropping the session from memory
/// at a moment the test does not choose.
async fn spawn(pool: PgPool) -> TestApp {
    TestApp::builder()
        .sim_flags(&["--queue-delay-ms", "600000"])
        .spawn(pool)
        .await
}

async fn listening(app: &TestApp) {
    eventually(
        Duration::from_secs(5),
        "the session cache listening",
        || async { app.state.session_cache.is_listening().then_some(()) },
    )
    .await;
}

async fn open_session(app: &TestApp) -> (String, String) {
    let tenant = app.tenant(10, None).await;
    let token = app.token(&tenant).await;
    let (status, created) = app.create_session(&token).await;
    assert_eq!(status, 200, "{created}");
    (token, created["data"]["_id"].as_str().unwrap().to_owned())
}

async fn info(app: &TestApp, token: &str, id: &str) -> Value {
    let (status, body) = app
        .post(
            "/api/open/v3/faceswap/live/info",
            &json!({ "_id": id }),
            Some(token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

fn uuid_of(id: &str) -> uuid::Uuid {
    faceswap_gateway::domain::ids::SessionId::parse(id)
        .unwrap()
        .0
}

/// Runs `sql`, binding the session's uuid.
async fn on_session(app: &TestApp, sql: &'static str, id: &str) {
    sqlx::query(sql)
        .bind(uuid_of(id))
        .execute(&app.pool)
        .await
        .unwrap();
}

/// The one value `sql` selects, binding the session's uuid.
async fn of_session<T>(app: &TestApp, sql: &'static str, id: &str) -> T
where
    T: Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    sqlx::query_scalar(sql)
        .bind(uuid_of(id))
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Runs `sql` (binding the session's uuid) with the change trigger off: a change whose
/// announcement is lost.
async fn change_unannounced(app: &TestApp, sql: &'static str, id: &str) {
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("alter table sessions disable trigger sessions_changed")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(sql)
        .bind(uuid_of(id))
        .execute(&mut *tx)
        .await
        .unwrap();
    // The usage totals' triggers wait for the commit; Postgres alters no table with such
    // events pending, so they run now.
    sqlx::query("set constraints all immediate")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("alter table sessions enable trigger sessions_changed")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn info_on_a_session_read_before_reads_nothing_from_postgres(pool: PgPool) {
    let app = spawn(pool).await;
    listening(&app).await;
    let (token, id) = open_session(&app).await;
    info(&app, &token, &id).await;
    assert_eq!(app.state.session_cache.len(), 1);
    // A change made without its announcement is invisible to calls served from memory; the
    // same change announced is seen.
    change_unannounced(
        &app,
        "update sessions set channel_id = 'changed-quietly' where session_id = $1",
        &id,
    )
    .await;
    assert_ne!(
        info(&app, &token, &id).await["channel_id"],
        "changed-quietly"
    );

    on_session(
        &app,
        "update sessions set channel_id = 'changed' where session_id = $1",
        &id,
    )
    .await;
    eventually(Duration::from_secs(5), "the announced change", || async {
        (info(&app, &token, &id).await["channel_id"] == "changed").then_some(())
    })
    .await;
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_session_closed_through_another_replica_is_not_served_open(pool: PgPool) {
    let app = spawn(pool).await;
    let other = app.spawn_replica().await;
    listening(&app).await;
    let (token, id) = open_session(&app).await;
    assert_eq!(info(&app, &token, &id).await["state"], "open");
    assert_eq!(app.state.session_cache.len(), 1);

    let (status, body) = other
        .post(
            "/api/open/v3/faceswap/live/close",
            &json!({ "_id": id }),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(5), "the close announced", || async {
        app.state.session_cache.is_empty().then_some(())
    })
    .await;
    let seen = info(&app, &token, &id).await;
    assert_eq!(seen["state"], "closed", "{seen}");
    assert!(
        app.state.session_cache.is_empty(),
        "closed sessions are not remembered"
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn activity_on_a_session_served_from_memory_is_written(pool: PgPool) {
    let app = spawn(pool).await;
    listening(&app).await;
    let (token, id) = open_session(&app).await;
    info(&app, &token, &id).await;
    // Activity alone is not announced, so the replica keeps serving the session from memory.
    on_session(
        &app,
        "update sessions set last_activity_at = now() - interval '30 seconds' where session_id = $1",
        &id,
    )
    .await;
    assert_eq!(app.state.session_cache.len(), 1);
    info(&app, &token, &id).await;
    eventually(Duration::from_secs(5), "the activity written", || async {
        let age: f64 = of_session(
            &app,
            "select extract(epoch from now() - last_activity_at)::float8 from sessions where session_id = $1",
            &id,
        )
        .await;
        (age < 5.0).then_some(())
    })
    .await;
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_lost_listener_empties_the_cache_until_it_listens_again(pool: PgPool) {
    let app = spawn(pool).await;
    listening(&app).await;
    let (token, id) = open_session(&app).await;
    info(&app, &token, &id).await;
    assert_eq!(app.state.session_cache.len(), 1);

    // Announcements made while the listener is away are lost, so nothing remembered before
    // may be served after: the session closed meanwhile must be answered closed.
    let terminated: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity
          where datname = current_database() and query like 'LISTEN%'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(terminated, [true], "one listener per replica");
    change_unannounced(
        &app,
        "update sessions set state = 'closed', closed_at = now(), close_reason = 'reconciled'
          where session_id = $1",
        &id,
    )
    .await;

    eventually(Duration::from_secs(5), "the cache emptied", || async {
        app.state.session_cache.is_empty().then_some(())
    })
    .await;
    listening(&app).await;
    assert_eq!(info(&app, &token, &id).await["state"], "closed");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn every_call_that_sees_a_status_change_answers_the_new_status(pool: PgPool) {
    let app = spawn(pool).await;
    listening(&app).await;
    let (token, id) = open_session(&app).await;
    assert_eq!(info(&app, &token, &id).await["faceswap_status"], 1);
    let upstream_id: String = of_session(
        &app,
        "select upstream_id from sessions where session_id = $1",
        &id,
    )
    .await;
    app.sim_post(&format!("/sim/sessions/{upstream_id}/fail"))
        .await;

    // Calls at once, each holding the remembered row with status 1: one records the change,
    // the others find it recorded.
    let calls = (0..20).map(|_| info(&app, &token, &id));
    for data in futures_util::future::join_all(calls).await {
        assert_eq!(data["faceswap_status"], 4, "{data}");
    }
    let changes: i64 = of_session(
        &app,
        "select count(*) from session_events where session_id = $1 and event_type = 'session.status_changed'",
        &id,
    )
    .await;
    assert_eq!(changes, 1, "one event for the one change");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn calls_that_miss_one_session_at_once_read_it_once(pool: PgPool) {
    let app = spawn(pool).await;
    listening(&app).await;
    let (token, id) = open_session(&app).await;
    // Not remembered yet. Its activity is made older than the write resolution, so the read
    // updates the row; the row is then held, so the read waits until every call has missed it.
    on_session(
        &app,
        "update sessions set last_activity_at = now() - interval '10 seconds' where session_id = $1",
        &id,
    )
    .await;
    let mut held = app.pool.begin().await.unwrap();
    sqlx::query("select 1 from sessions where session_id = $1 for update")
        .bind(uuid_of(&id))
        .execute(&mut *held)
        .await
        .unwrap();
    let calls = futures_util::future::join_all((0..20).map(|_| info(&app, &token, &id)));
    let release = async {
        eventually(
            Duration::from_secs(10),
            "19 calls joining the read",
            || async { (app.state.session_cache.joined_reads() == 19).then_some(()) },
        )
        .await;
        held.commit().await.unwrap();
    };
    let (answers, ()) = tokio::join!(calls, release);
    for data in answers {
        assert_eq!(data["_id"], id.as_str(), "{data}");
    }
    assert_eq!(app.state.session_cache.joined_reads(), 19);
    assert_eq!(app.state.session_cache.len(), 1);
}
