//! `tenant create --if-not-exists`, as the compose `seed` service runs it on every `up`.

use serde_json::Value;
use sqlx::PgPool;

use super::procs::database_url;

fn create_demo(pool: &PgPool) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faceswap-gateway"))
        .args(["tenant", "create", "--name", "demo", "--if-not-exists"])
        .env("DATABASE_URL", database_url(pool))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn tenant_create_if_not_exists_creates_once_then_prints_the_id_only(pool: PgPool) {
    let first = create_demo(&pool);
    assert!(first["client_secret"].as_str().is_some(), "{first}");
    let again = create_demo(&pool);
    assert_eq!(again["tenant_id"], first["tenant_id"], "{again}");
    assert_eq!(again["existed"], true);
    assert!(again.get("client_secret").is_none(), "no secret: {again}");
    let tenants: i64 = sqlx::query_scalar("select count(*) from tenants where name = 'demo'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tenants, 1);
}
