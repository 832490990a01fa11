//! The one retry backoff of the core bank.
//!
//! Every retry loop (the command engine's version conflicts, the DynamoDB adapter's contention, the
//! Kafka batch consumer, the DynamoDB stream poller, the outbox relay's rows, the embedded pipeline's
//! lanes) asks a [`Backoff`] how long to pause after its n-th failure in a row: the initial pause
//! doubled per failure, capped at the maximum, never below one millisecond, and jittered so that
//! callers failing together do not come back together. [`Attempts`] adds the bound for loops that
//! give up after a number of tries.
//!
//! The crate computes pauses only; callers sleep (each has its own shutdown signal to race against),
//! so it needs no runtime and is tested here, once.
#![warn(missing_docs)]

use std::time::Duration;

/// How much of the pause is random.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Anywhere from zero to the ceiling: spreads contending writers the most (the writers retry a
    /// conditional write, and the sooner one of them wins the better).
    Full,
    /// The upper half of the ceiling is random: the pause still grows with every failure, so an
    /// outage is not hammered, but callers failing together spread out.
    Equal,
}

/// Doubling, capped, jittered pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: Jitter,
}

/// The ceiling never shrinks below this, so a zero setting cannot turn a retry loop into a busy loop.
const FLOOR: Duration = Duration::from_millis(1);

impl Backoff {
    /// Pauses doubling from `initial` up to `max`, with [`Jitter::Equal`].
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max, jitter: Jitter::Equal }
    }

    /// [`Backoff::new`] from milliseconds.
    pub const fn from_millis(initial_ms: u64, max_ms: u64) -> Self {
        Self::new(Duration::from_millis(initial_ms), Duration::from_millis(max_ms))
    }

    /// The same pauses with [`Jitter::Full`].
    #[must_use]
    pub const fn full_jitter(self) -> Self {
        Self { jitter: Jitter::Full, ..self }
    }

    /// The longest pause after `failures` failures in a row (the first failure is 1; 0 counts as 1):
    /// `initial * 2^(failures - 1)`, at most `max`, at least one millisecond.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(31);
        self.initial.saturating_mul(1_u32 << exponent).min(self.max).max(FLOOR)
    }

    /// The pause after `failures` failures in a row: random within the jitter's share of
    /// [`Backoff::ceiling`].
    pub fn delay(&self, failures: u32) -> Duration {
        let ceiling = u64::try_from(self.ceiling(failures).as_micros()).unwrap_or(u64::MAX);
        let random = match self.jitter {
            Jitter::Full => fastrand::u64(0..=ceiling),
            Jitter::Equal => {
                let half = ceiling / 2;
                ceiling - half + fastrand::u64(0..=half)
            }
        };
        Duration::from_micros(random)
    }
}

/// A bounded retry loop's counter: how many tries are left and the pause before the next one.
#[derive(Debug, Clone)]
pub struct Attempts {
    backoff: Backoff,
    max: u32,
    failures: u32,
}

impl Attempts {
    /// At most `max` tries in all (the first one included), pausing by `backoff` between them.
    pub const fn new(backoff: Backoff, max: u32) -> Self {
        Self { backoff, max, failures: 0 }
    }

    /// Counts a failed try: the pause before the next one, or `None` when no try is left.
    pub fn failed(&mut self) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        (self.failures < self.max).then(|| self.backoff.delay(self.failures))
    }

    /// How many tries have failed so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn the_ceiling_doubles_from_the_initial_pause_and_stops_at_the_maximum() {
        let backoff = Backoff::from_millis(100, 1_000);
        let ceilings: Vec<u128> = (0..=6).map(|n| ms(backoff.ceiling(n))).collect();
        assert_eq!(ceilings, [100, 100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn a_zero_setting_still_pauses_a_millisecond() {
        assert_eq!(Backoff::from_millis(0, 0).ceiling(3), Duration::from_millis(1));
        assert!(Backoff::from_millis(0, 0).delay(3) >= Duration::from_micros(500));
    }

    #[test]
    fn equal_jitter_stays_in_the_upper_half_and_full_jitter_anywhere_below_the_ceiling() {
        let equal = Backoff::from_millis(100, 1_000);
        let full = equal.full_jitter();
        let mut full_low = false;
        for failures in 1..=40 {
            let ceiling = equal.ceiling(failures);
            for _ in 0..50 {
                let e = equal.delay(failures);
                assert!(e >= ceiling / 2 && e <= ceiling, "{e:?} outside {ceiling:?}");
                let f = full.delay(failures);
                assert!(f <= ceiling, "{f:?} above {ceiling:?}");
                full_low |= f < ceiling / 2;
            }
        }
        assert!(full_low, "full jitter never went below half the ceiling in 2,000 draws");
    }

    #[test]
    fn jitter_spreads_callers_that_fail_together() {
        let backoff = Backoff::from_millis(1_000, 1_000);
        let draws: std::collections::HashSet<Duration> = (0..100).map(|_| backoff.delay(1)).collect();
        assert!(draws.len() > 50, "only {} distinct pauses in 100 draws", draws.len());
    }

    #[test]
    fn attempts_give_a_pause_between_tries_and_none_after_the_last() {
        let mut attempts = Attempts::new(Backoff::from_millis(2, 25).full_jitter(), 3);
        assert!(attempts.failed().is_some_and(|d| d <= Duration::from_millis(2)));
        assert!(attempts.failed().is_some_and(|d| d <= Duration::from_millis(4)));
        assert_eq!(attempts.failed(), None);
        assert_eq!(attempts.failures(), 3);
        assert_eq!(Attempts::new(Backoff::from_millis(1, 1), 1).failed(), None);
    }
}
