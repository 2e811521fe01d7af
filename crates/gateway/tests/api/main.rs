//! The gateway over HTTP: real Postgres (a fresh database per test), real Redis (a private key
//! prefix per test) and the real simulator as upstream.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod admin;
mod archive;
mod auth;
mod detect;
mod docs;
mod events;
mod flow;
mod isolation;
mod lifecycle;
mod observability;
mod procs;
mod quota;
mod redis_cluster;
mod replicas;
mod seed;
mod sessions;
mod shutdown;
mod traces;
mod upstream_token;
mod webhooks;
