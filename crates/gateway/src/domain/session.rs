//! The gateway's view of a session's life: its state, why it closed, and what it costs.

use chrono::{DateTime, Utc};

/// Where a session is in the gateway's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// The quota slot is reserved and the upstream create is under way.
    Creating,
    /// The upstream session exists.
    Open,
    /// An upstream close is under way.
    Closing,
    /// Closed upstream and here.
    Closed,
    /// The upstream create's outcome is unknown; the slot was released.
    Lost,
}

impl SessionState {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Open => "open",
            Self::Closing => "closing",
            Self::Closed => "closed",
            Self::Lost => "lost",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => Self::Creating,
            "open" => Self::Open,
            "closing" => Self::Closing,
            "closed" => Self::Closed,
            "lost" => Self::Lost,
            _ => return None,
        })
    }

    /// Whether the session counts against the tenant's concurrent sessions.
    pub fn holds_slot(self) -> bool {
        matches!(self, Self::Creating | Self::Open | Self::Closing)
    }

    /// Whether tenant calls (update, heartbeat) may still act on it.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Open)
    }
}

/// Why a session was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The tenant closed it.
    Client,
    /// Idle longer than the tenant's idle timeout.
    Idle,
    /// Open longer than the tenant's maximum duration.
    MaxDuration,
    /// Failed upstream.
    Failed,
    /// The tenant's session-seconds budget ran out.
    Budget,
    /// Settled to agree with the upstream's view.
    Reconciled,
    /// The upstream create's outcome is unknown.
    Lost,
    /// An operator closed it, or suspended its tenant.
    Admin,
}

impl CloseReason {
    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "client" => Self::Client,
            "idle" => Self::Idle,
            "max_duration" => Self::MaxDuration,
            "failed" => Self::Failed,
            "budget" => Self::Budget,
            "reconciled" => Self::Reconciled,
            "lost" => Self::Lost,
            "admin" => Self::Admin,
            _ => return None,
        })
    }

    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Idle => "idle",
            Self::MaxDuration => "max_duration",
            Self::Failed => "failed",
            Self::Budget => "budget",
            Self::Reconciled => "reconciled",
            Self::Lost => "lost",
            Self::Admin => "admin",
        }
    }
}

/// Session-seconds charged for a session open from `opened` to `closed`: started seconds count
/// whole, so a session is never free.
pub fn charged_seconds(opened: DateTime<Utc>, closed: DateTime<Utc>) -> i64 {
    let millis = (closed - opened).num_milliseconds().max(0);
    (millis + 999) / 1000
}

/// Delay before upstream close attempt number `attempt + 1`: `base` doubled per failed attempt,
/// at most five minutes, scaled by `jitter` (0.8–1.2, drawn by the caller) so replicas spread out.
pub fn close_retry_delay(
    base: std::time::Duration,
    attempts: u32,
    jitter: f64,
) -> std::time::Duration {
    const MAX: std::time::Duration = std::time::Duration::from_secs(300);
    let doubled = base.saturating_mul(1u32 << attempts.min(20));
    doubled.min(MAX).mul_f64(jitter.clamp(0.8, 1.2))
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for s in [
            SessionState::Creating,
            SessionState::Open,
            SessionState::Closing,
            SessionState::Closed,
            SessionState::Lost,
        ] {
            assert_eq!(SessionState::parse(s.as_str()), Some(s));
        }
        assert_eq!(SessionState::parse("nope"), None);
    }

    #[test]
    fn only_unfinished_sessions_hold_a_slot() {
        assert!(SessionState::Creating.holds_slot());
        assert!(SessionState::Open.holds_slot());
        assert!(SessionState::Closing.holds_slot());
        assert!(!SessionState::Closed.holds_slot());
        assert!(!SessionState::Lost.holds_slot());
        assert!(SessionState::Open.is_live());
        assert!(!SessionState::Closing.is_live());
    }

    #[test]
    fn close_retries_back_off_exponentially_up_to_five_minutes() {
        let base = std::time::Duration::from_secs(1);
        assert_eq!(
            close_retry_delay(base, 0, 1.0),
            std::time::Duration::from_secs(1)
        );
        assert_eq!(
            close_retry_delay(base, 3, 1.0),
            std::time::Duration::from_secs(8)
        );
        assert_eq!(
            close_retry_delay(base, 30, 1.0),
            std::time::Duration::from_secs(300)
        );
        assert_eq!(
            close_retry_delay(base, 1, 1.2),
            std::time::Duration::from_millis(2400)
        );
        assert_eq!(
            close_retry_delay(base, 1, 9.0),
            std::time::Duration::from_millis(2400)
        );
    }

    #[test]
    fn started_seconds_are_charged_whole() {
        let t0 = Utc::now();
        assert_eq!(charged_seconds(t0, t0), 0);
        assert_eq!(charged_seconds(t0, t0 + Duration::milliseconds(1)), 1);
        assert_eq!(charged_seconds(t0, t0 + Duration::milliseconds(1000)), 1);
        assert_eq!(charged_seconds(t0, t0 + Duration::milliseconds(1001)), 2);
        assert_eq!(charged_seconds(t0 + Duration::seconds(5), t0), 0);
    }
}
