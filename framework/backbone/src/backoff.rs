//! The one backoff of the framework's own retry loops (provisioning, commits on revocation,
//! request retries, table restores, the exactly-once rejoin, the schema registry): exponential,
//! capped, with jitter, so that instances that failed together do not retry in lockstep.
//!
//! Each delay is drawn from the upper half of a ceiling (`[ceiling / 2, ceiling]`, "equal
//! jitter"): never longer than the loop's bound, never shorter than half of it. The ceiling starts
//! at the loop's first delay and doubles after each delay, up to its maximum. A loop keeps its own
//! bounds (first delay, maximum, attempts or deadline); only the shape is shared.

use std::time::Duration;

/// Exponential backoff with jitter: see the module's documentation.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    /// Delays from about `first`, doubling, up to `max` (a constant delay when they are equal).
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        let first = first.min(max);
        Self { first, max, ceiling: first }
    }

    /// The longest the next delay can be (its ceiling, before jitter).
    #[cfg(test)]
    pub(crate) fn ceiling(&self) -> Duration {
        self.ceiling
    }

    /// The next delay, then doubles the ceiling (up to the maximum).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = jitter(self.ceiling);
        self.ceiling = self.ceiling.saturating_mul(2).min(self.max);
        delay
    }

    /// Starts again from the first delay.
    pub(crate) fn reset(&mut self) {
        self.ceiling = self.first;
    }
}

/// A random duration in `[ceiling / 2, ceiling]`.
pub(crate) fn jitter(ceiling: Duration) -> Duration {
    let half = ceiling / 2;
    let spread = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(fastrand::u64(..=spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_within_their_jitter() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(200), ms(1000));
        for ceiling in [200, 400, 800, 1000, 1000] {
            assert_eq!(backoff.ceiling(), ms(ceiling));
            let delay = backoff.next_delay();
            assert!(delay >= ms(ceiling) / 2 && delay <= ms(ceiling), "{delay:?} for {ceiling} ms");
        }
        backoff.reset();
        assert_eq!(backoff.ceiling(), ms(200));
        assert_eq!(Backoff::new(ms(5), ms(1)).ceiling(), ms(1), "the first delay is capped too");
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        let mut constant = Backoff::new(ms(1000), ms(1000));
        constant.next_delay();
        assert_eq!(constant.ceiling(), ms(1000), "equal bounds: a constant delay, jittered");
    }

    #[test]
    fn jitter_spreads_delays() {
        let delays: std::collections::BTreeSet<Duration> =
            (0..32).map(|_| jitter(Duration::from_secs(1))).collect();
        assert!(delays.len() > 1, "all 32 delays were the same");
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(500) && *d <= Duration::from_secs(1)));
    }
}
