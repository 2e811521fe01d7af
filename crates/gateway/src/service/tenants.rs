//! Tenant administration: creation and API keys (the CLI and, later, the admin API).

use serde::Serialize;
use sqlx::PgPool;

use crate::auth::passwords;
use crate::domain::credentials::{ApiKey, new_client_credentials};
use crate::domain::ids::{CredentialId, TenantId};
use crate::store;

/// Default concurrent session limit of a new tenant.
pub const DEFAULT_MAX_CONCURRENT_SESSIONS: i32 = 5;
/// Default idle timeout: five minutes without a call naming the session.
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: i32 = 300;
/// Default longest session: four hours.
pub const DEFAULT_MAX_SESSION_SECONDS: i32 = 14_400;

pub use crate::store::tenants::{TenantChanges, TenantSettings};

impl TenantSettings {
    /// Settings with the defaults.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            max_concurrent_sessions: DEFAULT_MAX_CONCURRENT_SESSIONS,
            session_seconds_budget: None,
            idle_timeout_seconds: DEFAULT_IDLE_TIMEOUT_SECONDS,
            max_session_seconds: DEFAULT_MAX_SESSION_SECONDS,
        }
    }
}

fn validate(
    max_concurrent: Option<i32>,
    budget: Option<Option<i64>>,
    idle: Option<i32>,
    max_session: Option<i32>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        max_concurrent.is_none_or(|v| v > 0),
        "--max-concurrent-sessions must be at least 1"
    );
    anyhow::ensure!(
        budget.flatten().is_none_or(|v| v >= 0),
        "--session-seconds cannot be negative"
    );
    anyhow::ensure!(
        idle.is_none_or(|v| v > 0),
        "--idle-timeout-seconds must be at least 1"
    );
    anyhow::ensure!(
        max_session.is_none_or(|v| v > 0),
        "--max-session-seconds must be at least 1"
    );
    Ok(())
}

/// Changes a tenant's quota and session settings.
pub async fn update(
    db: &PgPool,
    tenant: TenantId,
    changes: &TenantChanges,
) -> anyhow::Result<crate::store::tenants::TenantRow> {
    validate(
        changes.max_concurrent_sessions,
        changes.session_seconds_budget,
        changes.idle_timeout_seconds,
        changes.max_session_seconds,
    )?;
    let mut conn = db.acquire().await?;
    store::tenants::update(&mut conn, tenant.0, changes)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no tenant {tenant}"))
}

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
pub async fn create(db: &PgPool, settings: &TenantSettings) -> anyhow::Result<CreatedTenant> {
    anyhow::ensure!(!settings.name.trim().is_empty(), "--name cannot be empty");
    validate(
        Some(settings.max_concurrent_sessions),
        Some(settings.session_seconds_budget),
        Some(settings.idle_timeout_seconds),
        Some(settings.max_session_seconds),
    )?;
    let settings = TenantSettings {
        name: settings.name.trim().to_owned(),
        ..settings.clone()
    };
    let tenant_id = TenantId::generate();
    let credential_id = CredentialId::generate();
    let (client_id, client_secret) = new_client_credentials();
    let secret = client_secret.clone();
    let hash = tokio::task::spawn_blocking(move || passwords::hash(&secret)).await??;
    let mut tx = db.begin().await?;
    store::tenants::insert(&mut tx, tenant_id.0, &settings).await?;
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
