//! Where "now" comes from. Production reads the system clock; in-process tests run on
//! tokio's paused clock so that hours of schedule pass in microseconds.

use chrono::{DateTime, TimeDelta, Utc};

#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The wall clock.
    System,
    /// `base` plus the tokio time elapsed since `start`; follows `tokio::time::pause` and
    /// `advance`, for tests.
    Tokio {
        base: DateTime<Utc>,
        start: tokio::time::Instant,
    },
    /// [`Clock::Tokio`] plus an offset that a test steps forward and back, as NTP or an
    /// operator steps a machine's wall clock while tokio's monotonic timers run on. Only
    /// with the `test-util` feature.
    #[cfg(feature = "test-util")]
    Stepped {
        base: DateTime<Utc>,
        start: tokio::time::Instant,
        step: &'static ClockStep,
    },
}

/// The offset of a [`Clock::Stepped`], in milliseconds; a test moves it, every copy of the
/// clock sees it at once.
#[cfg(feature = "test-util")]
#[derive(Debug, Default)]
pub struct ClockStep(std::sync::atomic::AtomicI64);

#[cfg(feature = "test-util")]
impl ClockStep {
    /// Steps the clock by `by` (negative: back).
    pub fn step(&self, by: TimeDelta) {
        self.0
            .fetch_add(by.num_milliseconds(), std::sync::atomic::Ordering::SeqCst);
    }

    fn offset(&self) -> TimeDelta {
        TimeDelta::milliseconds(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

impl Clock {
    /// A tokio-driven clock starting at `base`. Must be called inside a runtime.
    pub fn tokio(base: DateTime<Utc>) -> Clock {
        Clock::Tokio {
            base,
            start: tokio::time::Instant::now(),
        }
    }

    /// A tokio-driven clock starting at `base` that the returned handle steps. The handle is
    /// leaked (a few bytes per test) so that `Clock` stays `Copy`, as the tree hands it
    /// around by value.
    #[cfg(feature = "test-util")]
    pub fn tokio_stepped(base: DateTime<Utc>) -> (Clock, &'static ClockStep) {
        let step: &'static ClockStep = Box::leak(Box::default());
        let clock = Clock::Stepped {
            base,
            start: tokio::time::Instant::now(),
            step,
        };
        (clock, step)
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Tokio { base, start } => {
                let elapsed = tokio::time::Instant::now().duration_since(*start);
                *base + TimeDelta::from_std(elapsed).unwrap_or(TimeDelta::MAX)
            }
            #[cfg(feature = "test-util")]
            Clock::Stepped { base, start, step } => {
                let elapsed = tokio::time::Instant::now().duration_since(*start);
                *base + TimeDelta::from_std(elapsed).unwrap_or(TimeDelta::MAX) + step.offset()
            }
        }
    }

    /// The tokio delay until `at`, never negative. Long delays are capped so that a timer
    /// armed months ahead re-checks the wall clock daily (the machine re-arms early timers).
    pub fn delay_until(&self, at: DateTime<Utc>) -> std::time::Duration {
        const MAX: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
        (at - self.now()).to_std().unwrap_or_default().min(MAX)
    }
}
