//! Rotating the token signing keys: the admin endpoints, the `keys rotate` command, and the
//! refusal when the key comes from a file. How retired keys keep verifying, and stop, is in
//! `attacks.rs` (`a_rotated_out_key_verifies_within_its_retention_window_and_not_after`).

use std::time::Duration;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use faceswap_testkit::{TestApp, eventually};
use serde_json::Value;
use sqlx::PgPool;

const ADMIN: &str = "ops-token-0123456789abcdefghij";

async fn spawn(pool: PgPool, extra: &[&str]) -> TestApp {
    let admin = format!("ops:{ADMIN}");
    let mut args = vec!["--admin-tokens", admin.as_str()];
    args.extend_from_slice(extra);
    TestApp::builder().args(&args).spawn(pool).await
}

async fn admin(app: &TestApp, method: &str, path: &str) -> (u16, Value) {
    app.admin_call(ADMIN, method, path, None).await
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

fn database_url(pool: &PgPool) -> String {
    let db_name = pool.connect_options().get_database().unwrap().to_owned();
    let base = std::env::var("DATABASE_URL").unwrap();
    format!("{}/{db_name}", base.rsplit_once('/').unwrap().0)
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_admin_lists_and_rotates_signing_keys_without_private_material_and_audits_it(
    pool: PgPool,
) {
    let app = spawn(pool, &[]).await;
    let tenant = app.tenant(1, None).await;
    let first = kid_of(&app.token(&tenant).await);

    let (status, listed) = admin(&app, "GET", "/admin/signing-keys").await;
    assert_eq!(status, 200, "{listed}");
    let keys = listed["data"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], first.as_str());
    assert_eq!(keys[0]["signing"], true);
    assert!(keys[0]["retired_at"].is_null() && keys[0]["created_at"].is_string());

    let (status, rotated) = admin(&app, "POST", "/admin/signing-keys/rotate").await;
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["data"]["kid"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(
        kid_of(&app.token(&tenant).await),
        second,
        "the rotating replica signs with the new key at once"
    );

    let (_, listed) = admin(&app, "GET", "/admin/signing-keys").await;
    let keys = listed["data"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        (keys[0]["kid"].as_str(), &keys[0]["signing"]),
        (Some(second.as_str()), &Value::Bool(true))
    );
    assert_eq!(
        (keys[1]["kid"].as_str(), &keys[1]["signing"]),
        (Some(first.as_str()), &Value::Bool(false))
    );
    let retired: chrono::DateTime<chrono::Utc> =
        keys[1]["retired_at"].as_str().unwrap().parse().unwrap();
    let until: chrono::DateTime<chrono::Utc> =
        keys[1]["verifies_until"].as_str().unwrap().parse().unwrap();
    // Token lifetime (3600 s) + leeway (5 s) + refresh period (10 s by default).
    assert_eq!((until - retired).num_seconds(), 3615, "{listed}");

    let private: Vec<Vec<u8>> = sqlx::query_scalar("select private_key from signing_keys")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let text = listed.to_string();
    for der in private {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        assert!(
            !text.contains(&b64[b64.len() - 40..]),
            "no private material: {text}"
        );
    }
    for key in keys {
        let mut fields: Vec<&str> = key
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "created_at",
                "kid",
                "retired_at",
                "signing",
                "verifies_until"
            ]
        );
    }

    let (_, audit) = admin(&app, "GET", "/admin/audit").await;
    let entry = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "signing_key.rotate")
        .unwrap_or_else(|| panic!("an audit entry: {audit}"));
    assert_eq!(entry["actor"], "ops");
    assert_eq!(entry["target"], second.as_str());
    assert_eq!(entry["details"]["retired"][0], first.as_str());

    let token = app.token(&tenant).await;
    let resp = app
        .client
        .post(app.url("/admin/signing-keys/rotate"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "a tenant token cannot rotate keys");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn keys_rotate_on_the_command_line_reaches_every_running_replica(pool: PgPool) {
    let app = spawn(pool.clone(), &["--jwt-key-refresh-ms", "200"]).await;
    let replica = app.spawn_replica().await;
    let tenant = app.tenant(1, None).await;
    let old = app.token(&tenant).await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faceswap-gateway"))
        .args(["keys", "rotate"])
        .env("DATABASE_URL", database_url(&pool))
        .env_remove("GATEWAY_JWT_PRIVATE_KEY_FILE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kid = printed["kid"].as_str().unwrap().to_owned();
    assert_eq!(printed["retired"][0], kid_of(&old).as_str());

    for gw in [&app, &replica] {
        eventually(Duration::from_secs(3), "the new key to sign", || async {
            (kid_of(&gw.token(&tenant).await) == kid).then_some(())
        })
        .await;
        assert_eq!(
            gw.get("/v1/usage", Some(&old)).await.0,
            200,
            "the old token still works"
        );
    }

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_faceswap-gateway"))
        .args(["keys", "rotate"])
        .env("DATABASE_URL", database_url(&pool))
        .env("GATEWAY_JWT_PRIVATE_KEY_FILE", "/etc/faceswap/jwt.pem")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("GATEWAY_JWT_PRIVATE_KEY_FILE") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
    let keys: i64 = sqlx::query_scalar("select count(*) from signing_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys, 2, "the refused rotation made no key");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_gateway_whose_key_comes_from_a_file_refuses_to_rotate_it(pool: PgPool) {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    );
    let path = std::env::temp_dir().join(format!("faceswap-jwt-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&path, pem).unwrap();
    let app = spawn(pool, &["--jwt-private-key-file", path.to_str().unwrap()]).await;
    let _ = std::fs::remove_file(&path);
    let tenant = app.tenant(1, None).await;
    let kid = kid_of(&app.token(&tenant).await);

    let (status, body) = admin(&app, "POST", "/admin/signing-keys/rotate").await;
    assert_eq!((status, body["code"].as_i64()), (409, Some(4009)), "{body}");
    assert!(
        body["msg"]
            .as_str()
            .unwrap()
            .contains("GATEWAY_JWT_PRIVATE_KEY_FILE"),
        "{body}"
    );
    assert_eq!(kid_of(&app.token(&tenant).await), kid);

    let (_, listed) = admin(&app, "GET", "/admin/signing-keys").await;
    let first = &listed["data"][0];
    assert_eq!(first["kid"], kid.as_str());
    assert_eq!(first["signing"], true);
    assert!(first["created_at"].is_null(), "{listed}");
}
