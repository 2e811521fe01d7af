//! Webhook rules: the message every event becomes (for webhooks and SSE alike), the retry
//! schedule, and when an endpoint is disabled. No I/O here.
//!
//! **Retries.** A failed attempt (no answer within the timeout, a refused address, or any
//! status but 2xx) is retried after 5 s, 30 s, 2 min, 10 min, 30 min and 1 h, then every 3 h,
//! each delay lengthened by up to 20 % of random jitter. The 15th attempt comes at least
//! 25 h 42 min after the first; when it fails too the delivery is `failed`. Every delay is a
//! multiple of a base (5 s in production; tests shrink it), so the shape stays the same.
//!
//! **Disabling.** When a delivery ends `failed` — the endpoint has failed it for more than a
//! day — and no delivery to the same endpoint has succeeded since that delivery was queued, the
//! endpoint is disabled with a reason, its pending deliveries are given up (an attempt already
//! in flight is still counted, and is a delivery if the receiver accepts it), and the tenant gets
//! a [`crate::domain::events::WEBHOOK_DISABLED`] event (on its other endpoints and by SSE). An
//! endpoint that answers some events and refuses others stays enabled: only the refused
//! deliveries fail.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::domain::ids::WebhookEndpointId;

/// Nominal delays after the 1st..6th failed attempt, in units of the base (5 s in production):
/// 5 s, 30 s, 2 min, 10 min, 30 min, 1 h.
const EARLY_STEPS: [u32; 6] = [1, 6, 24, 120, 360, 720];
/// Every later delay: 3 h at a 5 s base.
const LATE_STEP: u32 = 2_160;
/// Retries go on until this much nominal time has passed since the first attempt: 24 h at a
/// 5 s base.
const HORIZON_STEPS: u64 = 17_280;
/// The largest fraction of random lengthening of a delay. Jitter only lengthens, so the span of
/// the schedule never falls under its nominal total.
pub const JITTER: f64 = 0.2;

/// The production base of the schedule.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(5);
/// How long one attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest accepted endpoint URL.
pub const MAX_URL_LEN: usize = 2048;
/// Most endpoints one tenant may register.
pub const MAX_ENDPOINTS_PER_TENANT: i64 = 20;

/// The nominal delay after the `n`-th failed attempt (1-based), in base units.
fn step(n: u32) -> u32 {
    let i = n.saturating_sub(1) as usize;
    EARLY_STEPS.get(i).copied().unwrap_or(LATE_STEP)
}

/// The nominal time from the first attempt to the `n`-th, in base units.
fn elapsed_before(n: u32) -> u64 {
    (1..n).map(|k| u64::from(step(k))).sum()
}

/// How many attempts a delivery gets: the first plus the retries until the horizon is passed.
pub fn max_attempts() -> u32 {
    let mut n = 1;
    while elapsed_before(n) < HORIZON_STEPS {
        n += 1;
    }
    n
}

/// After `attempts` failed attempts (at least one), the wait before the next, or `None` when
/// the delivery has had its last attempt. `jitter` is a uniform sample of `[0, 1)`; it
/// lengthens the nominal delay by up to [`JITTER`] of itself.
pub fn retry_delay(attempts: u32, base: Duration, jitter: f64) -> Option<Duration> {
    if attempts >= max_attempts() {
        return None;
    }
    let nominal = base.saturating_mul(step(attempts.max(1)));
    let jitter = jitter.clamp(0.0, 1.0);
    Some(nominal.saturating_add(nominal.mul_f64(JITTER * jitter)))
}

/// The Standard Webhooks message of an event, also the `data` of its SSE frame:
/// `{"type", "timestamp" (RFC 3339, UTC), "data"}`.
pub fn message(event_type: &str, created_at: DateTime<Utc>, data: &Value) -> Value {
    json!({
        "type": event_type,
        "timestamp": created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    })
}

/// `webhook-id` of an event: the same for every attempt and every endpoint, so receivers can
/// drop duplicates.
pub fn message_id(event_id: i64) -> String {
    format!("evt_{event_id}")
}

/// The nominal time a failing delivery is retried for: 24 h at the production base.
pub fn horizon(base: Duration) -> Duration {
    base.saturating_mul(u32::try_from(HORIZON_STEPS).unwrap_or(u32::MAX))
}

/// The reason stored on, and reported for, an endpoint disabled by failures.
pub fn disabled_reason(base: Duration, last_error: &str) -> String {
    format!(
        "deliveries kept failing for more than {} (last error: {last_error})",
        humanize(horizon(base))
    )
}

fn humanize(d: Duration) -> String {
    match (d.as_secs() / 3600, d.as_secs()) {
        (h, _) if h > 0 => format!("{h} h"),
        (_, s) if s > 0 => format!("{s} s"),
        _ => format!("{} ms", d.as_millis()),
    }
}

/// Payload of [`crate::domain::events::WEBHOOK_DISABLED`].
pub fn disabled_payload(endpoint: WebhookEndpointId, url: &str, reason: &str) -> Value {
    json!({"endpoint_id": endpoint.to_string(), "url": url, "reason": reason})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const BASE: Duration = DEFAULT_RETRY_BASE;

    fn nominal(attempts: u32) -> Option<Duration> {
        retry_delay(attempts, BASE, 0.0)
    }

    #[test]
    fn the_production_schedule_is_5s_30s_2m_10m_30m_1h_then_every_3h() {
        let m = |min: u64| Duration::from_secs(min * 60);
        assert_eq!(nominal(1), Some(Duration::from_secs(5)));
        assert_eq!(nominal(2), Some(Duration::from_secs(30)));
        assert_eq!(nominal(3), Some(m(2)));
        assert_eq!(nominal(4), Some(m(10)));
        assert_eq!(nominal(5), Some(m(30)));
        assert_eq!(nominal(6), Some(m(60)));
        for n in 7..max_attempts() {
            assert_eq!(nominal(n), Some(m(180)), "attempt {n}");
        }
        assert_eq!(max_attempts(), 15);
        assert_eq!(nominal(15), None);
        assert_eq!(nominal(16), None);
    }

    #[test]
    fn the_schedule_spans_more_than_a_day_but_not_much_more() {
        let total: Duration = (1..max_attempts()).map(|n| nominal(n).unwrap()).sum();
        assert!(total >= Duration::from_secs(24 * 3600), "{total:?}");
        assert!(total < Duration::from_secs(27 * 3600), "{total:?}");
        // The last attempt before the horizon had not yet reached a day.
        let before_last: Duration = (1..max_attempts() - 1).map(|n| nominal(n).unwrap()).sum();
        assert!(
            before_last < Duration::from_secs(24 * 3600),
            "{before_last:?}"
        );
    }

    #[test]
    fn delays_grow_and_jitter_only_lengthens_them_by_at_most_a_fifth() {
        let mut last = Duration::ZERO;
        for n in 1..max_attempts() {
            let d = nominal(n).unwrap();
            assert!(d >= last, "attempt {n}");
            last = d;
            let lo = retry_delay(n, BASE, 0.0).unwrap();
            let hi = retry_delay(n, BASE, 0.999_999).unwrap();
            assert!(hi >= lo && hi <= lo.mul_f64(1.0 + JITTER), "attempt {n}");
            // Out-of-range samples are clamped rather than shortening or exploding a delay.
            assert_eq!(retry_delay(n, BASE, -3.0), Some(lo));
            assert!(retry_delay(n, BASE, 7.0).unwrap() <= lo.mul_f64(1.0 + JITTER));
        }
    }

    #[test]
    fn the_schedule_scales_with_its_base() {
        let tiny = Duration::from_millis(1);
        assert_eq!(retry_delay(1, tiny, 0.0), Some(tiny));
        assert_eq!(retry_delay(7, tiny, 0.0), Some(tiny * LATE_STEP));
        assert_eq!(retry_delay(max_attempts(), tiny, 0.0), None);
        // Zero attempts is treated as one.
        assert_eq!(retry_delay(0, tiny, 0.0), Some(tiny));
    }

    #[test]
    fn the_message_has_type_rfc3339_timestamp_and_data() {
        let at = DateTime::parse_from_rfc3339("2024-05-06T07:08:09.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let m = message("session.closed", at, &json!({"_id": "ses_x"}));
        assert_eq!(
            m,
            json!({"type": "session.closed", "timestamp": "2024-05-06T07:08:09.123Z", "data": {"_id": "ses_x"}})
        );
        assert_eq!(message_id(42), "evt_42");
    }

    #[test]
    fn the_disabled_reason_names_the_day_and_the_last_error() {
        let r = disabled_reason(BASE, "HTTP 500");
        assert!(r.contains("24 h") && r.contains("HTTP 500"), "{r}");
        let r = disabled_reason(Duration::from_micros(50), "HTTP 500");
        assert!(r.contains("864 ms"), "{r}");
    }
}
