//! Generated resources: recording the URLs the upstream hands out (discovery), copying each into
//! object storage before its upstream deadline (archiving), the alarm when one is at risk,
//! expiry, retention, and tenant access to the copies.
//!
//! Discovery happens where the upstream's answers pass through: a detection answer's
//! `face_urls`, and a session's `resources` in `info` — fetched once right after a tenant's or
//! an admin's close, seen by the status monitor and by a tenant's `info`, and looked up by the
//! archiver for any closed session still unchecked (the reaper's batched closes leave theirs to
//! it, and a failed lookup after a close is retried that way). Recording is
//! idempotent: one row per tenant and URL.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use faceswap_upstream::UpstreamError;
use faceswap_wire::{Code, LiveSession};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use uuid::Uuid;

use crate::archive::fetch::{FetchError, describe};
use crate::archive::{Archive, StorageError};
use crate::domain::ids::{ResourceId, SessionId, TenantId};
use crate::domain::resources::{self as rules, ArchiveState, Discovered};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store;
use crate::store::resources::{ResourceRow, Stored, UncheckedSession};
use crate::store::sessions::SessionRow;

/// The deadline assumed for a URL the upstream gave without one.
fn fallback_deadline(archive: &Archive) -> chrono::DateTime<Utc> {
    Utc::now()
        + chrono::Duration::from_std(archive.settings.default_ttl)
            .unwrap_or(chrono::Duration::days(7))
}

/// Records resources found for a tenant (and session); returns how many were new.
pub async fn record(
    state: &AppState,
    tenant_id: Uuid,
    session_id: Option<Uuid>,
    found: &[Discovered],
) -> Result<u64, sqlx::Error> {
    if found.is_empty() {
        return Ok(0);
    }
    let mut conn = state.db.acquire().await?;
    let new = store::resources::insert_discovered(&mut conn, tenant_id, session_id, found).await?;
    log_recorded(tenant_id, session_id, new);
    Ok(new)
}

fn log_recorded(tenant_id: Uuid, session_id: Option<Uuid>, new: u64) {
    if new > 0 {
        tracing::info!(tenant_id = %TenantId(tenant_id), session_id = ?session_id.map(SessionId), new, "resources recorded for archiving");
    }
}

/// Records the resources a session's `info` lists. Failures are logged: the archiver's lookup
/// after the close catches anything missed here.
pub async fn record_live(state: &AppState, row: &SessionRow, live: &LiveSession) {
    if live.resources.is_empty() {
        return;
    }
    let found = rules::from_live(&live.resources, fallback_deadline(&state.archive));
    // Boxed: most answers list no resources, and the insert's future is large.
    if let Err(e) = Box::pin(record(state, row.tenant_id, Some(row.session_id), &found)).await {
        tracing::error!(session_id = %SessionId(row.session_id), error = %e, "recording a session's resources failed");
    }
}

/// Records the face crop URLs of a detection answer for the tenant. A failure is logged (the
/// tenant still gets its answer).
pub async fn record_detect_answer(state: &AppState, tenant: TenantId, body: &[u8]) {
    let found = rules::from_detect_answer(body, fallback_deadline(&state.archive));
    if let Err(e) = record(state, tenant.0, None, &found).await {
        tracing::error!(tenant_id = %tenant, error = %e, urls = found.len(), "recording detection face URLs failed");
    }
}

/// Looks up a closed session's resources upstream once and records them. Called right after a
/// close; when it fails the archiver's lookup retries it.
pub async fn after_close(state: &AppState, row: &SessionRow) {
    let Some(upstream_id) = row.upstream_id.clone() else {
        return;
    };
    let check = UncheckedSession {
        session_id: row.session_id,
        tenant_id: row.tenant_id,
        upstream_id,
    };
    if let Err(e) = check_session(state, &check).await {
        tracing::warn!(session_id = %SessionId(row.session_id), error = %format!("{e:#}"), "looking up a closed session's resources failed; the archiver retries");
    }
}

/// Asks the upstream for a closed session's resources, records them and marks the session
/// checked. A session the upstream no longer knows has none left to find.
pub async fn check_session(state: &AppState, s: &UncheckedSession) -> anyhow::Result<()> {
    let info = state
        .upstream_tokens
        .with_token(|token| {
            let upstream = state.upstream.clone();
            let upstream_id = s.upstream_id.clone();
            async move { upstream.info(&token, &upstream_id).await }
        })
        .await;
    let found = match info {
        Ok(live) => rules::from_live(&live.resources, fallback_deadline(&state.archive)),
        Err(UpstreamError::Business { code, .. }) if code == Code::PARAM_ERROR => {
            tracing::info!(session_id = %SessionId(s.session_id), "the upstream no longer knows the session; no resources to archive");
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    // The resources and the mark together: no second lookup after a crash.
    let mut conn = state.db.acquire().await?;
    let new =
        store::resources::record_session_resources(&mut conn, s.tenant_id, s.session_id, &found)
            .await?;
    log_recorded(s.tenant_id, Some(s.session_id), new);
    Ok(())
}

/// Why a copy failed.
#[derive(Debug)]
enum CopyError {
    /// Never archivable.
    Refused(String),
    /// Worth another try.
    Failed(String),
}

impl From<FetchError> for CopyError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Refused(m) => Self::Refused(m),
            FetchError::Failed(m) => Self::Failed(m),
        }
    }
}

impl From<StorageError> for CopyError {
    fn from(e: StorageError) -> Self {
        Self::Failed(format!("object store: {e}"))
    }
}

/// One claimed resource after its copy, to be recorded with [`record_copies`].
pub struct Copied {
    row: ResourceRow,
    outcome: Result<Stored, CopyError>,
    started: Instant,
}

/// Downloads one claimed resource into object storage; nothing is recorded yet.
pub async fn copy_claimed(state: &AppState, row: ResourceRow, lease: Duration) -> Copied {
    let started = Instant::now();
    let outcome = copy(state, &row, lease).await;
    Copied {
        row,
        outcome,
        started,
    }
}

/// Records what copies came to: those stored as archived, all in one transaction with their
/// `resource.archived` events (one commit for the batch, not one per resource); a failed one
/// gets a retry with exponential backoff and jitter, or fails for good (a refused URL, with a
/// `resource.failed` event). On error the claims lapse and the copies are tried again.
pub async fn record_copies(state: &AppState, copies: Vec<Copied>) -> anyhow::Result<()> {
    let mut stored = Vec::new();
    let mut failed = Vec::new();
    for copy in copies {
        match copy.outcome {
            Ok(s) => stored.push((copy.row, s, copy.started)),
            Err(error) => failed.push((copy.row, error)),
        }
    }
    if !stored.is_empty() {
        record_archived(state, &stored).await?;
    }
    for (row, error) in failed {
        record_failure(state, &row, error).await?;
    }
    Ok(())
}

async fn record_archived(
    state: &AppState,
    stored: &[(ResourceRow, Stored, Instant)],
) -> anyhow::Result<()> {
    let archived: Vec<(Uuid, &Stored)> =
        stored.iter().map(|(r, s, _)| (r.resource_id, s)).collect();
    let mut tx = state.db.begin().await?;
    let done = store::resources::mark_archived_many(&mut tx, &archived).await?;
    let payloads: Vec<(&ResourceRow, serde_json::Value)> = done
        .iter()
        .filter_map(|row| {
            let (_, s, _) = stored
                .iter()
                .find(|(r, _, _)| r.resource_id == row.resource_id)?;
            let payload = rules::archived_event(
                ResourceId(row.resource_id),
                row.session_id.map(SessionId),
                &row.kind,
                row.upstream_expires_at,
                s.size,
                &s.content_type,
                &s.sha256,
            );
            Some((row, payload))
        })
        .collect();
    let events: Vec<store::events::NewEvent<'_>> = payloads
        .iter()
        .map(|(row, payload)| store::events::NewEvent {
            tenant_id: row.tenant_id,
            session_id: row.session_id,
            event_type: rules::ARCHIVED,
            payload,
        })
        .collect();
    store::events::insert_many(&mut tx, &events).await?;
    tx.commit().await?;
    for (row, s, started) in stored {
        let id = ResourceId(row.resource_id);
        if done.iter().any(|d| d.resource_id == row.resource_id) {
            tracing::info!(resource_id = %id, size = s.size, key = %s.object_key, elapsed_ms = started.elapsed().as_millis() as u64, "resource archived");
        } else {
            // Expired or archived by another worker meanwhile; the copy is harmless.
            tracing::warn!(resource_id = %id, "resource left 'pending' while it was copied");
        }
    }
    Ok(())
}

async fn record_failure(
    state: &AppState,
    row: &ResourceRow,
    error: CopyError,
) -> anyhow::Result<()> {
    let id = ResourceId(row.resource_id);
    match error {
        CopyError::Refused(error) => {
            let mut tx = state.db.begin().await?;
            if let Some(done) =
                store::resources::mark_failed(&mut tx, row.resource_id, &error).await?
            {
                insert_state_event(&mut tx, &done, rules::FAILED, Some(&error)).await?;
            }
            tx.commit().await?;
            tracing::error!(resource_id = %id, error, "resource can never be archived");
        }
        CopyError::Failed(error) => {
            let attempts = u32::try_from(row.attempts).unwrap_or(0).saturating_add(1);
            let left = (row.upstream_expires_at - Utc::now()).to_std().ok();
            let delay = rules::retry_delay(
                state.archive.settings.retry_base,
                attempts,
                rand::random_range(0.8..1.2),
                left,
            );
            tracing::warn!(resource_id = %id, attempts, error, ?delay, "archiving a resource failed; retry scheduled");
            let mut conn = state.db.acquire().await?;
            store::resources::schedule_retry(&mut conn, row.resource_id, delay, &error).await?;
        }
    }
    Ok(())
}

/// Streams the resource from its URL into object storage, hashing on the way, renewing the
/// claim while it runs.
async fn copy(state: &AppState, row: &ResourceRow, lease: Duration) -> Result<Stored, CopyError> {
    let archive = &state.archive;
    let resp = archive.fetcher.open(&row.source_url).await?;
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| row.content_type.clone())
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let expected = resp.content_length();
    let key = rules::object_key(
        TenantId(row.tenant_id),
        row.session_id.map(SessionId),
        ResourceId(row.resource_id),
        &row.kind,
        Some(&content_type),
    );
    let mut upload = archive.storage.begin(&key, &content_type).await?;
    let mut body = resp.bytes_stream();
    let streamed = async {
        let mut renewed = Instant::now();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| CopyError::Failed(describe(&e)))?;
            upload.write(&chunk).await?;
            if renewed.elapsed() > lease / 3 {
                renewed = Instant::now();
                let mut conn = state
                    .db
                    .acquire()
                    .await
                    .map_err(|e| CopyError::Failed(format!("database: {e}")))?;
                let still_ours = store::resources::renew_claim(&mut conn, row.resource_id, lease)
                    .await
                    .map_err(|e| CopyError::Failed(format!("database: {e}")))?;
                if !still_ours {
                    return Err(CopyError::Failed(
                        "the resource left 'pending' during the download".into(),
                    ));
                }
            }
        }
        match expected {
            Some(n) if n != upload.size() => Err(CopyError::Failed(format!(
                "the download ended after {} of {n} bytes",
                upload.size()
            ))),
            _ => Ok(()),
        }
    }
    .await;
    if let Err(e) = streamed {
        upload.abort().await;
        return Err(e);
    }
    let done = upload.finish().await?;
    Ok(Stored {
        object_key: key,
        size: i64::try_from(done.size).unwrap_or(i64::MAX),
        content_type,
        sha256: done.sha256,
    })
}

/// Raises the at-risk alarm (a `resource.archive_at_risk` event, once per resource) on pending
/// resources whose deadline is within the margin. Returns how many.
pub async fn raise_alarms(state: &AppState, batch: i64) -> anyhow::Result<usize> {
    let mut tx = state.db.begin().await?;
    let rows =
        store::resources::take_alarms(&mut tx, state.archive.settings.alarm_margin, batch).await?;
    announce(
        tx,
        &rows,
        rules::AT_RISK,
        "ALARM: resource near its upstream deadline and not archived",
    )
    .await
}

/// Marks expired (with a `resource.expired` event) the pending resources whose deadline has
/// passed. Returns how many.
pub async fn expire(state: &AppState, batch: i64) -> anyhow::Result<usize> {
    let mut tx = state.db.begin().await?;
    let rows = store::resources::take_expired(&mut tx, batch).await?;
    announce(
        tx,
        &rows,
        rules::EXPIRED,
        "resource expired upstream before it was archived",
    )
    .await
}

/// Writes the `event_type` event of a resource's new state, in the transaction that changed it.
async fn insert_state_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    row: &ResourceRow,
    event_type: &str,
    error: Option<&str>,
) -> sqlx::Result<i64> {
    let payload = rules::state_event(
        ResourceId(row.resource_id),
        row.session_id.map(SessionId),
        &row.kind,
        row.upstream_expires_at,
        row.attempts,
        error,
    );
    store::events::insert(tx, row.tenant_id, row.session_id, event_type, &payload).await
}

/// Writes one `event_type` event per resource in the transaction that changed them, commits,
/// then logs each at error level: both are conditions an operator must see.
async fn announce(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    rows: &[ResourceRow],
    event_type: &str,
    log: &'static str,
) -> anyhow::Result<usize> {
    for r in rows {
        insert_state_event(&mut tx, r, event_type, r.last_error.as_deref()).await?;
    }
    tx.commit().await?;
    for r in rows {
        tracing::error!(resource_id = %ResourceId(r.resource_id), deadline = %r.upstream_expires_at, attempts = r.attempts, last_error = ?r.last_error, "{log}");
    }
    Ok(rows.len())
}

/// Deletes the archived objects past their tenant's retention, each with a `resource.deleted`
/// event. A failed deletion keeps its claim, so it is tried again when the lease lapses.
pub async fn delete_past_retention(
    state: &AppState,
    lease: Duration,
    batch: i64,
) -> anyhow::Result<usize> {
    let rows = {
        let mut conn = state.db.acquire().await?;
        store::resources::claim_past_retention(&mut conn, lease, batch).await?
    };
    for r in &rows {
        let id = ResourceId(r.resource_id);
        if let Some(key) = &r.object_key
            && let Err(e) = state.archive.storage.delete(key).await
        {
            tracing::warn!(resource_id = %id, error = %e, "deleting an archived object failed; retried after the lease");
            continue;
        }
        let mut tx = state.db.begin().await?;
        if let Some(done) = store::resources::mark_deleted(&mut tx, r.resource_id).await? {
            insert_state_event(&mut tx, &done, rules::DELETED, None).await?;
        }
        tx.commit().await?;
        tracing::info!(resource_id = %id, "archived resource deleted at the end of its retention");
    }
    Ok(rows.len())
}

/// The archive backlog: resources not archived yet, those at risk (alarm raised), and the
/// soonest upstream deadline among them. For metrics and dashboards.
pub async fn backlog(state: &AppState) -> Result<store::resources::Backlog, sqlx::Error> {
    let mut conn = state.db.acquire().await?;
    store::resources::backlog(&mut conn).await
}

/// Largest page of the resource list.
pub const MAX_PAGE: i64 = 200;

/// A resource id from the tenant: one that does not parse names none of theirs.
pub fn parse_resource_id(raw: &str) -> Result<ResourceId, ApiError> {
    ResourceId::parse(raw.trim()).map_err(|_| ApiError::NotFound("resource"))
}

/// The resources of one of the tenant's sessions, oldest first.
pub async fn list_for_session(
    state: &AppState,
    tenant: TenantId,
    session: SessionId,
) -> Result<Vec<ResourceRow>, ApiError> {
    let mut conn = state.db.acquire().await?;
    store::sessions::find(&mut conn, tenant.0, session.0)
        .await?
        .ok_or(ApiError::NotFound("session"))?;
    let mut rows = store::resources::list(
        &mut conn,
        tenant.0,
        &store::resources::ListQuery {
            session_id: Some(session.0),
            limit: 1000,
            ..Default::default()
        },
    )
    .await?;
    rows.reverse();
    Ok(rows)
}

/// A page of the tenant's resources, newest first; the second value is the next cursor.
pub async fn list(
    state: &AppState,
    tenant: TenantId,
    session: Option<&str>,
    filter_state: Option<String>,
    cursor: Option<&str>,
    limit: Option<i64>,
) -> Result<(Vec<ResourceRow>, Option<String>), ApiError> {
    if let Some(s) = &filter_state
        && ArchiveState::parse(s).is_none()
    {
        return Err(ApiError::BadRequest(format!(
            "state must be one of pending, archived, expired, failed, deleted; got `{s}`"
        )));
    }
    let limit = limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let session_id = match session.map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            SessionId::parse(s)
                .map_err(|_| ApiError::BadRequest("session_id is not a session id".into()))?
                .0,
        ),
    };
    let before = match cursor.map(str::trim).filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(
            ResourceId::parse(c)
                .map_err(|_| ApiError::BadRequest("cursor is not valid".into()))?
                .0,
        ),
    };
    let mut conn = state.db.acquire().await?;
    let mut rows = store::resources::list(
        &mut conn,
        tenant.0,
        &store::resources::ListQuery {
            session_id,
            state: filter_state,
            before,
            limit: limit + 1,
        },
    )
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = more
        .then(|| rows.last().map(|r| ResourceId(r.resource_id).to_string()))
        .flatten();
    Ok((rows, next))
}

/// An archived resource of the tenant, opened for reading: the row, its size and its bytes.
pub async fn open(
    state: &AppState,
    tenant: TenantId,
    id: ResourceId,
) -> Result<
    (
        ResourceRow,
        u64,
        BoxStream<'static, Result<Bytes, std::io::Error>>,
    ),
    ApiError,
> {
    let row = {
        let mut conn = state.db.acquire().await?;
        store::resources::find(&mut conn, tenant.0, id.0)
            .await?
            .ok_or(ApiError::NotFound("resource"))?
    };
    let (Some(ArchiveState::Archived), Some(key)) =
        (ArchiveState::parse(&row.state), row.object_key.clone())
    else {
        return Err(ApiError::Conflict(format!(
            "the resource is not archived (state: {})",
            row.state
        )));
    };
    match state.archive.storage.get(&key).await {
        Ok((size, stream)) => Ok((row, size, stream)),
        Err(StorageError::NotFound) => Err(ApiError::Internal(anyhow::anyhow!(
            "archived object {key} is missing from the store"
        ))),
        Err(e) => Err(ApiError::Internal(e.into())),
    }
}

/// Days archived resources are kept when the tenant's setting is not given.
pub const DEFAULT_RETENTION_DAYS: i32 = 30;
/// Longest retention accepted (about ten years).
pub const MAX_RETENTION_DAYS: i32 = 3653;

/// Checks a retention period before anything is written.
pub fn check_retention_days(days: i32) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_RETENTION_DAYS).contains(&days),
        "--archive-retention-days must be between 1 and {MAX_RETENTION_DAYS}"
    );
    Ok(())
}

/// Sets how many days the tenant's archived resources are kept (`tenant create` and
/// `tenant update --archive-retention-days`). It applies to objects already archived too.
pub async fn set_retention(db: &sqlx::PgPool, tenant: TenantId, days: i32) -> anyhow::Result<i32> {
    check_retention_days(days)?;
    let mut conn = db.acquire().await?;
    store::resources::set_retention_days(&mut conn, tenant.0, days)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no tenant {tenant}"))
}

/// How many days the tenant's archived resources are kept.
pub async fn retention(db: &sqlx::PgPool, tenant: TenantId) -> anyhow::Result<i32> {
    let mut conn = db.acquire().await?;
    store::resources::retention_days(&mut conn, tenant.0)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no tenant {tenant}"))
}
