//! The gateway over HTTP: real Postgres (a fresh database per test), real Redis (a private key
//! prefix per test) and the real simulator as upstream.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod auth;
mod detect;
mod events;
mod flow;
mod isolation;
mod lifecycle;
mod quota;
mod sessions;
mod shutdown;
mod upstream_token;
mod webhooks;
