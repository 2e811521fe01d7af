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
    /// Seconds without activity after which a session is closed.
    pub idle_timeout_seconds: i32,
    /// Longest a session may stay open, in seconds.
    pub max_session_seconds: i32,
    /// Sustained request rate, per second.
    pub requests_per_second: i32,
    /// Requests allowed at once after a quiet period.
    pub burst: i32,
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

/// A tenant's settings.
#[derive(Debug, Clone)]
pub struct TenantSettings {
    /// Display name.
    pub name: String,
    /// Concurrent session limit.
    pub max_concurrent_sessions: i32,
    /// Session-seconds budget; `None` for none.
    pub session_seconds_budget: Option<i64>,
    /// Idle timeout, seconds.
    pub idle_timeout_seconds: i32,
    /// Maximum session duration, seconds.
    pub max_session_seconds: i32,
    /// Sustained request rate, per second.
    pub requests_per_second: i32,
    /// Burst, requests.
    pub burst: i32,
}

/// Changes to a tenant's settings; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantChanges {
    /// New concurrent session limit.
    pub max_concurrent_sessions: Option<i32>,
    /// New budget (`Some(None)` removes it).
    pub session_seconds_budget: Option<Option<i64>>,
    /// New idle timeout.
    pub idle_timeout_seconds: Option<i32>,
    /// New maximum duration.
    pub max_session_seconds: Option<i32>,
    /// New request rate.
    pub requests_per_second: Option<i32>,
    /// New burst.
    pub burst: Option<i32>,
}

/// Applies `changes`; `None` when there is no such tenant.
#[tracing::instrument(skip_all)]
pub async fn update(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    changes: &TenantChanges,
) -> sqlx::Result<Option<TenantRow>> {
    sqlx::query_as(
        "update tenants set
            max_concurrent_sessions = coalesce($2, max_concurrent_sessions),
            session_seconds_budget = case when $3 then $4 else session_seconds_budget end,
            idle_timeout_seconds = coalesce($5, idle_timeout_seconds),
            max_session_seconds = coalesce($6, max_session_seconds),
            requests_per_second = coalesce($7, requests_per_second),
            burst = coalesce($8, burst)
         where tenant_id = $1
         returning tenant_id, name, status, max_concurrent_sessions, session_seconds_budget,
            idle_timeout_seconds, max_session_seconds, requests_per_second, burst, created_at",
    )
    .bind(tenant_id)
    .bind(changes.max_concurrent_sessions)
    .bind(changes.session_seconds_budget.is_some())
    .bind(changes.session_seconds_budget.flatten())
    .bind(changes.idle_timeout_seconds)
    .bind(changes.max_session_seconds)
    .bind(changes.requests_per_second)
    .bind(changes.burst)
    .fetch_optional(conn)
    .await
}

/// Inserts a tenant.
#[tracing::instrument(skip_all)]
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    t: &TenantSettings,
) -> sqlx::Result<TenantRow> {
    sqlx::query_as(
        "insert into tenants (tenant_id, name, max_concurrent_sessions, session_seconds_budget,
            idle_timeout_seconds, max_session_seconds, requests_per_second, burst)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         returning tenant_id, name, status, max_concurrent_sessions, session_seconds_budget, idle_timeout_seconds, max_session_seconds, requests_per_second, burst, created_at",
    )
    .bind(tenant_id)
    .bind(&t.name)
    .bind(t.max_concurrent_sessions)
    .bind(t.session_seconds_budget)
    .bind(t.idle_timeout_seconds)
    .bind(t.max_session_seconds)
    .bind(t.requests_per_second)
    .bind(t.burst)
    .fetch_one(conn)
    .await
}

/// A tenant by id.
#[tracing::instrument(skip_all)]
pub async fn find(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<Option<TenantRow>> {
    sqlx::query_as(
        "select tenant_id, name, status, max_concurrent_sessions, session_seconds_budget,
            idle_timeout_seconds, max_session_seconds, requests_per_second, burst, created_at
         from tenants where tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(conn)
    .await
}
