//! Results of expensive credential checks (argon2 for API keys, ECDSA for tokens), remembered
//! by the credential's SHA-256 (never in clear) until a deadline, so a client calling many times
//! a second pays for the check once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Entries kept at most; beyond it, expired ones are dropped and new ones are not remembered.
const MAX_ENTRIES: usize = 10_000;

/// Checked credentials, by digest, each until its deadline.
pub struct DigestCache<V> {
    entries: Mutex<HashMap<[u8; 32], (V, Instant)>>,
}

impl<V> Default for DigestCache<V> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

/// The digest a credential is cached under.
pub fn digest(credential: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, credential.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl<V: Clone> DigestCache<V> {
    /// What the check of `credential` gave, if its deadline has not passed.
    pub fn get(&self, credential: &str, now: Instant) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&digest(credential))
            .filter(|(_, until)| now < *until)
            .map(|(v, _)| v.clone())
    }

    /// Remembers what the check of `credential` gave, until `until`.
    pub fn put(&self, credential: &str, value: V, until: Instant, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, until)| now < *until);
        }
        if entries.len() < MAX_ENTRIES {
            entries.insert(digest(credential), (value, until));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_entry_is_forgotten_at_its_deadline() {
        let cache = DigestCache::default();
        let t0 = Instant::now();
        cache.put("k", 7, t0 + Duration::from_secs(10), t0);
        assert_eq!(cache.get("k", t0 + Duration::from_secs(1)), Some(7));
        assert_eq!(cache.get("other", t0), None);
        assert_eq!(cache.get("k", t0 + Duration::from_secs(10)), None);
    }

    #[test]
    fn a_full_cache_makes_room_by_dropping_expired_entries_only() {
        let cache = DigestCache::default();
        let t0 = Instant::now();
        for i in 0..MAX_ENTRIES {
            cache.put(
                &i.to_string(),
                i,
                t0 + Duration::from_secs(1 + (i % 2) as u64 * 100),
                t0,
            );
        }
        let later = t0 + Duration::from_secs(2);
        cache.put("new", 1, later + Duration::from_secs(10), later);
        assert_eq!(cache.get("new", later), Some(1));
        assert_eq!(cache.get("1", later), Some(1), "a live entry stays");
    }
}
