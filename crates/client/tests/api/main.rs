//! The client against a real gateway (in-process, fresh database per test) and the real
//! simulator, plus its agreement with `openapi/openapi.json`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failure is a failed test

mod detect;
mod errors;
mod events;
mod examples;
mod helpers;
mod openapi;
mod resources;
mod sessions;
mod token;
mod webhooks;
