//! The upstream access token and its expiry, read from the JWT itself.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;

/// Lifetime assumed for a token whose `exp` cannot be read: short enough that a wrong guess
/// costs at most one 1101 and a refresh, long enough not to hammer getToken.
const FALLBACK_LIFETIME_SECS: i64 = 3600;

/// An upstream access token and when it dies.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The bearer token. Never log it.
    pub token: String,
    /// Expiry, seconds since the Unix epoch, from the JWT's `exp` claim.
    pub expires_at: i64,
}

impl IssuedToken {
    /// Wraps a token, reading `exp` from its payload without verifying the signature (the
    /// provider's key is not ours to know). Without a readable `exp`, assumes an hour and
    /// warns, since the refresh schedule then rests on a guess.
    pub fn from_jwt(token: String) -> Self {
        let expires_at = jwt_exp(&token).unwrap_or_else(|| {
            tracing::warn!(
                fallback_secs = FALLBACK_LIFETIME_SECS,
                "upstream token has no readable exp claim; assuming a fallback lifetime"
            );
            unix_now() + FALLBACK_LIFETIME_SECS
        });
        Self { token, expires_at }
    }
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug output ends up in logs; the token must not.
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The `exp` claim of a JWT, if its payload is readable.
fn jwt_exp(token: &str) -> Option<i64> {
    let mut parts = token.split('.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    // Some encoders pad base64url although RFC 7515 says not to.
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let exp = claims.get("exp")?;
    // NumericDate may be fractional (RFC 7519 §2).
    exp.as_i64().or_else(|| exp.as_f64().map(|f| f as i64))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", enc(r#"{"alg":"HS256"}"#), enc(claims))
    }

    #[test]
    fn exp_is_read_from_the_payload_without_verifying() {
        assert_eq!(
            jwt_exp(&jwt(r#"{"sub":"a","exp":1700000000}"#)),
            Some(1_700_000_000)
        );
        assert_eq!(
            jwt_exp(&jwt(r#"{"exp":1700000000.9}"#)),
            Some(1_700_000_000)
        );
        let padded = format!(
            "h.{}==.s",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"exp":5}"#)
        );
        assert_eq!(jwt_exp(&padded), Some(5));
    }

    #[test]
    fn unreadable_tokens_fall_back_to_an_hour() {
        for token in [
            "opaque",
            "a.!!!.c",
            &jwt(r#"{"sub":"a"}"#),
            &jwt("not json"),
            &jwt(r#"{"exp":"soon"}"#),
        ] {
            assert_eq!(jwt_exp(token), None, "{token}");
            let issued = IssuedToken::from_jwt(token.to_owned());
            let expected = unix_now() + FALLBACK_LIFETIME_SECS;
            assert!((expected - issued.expires_at).abs() <= 2, "{token}");
        }
    }

    #[test]
    fn debug_output_hides_the_token() {
        let issued = IssuedToken::from_jwt(jwt(r#"{"exp":7}"#));
        let shown = format!("{issued:?}");
        assert!(!shown.contains(&issued.token), "{shown}");
        assert!(shown.contains("expires_at: 7"), "{shown}");
    }
}
