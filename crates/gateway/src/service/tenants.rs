//! Tenant administration: creation and API keys (the CLI and, later, the admin API).

use serde::Serialize;
use sqlx::PgPool;

use crate::auth::passwords;
use crate::domain::credentials::{ApiKey, new_client_credentials};
use crate::domain::ids::{CredentialId, TenantId};
use crate::store;

/// Defaults of a new tenant.
pub const DEFAULT_MAX_CONCURRENT_SESSIONS: i32 = 5;

/// What `tenant create` prints. The secret is shown here only.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedTenant {
    /// The tenant.
    pub tenant_id: String,
    /// Its client id.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: String,
}

/// Creates a tenant with client credentials.
pub async fn create(
    db: &PgPool,
    name: &str,
    max_concurrent_sessions: i32,
    session_seconds_budget: Option<i64>,
) -> anyhow::Result<CreatedTenant> {
    anyhow::ensure!(!name.trim().is_empty(), "--name cannot be empty");
    anyhow::ensure!(
        max_concurrent_sessions > 0,
        "--max-concurrent-sessions must be at least 1"
    );
    let tenant_id = TenantId::generate();
    let credential_id = CredentialId::generate();
    let (client_id, client_secret) = new_client_credentials();
    let secret = client_secret.clone();
    let hash = tokio::task::spawn_blocking(move || passwords::hash(&secret)).await??;
    let mut tx = db.begin().await?;
    store::tenants::insert(
        &mut tx,
        tenant_id.0,
        name.trim(),
        max_concurrent_sessions,
        session_seconds_budget,
    )
    .await?;
    store::credentials::insert(
        &mut tx,
        credential_id.0,
        tenant_id.0,
        store::credentials::Kind::Client,
        &client_id,
        &hash,
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedTenant {
        tenant_id: tenant_id.to_string(),
        client_id,
        client_secret,
    })
}

/// What `tenant api-key` prints.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedApiKey {
    /// The tenant.
    pub tenant_id: String,
    /// The key's credential id.
    pub credential_id: String,
    /// The key, shown here only.
    pub api_key: String,
}

/// Issues an API key to an existing tenant.
pub async fn create_api_key(db: &PgPool, tenant: TenantId) -> anyhow::Result<CreatedApiKey> {
    let mut conn = db.acquire().await?;
    store::tenants::find(&mut conn, tenant.0)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no tenant {tenant}"))?;
    let key = ApiKey::generate();
    let secret = key.secret.clone();
    let hash = tokio::task::spawn_blocking(move || passwords::hash(&secret)).await??;
    let credential_id = CredentialId::generate();
    store::credentials::insert(
        &mut conn,
        credential_id.0,
        tenant.0,
        store::credentials::Kind::ApiKey,
        &key.id,
        &hash,
    )
    .await?;
    Ok(CreatedApiKey {
        tenant_id: tenant.to_string(),
        credential_id: credential_id.to_string(),
        api_key: key.to_string(),
    })
}
