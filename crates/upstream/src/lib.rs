//! `faceswap-upstream`: how the gateway talks to the upstream Live Face Swap API.
//!
//! [`UpstreamClient`] makes the six upstream calls over one keep-alive connection pool and
//! classifies every failure once, as an [`UpstreamError`], so the gateway maps it to an HTTP
//! status (and decides whether a retry is safe) without looking at transport details.
//! [`ssrf`] guards URLs the upstream would fetch on a tenant's behalf.

mod answer;
mod client;
mod endpoints;
mod error;
pub mod ssrf;
mod token;

pub use client::{CallObserver, DetectOutcome, HeaderHook, UpstreamClient, UpstreamConfig};
pub use error::{Call, UpstreamError};
pub use token::IssuedToken;
