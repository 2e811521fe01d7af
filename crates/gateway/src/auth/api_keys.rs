//! API key checks, cached. A key's argon2 check costs milliseconds of CPU, too much for every
//! call, so a verified key is remembered (by its SHA-256, never in clear) for a short time; a
//! revoked key therefore stops working within [`CACHE_TTL`].

use std::time::Duration;

use uuid::Uuid;

use super::digest_cache::DigestCache;

/// How long a verified key is trusted without asking Postgres again.
pub const CACHE_TTL: Duration = Duration::from_secs(10);

/// Who a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOwner {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The key's credential.
    pub credential_id: Uuid,
}

/// Verified keys, by digest, each trusted for [`CACHE_TTL`].
pub type ApiKeyCache = DigestCache<KeyOwner>;

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_cached_key_is_forgotten_after_the_ttl() {
        let cache = ApiKeyCache::default();
        let owner = KeyOwner {
            tenant_id: Uuid::nil(),
            credential_id: Uuid::nil(),
        };
        let t0 = Instant::now();
        cache.put("k", owner, t0 + CACHE_TTL, t0);
        assert_eq!(cache.get("k", t0 + Duration::from_secs(1)), Some(owner));
        assert_eq!(cache.get("other", t0), None);
        assert_eq!(cache.get("k", t0 + CACHE_TTL), None);
    }
}
