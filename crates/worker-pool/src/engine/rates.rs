//! Rate limits on handler starts (`max_rate` for the run, `group_rate` per
//! group): token buckets from governor, read on tokio's clock so that
//! paused time in tests moves them too. A message over a limit stays in its
//! lane (its lease kept by the heartbeats), never in a worker, and the loop
//! wakes when the bucket allows the next start.

use std::num::NonZeroU32;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::{Duration, Instant};

/// tokio's clock, for governor.
#[derive(Debug, Clone, Copy, Default)]
struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

type Direct = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;
type Keyed = RateLimiter<
    String,
    DefaultKeyedStateStore<String>,
    TokioClock,
    NoOpMiddleware<std::time::Instant>,
>;

/// The run's rate limits, and when the loop is due to wake for them.
pub(super) struct Rates {
    /// Starts per second for the whole run.
    all: Option<Direct>,
    /// Starts per second for each group.
    per_group: Option<Keyed>,
    /// The wake-up already set for a limited start, so that each turn of
    /// the loop does not add another.
    wake: Option<Instant>,
}

/// A start over a limit, and when the limit allows the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limited {
    /// Its group's limit: other groups may start.
    Group(Instant),
    /// The run's limit: nothing may start before then.
    All(Instant),
}

impl std::fmt::Debug for Rates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rates")
            .field("all", &self.all.is_some())
            .field("per_group", &self.per_group.is_some())
            .field("wake", &self.wake)
            .finish()
    }
}

impl Rates {
    /// Limits of `all` and `per_group` starts per second, each optional
    /// (within [`crate::limits::RATE`], checked with the configuration).
    pub(super) fn new(all: Option<f64>, per_group: Option<f64>) -> Rates {
        Rates {
            all: all.map(|rate| RateLimiter::direct_with_clock(quota(rate), TokioClock)),
            per_group: per_group
                .map(|rate| RateLimiter::hashmap_with_clock(quota(rate), TokioClock)),
            wake: None,
        }
    }

    /// Whether any limit is set (when none is, starts skip the buckets).
    pub(super) fn any(&self) -> bool {
        self.all.is_some() || self.per_group.is_some()
    }

    /// Takes a start for `group` from the buckets, or says when one is
    /// next allowed. The group's bucket goes first: a start its group
    /// allows but the run's limit refuses costs the group one token, which
    /// only slows a group the run's limit holds back anyway; the other way
    /// round, every group over its limit would cost the run a start.
    pub(super) fn admit(&self, group: &str) -> Result<(), Limited> {
        if let Some(per_group) = &self.per_group
            && let Err(not_until) = per_group.check_key(&group.to_owned())
        {
            return Err(Limited::Group(Instant::from_std(
                not_until.earliest_possible(),
            )));
        }
        if let Some(all) = &self.all
            && let Err(not_until) = all.check()
        {
            return Err(Limited::All(Instant::from_std(
                not_until.earliest_possible(),
            )));
        }
        Ok(())
    }

    /// Whether the loop needs a new wake-up at `at`: not when one is set
    /// that comes sooner and has not passed.
    pub(super) fn wake_needed(&mut self, at: Instant) -> bool {
        let now = Instant::now();
        if self.wake.is_some_and(|wake| wake > now && wake <= at) {
            return false;
        }
        self.wake = Some(at);
        true
    }

    /// Forgets the buckets of groups that have been idle long enough to
    /// be full again, so that they do not pile up over a long run.
    pub(super) fn forget_idle_groups(&self) {
        if let Some(per_group) = &self.per_group {
            per_group.retain_recent();
        }
    }
}

/// `rate` starts per second, with a burst of as many as one second allows
/// (at least one).
fn quota(rate: f64) -> Quota {
    let period = Duration::from_secs_f64(1.0 / rate);
    let burst = NonZeroU32::new((rate.floor() as u32).max(1)).expect("at least one");
    Quota::with_period(period)
        .expect("a rate within limits::RATE has a period")
        .allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_group_over_its_rate_waits_and_others_go_on() {
        let rates = Rates::new(None, Some(2.0));
        assert_eq!(rates.admit("a"), Ok(()));
        assert_eq!(rates.admit("a"), Ok(()), "a burst of one second's worth");
        let Err(Limited::Group(at)) = rates.admit("a") else {
            panic!("the third start within a second is over the rate");
        };
        assert_eq!(at - Instant::now(), Duration::from_millis(500));
        assert_eq!(rates.admit("b"), Ok(()), "another group has its own bucket");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(rates.admit("a"), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_run_rate_holds_every_group() {
        let rates = Rates::new(Some(0.5), None);
        assert_eq!(rates.admit("a"), Ok(()));
        let Err(Limited::All(at)) = rates.admit("b") else {
            panic!("one start every two seconds");
        };
        assert_eq!(at - Instant::now(), Duration::from_secs(2));
    }
}
