//! `session_events`: the outbox that feeds SSE and webhooks.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

/// A position in the event order: (writing transaction, id). Events are read in this order,
/// which is commit order for everything a reader can see (see [`list_after`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// The writing transaction's id (`xid8`).
    pub tx: i64,
    /// The event id.
    pub event_id: i64,
}

/// An event as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    /// Unique; usable as `Last-Event-ID`.
    pub event_id: i64,
    /// The writing transaction's id.
    pub tx: i64,
    /// Owner.
    pub tenant_id: Uuid,
    /// The session it is about, if any.
    pub session_id: Option<Uuid>,
    /// e.g. `session.status_changed`.
    pub event_type: String,
    /// The event's data.
    pub payload: Json<serde_json::Value>,
    /// When it happened.
    pub created_at: DateTime<Utc>,
}

/// Appends an event and queues it for every enabled webhook endpoint of the tenant, in the
/// caller's transaction (the event commits with the change it reports).
#[tracing::instrument(skip_all, fields(event_type))]
pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    tenant_id: Uuid,
    session_id: Option<Uuid>,
    event_type: &str,
    payload: &serde_json::Value,
) -> sqlx::Result<i64> {
    let event = NewEvent {
        tenant_id,
        session_id,
        event_type,
        payload,
    };
    let ids = insert_many(tx, &[event]).await?;
    ids.first().copied().ok_or(sqlx::Error::RowNotFound)
}

/// One event to append with [`insert_many`].
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// Owner.
    pub tenant_id: Uuid,
    /// The session it is about, if any.
    pub session_id: Option<Uuid>,
    /// e.g. `session.closed`.
    pub event_type: &'a str,
    /// The event's data.
    pub payload: &'a serde_json::Value,
}

/// [`insert`] for many events, of any tenants: the rows and their webhook deliveries in one
/// statement. Ids follow the slice's order.
#[tracing::instrument(skip_all, fields(events = events.len()))]
pub async fn insert_many(
    tx: &mut Transaction<'_, Postgres>,
    events: &[NewEvent<'_>],
) -> sqlx::Result<Vec<i64>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let tenants: Vec<Uuid> = events.iter().map(|e| e.tenant_id).collect();
    let sessions: Vec<Option<Uuid>> = events.iter().map(|e| e.session_id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type).collect();
    let payloads: Vec<Json<&serde_json::Value>> = events.iter().map(|e| Json(e.payload)).collect();
    // `with ordinality` + `order by` makes the sequence hand out ids in the slice's order. The
    // deliveries are written by the same statement: one round trip for both.
    let event_ids: Vec<i64> = sqlx::query_scalar(
        "with ev as (
            insert into session_events (tenant_id, session_id, event_type, payload)
            select e.tenant_id, e.session_id, e.event_type, e.payload
            from unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[]) with ordinality
                 as e(tenant_id, session_id, event_type, payload, n)
            order by e.n
            returning event_id, tenant_id),
          deliveries as (
            insert into webhook_deliveries (endpoint_id, event_id)
            select w.endpoint_id, ev.event_id
            from ev join webhook_endpoints w on w.tenant_id = ev.tenant_id and w.enabled)
         select event_id from ev order by event_id",
    )
    .bind(&tenants)
    .bind(&sessions)
    .bind(&types)
    .bind(&payloads)
    .fetch_all(&mut **tx)
    .await?;
    Ok(event_ids)
}

/// The tenant's events after `after` in (tx, id) order, optionally of one session: only those
/// of transactions older than every transaction still running. Such a transaction has ended, so
/// every later read sees its rows as they are now, and any row still to commit belongs to a
/// younger transaction and sorts after them: reading on from the last row returned skips
/// nothing and repeats nothing, with no lock held by writers.
#[tracing::instrument(skip_all)]
pub async fn list_after(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    session_id: Option<Uuid>,
    after: Cursor,
    limit: i64,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as(
        "select event_id, tx::text::int8 as tx, tenant_id, session_id, event_type, payload,
                created_at
         from session_events
         where tenant_id = $1 and (tx, event_id) > ($2::int8::text::xid8, $3)
           and tx < pg_snapshot_xmin(pg_current_snapshot())
           and ($4::uuid is null or session_id = $4)
         order by tx, event_id
         limit $5",
    )
    .bind(tenant_id)
    .bind(after.tx)
    .bind(after.event_id)
    .bind(session_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// One event by id.
#[tracing::instrument(skip_all)]
pub async fn find(conn: &mut PgConnection, event_id: i64) -> sqlx::Result<Option<EventRow>> {
    sqlx::query_as(
        "select event_id, tx::text::int8 as tx, tenant_id, session_id, event_type, payload,
                created_at
         from session_events where event_id = $1",
    )
    .bind(event_id)
    .fetch_optional(conn)
    .await
}
