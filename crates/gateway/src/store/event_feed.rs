//! Reads for the event stream beyond [`super::events`]: where a stream starts.

use sqlx::PgConnection;
use uuid::Uuid;

use super::events::Cursor;

/// Where "now" is: before every event of a transaction still running or yet to start, so a
/// stream that starts here misses nothing that commits later. (It may also send a few events
/// that committed just before, from transactions younger than the oldest one running.)
#[tracing::instrument(skip_all)]
pub async fn now(conn: &mut PgConnection) -> sqlx::Result<Cursor> {
    let tx: i64 = sqlx::query_scalar("select pg_snapshot_xmin(pg_current_snapshot())::text::int8")
        .fetch_one(conn)
        .await?;
    Ok(Cursor { tx, event_id: 0 })
}

/// The position of one of the tenant's events, `None` when the tenant has no such event.
#[tracing::instrument(skip_all)]
pub async fn position_of(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    event_id: i64,
) -> sqlx::Result<Option<Cursor>> {
    let tx: Option<i64> = sqlx::query_scalar(
        "select tx::text::int8 from session_events where tenant_id = $1 and event_id = $2",
    )
    .bind(tenant_id)
    .bind(event_id)
    .fetch_optional(conn)
    .await?;
    Ok(tx.map(|tx| Cursor { tx, event_id }))
}
