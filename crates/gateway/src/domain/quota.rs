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

/// Whether one more session fits. The database's `reserve_session` (migration 0012) applies the
/// same rule under the lock of the tenant's usage gate when it reserves; this names the refusal
/// it reports.
pub fn check_new_session(limits: QuotaLimits, usage: QuotaUsage) -> Result<(), QuotaError> {
    if usage.active_sessions >= limits.max_concurrent_sessions {
        return Err(QuotaError::ConcurrentLimit {
            active: usage.active_sessions,
            max: limits.max_concurrent_sessions,
        });
    }
    if let Some(budget) = limits.session_seconds_budget
        && usage.seconds_used >= budget
    {
        return Err(QuotaError::BudgetSpent {
            used: usage.seconds_used,
            budget,
        });
    }
    Ok(())
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
}
