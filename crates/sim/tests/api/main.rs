//! The simulator over HTTP, started in-process on port 0.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod auth;
mod config;
mod detect;
mod faults;
mod flow;
mod helpers;
mod resources;
mod sessions;
