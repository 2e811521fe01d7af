//! The account's access tokens: real HS256 JWTs with `exp`, signed by a key born with the process.

use std::sync::atomic::{AtomicU64, Ordering};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: u64,
    exp: u64,
    jti: String,
    /// Tokens of an older generation count as expired (forced expiry).
    generation: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// `exp` has passed, or the token predates a forced expiry.
    #[error("token has expired")]
    Expired,
    /// Not a JWT, or not signed by this simulator.
    #[error("token is invalid")]
    Invalid,
}

/// Issues and verifies tokens. A fresh random key per process means a token minted by another
/// simulator (or anyone else) is refused.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    generation: AtomicU64,
}

impl Default for TokenIssuer {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenIssuer {
    /// A new issuer with a random signing key.
    pub fn new() -> Self {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            generation: AtomicU64::new(0),
        }
    }

    /// A token for `subject` that dies `ttl_seconds` after `now` (seconds since the epoch).
    pub fn issue(&self, subject: &str, now: u64, ttl_seconds: u64) -> (String, u64) {
        let exp = now + ttl_seconds;
        let claims = Claims {
            sub: subject.to_owned(),
            iat: now,
            exp,
            jti: format!("{:016x}", rand::rng().next_u64()),
            generation: self.generation.load(Ordering::SeqCst),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail");
        (token, exp)
    }

    /// Checks signature, algorithm, `exp` (no leeway: lifetimes are seconds in tests) and
    /// generation.
    pub fn verify(&self, token: &str) -> Result<(), TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            },
        )?;
        if data.claims.generation < self.generation.load(Ordering::SeqCst) {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    /// Makes every token issued so far count as expired.
    pub fn expire_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> u64 {
        crate::clock::unix_now()
    }

    #[test]
    fn a_fresh_token_verifies() {
        let issuer = TokenIssuer::new();
        let (token, exp) = issuer.issue("c", now(), 60);
        assert_eq!(exp, now() + 60);
        assert_eq!(issuer.verify(&token), Ok(()));
    }

    #[test]
    fn a_token_past_its_exp_is_expired() {
        let issuer = TokenIssuer::new();
        let (token, _) = issuer.issue("c", now() - 120, 60);
        assert_eq!(issuer.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_from_another_issuer_is_invalid() {
        let (token, _) = TokenIssuer::new().issue("c", now(), 60);
        assert_eq!(TokenIssuer::new().verify(&token), Err(TokenError::Invalid));
        assert_eq!(
            TokenIssuer::new().verify("not-a-jwt"),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn forced_expiry_kills_earlier_tokens_but_not_later_ones() {
        let issuer = TokenIssuer::new();
        let (old, _) = issuer.issue("c", now(), 60);
        issuer.expire_all();
        let (new, _) = issuer.issue("c", now(), 60);
        assert_eq!(issuer.verify(&old), Err(TokenError::Expired));
        assert_eq!(issuer.verify(&new), Ok(()));
    }
}
