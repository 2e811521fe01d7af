//! `session_events`: the outbox that feeds SSE and webhooks.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

/// An event as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    /// Monotonic per tenant, usable as `Last-Event-ID`.
    pub event_id: i64,
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

/// Appends an event and queues it for every enabled webhook endpoint of the tenant. Takes a
/// transaction because the per-tenant lock that orders event ids must be held until commit.
#[tracing::instrument(skip_all, fields(event_type))]
pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    tenant_id: Uuid,
    session_id: Option<Uuid>,
    event_type: &str,
    payload: &serde_json::Value,
) -> sqlx::Result<i64> {
    let event = NewEvent {
        session_id,
        event_type,
        payload,
    };
    let ids = insert_many(tx, tenant_id, &[event]).await?;
    ids.first().copied().ok_or(sqlx::Error::RowNotFound)
}

/// One event to append with [`insert_many`].
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// The session it is about, if any.
    pub session_id: Option<Uuid>,
    /// e.g. `session.closed`.
    pub event_type: &'a str,
    /// The event's data.
    pub payload: &'a serde_json::Value,
}

/// [`insert`] for many events of one tenant: the tenant's lock is taken once and the rows and
/// their webhook deliveries are written in one statement each. Ids follow the slice's order.
#[tracing::instrument(skip_all, fields(events = events.len()))]
pub async fn insert_many(
    tx: &mut Transaction<'_, Postgres>,
    tenant_id: Uuid,
    events: &[NewEvent<'_>],
) -> sqlx::Result<Vec<i64>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query(
        "select pg_advisory_xact_lock(hashtextextended('faceswap-events:' || $1::text, 0))",
    )
    .bind(tenant_id)
    .execute(&mut **tx)
    .await?;
    let sessions: Vec<Option<Uuid>> = events.iter().map(|e| e.session_id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type).collect();
    let payloads: Vec<Json<&serde_json::Value>> = events.iter().map(|e| Json(e.payload)).collect();
    // `with ordinality` + `order by` makes the sequence hand out ids in the slice's order.
    let event_ids: Vec<i64> = sqlx::query_scalar(
        "insert into session_events (tenant_id, session_id, event_type, payload)
         select $1, e.session_id, e.event_type, e.payload
         from unnest($2::uuid[], $3::text[], $4::jsonb[]) with ordinality
              as e(session_id, event_type, payload, n)
         order by e.n
         returning event_id",
    )
    .bind(tenant_id)
    .bind(&sessions)
    .bind(&types)
    .bind(&payloads)
    .fetch_all(&mut **tx)
    .await?;
    sqlx::query(
        "insert into webhook_deliveries (endpoint_id, event_id)
         select w.endpoint_id, e.event_id
         from webhook_endpoints w, unnest($2::int8[]) as e(event_id)
         where w.tenant_id = $1 and w.enabled",
    )
    .bind(tenant_id)
    .bind(&event_ids)
    .execute(&mut **tx)
    .await?;
    Ok(event_ids)
}

/// The tenant's events after `after`, oldest first, optionally of one session.
#[tracing::instrument(skip_all)]
pub async fn list_after(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    session_id: Option<Uuid>,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as(
        "select event_id, tenant_id, session_id, event_type, payload, created_at
         from session_events
         where tenant_id = $1 and event_id > $2 and ($3::uuid is null or session_id = $3)
         order by event_id
         limit $4",
    )
    .bind(tenant_id)
    .bind(after)
    .bind(session_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// One event by id.
#[tracing::instrument(skip_all)]
pub async fn find(conn: &mut PgConnection, event_id: i64) -> sqlx::Result<Option<EventRow>> {
    sqlx::query_as(
        "select event_id, tenant_id, session_id, event_type, payload, created_at
         from session_events where event_id = $1",
    )
    .bind(event_id)
    .fetch_optional(conn)
    .await
}
