//! Retry delays for notification delivery: exponential with jitter, pure maths.
//!
//! The delay before retry `n` (1-based) is drawn from `[d/2, d]` where
//! `d = min(max, initial * 2^(n-1))` ("equal jitter"): retries of many channels that
//! failed together spread out, and no retry comes sooner than half the nominal delay.
//! The random draw is an argument, so tests need no RNG.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included (at least 1).
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`, after `attempt` failures (`attempt >= 1`).
    /// `unit` is a random number in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let nominal = self
            .initial
            .checked_mul(1u32 << exp.min(31))
            .unwrap_or(self.max)
            .min(self.max);
        let half = nominal / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    #[test]
    fn doubles_then_caps() {
        assert_eq!(P.delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(P.delay(2, 1.0), Duration::from_secs(2));
        assert_eq!(P.delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(P.delay(10, 1.0), Duration::from_secs(60));
        assert_eq!(P.delay(u32::MAX, 1.0), Duration::from_secs(60));
        assert_eq!(P.delay(3, 0.0), Duration::from_secs(2));
    }

    proptest! {
        #[test]
        fn within_half_and_full_nominal(attempt in 1u32..100, unit in 0.0f64..1.0) {
            let d = P.delay(attempt, unit);
            let nominal = P.delay(attempt, 1.0);
            prop_assert!(d <= nominal && d >= nominal / 2);
            prop_assert!(d <= P.max);
            prop_assert!(P.delay(attempt + 1, 1.0) >= nominal);
        }
    }
}
