//! The global reload rate limit: a token bucket shared by every mount's reload actions.
//! Coalescing already folds a burst of changes into one reload per action; the bucket
//! bounds how many actions start per minute across all mounts, so a cluster-wide swap
//! of many mounts does not restart every workload at the same instant.
//!
//! The bucket is pure arithmetic on instants passed in; [`ReloadLimiter`] wraps it for
//! concurrent use and waits on tokio time (paused in tests).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Tokens refill continuously at `per_minute / 60` per second up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `per_minute` and `burst` are at least 1.
    pub fn new(per_minute: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            burst,
            per_second: f64::from(per_minute.max(1)) / 60.0,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token, or says how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }
}

/// A [`TokenBucket`] shared across tasks.
#[derive(Debug)]
pub struct ReloadLimiter {
    bucket: Mutex<TokenBucket>,
}

impl ReloadLimiter {
    /// `per_minute` reloads a minute, in bursts of up to `min(per_minute, 10)`.
    pub fn new(per_minute: u32) -> Self {
        ReloadLimiter {
            bucket: Mutex::new(TokenBucket::new(
                per_minute,
                per_minute.clamp(1, 10),
                Instant::now(),
            )),
        }
    }

    /// Waits for a token. Returns how long it waited (zero when not limited).
    pub async fn acquire(&self) -> Duration {
        let start = Instant::now();
        let mut waited = false;
        loop {
            let wait = {
                // A poisoned lock only means another task panicked mid-arithmetic; the
                // bucket is still a usable number.
                let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
                match bucket.take(Instant::now()) {
                    Ok(()) if waited => return start.elapsed(),
                    Ok(()) => return Duration::ZERO,
                    Err(wait) => wait,
                }
            };
            tokio::time::sleep(wait).await;
            waited = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(60, 3, t0);
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).expect_err("empty");
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        assert!(b.take(t0 + Duration::from_secs(1)).is_ok());
        // Refill never exceeds the burst.
        let later = t0 + Duration::from_secs(3_600);
        for _ in 0..3 {
            assert!(b.take(later).is_ok());
        }
        assert!(b.take(later).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_waits_on_tokio_time() {
        let l = ReloadLimiter::new(6); // burst 6, then one every 10 s
        for _ in 0..6 {
            assert_eq!(l.acquire().await, Duration::ZERO);
        }
        let waited = l.acquire().await;
        assert!(waited >= Duration::from_secs(9), "{waited:?}");
    }
}
