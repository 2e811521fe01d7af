//! The operations behind the handlers: domain rules, store calls and upstream calls in the
//! order that keeps the records true.

pub mod admin;
pub mod archive;
pub mod closing;
pub mod detect;
pub mod events;
pub mod live;
pub mod status;
pub mod tenants;
pub mod tokens;
pub mod webhooks;
