//! The tenant's event stream (served as SSE by `http::events`).
//!
//! **Where a stream starts.** After the `Last-Event-ID` a reconnecting client sends (or
//! `?last_event_id=`); with neither, after the tenant's latest event at connect time (only new
//! events), unless `?from=start` asks for every retained event. Replaying everything by default
//! would flood a client that only wants live changes each time it connects without an id.
//!
//! **No gaps, no duplicates.** Events are sent in (writing transaction, id) order, reading only
//! rows of transactions older than every one still running (see [`store::events::list_after`]),
//! so moving the cursor to the last event sent never skips an event committed later nor repeats
//! one, without any lock held by writers. Within a tenant, ids are unique but an event of an
//! older transaction may carry a higher id than one sent after it: clients resume with the id
//! they saw last, whatever its value. The session filter keeps the same order, so resuming a
//! filtered stream works the same way.
//!
//! **Delivery.** The table is polled every [`POLL_INTERVAL`] while the client has caught up
//! (one short indexed query; no connection is held between polls). The stream ends when the
//! gateway drains for shutdown or the database fails; clients reconnect with `Last-Event-ID`.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::Stream;
use uuid::Uuid;

use crate::domain::ids::{SessionId, TenantId};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store;
use crate::store::events::{Cursor, EventRow};

/// Pause between polls once the client has every event.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Events read per query.
const BATCH: i64 = 500;

/// What the client asked for, as received.
#[derive(Debug, Default)]
pub struct StreamRequest {
    /// Only this session's events (`ses_…`).
    pub session_id: Option<String>,
    /// Resume after this event id (`Last-Event-ID`, or `?last_event_id=`).
    pub last_event_id: Option<String>,
    /// `start` replays every retained event; `now` (the default) only new ones.
    pub from: Option<String>,
}

/// A checked stream request: whose events, and after which id.
#[derive(Debug, Clone, Copy)]
pub struct StreamStart {
    /// The tenant.
    pub tenant: TenantId,
    /// The session filter.
    pub session: Option<Uuid>,
    /// Events after this position are sent.
    pub after: Cursor,
}

/// Checks the request before anything is streamed: a session of another tenant (or none) is
/// 404, a malformed id or `from` is 1003.
pub async fn open(
    state: &AppState,
    tenant: TenantId,
    req: StreamRequest,
) -> Result<StreamStart, ApiError> {
    let mut conn = state.db.acquire().await?;
    let session = match req.session_id.as_deref().map(str::trim) {
        None => None,
        Some("") => return Err(ApiError::BadRequest("session_id cannot be empty".into())),
        Some(raw) => {
            let id = SessionId::parse(raw).map_err(|_| ApiError::NotFound("session"))?;
            store::sessions::find(&mut conn, tenant.0, id.0)
                .await?
                .ok_or(ApiError::NotFound("session"))?;
            Some(id.0)
        }
    };
    let after = match (
        req.last_event_id.as_deref().map(str::trim),
        req.from.as_deref(),
    ) {
        (Some(raw), _) => resume_after(&mut conn, tenant, raw).await?,
        (None, Some("start")) => Cursor::default(),
        (None, None | Some("now")) => store::event_feed::now(&mut conn).await?,
        (None, Some(other)) => {
            return Err(ApiError::BadRequest(format!(
                "from must be `start` or `now`, not `{other}`"
            )));
        }
    };
    Ok(StreamStart {
        tenant,
        session,
        after,
    })
}

/// Where a stream resuming after event `raw` (a `Last-Event-ID`) starts: after that event of the
/// tenant, or before everything for `0` (a client that has seen none).
async fn resume_after(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    raw: &str,
) -> Result<Cursor, ApiError> {
    let id = raw
        .parse::<i64>()
        .ok()
        .filter(|id| *id >= 0)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Last-Event-ID must be an event id (a non-negative integer), not `{raw}`"
            ))
        })?;
    if id == 0 {
        return Ok(Cursor::default());
    }
    store::event_feed::position_of(conn, tenant.0, id)
        .await?
        .ok_or_else(|| {
            ApiError::BadRequest(format!("Last-Event-ID {id} names none of your events"))
        })
}

/// A stream's state between polls.
struct Follower {
    state: AppState,
    start: StreamStart,
    buffered: VecDeque<EventRow>,
}

/// The events after `start.after`, in order, then every new one as it commits; ends when the
/// gateway drains or the database fails.
pub fn stream(
    state: AppState,
    start: StreamStart,
) -> impl Stream<Item = EventRow> + Send + 'static {
    let follower = Follower {
        state,
        start,
        buffered: VecDeque::new(),
    };
    futures_util::stream::unfold(follower, |mut c| async move {
        loop {
            if let Some(event) = c.buffered.pop_front() {
                c.start.after = Cursor {
                    tx: event.tx,
                    event_id: event.event_id,
                };
                return Some((event, c));
            }
            if c.state.draining.load(Ordering::SeqCst) {
                return None;
            }
            match next_batch(&c.state, &c.start).await {
                Ok(rows) if rows.is_empty() => tokio::time::sleep(POLL_INTERVAL).await,
                Ok(rows) => c.buffered.extend(rows),
                Err(e) => {
                    tracing::warn!(tenant_id = %c.start.tenant, error = %e, "event stream ended by a database error");
                    return None;
                }
            }
        }
    })
}

async fn next_batch(state: &AppState, start: &StreamStart) -> sqlx::Result<Vec<EventRow>> {
    let mut conn = state.db.acquire().await?;
    store::events::list_after(&mut conn, start.tenant.0, start.session, start.after, BATCH).await
}
