//! `signing_keys`: the keys that sign gateway tokens, shared by every replica.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// A stored key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    /// Key id (`kid`).
    pub kid: String,
    /// PKCS#8 DER of the private key.
    pub private_key: Vec<u8>,
    /// The public JWK.
    pub public_jwk: sqlx::types::Json<serde_json::Value>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stopped signing; retired keys verify for a while longer, then not at all.
    pub retired_at: Option<DateTime<Utc>>,
}

/// A key without its private material, for listings.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyInfo {
    /// Key id (`kid`).
    pub kid: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stopped signing.
    pub retired_at: Option<DateTime<Utc>>,
}

/// Every key, newest first.
#[tracing::instrument(skip_all)]
pub async fn all(conn: &mut PgConnection) -> sqlx::Result<Vec<KeyRow>> {
    sqlx::query_as(
        "select kid, private_key, public_jwk, created_at, retired_at
         from signing_keys order by created_at desc, kid",
    )
    .fetch_all(conn)
    .await
}

/// Every key without private material, newest first.
#[tracing::instrument(skip_all)]
pub async fn list(conn: &mut PgConnection) -> sqlx::Result<Vec<KeyInfo>> {
    sqlx::query_as(
        "select kid, created_at, retired_at from signing_keys order by created_at desc, kid",
    )
    .fetch_all(conn)
    .await
}

/// Serialises key creation between replicas starting at once (transaction-scoped lock).
pub async fn lock_for_creation(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("select pg_advisory_xact_lock(hashtext('faceswap-gateway:signing_keys'))")
        .execute(conn)
        .await?;
    Ok(())
}

/// Retires every key that still signs; returns their ids.
#[tracing::instrument(skip_all)]
pub async fn retire_active(conn: &mut PgConnection) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "update signing_keys set retired_at = now() where retired_at is null returning kid",
    )
    .fetch_all(conn)
    .await
}

/// Stores a new key.
#[tracing::instrument(skip_all)]
pub async fn insert(
    conn: &mut PgConnection,
    kid: &str,
    algorithm: &str,
    private_key: &[u8],
    public_jwk: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into signing_keys (kid, algorithm, private_key, public_jwk) values ($1, $2, $3, $4)",
    )
    .bind(kid)
    .bind(algorithm)
    .bind(private_key)
    .bind(sqlx::types::Json(public_jwk))
    .execute(conn)
    .await?;
    Ok(())
}
