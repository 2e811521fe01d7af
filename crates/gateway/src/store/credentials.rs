//! `credentials`: client credentials and API keys, stored as argon2 hashes.

use sqlx::PgConnection;
use uuid::Uuid;

/// Which kind of credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// client_id + client_secret, exchanged for tokens.
    Client,
    /// An API key sent with each call.
    ApiKey,
}

impl Kind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::ApiKey => "api_key",
        }
    }
}

/// A usable credential, with its tenant's status.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CredentialRow {
    /// Id.
    pub credential_id: Uuid,
    /// Owner.
    pub tenant_id: Uuid,
    /// The argon2 PHC string.
    pub secret_hash: String,
    /// The tenant's status.
    pub tenant_status: String,
}

/// Stores a credential.
#[tracing::instrument(skip_all)]
pub async fn insert(
    conn: &mut PgConnection,
    credential_id: Uuid,
    tenant_id: Uuid,
    kind: Kind,
    public_id: &str,
    secret_hash: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into credentials (credential_id, tenant_id, kind, public_id, secret_hash)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(credential_id)
    .bind(tenant_id)
    .bind(kind.as_str())
    .bind(public_id)
    .bind(secret_hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// The unrevoked credential of `kind` whose public id is `public_id`.
#[tracing::instrument(skip_all)]
pub async fn find_active(
    conn: &mut PgConnection,
    kind: Kind,
    public_id: &str,
) -> sqlx::Result<Option<CredentialRow>> {
    sqlx::query_as(
        "select c.credential_id, c.tenant_id, c.secret_hash, t.status as tenant_status
         from credentials c join tenants t using (tenant_id)
         where c.public_id = $1 and c.kind = $2 and c.revoked_at is null",
    )
    .bind(public_id)
    .bind(kind.as_str())
    .fetch_optional(conn)
    .await
}
