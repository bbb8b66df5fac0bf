//! Exponential backoff: the deterministic step, and the full-jitter delay
//! drawn uniformly below it (so retries of many messages spread out).

use std::time::Duration;

/// `base · 2^attempt`, capped at `max`.
pub(crate) fn step(attempt: u32, base: Duration, max: Duration) -> Duration {
    base.saturating_mul(2u32.saturating_pow(attempt.min(31)))
        .min(max)
}

/// A delay drawn uniformly from `0..=step(attempt)`.
pub(crate) fn jittered(attempt: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = step(attempt, base, max).as_millis() as u64;
    Duration::from_millis(fastrand::u64(0..=ceiling))
}

/// The wait before a blocked message runs again: between half of
/// `step(attempt)` and all of it, so that it stays slow (full jitter could
/// draw a wait near zero), while runs of many blocked messages spread out.
pub(crate) fn blocked(attempt: u32, base: Duration, max: Duration) -> Duration {
    let step = step(attempt, base, max);
    step / 2 + Duration::from_millis(fastrand::u64(0..=(step / 2).as_millis() as u64))
}

/// The visibility timeout, in whole seconds (at least 1, at most SQS's 12 h),
/// for a message released after its `receive_count`-th delivery failed.
pub(crate) fn release_seconds(receive_count: u32, base: Duration, max: Duration) -> u32 {
    let step = step(receive_count, base, max);
    (step.as_millis().div_ceil(1000) as u32).clamp(1, crate::limits::MAX_INVISIBLE_SECONDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    #[test]
    fn steps_double_up_to_the_cap() {
        let steps: Vec<u128> = (0..8).map(|a| step(a, BASE, MAX).as_millis()).collect();
        assert_eq!(steps, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(step(1000, BASE, MAX), MAX);
    }

    #[test]
    fn jitter_stays_below_the_step() {
        for attempt in 0..10 {
            for _ in 0..100 {
                assert!(jittered(attempt, BASE, MAX) <= step(attempt, BASE, MAX));
            }
        }
    }

    #[test]
    fn a_blocked_wait_is_at_least_half_the_step() {
        for attempt in 0..10 {
            for _ in 0..100 {
                let wait = blocked(attempt, BASE, MAX);
                let step = step(attempt, BASE, MAX);
                assert!(wait >= step / 2 && wait <= step, "{wait:?} for {step:?}");
            }
        }
    }

    #[test]
    fn release_visibility_is_whole_seconds() {
        assert_eq!(release_seconds(1, BASE, MAX), 1);
        assert_eq!(release_seconds(4, BASE, MAX), 2);
        assert_eq!(release_seconds(9, BASE, MAX), 5);
    }
}
