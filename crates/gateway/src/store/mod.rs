//! Persistence: small functions over a connection or transaction, every tenant-facing one scoped
//! by `tenant_id`.

pub mod credentials;
pub mod keys;
pub mod sessions;
pub mod tenants;

/// Whether `err` is a violation of the named constraint (names are fixed in `migrations/`).
pub fn is_constraint(err: &sqlx::Error, name: &str) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.constraint() == Some(name))
}
