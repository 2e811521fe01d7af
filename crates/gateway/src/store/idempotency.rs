//! `idempotency_keys`: one row per (tenant, key), claimed while its first request runs and
//! then holding that request's answer.

use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

/// A key someone else holds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    /// Fingerprint of the request that claimed the key.
    pub request_hash: Vec<u8>,
    /// `running` or `done`.
    pub state: String,
    /// The kept answer's status (`done` only).
    pub response_status: Option<i16>,
    /// The kept answer's body (`done` only).
    pub response_body: Option<Vec<u8>>,
}

/// Claims the key for this request: a new key, an expired one, or a running claim whose
/// request died (its lease ran out) with the same fingerprint. `false` when someone holds it.
#[tracing::instrument(skip_all)]
pub async fn claim(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    key: &str,
    request_hash: &[u8],
    lease: Duration,
    ttl: Duration,
) -> sqlx::Result<bool> {
    let claimed: Option<bool> = sqlx::query_scalar(
        "insert into idempotency_keys
            (tenant_id, idempotency_key, request_hash, locked_until, expires_at)
         values ($1, $2, $3, now() + make_interval(secs => $4), now() + make_interval(secs => $5))
         on conflict (tenant_id, idempotency_key) do update set
            request_hash = excluded.request_hash,
            state = 'running',
            locked_until = excluded.locked_until,
            response_status = null,
            response_body = null,
            created_at = now(),
            expires_at = excluded.expires_at
         where idempotency_keys.expires_at <= now()
            or (idempotency_keys.state = 'running'
                and idempotency_keys.locked_until <= now()
                and idempotency_keys.request_hash = excluded.request_hash)
         returning true",
    )
    .bind(tenant_id)
    .bind(key)
    .bind(request_hash)
    .bind(lease.as_secs_f64())
    .bind(ttl.as_secs_f64())
    .fetch_optional(conn)
    .await?;
    Ok(claimed.unwrap_or(false))
}

/// The key as stored, if it is still live.
#[tracing::instrument(skip_all)]
pub async fn find(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    key: &str,
) -> sqlx::Result<Option<KeyRow>> {
    sqlx::query_as(
        "select request_hash, state, response_status, response_body from idempotency_keys
         where tenant_id = $1 and idempotency_key = $2 and expires_at > now()",
    )
    .bind(tenant_id)
    .bind(key)
    .fetch_optional(conn)
    .await
}

/// Keeps the answer of the request holding the key.
#[tracing::instrument(skip_all)]
pub async fn complete(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    key: &str,
    status: u16,
    body: &[u8],
) -> sqlx::Result<()> {
    sqlx::query(
        "update idempotency_keys set state = 'done', response_status = $3, response_body = $4
         where tenant_id = $1 and idempotency_key = $2 and state = 'running'",
    )
    .bind(tenant_id)
    .bind(key)
    .bind(i16::try_from(status).unwrap_or(i16::MAX))
    .bind(body)
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives the key up: its request failed, so a retry may run again.
#[tracing::instrument(skip_all)]
pub async fn release(conn: &mut PgConnection, tenant_id: Uuid, key: &str) -> sqlx::Result<()> {
    sqlx::query(
        "delete from idempotency_keys
         where tenant_id = $1 and idempotency_key = $2 and state = 'running'",
    )
    .bind(tenant_id)
    .bind(key)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes up to `batch` expired keys; returns how many.
#[tracing::instrument(skip_all)]
pub async fn purge_expired(conn: &mut PgConnection, batch: i64) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "delete from idempotency_keys where ctid in (
            select ctid from idempotency_keys where expires_at <= now() limit $1)",
    )
    .bind(batch)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
