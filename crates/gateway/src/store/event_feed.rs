//! Reads for the event stream beyond [`super::events`]: where "now" is in a tenant's events.

use sqlx::PgConnection;
use uuid::Uuid;

/// The id of the tenant's latest event, 0 when it has none. Every event of the tenant with a
/// smaller id is already visible (ids are assigned under a per-tenant lock held to commit), so
/// a stream that starts after it misses nothing that happens later.
#[tracing::instrument(skip_all)]
pub async fn latest_id(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "select coalesce(max(event_id), 0)::bigint from session_events where tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_one(conn)
    .await
}
