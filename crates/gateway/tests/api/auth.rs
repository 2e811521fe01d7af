use faceswap_testkit::TestApp;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::json;
use sqlx::PgPool;

const INFO: &str = "/api/open/v3/faceswap/live/info";

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn get_token_refuses_missing_fields_and_wrong_credentials(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(1, None).await;
    for (body, status, code) in [
        (json!({}), 400, 1003),
        (json!({"clientId": tenant.client_id}), 400, 1003),
        (json!({"clientId": "", "clientSecret": "x"}), 400, 1003),
        (
            json!({"clientId": tenant.client_id, "clientSecret": "wrong"}),
            401,
            1101,
        ),
        (
            json!({"clientId": "ck_unknown", "clientSecret": tenant.client_secret}),
            401,
            1101,
        ),
    ] {
        let (s, resp) = app.post("/api/open/v3/getToken", &body, None).await;
        assert_eq!(
            (s, resp["code"].as_i64()),
            (status, Some(code)),
            "{body} → {resp}"
        );
        assert!(resp.get("token").is_none());
    }
    let resp = app
        .client
        .post(app.url("/api/open/v3/getToken"))
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 1003);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn calls_without_credentials_get_1102_and_bad_ones_1101(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(1, None).await;
    let body = json!({"_id": "ses_0"});
    let (status, resp) = app.post(INFO, &body, None).await;
    assert_eq!((status, resp["code"].as_i64()), (401, Some(1102)), "{resp}");

    // Expired (signed by our own key an hour and more ago), foreign, and malformed tokens.
    let tenant_id = tenant.tenant_id.clone();
    let past = chrono::Utc::now().timestamp() as u64 - 7200;
    let (expired, _) = app
        .state
        .token_keys
        .issue(&tenant_id, uuid::Uuid::nil(), past)
        .unwrap();
    let foreign_keys = faceswap_gateway::auth::jwt::TokenKeys::ephemeral(
        "faceswap-gateway".into(),
        "faceswap-tenants".into(),
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    let (foreign, _) = foreign_keys
        .issue(&tenant_id, uuid::Uuid::nil(), past + 7200)
        .unwrap();
    for token in [expired.as_str(), foreign.as_str(), "not-a-token"] {
        let (status, resp) = app.post(INFO, &body, Some(token)).await;
        assert_eq!((status, resp["code"].as_i64()), (401, Some(1101)), "{resp}");
    }
    let resp = app
        .client
        .post(app.url(INFO))
        .header("authorization", "Basic abc")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn gateway_tokens_verify_against_the_published_jwks(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(1, None).await;
    let token = app.token(&tenant).await;
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let kid = header.kid.expect("a kid");
    let (_, jwks) = app.get("/.well-known/jwks.json", None).await;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("the kid is published");
    let key =
        DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["faceswap-tenants"]);
    validation.set_issuer(&["faceswap-gateway"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], tenant.tenant_id);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn replicas_share_one_signing_key(pool: PgPool) {
    let a = TestApp::spawn(pool).await;
    let b = a.spawn_replica().await;
    let tenant = a.tenant(1, None).await;
    let token = a.token(&tenant).await;
    let (status, resp) = b.post(INFO, &json!({"_id": "ses_0"}), Some(&token)).await;
    assert_eq!(
        status, 404,
        "a token from one replica is accepted by another: {resp}"
    );
    let keys: i64 = sqlx::query_scalar("select count(*) from signing_keys")
        .fetch_one(&a.pool)
        .await
        .unwrap();
    assert_eq!(keys, 1);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn api_keys_work_as_x_api_key_or_bearer_and_authorization_wins(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let tenant = app.tenant(2, None).await;
    let tenant_id = faceswap_gateway::domain::ids::TenantId::parse(&tenant.tenant_id).unwrap();
    let key = faceswap_gateway::service::tenants::create_api_key(&pool, tenant_id, "test")
        .await
        .unwrap()
        .api_key
        .unwrap();
    let usage = app.url("/v1/usage");

    for req in [
        app.client.get(&usage).header("x-api-key", &key),
        app.client.get(&usage).bearer_auth(&key),
        // Authorization decides: a good bearer with a bad key passes...
        app.client
            .get(&usage)
            .bearer_auth(&key)
            .header("x-api-key", "fsk_bad"),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    // ...and a bad bearer with a good key fails.
    let resp = app
        .client
        .get(&usage)
        .bearer_auth("nope")
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let wrong_secret = format!(
        "{}{}",
        &key[..key.len() - 1],
        if key.ends_with('a') { 'b' } else { 'a' }
    );
    let resp = app
        .client
        .get(&usage)
        .header("x-api-key", wrong_secret)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let stored: Vec<String> = sqlx::query_scalar("select secret_hash from credentials")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        stored.iter().all(|h| h.starts_with("$argon2id$")),
        "only argon2 hashes are stored"
    );
    assert!(
        stored
            .iter()
            .all(|h| !h.contains(&key[key.len() - 40..]) && !h.contains(&tenant.client_secret))
    );
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn tenant_create_prints_credentials_that_work(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let db_name = pool.connect_options().get_database().unwrap().to_owned();
    let base = std::env::var("DATABASE_URL").unwrap();
    let url = format!("{}/{db_name}", base.rsplit_once('/').unwrap().0);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faceswap-gateway"))
        .args([
            "tenant",
            "create",
            "--name",
            "Acme",
            "--max-concurrent-sessions",
            "3",
            "--session-seconds",
            "600",
        ])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in ["tenant_id", "client_id", "client_secret"] {
        assert!(
            printed[field].as_str().is_some_and(|s| !s.is_empty()),
            "{printed}"
        );
    }
    let (status, resp) = app
        .post(
            "/api/open/v3/getToken",
            &json!({"clientId": printed["client_id"], "clientSecret": printed["client_secret"]}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let (_, usage) = app.get("/v1/usage", resp["token"].as_str()).await;
    assert_eq!(usage["data"]["max_concurrent_sessions"], 3);
    assert_eq!(usage["data"]["session_seconds_budget"], 600);

    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_faceswap-gateway"))
        .args(["tenant", "create", "--name", "x"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("DATABASE_URL") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
}
