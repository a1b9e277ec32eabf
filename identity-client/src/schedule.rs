//! When to renew, and how long to wait after a failure.
//!
//! Renewal is due at half the certificate's lifetime, moved by up to ±10% of that half at
//! random, so that workloads started together do not renew together (istio/istio#52102,
//! spiffe/spire#1240). After a failure the wait doubles from [`RenewalTiming::backoff_base`] up to
//! [`RenewalTiming::backoff_max`], each wait drawn at random between half its ceiling and the
//! ceiling ("equal jitter": never a retry at once, never two clients in step), so that clients
//! cut off by one outage do not come back together.
//!
//! Deadlines are wall-clock times, and waiting re-reads the wall clock at least every
//! [`WALL_CLOCK_CHECK`]: a monotonic sleep does not count time spent suspended, and a host whose
//! clock was set forward must not sleep past a certificate's expiry.

use std::time::{Duration, SystemTime};

/// Longest a wait sleeps before it looks at the wall clock again.
pub const WALL_CLOCK_CHECK: Duration = Duration::from_secs(1);

/// The renewal schedule's knobs.
#[derive(Debug, Clone, Copy)]
pub struct RenewalTiming {
    /// Share of the lifetime after which renewal is due (0.5).
    pub at_fraction: f64,
    /// Jitter as a share of `at_fraction` (0.1: 0.45 to 0.55 of the lifetime).
    pub jitter: f64,
    /// First wait after a failure.
    pub backoff_base: Duration,
    /// Longest wait after failures.
    pub backoff_max: Duration,
}

impl Default for RenewalTiming {
    fn default() -> Self {
        RenewalTiming {
            at_fraction: 0.5,
            jitter: 0.1,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
        }
    }
}

impl RenewalTiming {
    /// When a certificate valid from `not_before` to `not_after` should be renewed, for a
    /// `sample` drawn uniformly in [0, 1).
    pub fn renew_at(
        &self,
        not_before: SystemTime,
        not_after: SystemTime,
        sample: f64,
    ) -> SystemTime {
        let lifetime = not_after
            .duration_since(not_before)
            .unwrap_or(Duration::ZERO);
        let spread = self.at_fraction * self.jitter;
        let fraction = self.at_fraction - spread + 2.0 * spread * sample.clamp(0.0, 1.0);
        not_before + lifetime.mul_f64(fraction.clamp(0.0, 1.0))
    }

    /// The wait before attempt `failures + 1`, after `failures` failed ones in a row, for a
    /// `sample` drawn uniformly in [0, 1): at random in [ceiling/2, ceiling), where the ceiling
    /// doubles from `backoff_base` to `backoff_max`.
    pub fn backoff(&self, failures: u32, sample: f64) -> Duration {
        let doubling = 2f64.powi(failures.saturating_sub(1).min(30) as i32);
        let ceiling = self
            .backoff_base
            .mul_f64(doubling)
            .min(self.backoff_max)
            .max(Duration::from_millis(1));
        ceiling.mul_f64(0.5 + 0.5 * sample.clamp(0.0, 1.0))
    }
}

/// A number drawn uniformly in [0, 1) from the system's random source.
pub fn uniform() -> f64 {
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// Sleeps until the wall clock reads `deadline`, looking at it at least every
/// [`WALL_CLOCK_CHECK`], so a clock set forward or a suspended host wakes up in time.
pub async fn sleep_until(deadline: SystemTime) {
    sleep_until_by(deadline, SystemTime::now).await
}

/// [`sleep_until`] reading the wall clock from `clock` (tests make it jump).
async fn sleep_until_by(deadline: SystemTime, clock: impl Fn() -> SystemTime) {
    loop {
        let Ok(left) = deadline.duration_since(clock()) else {
            return;
        };
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(WALL_CLOCK_CHECK)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_between_45_and_55_percent_of_the_lifetime() {
        let timing = RenewalTiming::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(3600);
        let at = |s| {
            timing
                .renew_at(start, end, s)
                .duration_since(start)
                .unwrap()
        };
        assert_eq!(at(0.0), Duration::from_secs(1620));
        assert_eq!(at(0.5), Duration::from_secs(1800));
        assert!(at(0.999_999) <= Duration::from_secs(1980));
        let samples: Vec<_> = (0..1000).map(|_| at(uniform()).as_secs()).collect();
        assert!(samples.iter().all(|s| (1620..=1980).contains(s)));
        // Spread out, not all at one point.
        assert!(samples.iter().min() < Some(&1700) && samples.iter().max() > Some(&1900));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_below_each_ceiling() {
        let timing = RenewalTiming::default();
        assert_eq!(timing.backoff(1, 0.999_999).as_millis(), 499);
        assert_eq!(timing.backoff(1, 0.0).as_millis(), 250);
        assert_eq!(timing.backoff(2, 0.0).as_millis(), 500);
        assert_eq!(timing.backoff(5, 0.0).as_millis(), 4000);
        assert_eq!(timing.backoff(50, 0.0), Duration::from_secs(30));
        assert!(timing.backoff(50, 0.999) < Duration::from_secs(60));
    }

    /// The wall clock jumps forward by two hours (set by an operator, or a resume from suspend,
    /// during which no monotonic time passed) while a renewal an hour away is awaited: the wait
    /// ends at the next look at the clock, not an hour of monotonic time later.
    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_jump_ends_the_wait_within_one_check() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let start = SystemTime::now();
        let jumped = AtomicBool::new(false);
        let clock = || {
            if jumped.swap(true, Ordering::SeqCst) {
                start + Duration::from_secs(7200)
            } else {
                start
            }
        };
        let monotonic = tokio::time::Instant::now();
        sleep_until_by(start + Duration::from_secs(3600), clock).await;
        assert!(
            monotonic.elapsed() <= WALL_CLOCK_CHECK,
            "{:?}",
            monotonic.elapsed()
        );
    }

    /// Without a jump, the wait lasts until the deadline (in steps of at most a second).
    #[tokio::test(start_paused = true)]
    async fn without_a_jump_the_wait_lasts_until_the_deadline() {
        let monotonic = tokio::time::Instant::now();
        let start = SystemTime::now();
        // The wall clock advances with tokio's paused clock.
        let clock = || start + monotonic.elapsed();
        sleep_until_by(start + Duration::from_secs(90), clock).await;
        let waited = monotonic.elapsed();
        assert!(
            waited >= Duration::from_secs(90) && waited < Duration::from_secs(92),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn sleeping_until_a_past_time_returns_at_once() {
        let t = std::time::Instant::now();
        sleep_until(SystemTime::now() - Duration::from_secs(5)).await;
        assert!(t.elapsed() < Duration::from_millis(100));
    }
}
