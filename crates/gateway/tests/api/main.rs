//! The gateway over HTTP: real Postgres (a fresh database per test), real Redis (a private key
//! prefix per test) and the real simulator as upstream.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod admin;
mod archive;
mod attacks;
mod auth;
mod concurrency;
mod demo;
mod detect;
mod docs;
mod events;
mod faults;
mod flow;
mod idempotency;
mod isolation;
mod lifecycle;
mod limits;
mod observability;
mod procs;
mod quota;
mod rate_limits;
mod redis_cluster;
mod replicas;
mod seed;
mod session_cache;
mod sessions;
mod shutdown;
mod signing_keys;
mod startup;
mod traces;
mod upstream_faults;
mod upstream_token;
mod webhooks;
