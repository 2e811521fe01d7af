//! Domain rules: identifiers, credentials, quotas and the session life cycle. No I/O here; the
//! HTTP layer and the store call these plain functions.

pub mod credentials;
pub mod events;
pub mod idempotency;
pub mod ids;
pub mod quota;
pub mod rate;
pub mod resources;
pub mod session;
pub mod webhook_signature;
pub mod webhooks;
