//! Revoked credentials and suspended tenants, as every replica sees them.
//!
//! Tokens are verified without a database round trip, so each process keeps the (small) sets
//! of revoked credential ids and suspended tenant ids in memory and reloads them from Postgres
//! every [`REFRESH`]: a revocation or suspension made on any replica takes effect everywhere
//! within that period, and at once on the replica that made it. Postgres, not Redis, is the
//! source, so an outage of the cache cannot resurrect a revoked token.

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often the sets are reloaded.
pub const REFRESH: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Sets {
    revoked_credentials: HashSet<Uuid>,
    suspended_tenants: HashSet<Uuid>,
}

/// The deny lists.
#[derive(Default)]
pub struct Revocations {
    sets: RwLock<Sets>,
}

impl Revocations {
    /// Whether tokens and keys of this credential must be refused.
    pub fn is_revoked(&self, credential: Uuid) -> bool {
        self.read().revoked_credentials.contains(&credential)
    }

    /// Whether the tenant is suspended.
    pub fn is_suspended(&self, tenant: Uuid) -> bool {
        self.read().suspended_tenants.contains(&tenant)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Sets> {
        self.sets.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Reloads both sets from Postgres.
    pub async fn refresh(&self, db: &PgPool) -> sqlx::Result<()> {
        let revoked: Vec<Uuid> = sqlx::query_scalar(
            "select credential_id from credentials where revoked_at is not null",
        )
        .fetch_all(db)
        .await?;
        let suspended: Vec<Uuid> =
            sqlx::query_scalar("select tenant_id from tenants where status = 'suspended'")
                .fetch_all(db)
                .await?;
        let mut sets = self.sets.write().unwrap_or_else(|e| e.into_inner());
        sets.revoked_credentials = revoked.into_iter().collect();
        sets.suspended_tenants = suspended.into_iter().collect();
        Ok(())
    }

    /// Reloads every [`REFRESH`] until `stop` fires.
    pub async fn run_until_stopped(&self, db: PgPool, stop: CancellationToken) {
        loop {
            if let Err(e) = self.refresh(&db).await {
                tracing::warn!(error = %e, "reloading revocations failed; keeping the last lists");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(REFRESH) => {}
            }
        }
    }
}
