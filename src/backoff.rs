//! The one exponential backoff of rotor: pure maths, randomness passed in.
//!
//! Every retry loop (supervisor restarts, rotation retries, notification delivery, reload
//! retries, Vault requests) asks [`ExponentialBackoff::delay`] how long to wait before retry
//! `attempt`. The delay doubles from `min` for each further attempt, is capped at `max`, and
//! may be lengthened by a random share of itself (the jitter ratio) so that retries which
//! failed together spread out, never beyond `max`. This follows linkerd2-proxy's
//! `exp-backoff` crate, except that the random draw is an argument: the rotation state
//! machine is pure and derives its draw from a per-secret seed, and tests pass fixed draws.

use std::time::Duration;

/// A jittered exponential backoff: `min`, `max` and a jitter ratio, validated once.
#[derive(Debug, Clone, Copy)]
pub struct ExponentialBackoff {
    /// The delay before the first retry, and the least any delay can be.
    min: Duration,
    /// No delay is longer, jitter included.
    max: Duration,
    /// The share of the exponential delay that may be added at random, in `0..=1`.
    jitter: f64,
}

/// Why [`ExponentialBackoff::new`] refused its arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid backoff: {0}")]
pub struct InvalidBackoff(&'static str);

impl ExponentialBackoff {
    /// No wait at all: every delay is zero.
    pub const NONE: Self = Self {
        min: Duration::ZERO,
        max: Duration::ZERO,
        jitter: 0.0,
    };

    /// A backoff from `min` doubling up to `max`, each delay lengthened by up to `jitter`
    /// times itself (`0.0` for none, `1.0` for up to double).
    /// `const`, so a constant backoff is checked when rotor is compiled.
    pub const fn new(min: Duration, max: Duration, jitter: f64) -> Result<Self, InvalidBackoff> {
        if min.as_nanos() > max.as_nanos() {
            return Err(InvalidBackoff("the minimum is longer than the maximum"));
        }
        if !jitter.is_finite() {
            return Err(InvalidBackoff("the jitter ratio is not a finite number"));
        }
        if jitter < 0.0 || jitter > 1.0 {
            return Err(InvalidBackoff("the jitter ratio is outside 0 to 1"));
        }
        Ok(Self { min, max, jitter })
    }

    /// "Equal jitter" around a nominal delay `d = initial * 2^(attempt - 1)` (capped at `max`):
    /// each delay is drawn from `[d/2, d]`, so retries that failed together spread out and
    /// none comes sooner than half the nominal delay. Once the doubling reaches `max`, every
    /// delay is `max`.
    pub fn equal_jitter(initial: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        Self::new(initial / 2, max, 1.0)
    }

    pub fn min(&self) -> Duration {
        self.min
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The delay before retry number `attempt` (1 for the first retry; 0 counts as 1), with
    /// `draw` a random number in `[0, 1)` (values outside are clamped, a non-finite one counts
    /// as 0): `min(base + base * jitter * draw, max)` where `base = min(min * 2^(attempt-1),
    /// max)`. Never overflows, whatever the attempt.
    pub fn delay(&self, attempt: u32, draw: f64) -> Duration {
        let base = 2u32
            .checked_pow(attempt.saturating_sub(1))
            .and_then(|factor| self.min.checked_mul(factor))
            .map_or(self.max, |d| d.min(self.max));
        if self.jitter == 0.0 {
            return base;
        }
        let draw = if draw.is_finite() {
            draw.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let extra = Duration::try_from_secs_f64(base.as_secs_f64() * self.jitter * draw)
            .unwrap_or(self.max);
        base.saturating_add(extra).min(self.max)
    }

    /// The sum of the delays before the first `attempts` retries, without jitter: how long
    /// something that fails at once every time takes to be retried that many times.
    /// Constant time in `attempts`: once the doubling reaches `max`, the remaining
    /// attempts each add `max` (supervisors check this with `u32::MAX` restarts).
    pub fn total_delay(&self, attempts: u32) -> Duration {
        let mut sum = Duration::ZERO;
        for attempt in 1..=attempts {
            let delay = self.delay(attempt, 0.0);
            if delay == self.max {
                let rest = attempts - attempt + 1;
                return sum.saturating_add(self.max.saturating_mul(rest));
            }
            sum = sum.saturating_add(delay);
        }
        sum
    }
}

impl PartialEq for ExponentialBackoff {
    fn eq(&self, other: &Self) -> bool {
        self.min == other.min && self.max == other.max && self.jitter == other.jitter
    }
}

// The jitter ratio is finite (checked by `new`), so equality is reflexive.
impl Eq for ExponentialBackoff {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_from_min_up_to_max() {
        let b = ExponentialBackoff::new(ms(100), ms(1_000), 0.0).unwrap();
        let delays: Vec<_> = (0..=6).map(|a| b.delay(a, 0.5).as_millis()).collect();
        assert_eq!(delays, [100, 100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(b.delay(u32::MAX, 0.0), ms(1_000));
        assert_eq!(ExponentialBackoff::NONE.delay(7, 0.9), Duration::ZERO);
        assert_eq!(b.total_delay(3), ms(700));
    }

    #[test]
    fn total_delay_of_every_possible_attempt_is_immediate_and_saturates() {
        let b = ExponentialBackoff::new(ms(100), ms(400), 0.0).unwrap();
        // 100 + 200 + 400 + 400 + 400
        assert_eq!(b.total_delay(5), ms(1_500));
        assert_eq!(b.total_delay(u32::MAX), ms(400) * u32::MAX - ms(500));
        assert_eq!(
            ExponentialBackoff::NONE.total_delay(u32::MAX),
            Duration::ZERO
        );
    }

    #[test]
    fn jitter_adds_a_share_of_the_delay_but_never_passes_max() {
        let b = ExponentialBackoff::new(ms(1_000), ms(10_000), 0.5).unwrap();
        assert_eq!(b.delay(1, 0.0), ms(1_000));
        assert_eq!(b.delay(1, 0.5), ms(1_250));
        assert_eq!(b.delay(4, 0.9), ms(10_000));
        let equal = ExponentialBackoff::equal_jitter(ms(1_000), ms(60_000)).unwrap();
        assert_eq!(equal.delay(1, 0.0), ms(500));
        assert_eq!(equal.delay(3, 0.5), ms(3_000));
    }

    #[test]
    fn refuses_what_cannot_be_a_backoff() {
        assert!(ExponentialBackoff::new(ms(2), ms(1), 0.0).is_err());
        assert!(ExponentialBackoff::new(ms(1), ms(2), -0.1).is_err());
        assert!(ExponentialBackoff::new(ms(1), ms(2), 1.5).is_err());
        assert!(ExponentialBackoff::new(ms(1), ms(2), f64::NAN).is_err());
        assert!(ExponentialBackoff::new(ms(1), ms(2), f64::INFINITY).is_err());
        assert!(ExponentialBackoff::new(ms(2), ms(2), 1.0).is_ok());
    }

    fn backoff() -> impl Strategy<Value = ExponentialBackoff> {
        (0u64..=u64::MAX / 2, 0u64..=u64::MAX / 2, 0.0f64..=1.0).prop_map(|(a, b, jitter)| {
            let (min, max) = (a.min(b), a.max(b));
            ExponentialBackoff::new(Duration::from_nanos(min), Duration::from_nanos(max), jitter)
                .unwrap()
        })
    }

    proptest! {
        #[test]
        fn delay_stays_within_min_and_max(b in backoff(), attempt: u32, draw in 0.0f64..1.0) {
            let d = b.delay(attempt, draw);
            prop_assert!(d >= b.min() && d <= b.max(), "{d:?} outside {b:?}");
        }

        #[test]
        fn without_jitter_delays_never_shrink(b in backoff(), attempt in 0u32..200) {
            let b = ExponentialBackoff::new(b.min(), b.max(), 0.0).unwrap();
            prop_assert!(b.delay(attempt + 1, 0.0) >= b.delay(attempt, 0.0));
        }

        #[test]
        fn huge_attempts_and_durations_do_not_overflow(
            secs in 0u64..=u64::MAX,
            attempt in (u32::MAX - 64)..=u32::MAX,
            draw in 0.0f64..1.0,
        ) {
            let max = Duration::new(u64::MAX, 999_999_999);
            let b = ExponentialBackoff::new(Duration::from_secs(secs), max, 1.0).unwrap();
            prop_assert!(b.delay(attempt, draw) <= max);
            prop_assert!(b.total_delay(64) <= max);
        }
    }
}
