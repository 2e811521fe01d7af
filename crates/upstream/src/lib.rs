//! `faceswap-upstream`: how the gateway talks to the upstream Live Face Swap API.
//!
//! [`UpstreamClient`] makes the six upstream calls over one keep-alive connection pool and
//! classifies every failure once, as an [`UpstreamError`], so the gateway maps it to an HTTP
//! status (and decides whether a retry is safe) without looking at transport details.
//! Every call runs under a [`CallPolicy`]: idempotent calls are retried with jittered backoff,
//! a circuit breaker per upstream host fails calls fast while that host is down, and a bound
//! caps the calls in flight.
//! [`ssrf`] guards URLs the upstream would fetch on a tenant's behalf.

mod answer;
mod breaker;
mod client;
mod endpoints;
mod error;
mod policy;
mod retry;
pub mod ssrf;
pub mod tls;
mod token;
mod transport;

pub use breaker::{BreakerSettings, BreakerState};
pub use client::{CallObserver, DetectOutcome, HeaderHook, UpstreamClient, UpstreamConfig};
pub use error::{Call, UpstreamError};
pub use policy::{CallPolicy, PolicyEvent, PolicyObserver};
pub use retry::is_retryable;
pub use token::IssuedToken;
