//! API key checks, cached. A key's argon2 check costs milliseconds of CPU, too much for every
//! call, so a verified key is remembered (by its SHA-256, never in clear) for a short time; a
//! revoked key therefore stops working within [`CACHE_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// How long a verified key is trusted without asking Postgres again.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
const MAX_ENTRIES: usize = 10_000;

/// Who a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOwner {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The key's credential.
    pub credential_id: Uuid,
}

/// Verified keys, by digest.
#[derive(Default)]
pub struct ApiKeyCache {
    entries: Mutex<HashMap<[u8; 32], (KeyOwner, Instant)>>,
}

/// The digest a key is cached under.
pub fn digest(key: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl ApiKeyCache {
    /// The owner of a recently verified key.
    pub fn get(&self, key: &str, now: Instant) -> Option<KeyOwner> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&digest(key))
            .filter(|(_, at)| now.duration_since(*at) < CACHE_TTL)
            .map(|(owner, _)| *owner)
    }

    /// Remembers a verified key.
    pub fn put(&self, key: &str, owner: KeyOwner, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, at)| now.duration_since(*at) < CACHE_TTL);
        }
        if entries.len() < MAX_ENTRIES {
            entries.insert(digest(key), (owner, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_key_is_forgotten_after_the_ttl() {
        let cache = ApiKeyCache::default();
        let owner = KeyOwner {
            tenant_id: Uuid::nil(),
            credential_id: Uuid::nil(),
        };
        let t0 = Instant::now();
        cache.put("k", owner, t0);
        assert_eq!(cache.get("k", t0 + Duration::from_secs(1)), Some(owner));
        assert_eq!(cache.get("other", t0), None);
        assert_eq!(cache.get("k", t0 + CACHE_TTL), None);
    }
}
