//! `webhook_endpoints` and `webhook_deliveries`. Endpoint calls are scoped by tenant; delivery
//! claims are short statements (`FOR UPDATE SKIP LOCKED`, then a lease in `claimed_until`), so
//! no row lock is ever held across an HTTP call. The lease value a worker claimed with is its
//! fencing token: results are recorded only while the row still carries it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

/// Longest `last_error` kept.
const MAX_ERROR_LEN: usize = 500;

/// An endpoint as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndpointRow {
    /// Its id.
    pub endpoint_id: Uuid,
    /// Owner.
    pub tenant_id: Uuid,
    /// Where deliveries are POSTed.
    pub url: String,
    /// `whsec_…`, readable because it signs.
    pub secret: String,
    /// Whether new events are queued for it and its deliveries attempted.
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Registered at.
    pub created_at: DateTime<Utc>,
}

/// Serialises endpoint registrations of one tenant until commit (for the per-tenant cap).
pub async fn lock_tenant(tx: &mut Transaction<'_, Postgres>, tenant_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "select pg_advisory_xact_lock(hashtextextended('faceswap-webhooks:' || $1::text, 0))",
    )
    .bind(tenant_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How many endpoints the tenant has.
pub async fn count(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar("select count(*) from webhook_endpoints where tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(conn)
        .await
}

/// Registers an endpoint.
#[tracing::instrument(skip_all)]
pub async fn insert(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    tenant_id: Uuid,
    url: &str,
    secret: &str,
) -> sqlx::Result<EndpointRow> {
    sqlx::query_as(
        "insert into webhook_endpoints (endpoint_id, tenant_id, url, secret)
         values ($1, $2, $3, $4)
         returning endpoint_id, tenant_id, url, secret, enabled, disabled_reason, created_at",
    )
    .bind(endpoint_id)
    .bind(tenant_id)
    .bind(url)
    .bind(secret)
    .fetch_one(conn)
    .await
}

/// The tenant's endpoints, oldest first.
#[tracing::instrument(skip_all)]
pub async fn list(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<Vec<EndpointRow>> {
    sqlx::query_as(
        "select endpoint_id, tenant_id, url, secret, enabled, disabled_reason, created_at
         from webhook_endpoints where tenant_id = $1 order by created_at, endpoint_id",
    )
    .bind(tenant_id)
    .fetch_all(conn)
    .await
}

/// Deletes the tenant's endpoint (its deliveries go with it). `false` when the tenant has no
/// such endpoint.
#[tracing::instrument(skip_all)]
pub async fn delete(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    endpoint_id: Uuid,
) -> sqlx::Result<bool> {
    let done =
        sqlx::query("delete from webhook_endpoints where endpoint_id = $1 and tenant_id = $2")
            .bind(endpoint_id)
            .bind(tenant_id)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// A delivery claimed for one attempt, with what is needed to make it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedDelivery {
    /// The endpoint.
    pub endpoint_id: Uuid,
    /// The event.
    pub event_id: i64,
    /// Attempts made before this one.
    pub attempts: i32,
    /// When the delivery was queued (with its event).
    pub created_at: DateTime<Utc>,
    /// The claim's lease; the fencing token of [`record_delivered`] and friends.
    pub claimed_until: DateTime<Utc>,
    /// The endpoint's tenant.
    pub tenant_id: Uuid,
    /// The endpoint's URL.
    pub url: String,
    /// The endpoint's secret.
    pub secret: String,
    /// The event's type.
    pub event_type: String,
    /// The event's data.
    pub payload: Json<serde_json::Value>,
    /// When the event happened.
    pub event_created_at: DateTime<Utc>,
}

/// Claims up to `limit` due deliveries of enabled endpoints (pending, due, not claimed by a live
/// lease) for `lease`. One statement: the row locks end with it.
#[tracing::instrument(skip_all)]
pub async fn claim_due(
    conn: &mut PgConnection,
    lease: Duration,
    limit: i64,
) -> sqlx::Result<Vec<ClaimedDelivery>> {
    sqlx::query_as(
        "with due as (
             select d.endpoint_id, d.event_id
             from webhook_deliveries d
             join webhook_endpoints e on e.endpoint_id = d.endpoint_id
             where d.state = 'pending' and d.next_attempt_at <= now()
               and (d.claimed_until is null or d.claimed_until <= now())
               and e.enabled
             order by d.next_attempt_at
             limit $2
             for update of d skip locked
         ), claimed as (
             update webhook_deliveries d
             set claimed_until = now() + make_interval(secs => $1)
             from due
             where d.endpoint_id = due.endpoint_id and d.event_id = due.event_id
             returning d.endpoint_id, d.event_id, d.attempts, d.created_at, d.claimed_until
         )
         select c.endpoint_id, c.event_id, c.attempts, c.created_at, c.claimed_until,
                e.tenant_id, e.url, e.secret, ev.event_type, ev.payload,
                ev.created_at as event_created_at
         from claimed c
         join webhook_endpoints e on e.endpoint_id = c.endpoint_id
         join session_events ev on ev.event_id = c.event_id
         order by c.event_id",
    )
    .bind(lease.as_secs_f64())
    .bind(limit)
    .fetch_all(conn)
    .await
}

fn clip(error: &str) -> &str {
    match error.char_indices().nth(MAX_ERROR_LEN) {
        Some((i, _)) => &error[..i],
        None => error,
    }
}

/// What `last_error` ends with when a delivery was given up because its endpoint was disabled.
const DISABLED_NOTE: &str = "endpoint disabled";

// The recording statements below are fenced by the claim alone, not by `state = 'pending'`:
// disabling an endpoint gives up its deliveries but keeps their claims, so an attempt that was
// in flight at that moment is still counted (the receiver saw it) and its delivery stays given
// up, or becomes delivered if the receiver accepted it.

/// Records a successful attempt. `false` when the claim was lost (the lease ran out and another
/// worker took the row, or the endpoint was deleted).
#[tracing::instrument(skip_all)]
pub async fn record_delivered(conn: &mut PgConnection, d: &ClaimedDelivery) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update webhook_deliveries
         set state = 'delivered', delivered_at = now(), attempts = attempts + 1,
             claimed_until = null, last_error = null
         where endpoint_id = $1 and event_id = $2 and claimed_until = $3",
    )
    .bind(d.endpoint_id)
    .bind(d.event_id)
    .bind(d.claimed_until)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a failed attempt to be retried after `delay`: `Some(true)` when the retry is
/// scheduled, `Some(false)` when the delivery was given up meanwhile (its endpoint disabled), and
/// `None` when the claim was lost.
#[tracing::instrument(skip_all)]
pub async fn record_retry(
    conn: &mut PgConnection,
    d: &ClaimedDelivery,
    delay: Duration,
    error: &str,
) -> sqlx::Result<Option<bool>> {
    sqlx::query_scalar(
        "update webhook_deliveries
         set attempts = attempts + 1,
             next_attempt_at = case when state = 'pending'
                                    then now() + make_interval(secs => $4)
                                    else next_attempt_at end,
             last_error = case when state = 'pending' then $5 else $5 || '; ' || $6 end,
             claimed_until = null
         where endpoint_id = $1 and event_id = $2 and claimed_until = $3
         returning state = 'pending'",
    )
    .bind(d.endpoint_id)
    .bind(d.event_id)
    .bind(d.claimed_until)
    .bind(delay.as_secs_f64())
    .bind(clip(error))
    .bind(DISABLED_NOTE)
    .fetch_optional(conn)
    .await
}

/// Records the last failed attempt: the delivery is `failed`.
#[tracing::instrument(skip_all)]
pub async fn record_failed(
    conn: &mut PgConnection,
    d: &ClaimedDelivery,
    error: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update webhook_deliveries
         set attempts = attempts + 1, claimed_until = null,
             last_error = case when state = 'pending' then $4 else $4 || '; ' || $5 end,
             state = 'failed'
         where endpoint_id = $1 and event_id = $2 and claimed_until = $3",
    )
    .bind(d.endpoint_id)
    .bind(d.event_id)
    .bind(d.claimed_until)
    .bind(clip(error))
    .bind(DISABLED_NOTE)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether any delivery to the endpoint succeeded at or after `since`.
#[tracing::instrument(skip_all)]
pub async fn delivered_since(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    since: DateTime<Utc>,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "select exists (select 1 from webhook_deliveries
                        where endpoint_id = $1 and state = 'delivered' and delivered_at >= $2)",
    )
    .bind(endpoint_id)
    .bind(since)
    .fetch_one(conn)
    .await
}

/// Disables an enabled endpoint with `reason` and gives up its pending deliveries, keeping the
/// claims of those in flight so that their attempts are still recorded. `None` when it was
/// already disabled (or deleted), so only one worker reports it.
#[tracing::instrument(skip_all)]
pub async fn disable(
    tx: &mut Transaction<'_, Postgres>,
    endpoint_id: Uuid,
    reason: &str,
) -> sqlx::Result<Option<EndpointRow>> {
    let row: Option<EndpointRow> = sqlx::query_as(
        "update webhook_endpoints set enabled = false, disabled_reason = $2
         where endpoint_id = $1 and enabled
         returning endpoint_id, tenant_id, url, secret, enabled, disabled_reason, created_at",
    )
    .bind(endpoint_id)
    .bind(clip(reason))
    .fetch_optional(&mut **tx)
    .await?;
    if row.is_some() {
        sqlx::query(
            "update webhook_deliveries
             set state = 'failed', last_error = coalesce(last_error || '; ', '') || $2
             where endpoint_id = $1 and state = 'pending'",
        )
        .bind(endpoint_id)
        .bind(DISABLED_NOTE)
        .execute(&mut **tx)
        .await?;
    }
    Ok(row)
}
