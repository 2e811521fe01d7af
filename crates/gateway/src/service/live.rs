//! Live sessions: the reservation, the upstream call and the record, in that order, so that a
//! quota slot is always held before the upstream is asked and released when it says no.

use std::sync::Arc;

use faceswap_wire::gateway::{SessionPage, SessionView, UsageView};
use faceswap_wire::{CreateRequest, FaceswapStatus, SourceImage, UpdateRequest};
use futures_util::FutureExt as _;
use uuid::Uuid;

use crate::domain::ids::{SessionId, TenantId};
use crate::domain::quota;
use crate::domain::session::{CloseReason, SessionState};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store;
use crate::store::sessions::{ListQuery, Reservation, SessionRow};

/// Most source faces one session takes.
pub const MAX_SOURCE_IMAGES: usize = 10;
/// Longest accepted `path` or `opts`.
const MAX_FIELD_LEN: usize = 4096;
/// Largest page of the session list.
pub const MAX_PAGE: i64 = 200;

/// Checks the faces a tenant sends before anything is reserved or sent.
pub fn validate_source_image(sources: &[SourceImage]) -> Result<(), ApiError> {
    if sources.is_empty() {
        return Err(ApiError::BadRequest("sourceImage cannot be empty".into()));
    }
    if sources.len() > MAX_SOURCE_IMAGES {
        return Err(ApiError::BadRequest(format!(
            "sourceImage takes at most {MAX_SOURCE_IMAGES} faces, got {}",
            sources.len()
        )));
    }
    for (i, s) in sources.iter().enumerate() {
        if s.path.trim().is_empty() {
            return Err(ApiError::BadRequest(format!(
                "sourceImage[{i}].path cannot be empty"
            )));
        }
        if s.opts.trim().is_empty() {
            return Err(ApiError::BadRequest(format!(
                "sourceImage[{i}].opts cannot be empty"
            )));
        }
        if s.path.len() > MAX_FIELD_LEN || s.opts.len() > MAX_FIELD_LEN {
            return Err(ApiError::BadRequest(format!(
                "sourceImage[{i}] fields are limited to {MAX_FIELD_LEN} characters"
            )));
        }
    }
    Ok(())
}

/// The tenant-facing view of a stored session.
pub fn view(row: &SessionRow) -> SessionView {
    SessionView {
        id: SessionId(row.session_id).to_string(),
        faceswap_status: row
            .faceswap_status
            .and_then(|s| u8::try_from(s).ok())
            .and_then(|s| FaceswapStatus::try_from(s).ok()),
        channel_id: row.channel_id.clone(),
        front_user_id: row.front_user_id.clone(),
        front_rtc_token: row.front_rtc_token.clone(),
        algorithm_user_id: row.algorithm_user_id.clone(),
        app_id: row.app_id.clone(),
        source_image: serde_json::from_value(row.source_image.0.clone()).unwrap_or_default(),
        state: row.state.clone(),
        close_reason: row.close_reason.clone(),
        created_at: row.created_at.timestamp(),
        last_activity_at: row.last_activity_at.timestamp(),
        closed_at: row.closed_at.map(|t| t.timestamp()),
    }
}

fn state_of(row: &SessionRow) -> Option<SessionState> {
    SessionState::parse(&row.state)
}

/// A session id from the tenant: one that does not parse names no session of theirs.
pub fn parse_session_id(raw: &str) -> Result<SessionId, ApiError> {
    if raw.trim().is_empty() {
        return Err(ApiError::BadRequest("_id cannot be empty".into()));
    }
    let id = SessionId::parse(raw.trim()).map_err(|_| ApiError::NotFound("session"))?;
    crate::http::observe::record_session(id);
    Ok(id)
}

/// Reserves a slot, creates the session upstream, records it.
pub async fn create(
    state: &AppState,
    tenant: TenantId,
    req: CreateRequest,
) -> Result<SessionRow, ApiError> {
    validate_source_image(&req.source_image)?;
    state.ssrf_check_sources(&req.source_image).await?;
    let session_id = SessionId::generate().0;
    crate::http::observe::record_session(SessionId(session_id));
    let source_json = serde_json::to_value(&req.source_image).map_err(anyhow::Error::from)?;

    let mut conn = state.db.acquire().await?;
    match store::sessions::reserve(&mut conn, session_id, tenant.0, &source_json).await? {
        Reservation::Reserved => {}
        Reservation::NoTenant => return Err(ApiError::AuthInvalid("the tenant no longer exists")),
        Reservation::Refused(limits, usage) => {
            quota::check_new_session(limits, usage)?;
            return Err(anyhow::anyhow!(
                "the database refused a session that {limits:?} allows at {usage:?}"
            )
            .into());
        }
    }
    drop(conn);

    let created = state
        .upstream_tokens
        .with_token(|token| {
            let upstream = state.upstream.clone();
            let req = &req;
            async move { upstream.create(&token, req).await }
        })
        .await;
    // From here until `mark_open` commits, a crash would leave an upstream session we cannot
    // find again (the upstream has no list call): this is the window to keep narrow.
    let window = std::time::Instant::now();
    let mut conn = state.db.acquire().await?;
    match created {
        Ok(live) => {
            let row = store::sessions::mark_open(&mut conn, session_id, &live).await?;
            tracing::debug!(
                session_id = %SessionId(session_id),
                window_us = window.elapsed().as_micros() as u64,
                "upstream session recorded"
            );
            Ok(row)
        }
        Err(e) if e.maybe_delivered() => {
            // The upstream may hold a session we will never learn the id of; it has no list
            // call, so the slot is released and the loss is logged for the operator.
            tracing::warn!(session_id = %SessionId(session_id), error = %e, "upstream create outcome unknown; session marked lost");
            drop(conn);
            mark_lost(state, tenant, session_id).await?;
            Err(e.into())
        }
        Err(e) => {
            store::sessions::delete_creating(&mut conn, session_id).await?;
            Err(e.into())
        }
    }
}

/// Releases a reservation whose upstream outcome is unknown, with a `session.lost` event.
pub async fn mark_lost(
    state: &AppState,
    tenant: TenantId,
    session_id: Uuid,
) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    if store::sessions::mark_lost(&mut tx, session_id).await? {
        let payload = crate::domain::events::lost(SessionId(session_id));
        store::events::insert(
            &mut tx,
            tenant.0,
            Some(session_id),
            crate::domain::events::LOST,
            &payload,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The tenant's session, its activity recorded: from memory when this replica has it (the
/// activity is then written in the next batch), else read (and activity written) in Postgres.
async fn find_live(
    state: &AppState,
    tenant: TenantId,
    id: SessionId,
) -> Result<SessionRow, ApiError> {
    if let Some(mut row) = state.session_cache.get(tenant.0, id.0) {
        crate::metrics::session_cache_lookup(true);
        state.activity.record(id.0);
        row.last_activity_at = chrono::Utc::now();
        return Ok(row);
    }
    crate::metrics::session_cache_lookup(false);
    read_live(state, tenant, id).await
}

/// Reads the session (touching its activity) and remembers it: one read for every call that
/// misses it meanwhile. The read runs in a task of its own, so its large future is not part of
/// every call's.
async fn read_live(
    state: &AppState,
    tenant: TenantId,
    id: SessionId,
) -> Result<SessionRow, ApiError> {
    let read = state.session_cache.read_once(tenant.0, id.0, || {
        let state = state.clone();
        async move {
            let ticket = state.session_cache.ticket();
            let mut conn = state.db.acquire().await?;
            let row = store::sessions::touch(&mut conn, tenant.0, id.0).await?;
            if let Some(row) = &row {
                state.session_cache.remember(ticket, row);
            }
            Ok(row)
        }
        .map(|read: Result<_, sqlx::Error>| read.map_err(Arc::new))
    });
    match read.await {
        Some(Ok(Some(row))) => Ok(row),
        Some(Ok(None)) => Err(ApiError::NotFound("session")),
        Some(Err(e)) => Err(ApiError::Database(e)),
        None => Err(ApiError::Internal(anyhow::anyhow!(
            "the session read stopped without an answer"
        ))),
    }
}

fn conflict_for(row: &SessionRow) -> ApiError {
    let msg = match state_of(row) {
        Some(SessionState::Creating) => "the session is still being created",
        Some(SessionState::Closing) => "the session is being closed",
        Some(SessionState::Closed) => "the session is already closed",
        Some(SessionState::Lost) => "the session was lost when it was created",
        _ => "the session cannot take this call now",
    };
    ApiError::Conflict(msg.to_owned())
}

/// The session with its current upstream status.
pub async fn info(
    state: &AppState,
    tenant: TenantId,
    id: SessionId,
) -> Result<SessionRow, ApiError> {
    let row = find_live(state, tenant, id).await?;
    let (Some(SessionState::Open), Some(upstream_id)) = (state_of(&row), row.upstream_id.clone())
    else {
        return Ok(row);
    };
    let live = state
        .upstream_tokens
        .with_token(|token| {
            let upstream = state.upstream.clone();
            let upstream_id = upstream_id.clone();
            async move { upstream.info(&token, &upstream_id).await }
        })
        .await
        .inspect_err(|_| {
            // The session may have changed in ways not announced yet: the next call reads it.
            state.session_cache.forget(id.0);
        })?;
    crate::service::archive::record_live(state, &row, &live).await;
    crate::service::status::record(state, row, i16::from(live.faceswap_status.as_u8())).await
}

/// Replaces the faces of an open session.
pub async fn update(
    state: &AppState,
    tenant: TenantId,
    req: UpdateRequest,
) -> Result<SessionRow, ApiError> {
    let id = parse_session_id(&req.id)?;
    validate_source_image(&req.source_image)?;
    state.ssrf_check_sources(&req.source_image).await?;
    let row = find_live(state, tenant, id).await?;
    let (Some(SessionState::Open), Some(upstream_id)) = (state_of(&row), row.upstream_id.clone())
    else {
        return Err(conflict_for(&row));
    };
    let upstream_req = UpdateRequest {
        id: upstream_id,
        source_image: req.source_image,
    };
    let live = state
        .upstream_tokens
        .with_token(|token| {
            let upstream = state.upstream.clone();
            let upstream_req = &upstream_req;
            async move { upstream.update(&token, upstream_req).await }
        })
        .await?;
    let source_json =
        serde_json::to_value(&upstream_req.source_image).map_err(anyhow::Error::from)?;
    let mut conn = state.db.acquire().await?;
    let updated = store::sessions::set_source_image(&mut conn, row.session_id, &source_json)
        .await?
        .ok_or_else(|| conflict_for(&row))?;
    drop(conn);
    crate::service::status::record(state, updated, i16::from(live.faceswap_status.as_u8())).await
}

/// Closes a session upstream, then here, charging its seconds once. When the upstream close
/// fails the session stays `closing`, a worker retries it, and the tenant may retry too.
pub async fn close(
    state: &AppState,
    tenant: TenantId,
    id: SessionId,
    reason: CloseReason,
) -> Result<SessionRow, ApiError> {
    let mut conn = state.db.acquire().await?;
    let claimed = store::sessions::claim_for_close(
        &mut conn,
        Some(tenant.0),
        id.0,
        reason,
        state.settings.lease,
    )
    .await?;
    let Some(row) = claimed else {
        let existing = store::sessions::find(&mut conn, tenant.0, id.0)
            .await?
            .ok_or(ApiError::NotFound("session"))?;
        return Err(conflict_for(&existing));
    };
    drop(conn);
    crate::service::closing::close_claimed(state, &row).await
}

/// Records activity on an open session.
pub async fn heartbeat(
    state: &AppState,
    tenant: TenantId,
    id: SessionId,
) -> Result<SessionRow, ApiError> {
    let row = find_live(state, tenant, id).await?;
    match state_of(&row) {
        Some(SessionState::Open) => Ok(row),
        _ => Err(conflict_for(&row)),
    }
}

/// A page of the tenant's sessions.
pub async fn list(
    state: &AppState,
    tenant: TenantId,
    filter_state: Option<String>,
    faceswap_status: Option<i16>,
    cursor: Option<String>,
    limit: Option<i64>,
) -> Result<SessionPage, ApiError> {
    if let Some(s) = &filter_state
        && SessionState::parse(s).is_none()
    {
        return Err(ApiError::BadRequest(format!(
            "state must be one of creating, open, closing, closed, lost; got `{s}`"
        )));
    }
    if let Some(s) = faceswap_status
        && !(1..=4).contains(&s)
    {
        return Err(ApiError::BadRequest(
            "faceswap_status must be 1, 2, 3 or 4".into(),
        ));
    }
    let limit = limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let before: Option<Uuid> = match cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            SessionId::parse(c)
                .map_err(|_| ApiError::BadRequest("cursor is not valid".into()))?
                .0,
        ),
    };
    let mut conn = state.db.acquire().await?;
    let rows = store::sessions::list(
        &mut conn,
        tenant.0,
        &ListQuery {
            state: filter_state,
            faceswap_status,
            before,
            limit: limit + 1,
        },
    )
    .await?;
    let has_more = rows.len() as i64 > limit;
    let sessions: Vec<SessionView> = rows.iter().take(limit as usize).map(view).collect();
    let next_cursor = has_more
        .then(|| sessions.last().map(|s| s.id.clone()))
        .flatten();
    Ok(SessionPage {
        sessions,
        next_cursor,
    })
}

/// The tenant's quota and use.
pub async fn usage(state: &AppState, tenant: TenantId) -> Result<UsageView, ApiError> {
    let mut conn = state.db.acquire().await?;
    let row = store::tenants::find(&mut conn, tenant.0)
        .await?
        .ok_or(ApiError::AuthInvalid("the tenant no longer exists"))?;
    let used = store::sessions::quota_usage(&mut conn, tenant.0).await?;
    let limits = row.limits();
    Ok(UsageView {
        max_concurrent_sessions: limits.max_concurrent_sessions,
        active_sessions: used.active_sessions,
        session_seconds_budget: limits.session_seconds_budget,
        session_seconds_used: used.seconds_used,
        session_seconds_remaining: quota::seconds_remaining(limits, used),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(path: &str, opts: &str) -> SourceImage {
        SourceImage {
            path: path.into(),
            opts: opts.into(),
        }
    }

    #[test]
    fn source_images_need_a_path_and_opts_and_a_bounded_count() {
        assert!(validate_source_image(&[source("http://a/b.jpg", "1,2:3,4:5,6:7,8")]).is_ok());
        assert!(validate_source_image(&[]).is_err());
        assert!(validate_source_image(&[source(" ", "1,2:3,4:5,6:7,8")]).is_err());
        assert!(validate_source_image(&[source("http://a/b.jpg", "")]).is_err());
        assert!(validate_source_image(&vec![source("p", "o"); MAX_SOURCE_IMAGES + 1]).is_err());
        assert!(validate_source_image(&[source(&"x".repeat(MAX_FIELD_LEN + 1), "o")]).is_err());
    }

    #[test]
    fn an_unparsable_session_id_is_not_found_but_an_empty_one_is_a_bad_request() {
        assert!(matches!(parse_session_id(""), Err(ApiError::BadRequest(_))));
        assert!(matches!(
            parse_session_id("6512bd43d9caa6e02c990b0a"),
            Err(ApiError::NotFound("session"))
        ));
        let id = SessionId::generate();
        assert_eq!(parse_session_id(&id.to_string()).unwrap(), id);
    }
}
