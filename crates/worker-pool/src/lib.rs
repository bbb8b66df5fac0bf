//! The tokio engine of `fifo run`: pollers receive from the queue, the group
//! router decides which held message may run, workers run the handler, and
//! the acker deletes what succeeded. Data flows one way:
//! pollers → router → workers → acker.
//!
//! Layout: `queue` is the small interface to a queue (SQS, or the in-memory
//! queue of `memory` for tests and benchmarks); `engine` owns the router and
//! every decision; `backoff` computes retry delays; `stats` the counters.
//!
//! Guarantees: per group, a message's handler starts only after every
//! earlier message of the group succeeded; a message is deleted only after
//! its handler succeeded; failures are retried with backoff, then released
//! with the rest of their group so SQS redelivers the group in order; every
//! held message has its visibility extended before it expires.

mod backoff;
mod engine;
pub mod memory;
mod queue;
mod stats;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

pub use engine::run;
pub use queue::{Queue, SqsQueue};
pub use stats::{Counters, Stats};

/// How the engine runs. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Handlers running at once, each on a different group.
    pub workers: usize,
    /// Concurrent long polls.
    pub pollers: usize,
    /// Messages held at most (queued, running or backing off); pollers wait
    /// below this. At least `max_messages`.
    pub max_in_flight: usize,
    /// Messages per receive, 1..=10.
    pub max_messages: u32,
    /// Long poll, 0..=20 seconds.
    pub wait_time_seconds: u32,
    /// Visibility timeout set on receive and renewed by the heartbeat.
    pub visibility_timeout: u32,
    /// In-process retries after a failure, before the message is released.
    pub retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// A handler running longer has failed.
    pub handler_timeout: Option<Duration>,
    /// How long running handlers may finish after shutdown begins.
    pub shutdown_timeout: Duration,
    /// Stop once the queue is empty and nothing is held.
    pub until_empty: bool,
    /// Stop after this many messages succeeded.
    pub limit: Option<u64>,
    /// The queue's redrive `maxReceiveCount`. A message that fails on its
    /// last allowed receive is moved to the dead-letter queue by the engine
    /// and its group goes on in process. (Left to SQS, the redrive would
    /// take the rest of the group too: they were received and released with
    /// the failing message each time, so their receive counts ran out with it.)
    pub max_receive_count: Option<u32>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: 5,
            pollers: 2,
            max_in_flight: 500,
            max_messages: 10,
            wait_time_seconds: 20,
            visibility_timeout: 30,
            retries: 3,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            handler_timeout: None,
            shutdown_timeout: Duration::from_secs(30),
            until_empty: false,
            limit: None,
            max_receive_count: None,
        }
    }
}

/// Why the engine stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid pool configuration: {0}")]
    Config(String),
    #[error("receiving from the queue failed")]
    Queue(#[from] fifo_sqs_client::Error),
}
