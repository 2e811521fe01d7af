//! `tenants`.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::quota::QuotaLimits;

/// A tenant as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    /// Id.
    pub tenant_id: Uuid,
    /// Display name.
    pub name: String,
    /// `active` or `suspended`.
    pub status: String,
    /// Concurrent session limit.
    pub max_concurrent_sessions: i32,
    /// Session-seconds budget.
    pub session_seconds_budget: Option<i64>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl TenantRow {
    /// The tenant's quota limits.
    pub fn limits(&self) -> QuotaLimits {
        QuotaLimits {
            max_concurrent_sessions: i64::from(self.max_concurrent_sessions),
            session_seconds_budget: self.session_seconds_budget,
        }
    }
}

/// Inserts a tenant.
#[tracing::instrument(skip_all)]
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    name: &str,
    max_concurrent_sessions: i32,
    session_seconds_budget: Option<i64>,
) -> sqlx::Result<TenantRow> {
    sqlx::query_as(
        "insert into tenants (tenant_id, name, max_concurrent_sessions, session_seconds_budget)
         values ($1, $2, $3, $4)
         returning tenant_id, name, status, max_concurrent_sessions, session_seconds_budget, created_at",
    )
    .bind(tenant_id)
    .bind(name)
    .bind(max_concurrent_sessions)
    .bind(session_seconds_budget)
    .fetch_one(conn)
    .await
}

/// A tenant by id.
#[tracing::instrument(skip_all)]
pub async fn find(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<Option<TenantRow>> {
    sqlx::query_as(
        "select tenant_id, name, status, max_concurrent_sessions, session_seconds_budget, created_at
         from tenants where tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(conn)
    .await
}

/// A tenant by id, row-locked until the transaction ends: quota checks of one tenant run one at
/// a time, so concurrent creates cannot both take the last slot.
#[tracing::instrument(skip_all)]
pub async fn lock(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<Option<TenantRow>> {
    sqlx::query_as(
        "select tenant_id, name, status, max_concurrent_sessions, session_seconds_budget, created_at
         from tenants where tenant_id = $1 for update",
    )
    .bind(tenant_id)
    .fetch_optional(conn)
    .await
}
