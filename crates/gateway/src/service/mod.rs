//! The operations behind the handlers: domain rules, store calls and upstream calls in the
//! order that keeps the records true.

pub mod detect;
pub mod live;
pub mod tenants;
pub mod tokens;
