use std::time::Duration;

use faceswap_testkit::{TestApp, eventually};
use serde_json::{Value, json};
use sqlx::PgPool;

const ADMIN: &str = "ops-token-0123456789abcdefghij";

async fn spawn(pool: PgPool) -> TestApp {
    TestApp::builder()
        .args(&["--admin-tokens", &format!("ops:{ADMIN}")])
        .spawn(pool)
        .await
}

async fn admin(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    app.admin_call(ADMIN, method, path, body).await
}

async fn get_token(app: &TestApp, client_id: &str, secret: &str) -> (u16, Value) {
    app.post(
        "/api/open/v3/getToken",
        &json!({"clientId": client_id, "clientSecret": secret}),
        None,
    )
    .await
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_admin_api_takes_only_the_admin_credential(pool: PgPool) {
    let app = spawn(pool.clone()).await;
    let tenant_token = app.token(&app.tenant(1, None).await).await;
    let (status, body) = app.get("/admin/tenants", None).await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(1102)), "{body}");
    let (status, body) = app.get("/admin/tenants", Some(&tenant_token)).await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (401, Some(1101)),
        "a tenant token is refused: {body}"
    );
    let (status, _) = app
        .get("/admin/tenants", Some("ops-token-0123456789abcdefghiX"))
        .await;
    assert_eq!(status, 401);
    let (status, body) = admin(&app, "GET", "/admin/tenants", None).await;
    assert_eq!(status, 200, "{body}");

    let disabled = TestApp::spawn(pool).await;
    let (status, body) = disabled.get("/admin/tenants", Some(ADMIN)).await;
    assert_eq!(status, 401);
    assert!(
        body["msg"]
            .as_str()
            .unwrap()
            .contains("GATEWAY_ADMIN_TOKENS"),
        "{body}"
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn tenants_are_created_changed_and_audited_by_the_admin(pool: PgPool) {
    let app = spawn(pool).await;
    let (status, created) = admin(
        &app,
        "POST",
        "/admin/tenants",
        Some(json!({"name": "Acme", "max_concurrent_sessions": 2, "idle_timeout_seconds": 60})),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let c = &created["data"];
    let tenant_id = c["tenant_id"].as_str().unwrap().to_owned();
    let (status, token) = get_token(
        &app,
        c["client_id"].as_str().unwrap(),
        c["client_secret"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{token}");

    let (status, patched) = admin(
        &app,
        "PATCH",
        &format!("/admin/tenants/{tenant_id}"),
        Some(json!({"max_concurrent_sessions": 7, "session_seconds": 3600})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["data"]["max_concurrent_sessions"], 7);
    assert_eq!(patched["data"]["session_seconds_budget"], 3600);
    assert_eq!(
        patched["data"]["idle_timeout_seconds"], 60,
        "untouched fields stay"
    );
    let (_, patched) = admin(
        &app,
        "PATCH",
        &format!("/admin/tenants/{tenant_id}"),
        Some(json!({"session_seconds": null})),
    )
    .await;
    assert!(
        patched["data"]["session_seconds_budget"].is_null(),
        "null removes the budget: {patched}"
    );
    let (status, bad) = admin(
        &app,
        "PATCH",
        &format!("/admin/tenants/{tenant_id}"),
        Some(json!({"max_concurrent_sessions": 0})),
    )
    .await;
    assert_eq!((status, bad["code"].as_i64()), (400, Some(1003)));
    let (status, _) = admin(
        &app,
        "GET",
        "/admin/tenants/ten_00000000000000000000000000000000",
        None,
    )
    .await;
    assert_eq!(status, 404);

    let (_, list) = admin(&app, "GET", "/admin/tenants", None).await;
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["tenant_id"] == tenant_id.as_str())
    );

    let (_, audit) = admin(&app, "GET", "/admin/audit", None).await;
    let actions: Vec<(&str, &str)> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == tenant_id.as_str())
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("ops", "tenant.update"),
            ("ops", "tenant.update"),
            ("ops", "tenant.create")
        ]
    );
    let secret = c["client_secret"].as_str().unwrap();
    assert!(
        !audit.to_string().contains(secret),
        "no secret in the audit log"
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_suspended_tenant_is_refused_and_its_sessions_closed(pool: PgPool) {
    let app = spawn(pool).await;
    let tenant = app.tenant(3, None).await;
    let token = app.token(&tenant).await;
    app.create_session(&token).await;
    app.create_session(&token).await;
    let (status, resp) = admin(
        &app,
        "POST",
        &format!("/admin/tenants/{}/suspend", tenant.tenant_id),
        None,
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["data"]["sessions_closed"], 2);
    assert!(app.sim_stats().await.open_sessions.is_empty());
    let (status, resp) = app.create_session(&token).await;
    assert_eq!((status, resp["code"].as_i64()), (403, Some(4003)), "{resp}");
    let (status, resp) = get_token(&app, &tenant.client_id, &tenant.client_secret).await;
    assert_eq!((status, resp["code"].as_i64()), (403, Some(4003)), "{resp}");
    let (_, sessions) = admin(
        &app,
        "GET",
        &format!("/admin/sessions?tenant_id={}", tenant.tenant_id),
        None,
    )
    .await;
    assert!(
        sessions["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["close_reason"] == "admin"),
        "{sessions}"
    );

    let (status, _) = admin(
        &app,
        "POST",
        &format!("/admin/tenants/{}/resume", tenant.tenant_id),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = app.create_session(&token).await;
    assert_eq!(status, 200);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_revoked_credential_stops_working_on_every_replica_within_seconds(pool: PgPool) {
    let app = spawn(pool).await;
    let replica = app.spawn_replica().await;
    let tenant = app.tenant(1, None).await;
    let token = app.token(&tenant).await;
    assert_eq!(replica.get("/v1/usage", Some(&token)).await.0, 200);

    let (_, creds) = admin(
        &app,
        "GET",
        &format!("/admin/tenants/{}/credentials", tenant.tenant_id),
        None,
    )
    .await;
    let cred = creds["data"][0]["credential_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, revoked) = admin(
        &app,
        "POST",
        &format!("/admin/credentials/{cred}/revoke"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["data"]["revoked_at"].is_string());
    let started = std::time::Instant::now();
    let (status, body) = app.get("/v1/usage", Some(&token)).await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (401, Some(1101)),
        "at once on the replica that revoked: {body}"
    );
    eventually(
        Duration::from_secs(6),
        "the other replica to refuse the token",
        || async { (replica.get("/v1/usage", Some(&token)).await.0 == 401).then_some(()) },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let (status, _) = get_token(&app, &tenant.client_id, &tenant.client_secret).await;
    assert_eq!(status, 401, "a revoked secret gets no new token");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn rotation_issues_a_new_secret_and_revokes_the_old_one(pool: PgPool) {
    let app = spawn(pool).await;
    let tenant = app.tenant(1, None).await;
    let (_, creds) = admin(
        &app,
        "GET",
        &format!("/admin/tenants/{}/credentials", tenant.tenant_id),
        None,
    )
    .await;
    let cred = creds["data"][0]["credential_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, rotated) = admin(
        &app,
        "POST",
        &format!("/admin/credentials/{cred}/rotate"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new = &rotated["data"];
    assert_eq!(
        get_token(&app, &tenant.client_id, &tenant.client_secret)
            .await
            .0,
        401
    );
    let (status, _) = get_token(
        &app,
        new["client_id"].as_str().unwrap(),
        new["client_secret"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = admin(
        &app,
        "POST",
        &format!("/admin/credentials/{cred}/rotate"),
        None,
    )
    .await;
    assert_eq!(status, 409, "a revoked credential cannot be rotated again");

    let (status, key) = admin(
        &app,
        "POST",
        &format!("/admin/tenants/{}/credentials", tenant.tenant_id),
        Some(json!({"kind": "api_key"})),
    )
    .await;
    assert_eq!(status, 200, "{key}");
    let api_key = key["data"]["api_key"].as_str().unwrap();
    let resp = app
        .client
        .get(app.url("/v1/usage"))
        .header("x-api-key", api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_admin_closes_any_session_and_reads_usage_per_period(pool: PgPool) {
    let app = spawn(pool).await;
    let tenant = app.tenant(2, None).await;
    let token = app.token(&tenant).await;
    let (_, created) = app.create_session(&token).await;
    let id = created["data"]["_id"].as_str().unwrap().to_owned();
    let (status, closed) = admin(&app, "POST", &format!("/admin/sessions/{id}/close"), None).await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["data"]["close_reason"], "admin");
    assert!(app.sim_stats().await.open_sessions.is_empty());
    let (status, _) = admin(&app, "POST", &format!("/admin/sessions/{id}/close"), None).await;
    assert_eq!(status, 409);

    let (status, usage) = admin(&app, "GET", "/admin/usage", None).await;
    assert_eq!(status, 200, "{usage}");
    let line = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["tenant_id"] == tenant.tenant_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(line["sessions"], 1);
    let (_, past) = admin(
        &app,
        "GET",
        "/admin/usage?from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z",
        None,
    )
    .await;
    let line = past["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["tenant_id"] == tenant.tenant_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(line["sessions"], 0, "nothing charged in another period");
    let (status, _) = admin(&app, "GET", "/admin/usage?from=nope", None).await;
    assert_eq!(status, 400);
}

// Found by schemathesis: a NUL reached Postgres and answered 503.
#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn nul_characters_are_refused_before_postgres(pool: PgPool) {
    let app = spawn(pool).await;
    let (status, body) = admin(
        &app,
        "POST",
        "/admin/tenants",
        Some(json!({"name": "a\u{0}b"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], 1003);
    let (status, body) = get_token(&app, "cli_\u{0}", "secret").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], 1101);
}
