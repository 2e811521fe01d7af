//! Deletes idempotency keys past their lifetime, in small batches so no statement holds many
//! row locks (a key past `expires_at` is already ignored by lookups; this only reclaims space).

use super::{Outcome, WorkerSettings};
use crate::http::AppState;
use crate::store;

/// Keys deleted per statement.
const BATCH: i64 = 1_000;

/// One batch.
pub async fn run_once(state: &AppState, _settings: &WorkerSettings) -> anyhow::Result<Outcome> {
    let mut conn = state.db.acquire().await?;
    let purged = store::idempotency::purge_expired(&mut conn, BATCH).await?;
    Ok(if purged == 0 {
        Outcome::Idle
    } else {
        Outcome::Worked(usize::try_from(purged).unwrap_or(usize::MAX))
    })
}
