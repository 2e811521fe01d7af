//! Persistence: small functions over a connection or transaction, every tenant-facing one scoped
//! by `tenant_id`.

pub mod admin;
pub mod credentials;
pub mod event_feed;
pub mod events;
pub mod idempotency;
pub mod keys;
pub mod resources;
pub mod sessions;
pub mod tenants;
pub mod webhooks;

/// Whether `err` is a violation of the named constraint (names are fixed in `migrations/`).
pub fn is_constraint(err: &sqlx::Error, name: &str) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.constraint() == Some(name))
}
