//! Argon2id hashing of secrets. Hashing is deliberately slow, so it runs on the blocking pool.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// The PHC string of `secret` (Argon2id, default parameters, random salt).
pub fn hash(secret: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
}

/// Whether `secret` matches the PHC string `phc`. A malformed stored hash never matches.
pub fn verify(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// [`verify`] on the blocking pool.
pub async fn verify_blocking(secret: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || verify(&secret, &phc))
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_secret_only() {
        let phc = hash("s3cret").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify("s3cret", &phc));
        assert!(!verify("s3cret!", &phc));
        assert!(!verify("s3cret", "not a hash"));
    }
}
