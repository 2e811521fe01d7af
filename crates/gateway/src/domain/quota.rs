//! The per-tenant quota: concurrent sessions and a session-seconds budget.

/// A tenant's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Sessions open (or being opened) at once.
    pub max_concurrent_sessions: i64,
    /// Total session-seconds; `None` for no budget.
    pub session_seconds_budget: Option<i64>,
}

/// What the tenant uses now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaUsage {
    /// Sessions holding a slot: being created, open, or being closed.
    pub active_sessions: i64,
    /// Seconds charged for closed sessions plus seconds elapsed in open ones.
    pub seconds_used: i64,
}

/// Why a new session is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// All concurrent slots are taken.
    #[error("insufficient quota: {active} of {max} concurrent sessions in use")]
    ConcurrentLimit {
        /// Sessions holding a slot.
        active: i64,
        /// The limit.
        max: i64,
    },
    /// The session-seconds budget is used up.
    #[error("insufficient quota: {used} of {budget} session-seconds used")]
    BudgetSpent {
        /// Seconds used.
        used: i64,
        /// The budget.
        budget: i64,
    },
}

/// Whether one more session fits.
pub fn check_new_session(limits: QuotaLimits, usage: QuotaUsage) -> Result<(), QuotaError> {
    if usage.active_sessions >= limits.max_concurrent_sessions {
        return Err(QuotaError::ConcurrentLimit {
            active: usage.active_sessions,
            max: limits.max_concurrent_sessions,
        });
    }
    check_budget(limits, usage.seconds_used)
}

/// Whether the session-seconds budget, if any, has room left.
pub fn check_budget(limits: QuotaLimits, seconds_used: i64) -> Result<(), QuotaError> {
    match limits.session_seconds_budget {
        Some(budget) if seconds_used >= budget => Err(QuotaError::BudgetSpent {
            used: seconds_used,
            budget,
        }),
        _ => Ok(()),
    }
}

/// The refusal when every slot below the limit is taken.
pub fn all_slots_taken(limits: QuotaLimits) -> QuotaError {
    QuotaError::ConcurrentLimit {
        active: limits.max_concurrent_sessions,
        max: limits.max_concurrent_sessions,
    }
}

/// Slots looked at by a first attempt to reserve, from a random start: a tenant far from its
/// limit finds a free one among them without reading all of them.
pub const SLOT_WINDOW: i64 = 64;
/// Attempts to reserve a slot. An attempt fails when a create that committed first took the
/// slot it chose (then another window is tried) or when its window held no free slot (then
/// every slot is looked at).
pub const SLOT_ATTEMPTS: u32 = 16;

/// Which of a tenant's slots (numbered below its limit) a reservation looks at: `window` of
/// them from `start`, wrapping at `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSearch {
    /// The tenant's limit.
    pub limit: i64,
    /// The first slot looked at.
    pub start: i64,
    /// How many are looked at.
    pub window: i64,
}

impl SlotSearch {
    /// [`SLOT_WINDOW`] slots from `start` (any random number).
    pub fn window(limit: i64, start: u64) -> Self {
        let whole = Self::every(limit, start);
        Self {
            window: whole.window.min(SLOT_WINDOW),
            ..whole
        }
    }

    /// Every slot, from `start` (any random number) on.
    pub fn every(limit: i64, start: u64) -> Self {
        let limit = limit.max(1);
        Self {
            limit,
            start: i64::try_from(start % limit.unsigned_abs()).unwrap_or(0),
            window: limit,
        }
    }
}

/// What an attempt to reserve a slot came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotAttempt {
    /// The session holds a slot.
    Reserved,
    /// A create that committed first took the free slot found.
    Taken,
    /// No slot looked at was free.
    NoneFree,
}

/// Seconds left of the budget, if there is one.
pub fn seconds_remaining(limits: QuotaLimits, usage: QuotaUsage) -> Option<i64> {
    limits
        .session_seconds_budget
        .map(|budget| (budget - usage.seconds_used).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QuotaLimits = QuotaLimits {
        max_concurrent_sessions: 2,
        session_seconds_budget: Some(100),
    };

    fn usage(active: i64, used: i64) -> QuotaUsage {
        QuotaUsage {
            active_sessions: active,
            seconds_used: used,
        }
    }

    #[test]
    fn a_session_fits_below_both_limits() {
        assert_eq!(check_new_session(LIMITS, usage(1, 99)), Ok(()));
    }

    #[test]
    fn the_last_slot_can_be_taken_but_not_one_more() {
        assert_eq!(check_new_session(LIMITS, usage(1, 0)), Ok(()));
        assert_eq!(
            check_new_session(LIMITS, usage(2, 0)),
            Err(QuotaError::ConcurrentLimit { active: 2, max: 2 })
        );
    }

    #[test]
    fn a_spent_budget_refuses_new_sessions() {
        assert_eq!(
            check_new_session(LIMITS, usage(0, 100)),
            Err(QuotaError::BudgetSpent {
                used: 100,
                budget: 100
            })
        );
    }

    #[test]
    fn no_budget_means_only_the_concurrency_limit_applies() {
        let limits = QuotaLimits {
            session_seconds_budget: None,
            ..LIMITS
        };
        assert_eq!(check_new_session(limits, usage(0, i64::MAX)), Ok(()));
        assert_eq!(seconds_remaining(limits, usage(0, 5)), None);
    }

    #[test]
    fn remaining_seconds_never_go_negative() {
        assert_eq!(seconds_remaining(LIMITS, usage(0, 30)), Some(70));
        assert_eq!(seconds_remaining(LIMITS, usage(0, 130)), Some(0));
    }

    #[test]
    fn with_every_slot_taken_the_refusal_names_the_limit_twice() {
        assert_eq!(
            all_slots_taken(LIMITS),
            QuotaError::ConcurrentLimit { active: 2, max: 2 }
        );
    }

    #[test]
    fn a_window_starts_anywhere_below_the_limit_and_every_covers_all_slots() {
        let first = SlotSearch::window(1000, 1234);
        assert_eq!(
            first,
            SlotSearch {
                limit: 1000,
                start: 234,
                window: SLOT_WINDOW
            }
        );
        let all = SlotSearch::every(1000, 5);
        assert_eq!((all.start, all.window), (5, 1000));
    }

    #[test]
    fn a_limit_smaller_than_the_window_is_looked_at_whole() {
        let search = SlotSearch::window(3, u64::MAX);
        assert_eq!(search.window, 3);
        assert!((0..3).contains(&search.start), "{search:?}");
    }
}
