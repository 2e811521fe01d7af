//! `faceswap-gateway`: a multi-tenant, drop-in gateway for the Live Face Swap API.
//!
//! Tenants exchange client credentials for the gateway's own JWTs (or use API keys) and call
//! the provider's API through it; the gateway holds the provider's credentials, keeps the
//! upstream token in Redis, and records tenants, sessions, quotas and usage in Postgres.

pub mod activity;
pub mod archive;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod domain;
pub mod healthcheck;
pub mod http;
pub mod lingering;
pub mod metrics;
pub mod net_guard;
pub mod rate_limit;
pub mod runtime;
pub mod server;
pub mod service;
pub mod session_cache;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod upstream_token;
pub mod workers;

/// The migrations in `migrations/` at the workspace root.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");
