//! `sessions` and the `usage_ledger`.

use chrono::{DateTime, Utc};
use faceswap_wire::LiveSession;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::domain::quota::{QuotaLimits, QuotaUsage};
use crate::domain::session::CloseReason;

/// How finely tenant activity on a session is recorded, in seconds (see [`touch`]).
pub const ACTIVITY_RESOLUTION_SECONDS: f64 = 1.0;
/// Most the stored activity may lag the last call: the resolution, plus the period at which
/// calls served from memory are written ([`crate::activity::FLUSH_EVERY`]). Idle timeouts are
/// extended by this much, so no session is closed as idle early.
pub const ACTIVITY_LAG_SECONDS: f64 =
    ACTIVITY_RESOLUTION_SECONDS + crate::activity::FLUSH_EVERY.as_secs_f64();

/// The columns of [`SessionRow`], as a literal so queries stay `&'static str`.
macro_rules! columns {
    () => {
        "session_id, tenant_id, upstream_id, state, faceswap_status, channel_id, \
         front_user_id, front_rtc_token, algorithm_user_id, app_id, source_image, created_at, \
         opened_at, last_activity_at, closed_at, close_reason, close_attempts"
    };
}
pub(crate) use columns;

/// A session as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    /// Gateway id.
    pub session_id: Uuid,
    /// Owner.
    pub tenant_id: Uuid,
    /// Upstream id, once known.
    pub upstream_id: Option<String>,
    /// Life-cycle state (see `domain::session::SessionState`).
    pub state: String,
    /// Last known upstream status.
    pub faceswap_status: Option<i16>,
    /// Agora channel.
    pub channel_id: Option<String>,
    /// Agora front-end user id.
    pub front_user_id: Option<String>,
    /// Agora front-end token.
    pub front_rtc_token: Option<String>,
    /// Agora algorithm user id.
    pub algorithm_user_id: Option<String>,
    /// Agora app id.
    pub app_id: Option<String>,
    /// The source faces, as sent upstream.
    pub source_image: Json<serde_json::Value>,
    /// Reservation time.
    pub created_at: DateTime<Utc>,
    /// When the upstream session was confirmed.
    pub opened_at: Option<DateTime<Utc>>,
    /// Last tenant call naming the session.
    pub last_activity_at: DateTime<Utc>,
    /// Close time.
    pub closed_at: Option<DateTime<Utc>>,
    /// Why it closed.
    pub close_reason: Option<String>,
    /// Failed upstream close attempts so far.
    pub close_attempts: i32,
}

/// The tenant's current use of its quota: sessions holding a slot, and session-seconds charged
/// plus those running in sessions that hold one. It reads the tenant's running totals (the
/// database's `tenant_quota_usage`, which [`reserve`] uses too), kept by triggers.
#[tracing::instrument(skip_all)]
pub async fn quota_usage(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<QuotaUsage> {
    let (active_sessions, seconds_used): (i64, i64) =
        sqlx::query_as("select active_sessions, seconds_used from tenant_quota_usage($1)")
            .bind(tenant_id)
            .fetch_one(conn)
            .await?;
    Ok(QuotaUsage {
        active_sessions,
        seconds_used,
    })
}

/// The outcome of [`reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The session is written as `creating` and holds a slot.
    Reserved,
    /// One more session does not fit: the tenant's limits and use as the check saw them.
    Refused(QuotaLimits, QuotaUsage),
    /// No such tenant.
    NoTenant,
}

/// Checks the tenant's quota and writes the reservation of a session about to be created
/// upstream, in one statement (the database's `reserve_session`). Run it outside a transaction:
/// the lock on the tenant's totals row that makes concurrent creates of one tenant check one at
/// a time is then held only while the server works and commits, not across round trips to this
/// process.
#[tracing::instrument(skip_all)]
pub async fn reserve(
    conn: &mut PgConnection,
    session_id: Uuid,
    tenant_id: Uuid,
    source_image: &serde_json::Value,
) -> sqlx::Result<Reservation> {
    type Row = (
        bool,
        bool,
        Option<i32>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    );
    let (found, reserved, max, budget, active, used): Row = sqlx::query_as(
        "select tenant_found, reserved, max_concurrent_sessions, session_seconds_budget,
                active_sessions, seconds_used
         from reserve_session($1, $2, $3)",
    )
    .bind(session_id)
    .bind(tenant_id)
    .bind(Json(source_image))
    .fetch_one(conn)
    .await?;
    Ok(match (found, reserved) {
        (false, _) => Reservation::NoTenant,
        (true, true) => Reservation::Reserved,
        (true, false) => Reservation::Refused(
            QuotaLimits {
                max_concurrent_sessions: i64::from(max.unwrap_or_default()),
                session_seconds_budget: budget,
            },
            QuotaUsage {
                active_sessions: active.unwrap_or_default(),
                seconds_used: used.unwrap_or_default(),
            },
        ),
    })
}

/// Records the upstream session the moment it exists.
#[tracing::instrument(skip_all)]
pub async fn mark_open(
    conn: &mut PgConnection,
    session_id: Uuid,
    live: &LiveSession,
) -> sqlx::Result<SessionRow> {
    sqlx::query_as(concat!(
        "update sessions set state = 'open', upstream_id = $2, faceswap_status = $3,
            channel_id = $4, front_user_id = $5, front_rtc_token = $6, algorithm_user_id = $7,
            app_id = $8, opened_at = now(), last_activity_at = now()
         where session_id = $1 and state = 'creating'
         returning ",
        columns!()
    ))
    .bind(session_id)
    .bind(&live.id)
    .bind(i16::from(live.faceswap_status.as_u8()))
    .bind(&live.channel_id)
    .bind(&live.front_user_id)
    .bind(&live.front_rtc_token)
    .bind(&live.algorithm_user_id)
    .bind(&live.app_id)
    .fetch_one(conn)
    .await
}

/// Drops a reservation whose upstream create was refused: nothing exists upstream.
#[tracing::instrument(skip_all)]
pub async fn delete_creating(conn: &mut PgConnection, session_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("delete from sessions where session_id = $1 and state = 'creating'")
        .bind(session_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Releases a reservation whose upstream create may or may not have happened; `false` when the
/// row was no longer `creating`.
#[tracing::instrument(skip_all)]
pub async fn mark_lost(conn: &mut PgConnection, session_id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update sessions set state = 'lost', closed_at = now(), close_reason = 'lost'
         where session_id = $1 and state = 'creating'",
    )
    .bind(session_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The tenant's session by id; another tenant's session is not found.
#[tracing::instrument(skip_all)]
pub async fn find(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    session_id: Uuid,
) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from sessions where session_id = $1 and tenant_id = $2"
    ))
    .bind(session_id)
    .bind(tenant_id)
    .fetch_optional(conn)
    .await
}

/// Records tenant activity on a session and returns it.
///
/// Activity is stored to [`ACTIVITY_RESOLUTION_SECONDS`]: within that time of the stored value
/// the row is only read, so a session called many times a second costs no write, no WAL flush
/// and no wait on its row lock. The reaper adds [`ACTIVITY_LAG_SECONDS`] to every idle
/// timeout, so a session is never closed as idle early.
#[tracing::instrument(skip_all)]
pub async fn touch(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    session_id: Uuid,
) -> sqlx::Result<Option<SessionRow>> {
    // The update only matches (and only locks) a row whose stored activity is stale; the
    // second branch reads the row as it was when the update did not match.
    sqlx::query_as(concat!(
        "with touched as (
            update sessions set last_activity_at = now()
             where session_id = $1 and tenant_id = $2
               and last_activity_at < now() - make_interval(secs => $3)
            returning ",
        columns!(),
        ")
         select * from touched
         union all
         select ",
        columns!(),
        " from sessions
          where session_id = $1 and tenant_id = $2 and not exists (select 1 from touched)"
    ))
    .bind(session_id)
    .bind(tenant_id)
    .bind(ACTIVITY_RESOLUTION_SECONDS)
    .fetch_optional(conn)
    .await
}

/// Records activity on many sessions at once (see [`crate::activity`]); only rows whose stored
/// activity is older than the resolution are written. Rows are locked in id order (`ids`
/// sorted), so two writers of overlapping batches cannot deadlock each other.
#[tracing::instrument(skip_all)]
pub async fn touch_many(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query(
        "update sessions set last_activity_at = now()
          where session_id in (
                select session_id from sessions
                 where session_id = any($1) and state = 'open'
                   and last_activity_at < now() - make_interval(secs => $2)
                 order by session_id
                   for no key update)",
    )
    .bind(ids)
    .bind(ACTIVITY_RESOLUTION_SECONDS)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores a new upstream status if the stored one is still `from` (compare-and-set, so two
/// observers of one change record it once). `None` when it changed meanwhile.
#[tracing::instrument(skip_all)]
pub async fn set_status(
    conn: &mut PgConnection,
    session_id: Uuid,
    from: Option<i16>,
    to: i16,
) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as(concat!(
        "update sessions set faceswap_status = $3
         where session_id = $1 and faceswap_status is not distinct from $2
         returning ",
        columns!()
    ))
    .bind(session_id)
    .bind(from)
    .bind(to)
    .fetch_optional(conn)
    .await
}

/// Stores new source faces of an open session after the upstream accepted them.
#[tracing::instrument(skip_all)]
pub async fn set_source_image(
    conn: &mut PgConnection,
    session_id: Uuid,
    source_image: &serde_json::Value,
) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as(concat!(
        "update sessions set source_image = $2, last_activity_at = now()
         where session_id = $1 and state = 'open'
         returning ",
        columns!()
    ))
    .bind(session_id)
    .bind(Json(source_image))
    .fetch_optional(conn)
    .await
}

/// Claims a session for an upstream close attempt: an open one, or one whose earlier close
/// failed and is not claimed by another worker now. `None` when neither (already closed, being
/// closed elsewhere, or another tenant's). The first reason asked for is kept.
#[tracing::instrument(skip_all)]
pub async fn claim_for_close(
    conn: &mut PgConnection,
    tenant_id: Option<Uuid>,
    session_id: Uuid,
    reason: CloseReason,
    lease: std::time::Duration,
) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as(concat!(
        "update sessions set state = 'closing',
            pending_close_reason = coalesce(pending_close_reason, $3),
            claimed_until = now() + make_interval(secs => $4)
         where session_id = $1 and ($2::uuid is null or tenant_id = $2)
           and (state = 'open'
                or (state = 'closing' and (claimed_until is null or claimed_until < now())))
         returning ",
        columns!()
    ))
    .bind(session_id)
    .bind(tenant_id)
    .bind(reason.as_str())
    .bind(lease.as_secs_f64())
    .fetch_optional(conn)
    .await
}

/// Records a failed upstream close: the session stays `closing` and is retried at `next_at`.
#[tracing::instrument(skip_all)]
pub async fn schedule_close_retry(
    conn: &mut PgConnection,
    session_id: Uuid,
    delay: std::time::Duration,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "update sessions set close_attempts = close_attempts + 1,
            next_close_at = now() + make_interval(secs => $2),
            last_close_error = $3, claimed_until = null
         where session_id = $1 and state = 'closing'",
    )
    .bind(session_id)
    .bind(delay.as_secs_f64())
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks closing sessions closed and charges their seconds to the ledger, once each, in two
/// statements. Returns the rows and the seconds charged; sessions no longer `closing` (another
/// closer settled them) are left out. Run it in a transaction so the states and the charges land
/// together.
#[tracing::instrument(skip_all, fields(sessions = closes.len()))]
pub async fn finish_close_many(
    conn: &mut PgConnection,
    closes: &[(Uuid, Option<i16>)],
) -> sqlx::Result<Vec<(SessionRow, i64)>> {
    let (ids, statuses): (Vec<Uuid>, Vec<Option<i16>>) = closes.iter().copied().unzip();
    let rows: Vec<SessionRow> = sqlx::query_as(concat!(
        "update sessions set state = 'closed', closed_at = now(),
            close_reason = coalesce(pending_close_reason, 'client'),
            faceswap_status = coalesce(f.final_status, faceswap_status),
            claimed_until = null, next_close_at = null
         from unnest($1::uuid[], $2::int2[]) as f(id, final_status)
         where session_id = f.id and state = 'closing'
         returning ",
        columns!()
    ))
    .bind(&ids)
    .bind(&statuses)
    .fetch_all(&mut *conn)
    .await?;
    let charged: Vec<(SessionRow, i64)> = rows
        .into_iter()
        .map(|row| {
            let opened = row.opened_at.unwrap_or(row.created_at);
            let closed = row.closed_at.unwrap_or_else(Utc::now);
            let seconds = crate::domain::session::charged_seconds(opened, closed);
            (row, seconds)
        })
        .collect();
    let (tenants, sessions, seconds): (Vec<Uuid>, Vec<Uuid>, Vec<i64>) = charged
        .iter()
        .map(|(row, seconds)| (row.tenant_id, row.session_id, *seconds))
        .collect();
    sqlx::query(
        "insert into usage_ledger (tenant_id, session_id, seconds)
         select * from unnest($1::uuid[], $2::uuid[], $3::int8[])
         on conflict (session_id) do nothing",
    )
    .bind(&tenants)
    .bind(&sessions)
    .bind(&seconds)
    .execute(conn)
    .await?;
    Ok(charged)
}

/// Locks the usage totals these sessions count in, in one order. Closing sessions updates
/// their tenants' totals at commit (a deferred trigger) in whatever order the rows came; a
/// transaction that closes several sessions calls this just before committing, so two such
/// transactions sharing totals rows cannot deadlock.
#[tracing::instrument(skip_all)]
pub async fn lock_usage_totals(conn: &mut PgConnection, session_ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query(
        "select 1 from tenant_usage
         where (tenant_id, shard) in (select tenant_id, usage_shard(session_id) from sessions
                                      where session_id = any($1))
         order by tenant_id, shard for update",
    )
    .bind(session_ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// Filters and position of a page of sessions.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only sessions in this state.
    pub state: Option<String>,
    /// Only sessions with this upstream status.
    pub faceswap_status: Option<i16>,
    /// Only sessions created before this one (the previous page's last id).
    pub before: Option<Uuid>,
    /// Page size.
    pub limit: i64,
}

/// A page of the tenant's sessions, newest first.
#[tracing::instrument(skip_all)]
pub async fn list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    q: &ListQuery,
) -> sqlx::Result<Vec<SessionRow>> {
    // Ids are UUIDv7, so id order is creation order and one key gives a stable cursor.
    sqlx::query_as(concat!(
        "select ",
        columns!(),
        " from sessions
         where tenant_id = $1
           and ($2::text is null or state = $2)
           and ($3::smallint is null or faceswap_status = $3)
           and ($4::uuid is null or session_id < $4)
         order by session_id desc
         limit $5"
    ))
    .bind(tenant_id)
    .bind(&q.state)
    .bind(q.faceswap_status)
    .bind(q.before)
    .bind(q.limit)
    .fetch_all(conn)
    .await
}

/// Session-seconds charged to the tenant so far.
#[tracing::instrument(skip_all)]
pub async fn seconds_charged(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "select coalesce(sum(seconds), 0)::bigint from usage_ledger where tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_one(conn)
    .await
}

/// Claims up to `batch` open sessions whose upstream status is unsettled (1, 2 or unknown) and
/// was not polled within `interval`, marking them polled now.
#[tracing::instrument(skip_all)]
pub async fn claim_for_poll(
    conn: &mut PgConnection,
    interval: std::time::Duration,
    lease: std::time::Duration,
    batch: i64,
) -> sqlx::Result<Vec<SessionRow>> {
    sqlx::query_as(concat!(
        "update sessions set claimed_until = now() + make_interval(secs => $2), polled_at = now()
         where session_id in (
            select session_id from sessions
            where state = 'open' and (faceswap_status is null or faceswap_status in (1, 2))
              and (polled_at is null or polled_at < now() - make_interval(secs => $1))
              and (claimed_until is null or claimed_until < now())
            order by polled_at nulls first, created_at
            limit $3
            for no key update skip locked)
         returning ",
        columns!()
    ))
    .bind(interval.as_secs_f64())
    .bind(lease.as_secs_f64())
    .bind(batch)
    .fetch_all(conn)
    .await
}

/// Drops a worker's claims on the sessions that are still open, in one statement (one commit
/// for a whole batch; rows are locked in id order, as the activity batch does).
#[tracing::instrument(skip_all, fields(sessions = session_ids.len()))]
pub async fn release_claims(conn: &mut PgConnection, session_ids: &[Uuid]) -> sqlx::Result<()> {
    let mut ids = session_ids.to_vec();
    ids.sort_unstable();
    sqlx::query(
        "update sessions set claimed_until = null
         where session_id = any($1) and state = 'open'",
    )
    .bind(&ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// Open sessions that must be closed now, with the reason: failed upstream, stuck queuing past
/// `queue_timeout`, tenant over its session-seconds budget, open past the tenant's maximum
/// duration, or idle past its idle timeout (in that order of precedence).
#[tracing::instrument(skip_all)]
pub async fn due_for_reaping(
    conn: &mut PgConnection,
    queue_timeout: std::time::Duration,
    batch: i64,
) -> sqlx::Result<Vec<(Uuid, String)>> {
    sqlx::query_as(
        "with over_budget as (
            select t.tenant_id from tenants t, tenant_quota_usage(t.tenant_id) u
            where t.session_seconds_budget is not null
              and u.seconds_used >= t.session_seconds_budget
         )
         select s.session_id,
            case
                when s.faceswap_status = 4 then 'failed'
                when s.faceswap_status = 1 and s.created_at < now() - make_interval(secs => $1) then 'failed'
                when b.tenant_id is not null then 'budget'
                when coalesce(s.opened_at, s.created_at) < now() - make_interval(secs => t.max_session_seconds) then 'max_duration'
                else 'idle'
            end
         from sessions s
         join tenants t on t.tenant_id = s.tenant_id
         left join over_budget b on b.tenant_id = s.tenant_id
         where s.state = 'open' and (s.claimed_until is null or s.claimed_until < now())
           and (s.faceswap_status = 4
                or (s.faceswap_status = 1 and s.created_at < now() - make_interval(secs => $1))
                or b.tenant_id is not null
                or coalesce(s.opened_at, s.created_at) < now() - make_interval(secs => t.max_session_seconds)
                or s.last_activity_at < now() - make_interval(secs => t.idle_timeout_seconds + $3))
         order by s.created_at
         limit $2",
    )
    .bind(queue_timeout.as_secs_f64())
    .bind(batch)
    .bind(ACTIVITY_LAG_SECONDS)
    .fetch_all(conn)
    .await
}

/// Claims sessions for closing with their reasons. A row another worker claimed first, or one
/// that stopped being idle (a heartbeat) since it was selected, is skipped, so each session is
/// claimed once.
#[tracing::instrument(skip_all)]
pub async fn claim_many_for_close(
    conn: &mut PgConnection,
    due: &[(Uuid, String)],
    lease: std::time::Duration,
) -> sqlx::Result<Vec<SessionRow>> {
    let ids: Vec<Uuid> = due.iter().map(|(id, _)| *id).collect();
    let reasons: Vec<String> = due.iter().map(|(_, r)| r.clone()).collect();
    sqlx::query_as(concat!(
        "update sessions s set state = 'closing', pending_close_reason = c.reason,
            claimed_until = now() + make_interval(secs => $3)
         from unnest($1::uuid[], $2::text[]) as c(id, reason), tenants t
         where s.session_id = c.id and t.tenant_id = s.tenant_id and s.state = 'open'
           and (s.claimed_until is null or s.claimed_until < now())
           and (c.reason <> 'idle'
                or s.last_activity_at < now() - make_interval(secs => t.idle_timeout_seconds + $4))
         returning ",
        "s.session_id, s.tenant_id, s.upstream_id, s.state, s.faceswap_status, s.channel_id, \
         s.front_user_id, s.front_rtc_token, s.algorithm_user_id, s.app_id, s.source_image, \
         s.created_at, s.opened_at, s.last_activity_at, s.closed_at, s.close_reason, s.close_attempts"
    ))
    .bind(&ids)
    .bind(&reasons)
    .bind(lease.as_secs_f64())
    .bind(ACTIVITY_LAG_SECONDS)
    .fetch_all(conn)
    .await
}

/// Claims `closing` sessions whose retry is due, or whose closer vanished (lease lapsed).
#[tracing::instrument(skip_all)]
pub async fn claim_close_retries(
    conn: &mut PgConnection,
    lease: std::time::Duration,
    batch: i64,
) -> sqlx::Result<Vec<SessionRow>> {
    sqlx::query_as(concat!(
        "update sessions set claimed_until = now() + make_interval(secs => $1)
         where session_id in (
            select session_id from sessions
            where state = 'closing'
              and (claimed_until is null or claimed_until < now())
              and (next_close_at is null or next_close_at <= now())
            order by next_close_at nulls first
            limit $2
            for no key update skip locked)
         returning ",
        columns!()
    ))
    .bind(lease.as_secs_f64())
    .bind(batch)
    .fetch_all(conn)
    .await
}

/// Reservations older than `older_than` still `creating`: their create request died.
#[tracing::instrument(skip_all)]
pub async fn stale_creating(
    conn: &mut PgConnection,
    older_than: std::time::Duration,
    batch: i64,
) -> sqlx::Result<Vec<(Uuid, Uuid, Option<String>)>> {
    sqlx::query_as(
        "select session_id, tenant_id, upstream_id from sessions
         where state = 'creating' and created_at < now() - make_interval(secs => $1)
         order by created_at limit $2",
    )
    .bind(older_than.as_secs_f64())
    .bind(batch)
    .fetch_all(conn)
    .await
}

/// Turns a dead create whose upstream id is known into a session being closed (reason
/// `reconciled`), claimed by the caller; `None` when it was no longer `creating`.
#[tracing::instrument(skip_all)]
pub async fn claim_creating_for_close(
    conn: &mut PgConnection,
    session_id: Uuid,
    lease: std::time::Duration,
) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as(concat!(
        "update sessions set state = 'closing', pending_close_reason = 'reconciled',
            opened_at = coalesce(opened_at, created_at),
            claimed_until = now() + make_interval(secs => $2)
         where session_id = $1 and state = 'creating' and upstream_id is not null
         returning ",
        columns!()
    ))
    .bind(session_id)
    .bind(lease.as_secs_f64())
    .fetch_optional(conn)
    .await
}
