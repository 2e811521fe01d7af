//! The archive of generated resources: discovery, streaming copies into object storage (a local
//! directory and a real S3-compatible server), retries, the at-risk alarm, expiry, retention,
//! tenant access, and the archiver's memory use on a 200 MB recording.
//!
//! The S3 tests need the server of `scripts/s3-server.sh` (`scripts/test.sh` starts it); run
//! `eval "$(scripts/s3-server.sh)"` before `cargo test` by hand.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use faceswap_gateway::domain::ids::{ResourceId, SessionId};
use faceswap_gateway::service::archive as archive_service;
use faceswap_gateway::workers::{Outcome, archiver};
use faceswap_testkit::{TestApp, TestTenant, b64, eventually, testdata};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Local,
    S3,
}

/// An object store URL private to one test: a fresh directory, or a fresh prefix in the
/// bucket of `scripts/s3-server.sh`.
fn store_url(store: Store) -> (String, Option<PathBuf>) {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    match store {
        Store::Local => {
            let dir = std::env::temp_dir().join(format!("faceswap-archive-test/{unique}"));
            (format!("file://{}", dir.display()), Some(dir))
        }
        Store::S3 => {
            let bucket = std::env::var("FACESWAP_TEST_S3_BUCKET").expect(
                "the S3 archive tests need an S3 server: run `eval \"$(scripts/s3-server.sh)\"` \
                 first (scripts/test.sh does)",
            );
            (format!("s3://{bucket}/tests/{unique}"), None)
        }
    }
}

struct Setup {
    app: TestApp,
    url: String,
    dir: Option<PathBuf>,
    tenant: TestTenant,
    token: String,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn setup(pool: PgPool, store: Store, sim_flags: &[&str], extra: &[&str]) -> Setup {
    let (url, dir) = store_url(store);
    let mut args = vec![
        "--ssrf-allow",
        "127.0.0.1/32",
        "--object-store-url",
        &url,
        "--archive-retry-base-ms",
        "20",
    ];
    args.extend_from_slice(extra);
    let app = TestApp::builder()
        .sim_flags(sim_flags)
        .args(&args)
        .spawn(pool)
        .await;
    let tenant = app.tenant(5, None).await;
    let token = app.token(&tenant).await;
    Setup {
        app,
        url,
        dir,
        tenant,
        token,
    }
}

/// Runs the archiver until it has nothing left to do.
async fn drive(app: &TestApp) {
    for _ in 0..100 {
        if archiver::run_once(&app.state, &app.workers).await.unwrap() == Outcome::Idle {
            return;
        }
    }
    panic!("the archiver never went idle");
}

/// Creates and closes a session; returns its id.
async fn closed_session(app: &TestApp, token: &str) -> String {
    let (status, created) = app.create_session(token).await;
    assert_eq!(status, 200, "{created}");
    let id = created["data"]["_id"].as_str().unwrap().to_owned();
    let (status, closed) = app
        .post(
            "/api/open/v3/faceswap/live/close",
            &json!({"_id": id}),
            Some(token),
        )
        .await;
    assert_eq!(status, 200, "{closed}");
    id
}

async fn session_resources(app: &TestApp, token: &str, session: &str) -> Vec<Value> {
    let (status, body) = app
        .get(&format!("/v1/sessions/{session}/resources"), Some(token))
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["resources"].as_array().unwrap().clone()
}

/// `(resource_id, source_url, object_key)` of every resource, oldest first.
async fn rows(app: &TestApp) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as::<_, (uuid::Uuid, String, Option<String>)>(
        "select resource_id, source_url, object_key from resources order by resource_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(id, url, key)| (ResourceId(id).to_string(), url, key))
    .collect()
}

async fn events(app: &TestApp, kind: &str) -> Vec<Value> {
    sqlx::query_scalar::<_, sqlx::types::Json<Value>>(
        "select payload from session_events where event_type = $1 order by event_id",
    )
    .bind(kind)
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|p| p.0)
    .collect()
}

fn sha256(bytes: &[u8]) -> String {
    faceswap_gateway::domain::resources::hex(&Sha256::digest(bytes))
}

/// The SHA-256 and size of what a URL serves, read as a stream.
async fn sha256_of_url(app: &TestApp, url: &str) -> (String, u64) {
    use futures_util::StreamExt;
    let resp = app.client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (
        faceswap_gateway::domain::resources::hex(&hasher.finalize()),
        size,
    )
}

async fn fetch(app: &TestApp, token: &str, resource: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/v1/resources/{resource}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn archives_byte_identical_and_serves_after_upstream_expiry(pool: PgPool, store: Store) {
    let s = setup(
        pool,
        store,
        &[
            "--resource-retention-seconds",
            "4",
            "--recording-bytes",
            "12000000",
        ],
        &["--archive-alarm-margin-seconds", "1"],
    )
    .await;
    let app = &s.app;
    let session = closed_session(app, &s.token).await;

    // The close recorded what the upstream minted.
    let listed = session_resources(app, &s.token, &session).await;
    let kinds: Vec<&str> = listed.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["snapshot", "recording"]);
    assert!(listed.iter().all(|r| r["state"] == "pending"), "{listed:?}");
    assert!(listed.iter().all(|r| r["href"].is_null()));

    // What the simulator serves, read before it deletes it.
    let mut expected = Vec::new();
    for (id, url, _) in rows(app).await {
        expected.push((id, url.clone(), sha256_of_url(app, &url).await));
    }

    drive(app).await;

    let listed = session_resources(app, &s.token, &session).await;
    for r in &listed {
        let (_, _, (sha, size)) = expected
            .iter()
            .find(|(id, _, _)| r["resource_id"] == *id)
            .unwrap();
        assert_eq!(r["state"], "archived", "{r}");
        assert_eq!(r["sha256"], *sha, "{r}");
        assert_eq!(r["size"], *size, "{r}");
        assert_eq!(r["_id"], session);
        assert!(r["archived_at"].as_i64().unwrap() > 0);
        assert_eq!(
            r["href"],
            format!("/v1/resources/{}", r["resource_id"].as_str().unwrap())
        );
    }
    let archived = events(app, "resource.archived").await;
    assert_eq!(archived.len(), 2, "{archived:?}");
    assert!(archived.iter().all(|e| e["_id"] == session));

    // Keys name the tenant and the session; the objects are in the store.
    for (id, _, key) in rows(app).await {
        let key = key.unwrap();
        let prefix = format!("tenants/{}/sessions/{session}/{id}-", s.tenant.tenant_id);
        assert!(key.starts_with(&prefix), "{key}");
        assert!(
            key.ends_with("-snapshot.png") || key.ends_with("-recording.mp4"),
            "{key}"
        );
        let (size, _) = app.state.archive.storage.get(&key).await.unwrap();
        assert!(size > 0);
        if let Some(dir) = &s.dir {
            assert!(dir.join(&key).is_file(), "{key} under {}", dir.display());
        }
    }

    // The upstream copies expire; the archived ones are still served, byte for byte.
    for (_, url, _) in &expected {
        eventually(
            Duration::from_secs(10),
            "the simulator to delete its copy",
            || async {
                let status = app.client.get(url).send().await.unwrap().status();
                (status == 404).then_some(())
            },
        )
        .await;
    }
    for (id, _, (sha, size)) in &expected {
        let resp = fetch(app, &s.token, id).await;
        assert_eq!(resp.status(), 200);
        let headers = resp.headers().clone();
        assert!(
            ["image/png", "video/mp4"].contains(&headers["content-type"].to_str().unwrap()),
            "{headers:?}"
        );
        assert_eq!(headers["content-length"], size.to_string().as_str());
        assert_eq!(headers["etag"], format!("\"{sha}\"").as_str());
        assert!(
            headers["repr-digest"]
                .to_str()
                .unwrap()
                .starts_with("sha-256=:")
        );
        let body = resp.bytes().await.unwrap();
        assert_eq!(sha256(&body), *sha);
    }
    for (_, _, key) in rows(app).await {
        app.state
            .archive
            .storage
            .delete(&key.unwrap())
            .await
            .unwrap();
    }
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn local_a_resource_is_archived_byte_identical_and_served_after_upstream_expiry(
    pool: PgPool,
) {
    archives_byte_identical_and_serves_after_upstream_expiry(pool, Store::Local).await;
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn s3_a_resource_is_archived_byte_identical_and_served_after_upstream_expiry(pool: PgPool) {
    archives_byte_identical_and_serves_after_upstream_expiry(pool, Store::S3).await;
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn another_tenant_can_neither_list_nor_fetch_a_resource(pool: PgPool) {
    let s = setup(pool, Store::Local, &[], &[]).await;
    let app = &s.app;
    let session = closed_session(app, &s.token).await;
    drive(app).await;
    let (id, _, _) = rows(app).await.remove(0);
    assert_eq!(fetch(app, &s.token, &id).await.status(), 200);

    let other = app.tenant(5, None).await;
    let other_token = app.token(&other).await;
    let (status, body) = app
        .get(
            &format!("/v1/sessions/{session}/resources"),
            Some(&other_token),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (404, Some(4004)), "{body}");
    let missing = ResourceId::generate().to_string();
    let foreign = fetch(app, &other_token, &id).await;
    let absent = fetch(app, &other_token, &missing).await;
    assert_eq!(
        (foreign.status().as_u16(), absent.status().as_u16()),
        (404, 404)
    );
    let (foreign, absent): (Value, Value) =
        (foreign.json().await.unwrap(), absent.json().await.unwrap());
    assert_eq!(foreign, absent, "another tenant's resource looks missing");
    assert_eq!(foreign["code"], 4004);
    assert_eq!(fetch(app, &other_token, "not-an-id").await.status(), 404);
    let (status, page) = app.get("/v1/resources", Some(&other_token)).await;
    assert_eq!(status, 200);
    assert_eq!(page["data"]["resources"], json!([]));
    let (status, page) = app
        .get(
            &format!("/v1/resources?session_id={session}"),
            Some(&s.token),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["data"]["resources"].as_array().unwrap().len(), 2);

    let anonymous = app
        .client
        .get(app.url(&format!("/v1/resources/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_face_crop_whose_download_fails_twice_is_archived_on_the_third_try(pool: PgPool) {
    let s = setup(pool, Store::Local, &[], &[]).await;
    let app = &s.app;
    let (status, detected) = app
        .post(
            "/detect",
            &json!({"img": b64(&testdata("face.jpg")), "single_face": true, "return_face_urls": true}),
            Some(&s.token),
        )
        .await;
    assert_eq!(status, 200, "{detected}");
    let urls = detected["face_urls"].as_array().unwrap().clone();
    assert_eq!(urls.len(), 1, "{detected}");

    let (_, page) = app.get("/v1/resources", Some(&s.token)).await;
    let listed = page["data"]["resources"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{page}");
    assert_eq!(
        (listed[0]["kind"].as_str(), &listed[0]["_id"]),
        (Some("face"), &Value::Null)
    );
    let id = listed[0]["resource_id"].as_str().unwrap().to_owned();

    app.sim_config(json!({"resource_fail_count": 2})).await;
    let archived = eventually(Duration::from_secs(10), "the third try", || async {
        archiver::run_once(&app.state, &app.workers).await.unwrap();
        let (_, page) = app.get("/v1/resources", Some(&s.token)).await;
        let r = page["data"]["resources"][0].clone();
        (r["state"] == "archived").then_some(r)
    })
    .await;
    assert_eq!(archived["attempts"], 2, "{archived}");
    let stats = app.sim_stats().await;
    assert_eq!((stats.resources.downloads, stats.resources.failed), (3, 2));

    let (sha, size) = sha256_of_url(app, urls[0].as_str().unwrap()).await;
    assert_eq!(archived["sha256"], sha);
    assert_eq!(archived["size"], size);
    assert_eq!(archived["content_type"], "image/png");
    let served = fetch(app, &s.token, &id).await.bytes().await.unwrap();
    assert_eq!(sha256(&served), sha);
    assert!(served.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG crop");
    let key = rows(app).await.remove(0).2.unwrap();
    assert!(
        key.starts_with(&format!(
            "tenants/{}/detections/{id}-face.png",
            s.tenant.tenant_id
        )),
        "{key}"
    );
    let archived_events = events(app, "resource.archived").await;
    assert_eq!(archived_events.len(), 1);
    assert_eq!(archived_events[0]["_id"], Value::Null);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_resource_whose_deadline_passes_unarchived_raises_the_alarm_and_is_marked_expired(
    pool: PgPool,
) {
    let s = setup(
        pool,
        Store::Local,
        &["--resource-retention-seconds", "2"],
        &[],
    )
    .await;
    let app = &s.app;
    app.sim_config(json!({"resource_fail_count": 1_000_000}))
        .await;
    let session = closed_session(app, &s.token).await;
    assert_eq!(session_resources(app, &s.token, &session).await.len(), 2);

    eventually(Duration::from_secs(15), "both to expire", || async {
        archiver::run_once(&app.state, &app.workers).await.unwrap();
        let listed = session_resources(app, &s.token, &session).await;
        listed.iter().all(|r| r["state"] == "expired").then_some(())
    })
    .await;
    drive(app).await;

    // One alarm per resource however many steps ran, then one expiry each; nothing archived.
    let alarms = events(app, "resource.archive_at_risk").await;
    assert_eq!(alarms.len(), 2, "{alarms:?}");
    let expired = events(app, "resource.expired").await;
    assert_eq!(expired.len(), 2, "{expired:?}");
    assert!(expired.iter().all(|e| e["_id"] == session
        && e["attempts"].as_i64().unwrap() >= 1
        && e["last_error"].as_str().unwrap().contains("500")));
    assert!(events(app, "resource.archived").await.is_empty());
    for r in session_resources(app, &s.token, &session).await {
        assert_eq!(r["state"], "expired");
        let resp = fetch(app, &s.token, r["resource_id"].as_str().unwrap()).await;
        assert_eq!(resp.status(), 409);
    }
    let backlog = archive_service::backlog(&app.state).await.unwrap();
    assert_eq!((backlog.pending, backlog.at_risk), (0, 0));
    assert_eq!(backlog.oldest_deadline, None);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_alarm_counts_the_backlog_before_the_deadline(pool: PgPool) {
    let s = setup(pool, Store::Local, &[], &[]).await;
    let app = &s.app;
    app.sim_config(json!({"resource_fail_count": 1_000_000}))
        .await;
    let session = closed_session(app, &s.token).await;
    let before = archive_service::backlog(&app.state).await.unwrap();
    assert_eq!((before.pending, before.at_risk), (2, 0));
    assert!(before.oldest_deadline.unwrap() > chrono::Utc::now() + chrono::Duration::days(6));
    // Six days and a half later the deadline is within the default one-day margin.
    sqlx::query("update resources set upstream_expires_at = now() + interval '12 hours'")
        .execute(&app.pool)
        .await
        .unwrap();
    archiver::run_once(&app.state, &app.workers).await.unwrap();
    let after = archive_service::backlog(&app.state).await.unwrap();
    assert_eq!((after.pending, after.at_risk), (2, 2));
    let alarms = events(app, "resource.archive_at_risk").await;
    assert_eq!(alarms.len(), 2);
    assert!(alarms.iter().all(|a| a["_id"] == session));
}

async fn retention_deletes(pool: PgPool, store: Store) {
    let s = setup(pool, store, &[], &[]).await;
    let app = &s.app;
    let session = closed_session(app, &s.token).await;
    drive(app).await;
    let tenant = faceswap_gateway::domain::ids::TenantId::parse(&s.tenant.tenant_id).unwrap();
    archive_service::set_retention(&app.pool, tenant, 1)
        .await
        .unwrap();
    drive(app).await;
    assert!(
        session_resources(app, &s.token, &session)
            .await
            .iter()
            .all(|r| r["state"] == "archived"),
        "kept within the retention"
    );

    sqlx::query("update resources set archived_at = now() - interval '25 hours'")
        .execute(&app.pool)
        .await
        .unwrap();
    drive(app).await;
    for r in session_resources(app, &s.token, &session).await {
        assert_eq!(r["state"], "deleted", "{r}");
        let resp = fetch(app, &s.token, r["resource_id"].as_str().unwrap()).await;
        assert_eq!(resp.status(), 409);
    }
    for (_, _, key) in rows(app).await {
        assert!(matches!(
            app.state.archive.storage.get(&key.unwrap()).await,
            Err(faceswap_gateway::archive::StorageError::NotFound)
        ));
    }
    let deleted = events(app, "resource.deleted").await;
    assert_eq!(deleted.len(), 2, "{deleted:?}");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn local_retention_deletes_archived_objects_with_an_event(pool: PgPool) {
    retention_deletes(pool, Store::Local).await;
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn s3_retention_deletes_archived_objects_with_an_event(pool: PgPool) {
    retention_deletes(pool, Store::S3).await;
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_tenants_close_records_the_resources_it_minted_before_answering(pool: PgPool) {
    let s = setup(pool, Store::Local, &[], &[]).await;
    let app = &s.app;
    let session = closed_session(app, &s.token).await;
    // No archiver has run: the close itself recorded them and marked the session checked.
    let listed = session_resources(app, &s.token, &session).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|r| r["state"] == "pending"), "{listed:?}");
    let (state, checked): (String, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("select state, resources_checked_at from sessions where session_id = $1")
            .bind(SessionId::parse(&session).unwrap().0)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(state, "closed");
    assert!(checked.is_some(), "the archiver has no lookup left to do");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_closed_session_whose_lookup_failed_is_looked_up_by_the_archiver(pool: PgPool) {
    let s = setup(pool, Store::Local, &[], &[]).await;
    let app = &s.app;
    let session = closed_session(app, &s.token).await;
    // As if the lookup right after the close had failed.
    sqlx::query("delete from resources")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("update sessions set resources_checked_at = null")
        .execute(&app.pool)
        .await
        .unwrap();
    assert!(session_resources(app, &s.token, &session).await.is_empty());
    drive(app).await;
    let listed = session_resources(app, &s.token, &session).await;
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().all(|r| r["state"] == "archived"),
        "{listed:?}"
    );
    let checked: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select resources_checked_at from sessions where session_id = $1")
            .bind(SessionId::parse(&session).unwrap().0)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(checked.is_some());
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_refused_resource_url_fails_for_good(pool: PgPool) {
    // Without the loopback allowance the simulator's URLs are private addresses.
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let token = app.token(&tenant).await;
    let session = closed_session(&app, &token).await;
    drive(&app).await;
    let listed = session_resources(&app, &token, &session).await;
    assert!(listed.iter().all(|r| r["state"] == "failed"), "{listed:?}");
    assert_eq!(events(&app, "resource.failed").await.len(), 2);
    assert_eq!(app.sim_stats().await.resources.downloads, 0);
}

/// Peak memory of a worker process archiving a 200 MiB recording.
///
/// A `faceswap-gateway serve --role worker` child process archives the recording while the
/// test samples its resident set from `/proc`; the growth is its peak (`VmHWM`) minus its idle
/// resident set before the work arrived.
async fn memory_growth_archiving_200_mib(pool: PgPool, store: Store) {
    const SIZE: u64 = 200 * 1024 * 1024;
    let size = SIZE.to_string();
    let s = setup(pool, store, &["--recording-bytes", &size], &[]).await;
    let app = &s.app;

    let db_name: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut db_url =
        url::Url::parse(&std::env::var("DATABASE_URL").expect("DATABASE_URL is set for the tests"))
            .unwrap();
    db_url.set_path(&db_name);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis_url = faceswap_testkit::redis_url();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_faceswap-gateway"))
        .args(["serve", "--role", "worker"])
        .env("DATABASE_URL", db_url.as_str())
        .env("REDIS_URL", redis_url)
        .env("GATEWAY_REDIS_PREFIX", &app.redis_prefix)
        .env("GATEWAY_BIND", format!("127.0.0.1:{port}"))
        .env("UPSTREAM_BASE_URL", app.sim.base_url())
        .env("UPSTREAM_CLIENT_ID", faceswap_testkit::SIM_CLIENT_ID)
        .env(
            "UPSTREAM_CLIENT_SECRET",
            faceswap_testkit::SIM_CLIENT_SECRET,
        )
        .env("OBJECT_STORE_URL", &s.url)
        .env("GATEWAY_SSRF_ALLOW", "127.0.0.1/32")
        .env("GATEWAY_SKIP_MIGRATIONS", "true")
        .env("GATEWAY_WORKER_TICK_MS", "50")
        .env("GATEWAY_DB_MAX_CONNECTIONS", "4")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    let pid = child.0.id();
    eventually(
        Duration::from_secs(60),
        "the worker to serve /livez",
        || async {
            let resp = app
                .client
                .get(format!("http://127.0.0.1:{port}/livez"))
                .send()
                .await
                .ok()?;
            resp.status().is_success().then_some(())
        },
    )
    .await;
    // The idle resident set: the largest of a few samples over some idle worker steps.
    let mut baseline = 0;
    for _ in 0..25 {
        baseline = baseline.max(proc_kib(pid, "VmRSS:"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let session = closed_session(app, &s.token).await;
    let peak = std::sync::atomic::AtomicU64::new(baseline);
    let (peak_ref, token, session_ref) = (&peak, &s.token, &session);
    eventually(
        Duration::from_secs(300),
        "the worker to archive 200 MiB",
        || async move {
            peak_ref.fetch_max(
                proc_kib(pid, "VmRSS:"),
                std::sync::atomic::Ordering::Relaxed,
            );
            let listed = session_resources(app, token, session_ref).await;
            listed
                .iter()
                .all(|r| r["state"] == "archived")
                .then_some(())
        },
    )
    .await;
    let peak_sampled = peak.into_inner();
    let elapsed = started.elapsed();
    let hwm = proc_kib(pid, "VmHWM:");
    drop(child);

    let growth_kib = hwm.saturating_sub(baseline);
    println!(
        "archiver memory ({store:?} store): idle RSS {:.1} MiB, peak sampled RSS {:.1} MiB, VmHWM {:.1} MiB, \
         growth {:.1} MiB (limit 64 MiB); archived 200 MiB in {:.1} s",
        baseline as f64 / 1024.0,
        peak_sampled as f64 / 1024.0,
        hwm as f64 / 1024.0,
        growth_kib as f64 / 1024.0,
        elapsed.as_secs_f64(),
    );
    assert!(
        growth_kib < 64 * 1024,
        "the worker grew by {growth_kib} KiB while archiving"
    );

    let listed = session_resources(app, &s.token, &session).await;
    let recording = listed.iter().find(|r| r["kind"] == "recording").unwrap();
    assert_eq!(recording["size"], SIZE);
    let url = rows(app)
        .await
        .into_iter()
        .find(|(id, _, _)| recording["resource_id"] == *id)
        .unwrap()
        .1;
    let (sha, _) = sha256_of_url(app, &url).await;
    assert_eq!(recording["sha256"], sha);
    for (_, _, key) in rows(app).await {
        app.state
            .archive
            .storage
            .delete(&key.unwrap())
            .await
            .unwrap();
    }
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn local_archiving_a_200_mb_recording_keeps_the_workers_memory_growth_under_64_mb(
    pool: PgPool,
) {
    memory_growth_archiving_200_mib(pool, Store::Local).await;
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn s3_archiving_a_200_mb_recording_keeps_the_workers_memory_growth_under_64_mb(pool: PgPool) {
    memory_growth_archiving_200_mib(pool, Store::S3).await;
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `kB` line of `/proc/<pid>/status`.
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
