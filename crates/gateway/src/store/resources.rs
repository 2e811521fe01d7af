//! `resources`: generated resources to archive, and the sessions whose resources are still to
//! look up upstream. Worker claims write a lease (`claimed_until`) in one short statement with
//! `FOR UPDATE SKIP LOCKED`; no row lock is held across a download.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::resources::Discovered;

/// The columns of [`ResourceRow`], as a literal so queries stay `&'static str`.
macro_rules! columns {
    () => {
        "resource_id, tenant_id, session_id, kind, source_url, content_type, size_bytes, \
         upstream_expires_at, state, object_key, sha256, archived_at, attempts, last_error, \
         alarmed_at, expired_at, deleted_at, created_at"
    };
}

/// A resource as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResourceRow {
    /// Id.
    pub resource_id: Uuid,
    /// Owner.
    pub tenant_id: Uuid,
    /// The session that produced it, if any.
    pub session_id: Option<Uuid>,
    /// `snapshot`, `recording`, `face`, …
    pub kind: String,
    /// Where the upstream serves it.
    pub source_url: String,
    /// Media type (announced, then as downloaded).
    pub content_type: Option<String>,
    /// Size in bytes (announced, then as downloaded).
    pub size_bytes: Option<i64>,
    /// When the upstream deletes it.
    pub upstream_expires_at: DateTime<Utc>,
    /// `pending`, `archived`, `expired`, `failed`, `deleted`.
    pub state: String,
    /// Its key in object storage, once archived.
    pub object_key: Option<String>,
    /// SHA-256 of the archived bytes, lower-case hex.
    pub sha256: Option<String>,
    /// When it was archived.
    pub archived_at: Option<DateTime<Utc>>,
    /// Failed download attempts so far.
    pub attempts: i32,
    /// The last download error.
    pub last_error: Option<String>,
    /// When the at-risk alarm was raised.
    pub alarmed_at: Option<DateTime<Utc>>,
    /// When it was marked expired.
    pub expired_at: Option<DateTime<Utc>>,
    /// When its archived copy was deleted.
    pub deleted_at: Option<DateTime<Utc>>,
    /// When it was discovered.
    pub created_at: DateTime<Utc>,
}

/// The insert of discovered resources: `$1` tenant, `$2` session, `$3..$8` the columns (see
/// [`bind_discovered`]); a URL already recorded for the tenant is left as it is.
macro_rules! insert_discovered {
    () => {
        "insert into resources (resource_id, tenant_id, session_id, kind, source_url,
            content_type, size_bytes, upstream_expires_at)
         select r.id, $1, $2, r.kind, r.url, r.ctype, r.size, r.deadline
         from unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                     $8::timestamptz[]) as r(id, kind, url, ctype, size, deadline)
         on conflict (tenant_id, md5(source_url)) do nothing"
    };
}

fn bind_discovered<'q>(
    sql: &'static str,
    tenant_id: Uuid,
    session_id: Option<Uuid>,
    found: &'q [Discovered],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let ids: Vec<Uuid> = found.iter().map(|_| Uuid::now_v7()).collect();
    let kinds: Vec<&str> = found.iter().map(|d| d.kind.as_str()).collect();
    let urls: Vec<&str> = found.iter().map(|d| d.url.as_str()).collect();
    let types: Vec<Option<&str>> = found.iter().map(|d| d.content_type.as_deref()).collect();
    let sizes: Vec<Option<i64>> = found.iter().map(|d| d.size).collect();
    let deadlines: Vec<DateTime<Utc>> = found.iter().map(|d| d.expires_at).collect();
    sqlx::query(sql)
        .bind(tenant_id)
        .bind(session_id)
        .bind(ids)
        .bind(kinds)
        .bind(urls)
        .bind(types)
        .bind(sizes)
        .bind(deadlines)
}

/// Records discovered resources; a URL already recorded for the tenant is left as it is.
/// Returns how many were new.
#[tracing::instrument(skip_all)]
pub async fn insert_discovered(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    session_id: Option<Uuid>,
    found: &[Discovered],
) -> sqlx::Result<u64> {
    if found.is_empty() {
        return Ok(0);
    }
    let done = bind_discovered(insert_discovered!(), tenant_id, session_id, found)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Records a closed session's resources and marks it checked, in one statement (atomic, and a
/// single round trip). Returns how many resources were new.
#[tracing::instrument(skip_all)]
pub async fn record_session_resources(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    session_id: Uuid,
    found: &[Discovered],
) -> sqlx::Result<u64> {
    let row = bind_discovered(
        concat!(
            "with inserted as (",
            insert_discovered!(),
            " returning 1),
             checked as (
                update sessions set resources_checked_at = now(), claimed_until = null
                where session_id = $2 and state = 'closed')
             select count(*) from inserted"
        ),
        tenant_id,
        Some(session_id),
        found,
    )
    .fetch_one(conn)
    .await?;
    let new: i64 = sqlx::Row::try_get(&row, 0)?;
    Ok(new.unsigned_abs())
}

/// Claims up to `batch` pending resources whose next attempt is due and whose deadline has not
/// passed, soonest deadline first.
#[tracing::instrument(skip_all)]
pub async fn claim_due(
    conn: &mut PgConnection,
    lease: Duration,
    batch: i64,
) -> sqlx::Result<Vec<ResourceRow>> {
    sqlx::query_as(concat!(
        "update resources set claimed_until = now() + make_interval(secs => $1)
         where resource_id in (
            select resource_id from resources
            where state = 'pending' and next_attempt_at <= now()
              and upstream_expires_at > now()
              and (claimed_until is null or claimed_until < now())
            order by upstream_expires_at
            limit $2
            for update skip locked)
         returning ",
        columns!()
    ))
    .bind(lease.as_secs_f64())
    .bind(batch)
    .fetch_all(conn)
    .await
}

/// Extends a claim while a long download runs; `false` when the row is no longer pending.
#[tracing::instrument(skip_all)]
pub async fn renew_claim(
    conn: &mut PgConnection,
    resource_id: Uuid,
    lease: Duration,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update resources set claimed_until = now() + make_interval(secs => $2)
         where resource_id = $1 and state = 'pending'",
    )
    .bind(resource_id)
    .bind(lease.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What a finished download stored.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Object key.
    pub object_key: String,
    /// Bytes stored.
    pub size: i64,
    /// Media type.
    pub content_type: String,
    /// SHA-256, lower-case hex.
    pub sha256: String,
}

/// Marks pending resources archived, in one statement; those no longer pending are left out
/// of the answer.
#[tracing::instrument(skip_all, fields(resources = archived.len()))]
pub async fn mark_archived_many(
    conn: &mut PgConnection,
    archived: &[(Uuid, &Stored)],
) -> sqlx::Result<Vec<ResourceRow>> {
    let ids: Vec<Uuid> = archived.iter().map(|(id, _)| *id).collect();
    let keys: Vec<&str> = archived
        .iter()
        .map(|(_, s)| s.object_key.as_str())
        .collect();
    let sizes: Vec<i64> = archived.iter().map(|(_, s)| s.size).collect();
    let types: Vec<&str> = archived
        .iter()
        .map(|(_, s)| s.content_type.as_str())
        .collect();
    let sums: Vec<&str> = archived.iter().map(|(_, s)| s.sha256.as_str()).collect();
    sqlx::query_as(concat!(
        "update resources set state = 'archived', object_key = f.stored_key,
            size_bytes = f.stored_size, content_type = f.stored_type, sha256 = f.stored_sha256,
            archived_at = now(), claimed_until = null, last_error = null
         from unnest($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::text[])
              as f(stored_id, stored_key, stored_size, stored_type, stored_sha256)
         where resource_id = f.stored_id and state = 'pending'
         returning ",
        columns!()
    ))
    .bind(&ids)
    .bind(&keys)
    .bind(&sizes)
    .bind(&types)
    .bind(&sums)
    .fetch_all(conn)
    .await
}

/// Records a failed attempt and when to try again.
#[tracing::instrument(skip_all)]
pub async fn schedule_retry(
    conn: &mut PgConnection,
    resource_id: Uuid,
    delay: Duration,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "update resources set attempts = attempts + 1,
            next_attempt_at = now() + make_interval(secs => $2),
            last_error = $3, claimed_until = null
         where resource_id = $1 and state = 'pending'",
    )
    .bind(resource_id)
    .bind(delay.as_secs_f64())
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a pending resource as never archivable; `None` when it was not pending any more.
#[tracing::instrument(skip_all)]
pub async fn mark_failed(
    conn: &mut PgConnection,
    resource_id: Uuid,
    error: &str,
) -> sqlx::Result<Option<ResourceRow>> {
    sqlx::query_as(concat!(
        "update resources set state = 'failed', attempts = attempts + 1, last_error = $2,
            claimed_until = null
         where resource_id = $1 and state = 'pending'
         returning ",
        columns!()
    ))
    .bind(resource_id)
    .bind(error)
    .fetch_optional(conn)
    .await
}

/// Raises the alarm, once, on pending resources whose deadline is within `margin`: marks them
/// and returns them. Run it in the transaction that writes their events.
#[tracing::instrument(skip_all)]
pub async fn take_alarms(
    conn: &mut PgConnection,
    margin: Duration,
    batch: i64,
) -> sqlx::Result<Vec<ResourceRow>> {
    sqlx::query_as(concat!(
        "update resources set alarmed_at = now()
         where resource_id in (
            select resource_id from resources
            where state = 'pending' and alarmed_at is null
              and upstream_expires_at <= now() + make_interval(secs => $1)
            order by upstream_expires_at
            limit $2
            for update skip locked)
         returning ",
        columns!()
    ))
    .bind(margin.as_secs_f64())
    .bind(batch)
    .fetch_all(conn)
    .await
}

/// Marks expired the pending resources whose deadline has passed and that no download is
/// working on (one that started in time may still finish). Run it in the transaction that
/// writes their events.
#[tracing::instrument(skip_all)]
pub async fn take_expired(conn: &mut PgConnection, batch: i64) -> sqlx::Result<Vec<ResourceRow>> {
    sqlx::query_as(concat!(
        "update resources set state = 'expired', expired_at = now(), claimed_until = null
         where resource_id in (
            select resource_id from resources
            where state = 'pending' and upstream_expires_at <= now()
              and (claimed_until is null or claimed_until < now())
            order by upstream_expires_at
            limit $1
            for update skip locked)
         returning ",
        columns!()
    ))
    .bind(batch)
    .fetch_all(conn)
    .await
}

/// Claims archived resources past their tenant's retention, for deletion. The bound by the
/// shortest retention of any tenant lets the index skip every resource archived since: without
/// it, a step with nothing due walked every archived resource.
#[tracing::instrument(skip_all)]
pub async fn claim_past_retention(
    conn: &mut PgConnection,
    lease: Duration,
    batch: i64,
) -> sqlx::Result<Vec<ResourceRow>> {
    sqlx::query_as(concat!(
        "update resources set claimed_until = now() + make_interval(secs => $1)
         where resource_id in (
            select r.resource_id from resources r join tenants t on t.tenant_id = r.tenant_id
            where r.state = 'archived'
              and r.archived_at < now() - make_interval(
                    days => (select min(archive_retention_days) from tenants))
              and r.archived_at < now() - make_interval(days => t.archive_retention_days)
              and (r.claimed_until is null or r.claimed_until < now())
            order by r.archived_at
            limit $2
            for update of r skip locked)
         returning ",
        columns!()
    ))
    .bind(lease.as_secs_f64())
    .bind(batch)
    .fetch_all(conn)
    .await
}

/// Marks an archived resource deleted; `None` when it was not archived any more.
#[tracing::instrument(skip_all)]
pub async fn mark_deleted(
    conn: &mut PgConnection,
    resource_id: Uuid,
) -> sqlx::Result<Option<ResourceRow>> {
    sqlx::query_as(concat!(
        "update resources set state = 'deleted', deleted_at = now(), claimed_until = null
         where resource_id = $1 and state = 'archived'
         returning ",
        columns!()
    ))
    .bind(resource_id)
    .fetch_optional(conn)
    .await
}

/// Drops a claim (e.g. a deletion that failed, to be tried again later).
#[tracing::instrument(skip_all)]
pub async fn release_claim(conn: &mut PgConnection, resource_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("update resources set claimed_until = null where resource_id = $1")
        .bind(resource_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The tenant's resource by id; another tenant's is not found.
#[tracing::instrument(skip_all)]
pub async fn find(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    resource_id: Uuid,
) -> sqlx::Result<Option<ResourceRow>> {
    sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from resources where resource_id = $1 and tenant_id = $2"
    ))
    .bind(resource_id)
    .bind(tenant_id)
    .fetch_optional(conn)
    .await
}

/// Filters and position of a page of resources.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this session's.
    pub session_id: Option<Uuid>,
    /// Only in this state.
    pub state: Option<String>,
    /// Only resources recorded before this one (the previous page's last id).
    pub before: Option<Uuid>,
    /// Page size.
    pub limit: i64,
}

/// A page of the tenant's resources, newest first.
#[tracing::instrument(skip_all)]
pub async fn list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    q: &ListQuery,
) -> sqlx::Result<Vec<ResourceRow>> {
    // Ids are UUIDv7, so id order is discovery order and one key gives a stable cursor.
    sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from resources
         where tenant_id = $1
           and ($2::uuid is null or session_id = $2)
           and ($3::text is null or state = $3)
           and ($4::uuid is null or resource_id < $4)
         order by resource_id desc
         limit $5"
    ))
    .bind(tenant_id)
    .bind(q.session_id)
    .bind(&q.state)
    .bind(q.before)
    .bind(q.limit)
    .fetch_all(conn)
    .await
}

/// The archive backlog, for metrics and alarms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct Backlog {
    /// Resources not archived yet.
    pub pending: i64,
    /// Of those, the ones whose at-risk alarm has been raised.
    pub at_risk: i64,
    /// The soonest upstream deadline among them.
    pub oldest_deadline: Option<DateTime<Utc>>,
}

/// Counts of the archive backlog (over the partial index of pending resources).
#[tracing::instrument(skip_all)]
pub async fn backlog(conn: &mut PgConnection) -> sqlx::Result<Backlog> {
    sqlx::query_as(
        "select count(*) as pending,
            count(*) filter (where alarmed_at is not null) as at_risk,
            min(upstream_expires_at) as oldest_deadline
         from resources where state = 'pending'",
    )
    .fetch_one(conn)
    .await
}

/// A closed session whose resources are still to look up.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UncheckedSession {
    /// Gateway id.
    pub session_id: Uuid,
    /// Owner.
    pub tenant_id: Uuid,
    /// Upstream id.
    pub upstream_id: String,
}

/// Claims closed sessions (closed within `horizon`) whose resources were not looked up yet.
#[tracing::instrument(skip_all)]
pub async fn claim_unchecked_sessions(
    conn: &mut PgConnection,
    horizon: Duration,
    lease: Duration,
    batch: i64,
) -> sqlx::Result<Vec<UncheckedSession>> {
    sqlx::query_as(
        "update sessions set claimed_until = now() + make_interval(secs => $2)
         where session_id in (
            select session_id from sessions
            where state = 'closed' and resources_checked_at is null
              and upstream_id is not null
              and closed_at > now() - make_interval(secs => $1)
              and (claimed_until is null or claimed_until < now())
            order by closed_at
            limit $3
            for update skip locked)
         returning session_id, tenant_id, upstream_id",
    )
    .bind(horizon.as_secs_f64())
    .bind(lease.as_secs_f64())
    .bind(batch)
    .fetch_all(conn)
    .await
}

/// Puts off the next lookup of a closed session's resources (the last one failed).
#[tracing::instrument(skip_all)]
pub async fn defer_session_check(
    conn: &mut PgConnection,
    session_id: Uuid,
    delay: Duration,
) -> sqlx::Result<()> {
    sqlx::query(
        "update sessions set claimed_until = now() + make_interval(secs => $2)
         where session_id = $1 and state = 'closed' and resources_checked_at is null",
    )
    .bind(session_id)
    .bind(delay.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets how many days the tenant's archived objects are kept; `None` when there is no such
/// tenant.
#[tracing::instrument(skip_all)]
pub async fn set_retention_days(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    days: i32,
) -> sqlx::Result<Option<i32>> {
    sqlx::query_scalar(
        "update tenants set archive_retention_days = $2 where tenant_id = $1
         returning archive_retention_days",
    )
    .bind(tenant_id)
    .bind(days)
    .fetch_optional(conn)
    .await
}

/// How many days the tenant's archived objects are kept.
#[tracing::instrument(skip_all)]
pub async fn retention_days(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<Option<i32>> {
    sqlx::query_scalar("select archive_retention_days from tenants where tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(conn)
        .await
}
