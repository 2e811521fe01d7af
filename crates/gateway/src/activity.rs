//! Tenant activity on sessions served from memory ([`crate::session_cache`]), written to
//! Postgres in one statement per [`FLUSH_EVERY`] instead of one read per call.
//!
//! The stored activity may lag a call by the flush period plus the store's resolution
//! ([`crate::store::sessions::ACTIVITY_LAG_SECONDS`] in all); the reaper allows for that lag.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store;

/// How often recorded activity is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// Sessions called since the last write.
#[derive(Default)]
pub struct PendingActivity {
    sessions: Mutex<HashSet<Uuid>>,
}

impl PendingActivity {
    fn lock(&self) -> MutexGuard<'_, HashSet<Uuid>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a call naming `session`.
    pub fn record(&self, session: Uuid) {
        self.lock().insert(session);
    }

    /// Writes what was recorded; on failure it is kept for the next attempt.
    pub async fn flush(&self, db: &PgPool) -> sqlx::Result<()> {
        let mut ids: Vec<Uuid> = self.lock().drain().collect();
        if ids.is_empty() {
            return Ok(());
        }
        ids.sort_unstable();
        let written = async {
            let mut conn = db.acquire().await?;
            store::sessions::touch_many(&mut conn, &ids).await
        }
        .await;
        if written.is_err() {
            self.lock().extend(ids);
        }
        written
    }

    /// Writes every [`FLUSH_EVERY`] until `stop` fires, then once more.
    pub async fn run_until_stopped(self: Arc<Self>, db: PgPool, stop: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                () = stop.cancelled() => true,
                () = tokio::time::sleep(FLUSH_EVERY) => false,
            };
            if let Err(e) = self.flush(&db).await {
                tracing::warn!(error = %e, "writing session activity failed; retrying");
            }
            if stopping {
                return;
            }
        }
    }
}
