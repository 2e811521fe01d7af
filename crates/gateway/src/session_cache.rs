//! Open sessions this replica has read, so a call naming one (`info`, the hottest tenant call)
//! needs no Postgres read.
//!
//! Correctness rests on Postgres announcing every change to an open session at commit (the
//! `sessions_changed` trigger, channel [`CHANNEL`]) and on this process listening:
//! - an entry is dropped when its session's change is announced;
//! - nothing is remembered or served while the listener is not connected, and everything is
//!   dropped when it reconnects (announcements made meanwhile are lost);
//! - a row read before an announcement was handled is not remembered after it (the read may
//!   predate the change): every drop advances an epoch, and a row is only remembered under the
//!   epoch its read started in.
//!
//! A session missed by many calls at once (a busy one whose change was just announced) is read
//! from Postgres once for all of them: [`SessionCache::read_once`].
//!
//! Activity (`last_activity_at`) is not announced; calls served from memory record it through
//! [`crate::activity`]. Entries also expire after [`TTL`], bounding the harm of any change made
//! behind the trigger's back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::future::Shared;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::session::SessionState;
use crate::store::sessions::SessionRow;

/// The channel the `sessions_changed` trigger announces on.
pub const CHANNEL: &str = "faceswap_session_changed";
/// Longest an entry is served without a fresh read.
pub const TTL: Duration = Duration::from_secs(30);
/// Most sessions remembered; past it, new reads are not remembered until entries go.
pub const CAPACITY: usize = 50_000;
/// Wait before listening again after the listener failed to connect.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

struct Entry {
    row: SessionRow,
    read_at: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Uuid, Entry>,
    /// Advanced by every drop; see [`SessionCache::ticket`].
    epoch: u64,
}

/// What one read of a session from Postgres gives every call that waited for it: the row, or
/// `None` when the tenant has no such session.
pub type Read = Result<Option<SessionRow>, Arc<sqlx::Error>>;

/// Reads in flight, by tenant and session; each answers every call that joined it.
type Reads = HashMap<(Uuid, Uuid), Shared<oneshot::Receiver<Read>>>;

/// The cache. Empty and unused until [`SessionCache::run_until_stopped`] is listening.
#[derive(Default)]
pub struct SessionCache {
    inner: Mutex<Inner>,
    listening: AtomicBool,
    reads: Mutex<Reads>,
    /// Calls that waited for another call's read instead of making their own.
    joined: AtomicU64,
}

/// Ends a read, however its task ends, so that the next miss reads again.
struct ReadDone {
    cache: Arc<SessionCache>,
    key: (Uuid, Uuid),
    read: Shared<oneshot::Receiver<Read>>,
}

impl Drop for ReadDone {
    fn drop(&mut self) {
        let mut reads = self.cache.lock_reads();
        // A change announced meanwhile may have made way for a newer read: that one stays.
        if reads.get(&self.key).is_some_and(|r| r.ptr_eq(&self.read)) {
            reads.remove(&self.key);
        }
    }
}

/// Proof that a read started while the cache could accept its result (see
/// [`SessionCache::ticket`]).
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl SessionCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tenant's open session, if remembered and fresh.
    pub fn get(&self, tenant: Uuid, session: Uuid) -> Option<SessionRow> {
        if !self.is_listening() {
            return None;
        }
        let mut inner = self.lock();
        let entry = inner.entries.get(&session)?;
        if entry.read_at.elapsed() >= TTL {
            inner.entries.remove(&session);
            return None;
        }
        // Another tenant's session is not theirs to read, remembered or not.
        if entry.row.tenant_id != tenant {
            return None;
        }
        Some(entry.row.clone())
    }

    /// Taken before reading a session from Postgres, so that [`remember`](Self::remember)
    /// can refuse the row if a change was announced meanwhile. `None` while not listening.
    pub fn ticket(&self) -> Option<Ticket> {
        if !self.is_listening() {
            return None;
        }
        Some(Ticket(self.lock().epoch))
    }

    /// Remembers an open session read under `ticket`; anything else is ignored.
    pub fn remember(&self, ticket: Option<Ticket>, row: &SessionRow) {
        let Some(Ticket(epoch)) = ticket else { return };
        if SessionState::parse(&row.state) != Some(SessionState::Open) || row.upstream_id.is_none()
        {
            return;
        }
        let mut inner = self.lock();
        if inner.epoch != epoch || inner.entries.len() >= CAPACITY {
            return;
        }
        inner.entries.insert(
            row.session_id,
            Entry {
                row: row.clone(),
                read_at: Instant::now(),
            },
        );
    }

    /// Drops one session (its change was announced, or a call on it went wrong).
    pub fn forget(&self, session: Uuid) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.entries.remove(&session);
        drop(inner);
        // A call made from now on must not join a read that may predate the change.
        self.lock_reads().retain(|(_, s), _| *s != session);
    }

    fn forget_all(&self) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.entries.clear();
        drop(inner);
        self.lock_reads().clear();
    }

    /// `tenant`'s `session` as `read` finds it, read once for every call that asks while the
    /// read is in flight. `read` runs in a task of its own, so a caller that goes away strands
    /// neither the others nor a pooled connection. `None` when the read stopped without an
    /// answer.
    pub async fn read_once<F, Fut>(
        self: &Arc<Self>,
        tenant: Uuid,
        session: Uuid,
        read: F,
    ) -> Option<Read>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Read> + Send + 'static,
    {
        let key = (tenant, session);
        let (pending, start) = {
            let mut reads = self.lock_reads();
            if let Some(pending) = reads.get(&key) {
                self.joined.fetch_add(1, Ordering::Relaxed);
                (pending.clone(), None)
            } else {
                let (tx, rx) = oneshot::channel();
                let pending = rx.shared();
                reads.insert(key, pending.clone());
                (pending.clone(), Some((tx, pending)))
            }
        };
        // Spawned with the map unlocked: a task dropped at once (the runtime shutting down)
        // ends its read, which locks the map.
        if let Some((tx, mine)) = start {
            let (read, done) = (
                read(),
                ReadDone {
                    cache: Arc::clone(self),
                    key,
                    read: mine,
                },
            );
            tokio::spawn(async move {
                let _done = done;
                let _ = tx.send(read.await);
            });
        }
        pending.await.ok()
    }

    /// Calls that waited for another call's read of their session instead of making their own.
    pub fn joined_reads(&self) -> u64 {
        self.joined.load(Ordering::Relaxed)
    }

    fn lock_reads(&self) -> MutexGuard<'_, Reads> {
        self.reads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions remembered now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the listener is connected (the cache is in use).
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    fn stop_listening(&self) {
        self.listening.store(false, Ordering::Release);
        self.forget_all();
    }

    /// Listens for announced changes until `stop` fires, reconnecting after a lost connection
    /// (and starting empty each time).
    pub async fn run_until_stopped(self: Arc<Self>, db: PgPool, stop: CancellationToken) {
        loop {
            let listener = tokio::select! {
                () = stop.cancelled() => return,
                l = listen(&db) => l,
            };
            match listener {
                Ok(mut listener) => {
                    self.forget_all();
                    self.listening.store(true, Ordering::Release);
                    tracing::debug!("session cache listening");
                    let lost = tokio::select! {
                        () = stop.cancelled() => None,
                        e = self.follow(&mut listener) => Some(e),
                    };
                    self.stop_listening();
                    let Some(e) = lost else { return };
                    tracing::warn!(error = %e, "session change listener lost; cache emptied until it is back");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for session changes; calls read Postgres");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(RECONNECT_DELAY) => {}
                    }
                }
            }
        }
    }

    /// Applies announcements until the connection is lost.
    async fn follow(&self, listener: &mut PgListener) -> anyhow::Error {
        loop {
            match listener.try_recv().await {
                Ok(Some(notice)) => match notice.payload().parse::<Uuid>() {
                    Ok(id) => self.forget(id),
                    // Not ours to interpret: forgetting everything is always safe.
                    Err(_) => self.forget_all(),
                },
                Ok(None) => return anyhow::anyhow!("the connection was closed"),
                Err(e) => return e.into(),
            }
        }
    }
}

async fn listen(db: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(db).await?;
    // A lost connection ends `follow`; the loop above reconnects and starts empty.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use sqlx::types::Json;

    #[tokio::test]
    async fn a_call_after_an_announced_change_does_not_join_a_read_begun_before_it() {
        let cache = Arc::new(SessionCache::default());
        let (tenant, session) = (Uuid::new_v4(), Uuid::new_v4());
        let (release, gate) = oneshot::channel::<()>();
        let first = tokio::spawn({
            let cache = Arc::clone(&cache);
            async move {
                cache
                    .read_once(tenant, session, || async move {
                        let _ = gate.await;
                        Ok(None)
                    })
                    .await
            }
        });
        while cache.lock_reads().is_empty() {
            tokio::task::yield_now().await;
        }

        cache.forget(session);
        let mut read_again = false;
        // Joining the earlier read would wait for it until the gate opens: bounded.
        let second = tokio::time::timeout(
            Duration::from_secs(5),
            cache.read_once(tenant, session, || {
                read_again = true;
                async { Ok(None) }
            }),
        )
        .await
        .expect("the call joined the earlier read");
        assert!(read_again, "the call joined the earlier read");
        assert_eq!(cache.joined_reads(), 0);
        assert!(matches!(second, Some(Ok(None))));

        let _ = release.send(());
        assert!(matches!(first.await.unwrap(), Some(Ok(None))));
        assert!(cache.lock_reads().is_empty(), "every read ended");
    }

    fn open_row(tenant: Uuid) -> SessionRow {
        SessionRow {
            session_id: Uuid::now_v7(),
            tenant_id: tenant,
            upstream_id: Some("up".into()),
            state: "open".into(),
            faceswap_status: Some(2),
            channel_id: None,
            front_user_id: None,
            front_rtc_token: None,
            algorithm_user_id: None,
            app_id: None,
            source_image: Json(serde_json::json!([])),
            created_at: Utc::now(),
            opened_at: Some(Utc::now()),
            last_activity_at: Utc::now(),
            closed_at: None,
            close_reason: None,
            close_attempts: 0,
        }
    }

    fn listening() -> SessionCache {
        let cache = SessionCache::default();
        cache.listening.store(true, Ordering::Release);
        cache
    }

    #[test]
    fn a_remembered_open_session_is_served_to_its_tenant_only() {
        let cache = listening();
        let (tenant, other) = (Uuid::now_v7(), Uuid::now_v7());
        let row = open_row(tenant);
        cache.remember(cache.ticket(), &row);
        assert_eq!(
            cache.get(tenant, row.session_id).map(|r| r.session_id),
            Some(row.session_id)
        );
        assert!(cache.get(other, row.session_id).is_none());
    }

    #[test]
    fn a_read_that_started_before_an_announcement_is_not_remembered() {
        let cache = listening();
        let row = open_row(Uuid::now_v7());
        let ticket = cache.ticket();
        // The change is announced (and handled) while the read is under way.
        cache.forget(row.session_id);
        cache.remember(ticket, &row);
        assert!(cache.get(row.tenant_id, row.session_id).is_none());
        // A read that starts afterwards is.
        cache.remember(cache.ticket(), &row);
        assert!(cache.get(row.tenant_id, row.session_id).is_some());
    }

    #[test]
    fn nothing_is_remembered_or_served_while_not_listening() {
        let cache = listening();
        let row = open_row(Uuid::now_v7());
        cache.remember(cache.ticket(), &row);
        cache.stop_listening();
        assert!(cache.ticket().is_none());
        assert!(cache.get(row.tenant_id, row.session_id).is_none());
        cache.remember(cache.ticket(), &row);
        cache.listening.store(true, Ordering::Release);
        assert!(
            cache.get(row.tenant_id, row.session_id).is_none(),
            "entries from before the listener was lost must not come back"
        );
    }

    #[test]
    fn only_open_sessions_with_an_upstream_id_are_remembered() {
        let cache = listening();
        let mut closed = open_row(Uuid::now_v7());
        closed.state = "closed".into();
        cache.remember(cache.ticket(), &closed);
        let mut creating = open_row(Uuid::now_v7());
        creating.upstream_id = None;
        cache.remember(cache.ticket(), &creating);
        assert!(cache.is_empty());
    }
}
