//! `sessions` and the `usage_ledger`.

use chrono::{DateTime, Utc};
use faceswap_wire::LiveSession;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::domain::quota::QuotaUsage;
use crate::domain::session::CloseReason;

/// The columns of [`SessionRow`], as a literal so queries stay `&'static str`.
macro_rules! columns {
    () => {
        "session_id, tenant_id, upstream_id, state, faceswap_status, channel_id, \
         front_user_id, front_rtc_token, algorithm_user_id, app_id, source_image, created_at, \
         opened_at, last_activity_at, closed_at, close_reason"
    };
}

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
}

/// The tenant's current use of its quota: sessions holding a slot, and session-seconds charged
/// plus those running in open sessions.
#[tracing::instrument(skip_all)]
pub async fn quota_usage(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<QuotaUsage> {
    let (active_sessions, seconds_used): (i64, i64) = sqlx::query_as(
        "select
            (select count(*) from sessions
              where tenant_id = $1 and state in ('creating', 'open', 'closing')),
            (select coalesce(sum(seconds), 0)::bigint from usage_ledger where tenant_id = $1)
            + (select coalesce(sum(ceil(extract(epoch from now() - coalesce(opened_at, created_at)))), 0)::bigint
                 from sessions where tenant_id = $1 and state in ('open', 'closing'))",
    )
    .bind(tenant_id)
    .fetch_one(conn)
    .await?;
    Ok(QuotaUsage {
        active_sessions,
        seconds_used,
    })
}

/// Writes the reservation of a session about to be created upstream.
#[tracing::instrument(skip_all)]
pub async fn insert_creating(
    conn: &mut PgConnection,
    session_id: Uuid,
    tenant_id: Uuid,
    source_image: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into sessions (session_id, tenant_id, state, source_image)
         values ($1, $2, 'creating', $3)",
    )
    .bind(session_id)
    .bind(tenant_id)
    .bind(Json(source_image))
    .execute(conn)
    .await?;
    Ok(())
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
        columns!(),
        ""
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

/// Releases a reservation whose upstream create may or may not have happened.
#[tracing::instrument(skip_all)]
pub async fn mark_lost(conn: &mut PgConnection, session_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "update sessions set state = 'lost', closed_at = now(), close_reason = 'lost'
         where session_id = $1 and state = 'creating'",
    )
    .bind(session_id)
    .execute(conn)
    .await?;
    Ok(())
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
#[tracing::instrument(skip_all)]
pub async fn touch(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    session_id: Uuid,
) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as(concat!(
        "update sessions set last_activity_at = now()
         where session_id = $1 and tenant_id = $2
         returning ",
        columns!(),
        ""
    ))
    .bind(session_id)
    .bind(tenant_id)
    .fetch_optional(conn)
    .await
}

/// Stores the latest upstream status of an open session.
#[tracing::instrument(skip_all)]
pub async fn set_status(
    conn: &mut PgConnection,
    session_id: Uuid,
    faceswap_status: i16,
) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as(concat!(
        "update sessions set faceswap_status = $2
         where session_id = $1
         returning ",
        columns!(),
        ""
    ))
    .bind(session_id)
    .bind(faceswap_status)
    .fetch_optional(conn)
    .await
}

/// Stores new source faces of an open session after the upstream accepted them.
#[tracing::instrument(skip_all)]
pub async fn set_source_image(
    conn: &mut PgConnection,
    session_id: Uuid,
    source_image: &serde_json::Value,
    faceswap_status: i16,
) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as(concat!(
        "update sessions set source_image = $2, faceswap_status = $3, last_activity_at = now()
         where session_id = $1 and state = 'open'
         returning ",
        columns!(),
        ""
    ))
    .bind(session_id)
    .bind(Json(source_image))
    .bind(faceswap_status)
    .fetch_optional(conn)
    .await
}

/// Claims an open session for closing; `None` when it is not open (already closing, closed,
/// or another tenant's), so only one closer proceeds.
#[tracing::instrument(skip_all)]
pub async fn begin_close(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    session_id: Uuid,
) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as(concat!(
        "update sessions set state = 'closing', last_activity_at = now()
         where session_id = $1 and tenant_id = $2 and state = 'open'
         returning ",
        columns!(),
        ""
    ))
    .bind(session_id)
    .bind(tenant_id)
    .fetch_optional(conn)
    .await
}

/// Returns a session whose upstream close failed to `open`.
#[tracing::instrument(skip_all)]
pub async fn abort_close(conn: &mut PgConnection, session_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("update sessions set state = 'open' where session_id = $1 and state = 'closing'")
        .bind(session_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks a closing session closed and charges its seconds to the ledger, once. Run it in a
/// transaction so the state and the charge land together.
#[tracing::instrument(skip_all)]
pub async fn finish_close(
    conn: &mut PgConnection,
    session_id: Uuid,
    reason: CloseReason,
    final_status: Option<i16>,
) -> sqlx::Result<Option<SessionRow>> {
    let row: Option<SessionRow> = sqlx::query_as(concat!(
        "update sessions set state = 'closed', closed_at = now(), close_reason = $2,
            faceswap_status = coalesce($3, faceswap_status)
         where session_id = $1 and state = 'closing'
         returning ",
        columns!(),
        ""
    ))
    .bind(session_id)
    .bind(reason.as_str())
    .bind(final_status)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = &row {
        let opened = row.opened_at.unwrap_or(row.created_at);
        let closed = row.closed_at.unwrap_or_else(Utc::now);
        let seconds = crate::domain::session::charged_seconds(opened, closed);
        sqlx::query(
            "insert into usage_ledger (tenant_id, session_id, seconds) values ($1, $2, $3)
             on conflict (session_id) do nothing",
        )
        .bind(row.tenant_id)
        .bind(row.session_id)
        .bind(seconds)
        .execute(conn)
        .await?;
    }
    Ok(row)
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
