//! The tokio engine of `fifo run`: receives from the queue, lets the group
//! router decide which held message may run, runs the handler, keeps every
//! held message's lease, and deletes or hands back what it holds in each
//! group's order. Data flows one way: receives → router → handlers →
//! deletes (or hand-backs).
//!
//! Layout: `queue` is the engine's interface to a queue, in its own types;
//! `sqs` implements it on SQS (feature `sqs`) and `memory` in memory, for
//! tests and benchmarks; `engine` owns the router,
//! every held message and every decision; `calls` are the one-call tasks it
//! spawns; `backoff` computes retry delays; `stats` the counters; `steering`
//! the operators' handle on a run (see [`Steering`]); `limits` the ranges a
//! [`PoolConfig`] takes.
//!
//! Guarantees, against AWS and LocalStack alike: per group, a message's
//! handler starts only after every earlier message of the group succeeded; a
//! message is deleted only after its handler succeeded, together with the
//! group's other done messages in one batch, and one overtaken by a later
//! one's delete is kept held until its own delete is confirmed, so SQS
//! replays a group from its first undeleted message, in order (the README
//! names the one sequence of faults that could break this, reported as an
//! order risk); a failed message goes back to the
//! queue together with the rest of its group, never part of it; every held
//! message's visibility is extended before it expires, and a message whose
//! lease could not be kept is given up (its handler cancelled), never run or
//! deleted on a lapsed lease.
#![warn(missing_docs)]

mod backoff;
mod calls;
mod engine;
pub mod limits;
pub mod memory;
mod queue;
#[cfg(feature = "sqs")]
mod sqs;
mod stats;
mod steering;

use std::time::Duration;

pub use engine::{run, run_observed, run_steered};
pub use queue::{
    Attribute, AttributeValue, DeadLetterCopy, DeadLetterReason, Delivery, EntryFailure, Malformed,
    Queue, QueueError, QueueErrorKind, ReceiveRequest, Received,
};
#[cfg(feature = "sqs")]
pub use sqs::{OpenError, SqsQueue};
pub use stats::{Counters, Stats};
pub use steering::{GroupState, GroupStatus, Head, Inbox, SteerError, Steering, steering};

pub use limits::MAX_POLLERS;

/// How the engine runs. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Handlers running at once, each on a different group.
    pub workers: usize,
    /// Consecutive held messages of one group given to one handler call
    /// ([`fifo_handler::Handler::handle_batch`]) at most; 1 calls
    /// `handle` per message.
    pub batch: usize,
    /// Receives under way at once: a fixed number, or `None` to adapt
    /// between 1 and [`MAX_POLLERS`] — more while workers wait for groups
    /// and SQS answers deletes as fast as it did recently, fewer when it
    /// answers them much slower (it queues calls) or receives come back
    /// empty (down to one while nothing is held). Adapting, receives beyond
    /// the first two go only while workers would wait for a group.
    pub pollers: Option<usize>,
    /// Messages held at most (queued, running or backing off); pollers wait
    /// below this. At least `max_messages`.
    pub max_in_flight: usize,
    /// Messages per receive, within [`limits::MAX_MESSAGES`].
    pub max_messages: u32,
    /// Long poll in seconds, within [`limits::WAIT_TIME_SECONDS`].
    pub wait_time_seconds: u32,
    /// Visibility timeout set on receive and renewed by the heartbeat, in
    /// seconds within [`limits::VISIBILITY_TIMEOUT`].
    pub visibility_timeout: u32,
    /// In-process retries after a failure, before the message is released.
    pub retries: u32,
    /// Base of the exponential backoff: retry n of a message waits a random
    /// time up to `backoff_base · 2^n`, and a released message stays hidden
    /// `backoff_base · 2^receive_count` (whole seconds, at least 1).
    pub backoff_base: Duration,
    /// Cap on both backoffs: the wait before a retry and how long a released
    /// message stays hidden.
    pub backoff_max: Duration,
    /// A handler running longer has failed.
    pub handler_timeout: Option<Duration>,
    /// How long running handlers may finish after shutdown begins.
    pub shutdown_timeout: Duration,
    /// How long a cancelled handler may take to end (an exec handler's
    /// process group gets SIGTERM, then SIGKILL after this). The engine
    /// treats it as running meanwhile. See [`PoolConfig::kill_grace`].
    pub cancel_grace: Duration,
    /// Stop once the queue is empty and nothing is held.
    pub until_empty: bool,
    /// Stop after this many messages succeeded.
    pub limit: Option<u64>,
    /// What becomes of a message that failed on every attempt `retries`
    /// allows.
    pub exhausted: Exhausted,
    /// With [`Exhausted::Block`]: the longest wait between two runs of a
    /// blocked message.
    pub blocked_retry_max: Duration,
    /// Handler starts per second, for the whole run (a batch is one start);
    /// `None` for no limit.
    pub max_rate: Option<f64>,
    /// Handler starts per second for each group; `None` for no limit.
    pub group_rate: Option<f64>,
}

/// What becomes of a message that failed on every attempt allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Exhausted {
    /// Handed back with the rest of its group, and on its last allowed
    /// receive moved to the dead-letter queue; its group goes on.
    #[default]
    DeadLetter,
    /// Kept, with its group waiting behind it, and run again on a slow
    /// backoff (up to `blocked_retry_max`) until it succeeds or an operator
    /// skips it (see [`Steering`]); other groups go on.
    Block,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: 5,
            batch: 1,
            pollers: None,
            max_in_flight: 500,
            max_messages: 10,
            wait_time_seconds: 20,
            visibility_timeout: 30,
            retries: 3,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            handler_timeout: None,
            shutdown_timeout: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(2),
            until_empty: false,
            limit: None,
            exhausted: Exhausted::DeadLetter,
            blocked_retry_max: Duration::from_secs(300),
            max_rate: None,
            group_rate: None,
        }
    }
}

impl PoolConfig {
    /// Whether the engine can run on this configuration: the first value
    /// out of its range, if any. [`run`] checks it before touching the
    /// queue.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.workers == 0 {
            Err(ConfigError::NoWorkers)
        } else if self.batch == 0 {
            Err(ConfigError::NoBatch)
        } else if self.pollers == Some(0) {
            Err(ConfigError::NoPollers)
        } else if !limits::MAX_MESSAGES.contains(&self.max_messages) {
            Err(ConfigError::MaxMessages)
        } else if self.max_in_flight < self.max_messages as usize {
            Err(ConfigError::MaxInFlightBelowMaxMessages)
        } else if !limits::WAIT_TIME_SECONDS.contains(&self.wait_time_seconds) {
            Err(ConfigError::WaitTime)
        } else if !limits::VISIBILITY_TIMEOUT.contains(&self.visibility_timeout) {
            Err(ConfigError::VisibilityTimeout)
        } else if [self.max_rate, self.group_rate]
            .into_iter()
            .flatten()
            .any(|rate| !limits::RATE.contains(&rate))
        {
            Err(ConfigError::Rate)
        } else if self.blocked_retry_max.is_zero() {
            Err(ConfigError::BlockedRetryMax)
        } else if self.exhausted == Exhausted::Block
            && self.visibility_timeout > limits::MAX_BLOCKING_VISIBILITY_TIMEOUT
        {
            Err(ConfigError::BlockingVisibilityTimeout)
        } else {
            Ok(())
        }
    }

    /// The time a cancelled handler gets to end: `cancel_grace`, but at
    /// most a twelfth of the visibility timeout. A handler cancelled because
    /// its lease is about to lapse (a sixth of the timeout before) is then
    /// gone before SQS could hand its message to anyone else. Give an exec
    /// handler this as its kill grace.
    pub fn kill_grace(&self) -> Duration {
        self.cancel_grace
            .min(Duration::from_secs(u64::from(self.visibility_timeout)) / 12)
    }

    /// How often leases are checked: a twelfth of the visibility timeout,
    /// between 50 ms and 2 s.
    pub(crate) fn lease_tick(&self) -> Duration {
        (Duration::from_secs(u64::from(self.visibility_timeout)) / 12)
            .clamp(Duration::from_millis(50), Duration::from_secs(2))
    }
}

/// Why the engine stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A [`PoolConfig`] value is invalid; the queue was not touched.
    #[error("invalid pool configuration: {0}")]
    Config(ConfigError),
    /// The queue turned out unusable (gone, not FIFO, no access) or refused a
    /// receive; the run stopped after handing back what it could.
    #[error("the queue cannot be used")]
    Queue(#[source] QueueError),
    /// A call to the queue panicked or was cancelled (a bug in the queue
    /// implementation); the run stopped after handing back what it could.
    #[error("{0}")]
    Internal(String),
}

/// The value of a [`PoolConfig`] out of its range (see [`limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `workers` is 0.
    #[error("workers must be at least 1")]
    NoWorkers,
    /// `batch` is 0.
    #[error("batch must be at least 1")]
    NoBatch,
    /// `pollers` is `Some(0)`.
    #[error("pollers must be at least 1")]
    NoPollers,
    /// `max_messages` is outside [`limits::MAX_MESSAGES`].
    #[error(
        "max_messages must be {} to {}",
        limits::MAX_MESSAGES.start(),
        limits::MAX_MESSAGES.end()
    )]
    MaxMessages,
    /// `max_in_flight` is below `max_messages`.
    #[error("max_in_flight must be at least max_messages")]
    MaxInFlightBelowMaxMessages,
    /// `wait_time_seconds` is outside [`limits::WAIT_TIME_SECONDS`].
    #[error(
        "wait_time_seconds must be {} to {}",
        limits::WAIT_TIME_SECONDS.start(),
        limits::WAIT_TIME_SECONDS.end()
    )]
    WaitTime,
    /// `visibility_timeout` is outside [`limits::VISIBILITY_TIMEOUT`].
    #[error(
        "visibility_timeout must be {} to {} seconds",
        limits::VISIBILITY_TIMEOUT.start(),
        limits::VISIBILITY_TIMEOUT.end()
    )]
    VisibilityTimeout,
    /// `max_rate` or `group_rate` is outside [`limits::RATE`].
    #[error(
        "rates must be {} to {} handler starts per second",
        limits::RATE.start(),
        limits::RATE.end()
    )]
    Rate,
    /// `blocked_retry_max` is zero.
    #[error("blocked_retry_max must be more than zero")]
    BlockedRetryMax,
    /// [`Exhausted::Block`] with a visibility timeout so long that a
    /// blocked message could not be kept (see
    /// [`limits::MAX_BLOCKING_VISIBILITY_TIMEOUT`]).
    #[error(
        "blocking exhausted messages needs a visibility timeout of at most {} seconds: SQS keeps a message at most 12 hours from its receive, and a heartbeat asks for a visibility timeout more",
        limits::MAX_BLOCKING_VISIBILITY_TIMEOUT
    )]
    BlockingVisibilityTimeout,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configuration_is_valid() {
        assert_eq!(PoolConfig::default().check(), Ok(()));
    }

    #[test]
    fn each_value_out_of_range_is_named_as_before() {
        let with = |change: fn(&mut PoolConfig)| {
            let mut config = PoolConfig::default();
            change(&mut config);
            config.check().unwrap_err().to_string()
        };
        assert_eq!(with(|c| c.workers = 0), "workers must be at least 1");
        assert_eq!(with(|c| c.batch = 0), "batch must be at least 1");
        assert_eq!(with(|c| c.pollers = Some(0)), "pollers must be at least 1");
        assert_eq!(
            with(|c| c.max_messages = 11),
            "max_messages must be 1 to 10"
        );
        assert_eq!(
            with(|c| c.max_in_flight = 9),
            "max_in_flight must be at least max_messages"
        );
        assert_eq!(
            with(|c| c.wait_time_seconds = 21),
            "wait_time_seconds must be 0 to 20"
        );
        assert_eq!(
            with(|c| c.visibility_timeout = 0),
            "visibility_timeout must be 1 to 43200 seconds"
        );
        assert_eq!(
            with(|c| c.group_rate = Some(0.0)),
            "rates must be 0.001 to 1000000 handler starts per second"
        );
        assert_eq!(
            with(|c| c.max_rate = Some(f64::NAN)),
            "rates must be 0.001 to 1000000 handler starts per second"
        );
        assert_eq!(
            with(|c| c.blocked_retry_max = Duration::ZERO),
            "blocked_retry_max must be more than zero"
        );
        assert!(
            with(|c| {
                c.exhausted = Exhausted::Block;
                c.visibility_timeout = 39_601;
            })
            .starts_with(
                "blocking exhausted messages needs a visibility timeout of at most 39600 seconds"
            )
        );
        assert_eq!(
            Error::Config(ConfigError::NoWorkers).to_string(),
            "invalid pool configuration: workers must be at least 1"
        );
    }
}
