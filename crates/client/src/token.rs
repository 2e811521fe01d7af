//! The access token a client holds, and when to replace it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faceswap_wire::TokenResponse;
use tokio::time::Instant;

/// Refresh once less than this share of a token's lifetime remains…
const REFRESH_SHARE: u32 = 10;
/// …but never earlier than this before it expires.
const MAX_MARGIN: Duration = Duration::from_secs(60);

/// A token and what is known of its life. Its `Debug` leaves the token out.
#[derive(Clone)]
pub(crate) struct Held {
    pub(crate) token: String,
    obtained: Instant,
    /// `None` for a token given by the caller: kept until the gateway refuses it.
    lifetime: Option<Duration>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("obtained", &self.obtained)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl Held {
    /// A token from a getToken answer received at `now`. The lifetime is measured on the
    /// local clock from `expires_in`, so a skewed clock does not matter; `expires_at` is the
    /// fallback.
    pub(crate) fn from_answer(token: String, answer: &TokenResponse, now: Instant) -> Self {
        let data = answer.data.as_ref();
        let lifetime = data
            .and_then(|d| d.expires_in)
            .or_else(|| {
                let at = data?.expires_at?;
                let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
                Some(at - i64::try_from(now).ok()?)
            })
            .map(|secs| Duration::from_secs(u64::try_from(secs).unwrap_or(0)));
        Self {
            token,
            obtained: now,
            lifetime,
        }
    }

    /// A token of unknown lifetime.
    pub(crate) fn given(token: String, now: Instant) -> Self {
        Self {
            token,
            obtained: now,
            lifetime: None,
        }
    }

    /// Whether a new token should be fetched before the next call.
    pub(crate) fn refresh_due(&self, now: Instant) -> bool {
        let Some(lifetime) = self.lifetime else {
            return false;
        };
        let margin = (lifetime / REFRESH_SHARE).min(MAX_MARGIN);
        now + margin >= self.obtained + lifetime
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(expires_in: Option<i64>) -> TokenResponse {
        serde_json::from_value(serde_json::json!({
            "code": 1000,
            "token": "t",
            "data": {"token": "t", "expires_in": expires_in},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    // Every rule takes the time as an argument, so the tests name instants instead of waiting.

    #[test]
    fn an_hour_token_is_refreshed_in_its_last_minute() {
        let t0 = Instant::now();
        let held = Held::from_answer("t".into(), &answer(Some(3600)), t0);
        assert!(!held.refresh_due(t0 + Duration::from_secs(3600 - 61)));
        assert!(held.refresh_due(t0 + Duration::from_secs(3600 - 60)));
    }

    #[test]
    fn a_short_token_is_refreshed_in_its_last_tenth() {
        let t0 = Instant::now();
        let held = Held::from_answer("t".into(), &answer(Some(10)), t0);
        assert!(!held.refresh_due(t0 + Duration::from_millis(8_999)));
        assert!(held.refresh_due(t0 + Duration::from_millis(9_000)));
    }

    #[test]
    fn a_token_of_unknown_lifetime_is_kept_until_refused() {
        let t0 = Instant::now();
        let given = Held::given("t".into(), t0);
        let unknown = Held::from_answer("t".into(), &answer(None), t0);
        let day_later = t0 + Duration::from_secs(86_400);
        assert!(!given.refresh_due(day_later));
        assert!(!unknown.refresh_due(day_later));
    }
}
