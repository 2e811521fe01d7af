//! Webhook signatures per the Standard Webhooks convention (<https://www.standardwebhooks.com>).
//!
//! A secret is `whsec_` followed by the base64 of 24 to 64 random bytes; the HMAC key is the
//! decoded bytes, not the text. The signed content is `{webhook-id}.{webhook-timestamp}.{body}`
//! and the `webhook-signature` header carries one or more space-separated `v1,<base64 HMAC-SHA256>`
//! entries (several while a secret is being rotated). No I/O here besides the random secret.

use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;

/// The prefix of a signing secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";
/// The version tag of the only signature scheme (HMAC-SHA256).
pub const VERSION: &str = "v1";
/// Random bytes in a generated secret.
const SECRET_BYTES: usize = 32;
/// Shortest and longest accepted key, in bytes, as the convention says.
const KEY_LEN: std::ops::RangeInclusive<usize> = 24..=64;

/// The default allowed clock difference between sender and receiver.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Why a secret or a signed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The secret is not `whsec_<base64>` of 24–64 bytes.
    #[error("the webhook secret is not `whsec_` and the base64 of 24 to 64 bytes")]
    InvalidSecret,
    /// `webhook-timestamp` is not an integer number of seconds.
    #[error("webhook-timestamp is not a Unix time in seconds")]
    InvalidTimestamp,
    /// `webhook-timestamp` is further from now than the tolerance (a replay, or a bad clock).
    #[error("webhook-timestamp is outside the tolerance")]
    StaleTimestamp,
    /// No `v1` entry of `webhook-signature` matches.
    #[error("no webhook-signature entry matches")]
    NoMatch,
}

/// A decoded signing secret.
#[derive(Clone)]
pub struct Secret {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A new random secret.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self { bytes }
    }

    /// Parses `whsec_<base64>`. The prefix is optional, as in the convention's libraries, so a
    /// receiver may paste either form.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let b64 = text.trim();
        let b64 = b64.strip_prefix(SECRET_PREFIX).unwrap_or(b64);
        let bytes = B64.decode(b64).map_err(|_| SignatureError::InvalidSecret)?;
        if !KEY_LEN.contains(&bytes.len()) {
            return Err(SignatureError::InvalidSecret);
        }
        Ok(Self { bytes })
    }

    /// The text form, `whsec_<base64>`.
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}", B64.encode(&self.bytes))
    }

    fn key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.bytes)
    }

    /// The `webhook-signature` value for one message: `v1,<base64 HMAC-SHA256>`.
    pub fn sign(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
        let tag = hmac::sign(&self.key(), &signed_content(msg_id, timestamp_secs, body));
        format!("{VERSION},{}", B64.encode(tag.as_ref()))
    }
}

/// `{msg_id}.{timestamp}.{body}`, the bytes the HMAC covers.
fn signed_content(msg_id: &str, timestamp_secs: i64, body: &[u8]) -> Vec<u8> {
    let mut content = format!("{msg_id}.{timestamp_secs}.").into_bytes();
    content.extend_from_slice(body);
    content
}

/// Signs with a secret in its text form; see [`Secret::sign`].
pub fn sign(
    secret: &str,
    msg_id: &str,
    timestamp_secs: i64,
    body: &[u8],
) -> Result<String, SignatureError> {
    Ok(Secret::parse(secret)?.sign(msg_id, timestamp_secs, body))
}

/// The three headers of a delivery, as received.
#[derive(Debug, Clone, Copy)]
pub struct SignedHeaders<'a> {
    /// `webhook-id`.
    pub id: &'a str,
    /// `webhook-timestamp` (Unix seconds, as text).
    pub timestamp: &'a str,
    /// `webhook-signature` (space-separated `v1,<base64>` entries).
    pub signature: &'a str,
}

/// Checks a received delivery: the timestamp must be within `tolerance` of `now_secs` (either
/// way), and one `v1` entry of the signature header must be the HMAC of the content. Entries
/// of other versions are ignored; the comparison is constant-time.
pub fn verify(
    secret: &str,
    headers: SignedHeaders<'_>,
    body: &[u8],
    now_secs: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let secret = Secret::parse(secret)?;
    let timestamp: i64 = headers
        .timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::InvalidTimestamp)?;
    if now_secs.abs_diff(timestamp) > tolerance.as_secs() {
        return Err(SignatureError::StaleTimestamp);
    }
    let key = secret.key();
    let content = signed_content(headers.id, timestamp, body);
    let matched = headers
        .signature
        .split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == VERSION)
        .filter_map(|(_, sig)| B64.decode(sig).ok())
        .any(|sig| hmac::verify(&key, &content, &sig).is_ok());
    if matched {
        Ok(())
    } else {
        Err(SignatureError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    // The example of the Standard Webhooks specification and its reference libraries.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers<'a>(ts: &'a str, sig: &'a str) -> SignedHeaders<'a> {
        SignedHeaders {
            id: SPEC_ID,
            timestamp: ts,
            signature: sig,
        }
    }

    #[test]
    fn the_specification_example_signs_to_its_published_signature() {
        assert_eq!(
            sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY).unwrap(),
            SPEC_SIG
        );
        // Without the prefix the key is the same.
        assert_eq!(
            sign(
                SPEC_SECRET.trim_start_matches(SECRET_PREFIX),
                SPEC_ID,
                SPEC_TS,
                SPEC_BODY
            )
            .unwrap(),
            SPEC_SIG
        );
    }

    #[test]
    fn the_specification_example_verifies_within_the_tolerance_only() {
        let ts = SPEC_TS.to_string();
        let ok = |now| {
            verify(
                SPEC_SECRET,
                headers(&ts, SPEC_SIG),
                SPEC_BODY,
                now,
                DEFAULT_TOLERANCE,
            )
        };
        assert_eq!(ok(SPEC_TS), Ok(()));
        assert_eq!(ok(SPEC_TS + 300), Ok(()));
        assert_eq!(ok(SPEC_TS - 300), Ok(()));
        assert_eq!(ok(SPEC_TS + 301), Err(SignatureError::StaleTimestamp));
        assert_eq!(ok(SPEC_TS - 301), Err(SignatureError::StaleTimestamp));
    }

    #[test]
    fn any_change_to_id_timestamp_body_or_secret_breaks_the_signature() {
        let ts = SPEC_TS.to_string();
        let now = SPEC_TS;
        let tol = DEFAULT_TOLERANCE;
        let body2 = br#"{"test": 2432232315}"#;
        assert_eq!(
            verify(SPEC_SECRET, headers(&ts, SPEC_SIG), body2, now, tol),
            Err(SignatureError::NoMatch)
        );
        let other_id = SignedHeaders {
            id: "msg_other",
            ..headers(&ts, SPEC_SIG)
        };
        assert_eq!(
            verify(SPEC_SECRET, other_id, SPEC_BODY, now, tol),
            Err(SignatureError::NoMatch)
        );
        let ts2 = (SPEC_TS + 1).to_string();
        assert_eq!(
            verify(SPEC_SECRET, headers(&ts2, SPEC_SIG), SPEC_BODY, now, tol),
            Err(SignatureError::NoMatch)
        );
        let other = Secret::generate().to_text();
        assert_eq!(
            verify(&other, headers(&ts, SPEC_SIG), SPEC_BODY, now, tol),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn one_matching_v1_entry_among_several_is_enough() {
        let ts = SPEC_TS.to_string();
        let now = SPEC_TS;
        let tol = DEFAULT_TOLERANCE;
        let several = format!("v1,bm90IGl0 v2,{} {SPEC_SIG}", &SPEC_SIG[3..]);
        assert_eq!(
            verify(SPEC_SECRET, headers(&ts, &several), SPEC_BODY, now, tol),
            Ok(())
        );
        // The right digest under another version tag does not count.
        let wrong_version = format!("v2,{}", &SPEC_SIG[3..]);
        for bad in ["", "v1", "v1,", "v1,!!!", wrong_version.as_str()] {
            assert_eq!(
                verify(SPEC_SECRET, headers(&ts, bad), SPEC_BODY, now, tol),
                Err(SignatureError::NoMatch),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_malformed_timestamp_or_secret_is_refused() {
        let tol = DEFAULT_TOLERANCE;
        for ts in ["", "abc", "1614265330.5"] {
            assert_eq!(
                verify(SPEC_SECRET, headers(ts, SPEC_SIG), SPEC_BODY, SPEC_TS, tol),
                Err(SignatureError::InvalidTimestamp),
                "{ts:?}"
            );
        }
        for secret in ["", "whsec_", "whsec_not base64", "whsec_c2hvcnQ="] {
            assert_eq!(
                Secret::parse(secret).map(|_| ()),
                Err(SignatureError::InvalidSecret),
                "{secret:?}"
            );
        }
    }

    #[test]
    fn generated_secrets_are_whsec_of_32_random_bytes_and_round_trip() {
        let a = Secret::generate();
        let text = a.to_text();
        assert!(text.starts_with(SECRET_PREFIX), "{text}");
        assert_eq!(B64.decode(&text[SECRET_PREFIX.len()..]).unwrap().len(), 32);
        assert_eq!(Secret::parse(&text).unwrap().bytes, a.bytes);
        assert_ne!(Secret::generate().to_text(), text);
        let sig = a.sign("evt_1", 1_700_000_000, b"{}");
        let hs = SignedHeaders {
            id: "evt_1",
            timestamp: "1700000000",
            signature: &sig,
        };
        assert_eq!(
            verify(&text, hs, b"{}", 1_700_000_000, DEFAULT_TOLERANCE),
            Ok(())
        );
    }
}
