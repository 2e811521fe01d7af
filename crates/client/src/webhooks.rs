//! Checking webhook deliveries: the Standard Webhooks signature
//! (<https://www.standardwebhooks.com>) the gateway signs every delivery with.
//!
//! The secret returned when the endpoint was registered is `whsec_` followed by base64; the
//! HMAC-SHA256 key is the decoded bytes. The signed content is
//! `{webhook-id}.{webhook-timestamp}.{body}`, and `webhook-signature` carries one or more
//! space-separated `v1,<base64>` entries (several while a secret is being rotated).
//!
//! ```
//! use faceswap_client::webhooks::Verifier;
//! # fn handle(headers: &reqwest::header::HeaderMap, body: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let event = verifier.verify_headers(headers, body)?;
//! println!("{} {:?}", event.id, event.kind);
//! # Ok(()) }
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::header::HeaderMap;

use crate::sse::{Event, Message};

/// The prefix of a signing secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";
/// How far `webhook-timestamp` may be from the receiver's clock, either way, by default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// Shortest and longest key the convention accepts, in bytes.
const KEY_LEN: std::ops::RangeInclusive<usize> = 24..=64;

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The secret is not `whsec_` and the base64 of 24 to 64 bytes.
    #[error("the webhook secret is not `whsec_` and the base64 of 24 to 64 bytes")]
    InvalidSecret,
    /// One of `webhook-id`, `webhook-timestamp`, `webhook-signature` is missing or not text.
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not a Unix time in seconds.
    #[error("webhook-timestamp is not a Unix time in seconds")]
    InvalidTimestamp,
    /// `webhook-timestamp` is further from now than the tolerance (a replay, or a bad clock).
    #[error("webhook-timestamp is outside the tolerance")]
    StaleTimestamp,
    /// No `v1` entry of `webhook-signature` matches the content.
    #[error("no webhook-signature entry matches")]
    NoMatch,
    /// The signature is right but the body is not an event.
    #[error("the body is not an event: {0}")]
    InvalidBody(String),
}

/// Checks deliveries signed with one endpoint secret.
#[derive(Clone)]
pub struct Verifier {
    key: hmac::Key,
    tolerance: Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for `secret` (`whsec_…`; the prefix may be left off) with the default
    /// tolerance.
    pub fn new(secret: &str) -> Result<Self, WebhookError> {
        let b64 = secret.trim();
        let b64 = b64.strip_prefix(SECRET_PREFIX).unwrap_or(b64);
        let bytes = B64.decode(b64).map_err(|_| WebhookError::InvalidSecret)?;
        if !KEY_LEN.contains(&bytes.len()) {
            return Err(WebhookError::InvalidSecret);
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            tolerance: DEFAULT_TOLERANCE,
        })
    }

    /// Accept timestamps this far from the receiver's clock instead of
    /// [`DEFAULT_TOLERANCE`].
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Checks a delivery by its headers and raw body (verify the bytes as received, before any
    /// JSON parsing) against the current time, and returns the event it carries.
    pub fn verify_headers(&self, headers: &HeaderMap, body: &[u8]) -> Result<Event, WebhookError> {
        let header = |name: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or(WebhookError::MissingHeader(name))
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.verify(
            header("webhook-id")?,
            header("webhook-timestamp")?,
            header("webhook-signature")?,
            body,
            now,
        )
    }

    /// Checks a delivery given its three header values and body at `now_secs` (Unix seconds),
    /// and returns the event it carries.
    pub fn verify(
        &self,
        id: &str,
        timestamp: &str,
        signature: &str,
        body: &[u8],
        now_secs: i64,
    ) -> Result<Event, WebhookError> {
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| WebhookError::InvalidTimestamp)?;
        if now_secs.abs_diff(ts) > self.tolerance.as_secs() {
            return Err(WebhookError::StaleTimestamp);
        }
        let mut content = format!("{id}.{ts}.").into_bytes();
        content.extend_from_slice(body);
        // Entries of other versions are skipped; hmac::verify compares in constant time.
        let matched = signature
            .split_ascii_whitespace()
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .filter_map(|(_, sig)| B64.decode(sig).ok())
            .any(|sig| hmac::verify(&self.key, &content, &sig).is_ok());
        if !matched {
            return Err(WebhookError::NoMatch);
        }
        let msg: Message =
            serde_json::from_slice(body).map_err(|e| WebhookError::InvalidBody(e.to_string()))?;
        Ok(Event::from_message(id.to_owned(), msg))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    // The example of the Standard Webhooks specification and its reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn check(sig: &str, body: &[u8], now: i64) -> Result<Event, WebhookError> {
        Verifier::new(SECRET)
            .unwrap()
            .verify(ID, &TS.to_string(), sig, body, now)
    }

    #[test]
    fn the_specification_example_passes_the_signature_check_within_the_tolerance_only() {
        // The example body is not an event, so a good signature gets as far as the body.
        assert!(matches!(
            check(SIG, SPEC_BODY, TS),
            Err(WebhookError::InvalidBody(_))
        ));
        assert!(matches!(
            check(SIG, SPEC_BODY, TS + 300),
            Err(WebhookError::InvalidBody(_))
        ));
        assert_eq!(
            check(SIG, SPEC_BODY, TS + 301),
            Err(WebhookError::StaleTimestamp)
        );
        assert_eq!(
            check(SIG, SPEC_BODY, TS - 301),
            Err(WebhookError::StaleTimestamp)
        );
        assert_eq!(
            check(SIG, br#"{"test": 2432232315}"#, TS),
            Err(WebhookError::NoMatch)
        );
        let other_version = format!("v2,{}", &SIG[3..]);
        assert_eq!(
            check(&other_version, SPEC_BODY, TS),
            Err(WebhookError::NoMatch)
        );
        let several = format!("v1,bm90IGl0 {SIG}");
        assert!(matches!(
            check(&several, SPEC_BODY, TS),
            Err(WebhookError::InvalidBody(_))
        ));
    }

    #[test]
    fn bad_secrets_timestamps_and_missing_headers_are_refused() {
        for s in ["", "whsec_", "whsec_not base64", "whsec_c2hvcnQ="] {
            assert_eq!(
                Verifier::new(s).map(|_| ()),
                Err(WebhookError::InvalidSecret)
            );
        }
        let v = Verifier::new(SECRET).unwrap();
        assert_eq!(
            v.verify(ID, "soon", SIG, SPEC_BODY, TS).map(|_| ()),
            Err(WebhookError::InvalidTimestamp)
        );
        assert_eq!(
            v.verify_headers(&HeaderMap::new(), b"{}").map(|_| ()),
            Err(WebhookError::MissingHeader("webhook-id"))
        );
    }
}
