//! Tenant administration, shared by the CLI and the admin API. Every change is written to the
//! audit log, in the same transaction, with who made it.

use serde::Serialize;
use sqlx::PgPool;

use crate::auth::passwords;
use crate::domain::credentials::{ApiKey, new_client_credentials};
use crate::domain::ids::{CredentialId, TenantId};
use crate::domain::rate::Rate;
use crate::http::error::ApiError;
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
            requests_per_second: crate::domain::rate::DEFAULT_REQUESTS_PER_SECOND,
            burst: crate::domain::rate::DEFAULT_BURST,
        }
    }
}

fn validate(
    max_concurrent: Option<i32>,
    budget: Option<Option<i64>>,
    idle: Option<i32>,
    max_session: Option<i32>,
    rate: (Option<i32>, Option<i32>),
) -> Result<(), ApiError> {
    let bad = |msg: &str| Err(ApiError::BadRequest(msg.to_owned()));
    // Each half is checked alone, so a change of one keeps the stored other.
    let (rps, burst) = rate;
    if let Err(e) = Rate::new(rps.unwrap_or(1), burst.unwrap_or(1)) {
        return Err(ApiError::BadRequest(e.to_string()));
    }
    if max_concurrent.is_some_and(|v| v <= 0) {
        return bad("max_concurrent_sessions must be at least 1");
    }
    if budget.flatten().is_some_and(|v| v < 0) {
        return bad("session_seconds cannot be negative");
    }
    if idle.is_some_and(|v| v <= 0) {
        return bad("idle_timeout_seconds must be at least 1");
    }
    if max_session.is_some_and(|v| v <= 0) {
        return bad("max_session_seconds must be at least 1");
    }
    Ok(())
}

async fn hash_blocking(secret: String) -> Result<String, ApiError> {
    let hashed = tokio::task::spawn_blocking(move || passwords::hash(&secret))
        .await
        .map_err(anyhow::Error::from)??;
    Ok(hashed)
}

/// Changes a tenant's quota and session settings.
pub async fn update(
    db: &PgPool,
    tenant: TenantId,
    changes: &TenantChanges,
    actor: &str,
) -> Result<crate::store::tenants::TenantRow, ApiError> {
    validate(
        changes.max_concurrent_sessions,
        changes.session_seconds_budget,
        changes.idle_timeout_seconds,
        changes.max_session_seconds,
        (changes.requests_per_second, changes.burst),
    )?;
    let mut tx = db.begin().await?;
    let row = store::tenants::update(&mut tx, tenant.0, changes)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    let details = serde_json::json!({
        "max_concurrent_sessions": row.max_concurrent_sessions,
        "session_seconds_budget": row.session_seconds_budget,
        "idle_timeout_seconds": row.idle_timeout_seconds,
        "max_session_seconds": row.max_session_seconds,
        "requests_per_second": row.requests_per_second,
        "burst": row.burst,
    });
    store::admin::audit(
        &mut tx,
        actor,
        "tenant.update",
        Some(&tenant.to_string()),
        &details,
    )
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// What `tenant create` prints. The secret is shown here only.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    settings: &TenantSettings,
    actor: &str,
) -> Result<CreatedTenant, ApiError> {
    if settings.name.trim().is_empty() {
        return Err(ApiError::BadRequest("name cannot be empty".into()));
    }
    // Postgres text cannot hold NUL; no control character belongs in a display name.
    if settings.name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "name cannot contain control characters".into(),
        ));
    }
    validate(
        Some(settings.max_concurrent_sessions),
        Some(settings.session_seconds_budget),
        Some(settings.idle_timeout_seconds),
        Some(settings.max_session_seconds),
        (Some(settings.requests_per_second), Some(settings.burst)),
    )?;
    let settings = TenantSettings {
        name: settings.name.trim().to_owned(),
        ..settings.clone()
    };
    let tenant_id = TenantId::generate();
    let credential_id = CredentialId::generate();
    let (client_id, client_secret) = new_client_credentials();
    let hash = hash_blocking(client_secret.clone()).await?;
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
    let details = serde_json::json!({"name": settings.name, "client_id": client_id});
    store::admin::audit(
        &mut tx,
        actor,
        "tenant.create",
        Some(&tenant_id.to_string()),
        &details,
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedTenant {
        tenant_id: tenant_id.to_string(),
        client_id,
        client_secret,
    })
}

/// A newly issued credential; its secret is shown here only.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedCredential {
    /// The tenant.
    pub tenant_id: String,
    /// The credential's id (`cred_…`).
    pub credential_id: String,
    /// For client credentials: the client id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// For client credentials: the client secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// For API keys: the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// Issues a credential of `kind` to an existing tenant, optionally replacing (revoking)
/// another one in the same transaction.
pub async fn issue_credential(
    db: &PgPool,
    tenant: TenantId,
    kind: store::credentials::Kind,
    replaces: Option<CredentialId>,
    actor: &str,
) -> Result<CreatedCredential, ApiError> {
    let credential_id = CredentialId::generate();
    let (public_id, secret, mut created) = match kind {
        store::credentials::Kind::Client => {
            let (client_id, client_secret) = new_client_credentials();
            let created = CreatedCredential {
                tenant_id: tenant.to_string(),
                credential_id: credential_id.to_string(),
                client_id: Some(client_id.clone()),
                client_secret: Some(client_secret.clone()),
                api_key: None,
            };
            (client_id, client_secret, created)
        }
        store::credentials::Kind::ApiKey => {
            let key = ApiKey::generate();
            let created = CreatedCredential {
                tenant_id: tenant.to_string(),
                credential_id: credential_id.to_string(),
                client_id: None,
                client_secret: None,
                api_key: Some(key.to_string()),
            };
            (key.id, key.secret, created)
        }
    };
    let hash = hash_blocking(secret).await?;
    let mut tx = db.begin().await?;
    store::tenants::find(&mut tx, tenant.0)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    if let Some(old) = replaces {
        store::admin::revoke(&mut tx, old.0)
            .await?
            .ok_or(ApiError::NotFound("credential"))?;
    }
    store::credentials::insert(&mut tx, credential_id.0, tenant.0, kind, &public_id, &hash).await?;
    let action = if replaces.is_some() {
        "credential.rotate"
    } else {
        "credential.issue"
    };
    let details = serde_json::json!({
        "kind": kind.as_str(),
        "public_id": public_id,
        "replaces": replaces.map(|c| c.to_string()),
    });
    store::admin::audit(
        &mut tx,
        actor,
        action,
        Some(&credential_id.to_string()),
        &details,
    )
    .await?;
    tx.commit().await?;
    created.tenant_id = tenant.to_string();
    Ok(created)
}

/// What `tenant api-key` prints.
pub type CreatedApiKey = CreatedCredential;

/// Issues an API key to an existing tenant.
pub async fn create_api_key(
    db: &PgPool,
    tenant: TenantId,
    actor: &str,
) -> Result<CreatedApiKey, ApiError> {
    issue_credential(db, tenant, store::credentials::Kind::ApiKey, None, actor).await
}

/// Revokes a credential: its tokens and key stop working on every replica within seconds.
pub async fn revoke_credential(
    db: &PgPool,
    credential: CredentialId,
    actor: &str,
) -> Result<store::admin::CredentialInfo, ApiError> {
    let mut tx = db.begin().await?;
    let info = store::admin::revoke(&mut tx, credential.0)
        .await?
        .ok_or(ApiError::NotFound("credential"))?;
    let details = serde_json::json!({"kind": info.kind, "public_id": info.public_id});
    store::admin::audit(
        &mut tx,
        actor,
        "credential.revoke",
        Some(&credential.to_string()),
        &details,
    )
    .await?;
    tx.commit().await?;
    Ok(info)
}

/// Suspends or resumes a tenant. Suspension refuses its calls and its tokens at once.
pub async fn set_status(
    db: &PgPool,
    tenant: TenantId,
    suspended: bool,
    actor: &str,
) -> Result<(), ApiError> {
    let (status, action) = if suspended {
        ("suspended", "tenant.suspend")
    } else {
        ("active", "tenant.resume")
    };
    let mut tx = db.begin().await?;
    store::admin::set_tenant_status(&mut tx, tenant.0, status)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    store::admin::audit(
        &mut tx,
        actor,
        action,
        Some(&tenant.to_string()),
        &serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
