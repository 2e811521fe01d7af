//! The upstream client against the simulator, in-process on port 0, over real HTTP.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod detect;
mod faults;
mod helpers;
mod policy;
mod sessions;
mod token;
