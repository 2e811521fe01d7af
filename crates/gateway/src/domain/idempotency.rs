//! `Idempotency-Key` rules: which keys are acceptable, what identifies "the same request", and
//! which answers are kept for replay.

use sha2::{Digest, Sha256};

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// Set on a replayed answer.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// The tenant routes whose POSTs take a key: each changes state upstream or here.
pub const ROUTES: &[&str] = &[
    faceswap_wire::paths::LIVE_CREATE,
    faceswap_wire::paths::LIVE_UPDATE,
    faceswap_wire::paths::LIVE_CLOSE,
    "/v1/webhooks",
];

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Empty, too long, or not printable ASCII.
    #[error(
        "Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters (a UUID is a good choice)"
    )]
    Malformed,
}

/// Checks a presented key.
pub fn parse_key(raw: &[u8]) -> Result<&str, KeyError> {
    let key = std::str::from_utf8(raw)
        .map_err(|_| KeyError::Malformed)?
        .trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(KeyError::Malformed);
    }
    Ok(key)
}

/// What makes two requests "the same": method, path and body, byte for byte.
pub fn request_fingerprint(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut hash = Sha256::new();
    for part in [method.as_bytes(), path.as_bytes()] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.update(body);
    hash.finalize().to_vec()
}

/// Whether an answer is kept for replay. Successes are: a retry must not redo them. Failures
/// are not: none of them changed anything that a second attempt would duplicate (a create the
/// upstream may have received is recorded as lost and its slot released either way), and a
/// client retrying after a 429 or a 502 wants the call tried again, not the old failure.
pub fn keeps_answer(status: u16) -> bool {
    (200..300).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_printable_ascii() {
        assert_eq!(parse_key(b" 4f2a-k1 "), Ok("4f2a-k1"));
        assert_eq!(parse_key(b""), Err(KeyError::Malformed));
        assert_eq!(parse_key(b"a b"), Err(KeyError::Malformed));
        assert_eq!(parse_key("clé".as_bytes()), Err(KeyError::Malformed));
        assert!(parse_key(&[b'k'; MAX_KEY_LEN]).is_ok());
        assert_eq!(
            parse_key(&[b'k'; MAX_KEY_LEN + 1]),
            Err(KeyError::Malformed)
        );
    }

    #[test]
    fn the_fingerprint_covers_method_path_and_body() {
        let base = request_fingerprint("POST", "/a", b"{}");
        assert_eq!(base, request_fingerprint("POST", "/a", b"{}"));
        assert_ne!(base, request_fingerprint("POST", "/b", b"{}"));
        assert_ne!(base, request_fingerprint("PUT", "/a", b"{}"));
        assert_ne!(base, request_fingerprint("POST", "/a", b"{ }"));
        // Lengths are framed, so parts cannot trade bytes.
        assert_ne!(
            request_fingerprint("POST", "/ab", b"c"),
            request_fingerprint("POST", "/a", b"bc")
        );
    }

    #[test]
    fn only_successes_are_kept() {
        assert!(keeps_answer(200));
        assert!(!keeps_answer(400));
        assert!(!keeps_answer(429));
        assert!(!keeps_answer(502));
    }
}
