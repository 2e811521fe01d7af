//! `signing_keys`: the keys that sign gateway tokens, shared by every replica.

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
    /// Retired keys verify but no longer sign.
    pub retired: bool,
}

/// Every key, newest first.
#[tracing::instrument(skip_all)]
pub async fn all(conn: &mut PgConnection) -> sqlx::Result<Vec<KeyRow>> {
    sqlx::query_as(
        "select kid, private_key, public_jwk, retired_at is not null as retired
         from signing_keys order by created_at desc, kid",
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
