//! Tenant authentication: the gateway's own JWTs, client secrets and API keys.

pub mod admin;
pub mod api_keys;
pub mod digest_cache;
pub mod jwt;
pub mod passwords;
pub mod revocation;
