//! Queries of the admin API: the audit log, tenants and credentials across the deployment,
//! usage per period and sessions across tenants.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::store::sessions::SessionRow;
use crate::store::tenants::TenantRow;

/// Records an admin action.
#[tracing::instrument(skip_all, fields(action))]
pub async fn audit(
    conn: &mut PgConnection,
    actor: &str,
    action: &str,
    target: Option<&str>,
    details: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query("insert into admin_audit (actor, action, target, details) values ($1, $2, $3, $4)")
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(Json(details))
        .execute(conn)
        .await?;
    Ok(())
}

/// An audit entry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    /// Id, increasing.
    pub audit_id: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// Parameters (never secrets).
    pub details: Json<serde_json::Value>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// The newest audit entries.
#[tracing::instrument(skip_all)]
pub async fn recent_audit(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<AuditRow>> {
    sqlx::query_as(
        "select audit_id, actor, action, target, details, created_at
         from admin_audit order by audit_id desc limit $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Every tenant, oldest first.
#[tracing::instrument(skip_all)]
pub async fn tenants(conn: &mut PgConnection) -> sqlx::Result<Vec<TenantRow>> {
    sqlx::query_as(
        "select tenant_id, name, status, max_concurrent_sessions, session_seconds_budget,
            idle_timeout_seconds, max_session_seconds, requests_per_second, burst, created_at
         from tenants order by created_at, tenant_id",
    )
    .fetch_all(conn)
    .await
}

/// Sets a tenant's status; `None` when there is no such tenant.
#[tracing::instrument(skip_all)]
pub async fn set_tenant_status(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    status: &str,
) -> sqlx::Result<Option<()>> {
    let done = sqlx::query("update tenants set status = $2 where tenant_id = $1")
        .bind(tenant_id)
        .bind(status)
        .execute(conn)
        .await?;
    Ok((done.rows_affected() == 1).then_some(()))
}

/// A credential as the admin API shows it (no secret).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CredentialInfo {
    /// Id.
    pub credential_id: Uuid,
    /// Owner.
    pub tenant_id: Uuid,
    /// `client` or `api_key`.
    pub kind: String,
    /// client_id, or the API key's id.
    pub public_id: String,
    /// Issued.
    pub created_at: DateTime<Utc>,
    /// Revoked, if so.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A tenant's credentials, newest first.
#[tracing::instrument(skip_all)]
pub async fn credentials_of(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> sqlx::Result<Vec<CredentialInfo>> {
    sqlx::query_as(
        "select credential_id, tenant_id, kind, public_id, created_at, revoked_at
         from credentials where tenant_id = $1 order by created_at desc",
    )
    .bind(tenant_id)
    .fetch_all(conn)
    .await
}

/// One credential.
#[tracing::instrument(skip_all)]
pub async fn credential(
    conn: &mut PgConnection,
    credential_id: Uuid,
) -> sqlx::Result<Option<CredentialInfo>> {
    sqlx::query_as(
        "select credential_id, tenant_id, kind, public_id, created_at, revoked_at
         from credentials where credential_id = $1",
    )
    .bind(credential_id)
    .fetch_optional(conn)
    .await
}

/// Revokes a credential (idempotent); `None` when there is no such credential.
#[tracing::instrument(skip_all)]
pub async fn revoke(
    conn: &mut PgConnection,
    credential_id: Uuid,
) -> sqlx::Result<Option<CredentialInfo>> {
    sqlx::query_as(
        "update credentials set revoked_at = coalesce(revoked_at, now())
         where credential_id = $1
         returning credential_id, tenant_id, kind, public_id, created_at, revoked_at",
    )
    .bind(credential_id)
    .fetch_optional(conn)
    .await
}

/// Per-tenant usage in a period: sessions closed and seconds charged.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageRow {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Its name.
    pub name: String,
    /// Sessions charged in the period.
    pub sessions: i64,
    /// Seconds charged in the period.
    pub seconds: i64,
}

/// Usage charged in `[from, to)`, per tenant (tenants without usage included, with zeros).
#[tracing::instrument(skip_all)]
pub async fn usage(
    conn: &mut PgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<UsageRow>> {
    sqlx::query_as(
        "select t.tenant_id, t.name,
            count(l.entry_id) as sessions,
            coalesce(sum(l.seconds), 0)::bigint as seconds
         from tenants t
         left join usage_ledger l
           on l.tenant_id = t.tenant_id and l.recorded_at >= $1 and l.recorded_at < $2
         group by t.tenant_id, t.name
         order by t.name, t.tenant_id",
    )
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await
}

/// Sessions across tenants, newest first, filtered.
#[tracing::instrument(skip_all)]
pub async fn sessions(
    conn: &mut PgConnection,
    tenant_id: Option<Uuid>,
    state: Option<&str>,
    before: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<SessionRow>> {
    sqlx::query_as(concat!(
        "select ",
        crate::store::sessions::columns!(),
        " from sessions
         where ($1::uuid is null or tenant_id = $1)
           and ($2::text is null or state = $2)
           and ($3::uuid is null or session_id < $3)
         order by session_id desc
         limit $4"
    ))
    .bind(tenant_id)
    .bind(state)
    .bind(before)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Ids of a tenant's sessions that hold upstream resources (open, or closing and unclaimed).
#[tracing::instrument(skip_all)]
pub async fn open_session_ids(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar("select session_id from sessions where tenant_id = $1 and state = 'open'")
        .bind(tenant_id)
        .fetch_all(conn)
        .await
}
