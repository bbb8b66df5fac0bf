use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters of a run, shared with the caller (status lines, metrics).
#[derive(Debug, Default)]
pub struct Counters {
    received: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    released: AtomicU64,
    deleted: AtomicU64,
    dead_lettered: AtomicU64,
    rejected: AtomicU64,
    lost: AtomicU64,
    malformed: AtomicU64,
    in_flight: AtomicU64,
    busy_groups: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages received (redeliveries count again).
    pub received: u64,
    /// Handler runs that succeeded.
    pub succeeded: u64,
    /// Messages whose retries ran out: released to come back later, or
    /// moved to the dead-letter queue on their last allowed receive.
    pub failed: u64,
    /// In-process retries, those a handler asked for with
    /// [`fifo_handler::RetryLater`] included.
    pub retried: u64,
    /// Messages handed back to the queue, confirmed by SQS: a failed
    /// message with the rest of its group, or what was not running at
    /// shutdown.
    pub released: u64,
    /// Deletes SQS confirmed.
    pub deleted: u64,
    /// Messages moved to the dead-letter queue, confirmed by SQS: rejected
    /// by their handler, or failed on the queue's max receive count.
    pub dead_lettered: u64,
    /// Messages their handler rejected ([`fifo_handler::Reject`]) on a
    /// queue with a dead-letter queue: not retried, moved there.
    pub rejected: u64,
    /// Messages given up: their lease ran out before SQS confirmed an
    /// extension, or SQS no longer accepted their receipt handle. They come
    /// back when their visibility timeout ends.
    pub lost: u64,
    /// Received messages lacking what fifo relies on (left to come back).
    pub malformed: u64,
    /// Messages held now: queued, running or backing off.
    pub in_flight: u64,
    /// Groups with a message running now.
    pub busy_groups: u64,
}

impl Stats {
    /// What happened since `before` (taken from the same counters); the
    /// gauges as they are now.
    pub(crate) fn since(&self, before: &Stats) -> Stats {
        Stats {
            received: self.received - before.received,
            succeeded: self.succeeded - before.succeeded,
            failed: self.failed - before.failed,
            retried: self.retried - before.retried,
            released: self.released - before.released,
            deleted: self.deleted - before.deleted,
            dead_lettered: self.dead_lettered - before.dead_lettered,
            rejected: self.rejected - before.rejected,
            lost: self.lost - before.lost,
            malformed: self.malformed - before.malformed,
            ..*self
        }
    }
}

impl Counters {
    /// The counters as they are now, each read on its own (a snapshot taken
    /// mid-run is not atomic across counters).
    pub fn snapshot(&self) -> Stats {
        Stats {
            received: self.received.load(Relaxed),
            succeeded: self.succeeded.load(Relaxed),
            failed: self.failed.load(Relaxed),
            retried: self.retried.load(Relaxed),
            released: self.released.load(Relaxed),
            deleted: self.deleted.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            lost: self.lost.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            busy_groups: self.busy_groups.load(Relaxed),
        }
    }

    pub(crate) fn add_received(&self, n: u64) {
        self.received.fetch_add(n, Relaxed);
    }
    pub(crate) fn add_succeeded(&self) {
        self.succeeded.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_failed(&self) {
        self.failed.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_retried(&self) {
        self.retried.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_released(&self, n: u64) {
        self.released.fetch_add(n, Relaxed);
    }
    pub(crate) fn add_deleted(&self, n: u64) {
        self.deleted.fetch_add(n, Relaxed);
    }
    pub(crate) fn add_lost(&self, n: u64) {
        self.lost.fetch_add(n, Relaxed);
    }
    pub(crate) fn add_malformed(&self) {
        self.malformed.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }
    pub(crate) fn set_gauges(&self, in_flight: usize, busy_groups: usize) {
        self.in_flight.store(in_flight as u64, Relaxed);
        self.busy_groups.store(busy_groups as u64, Relaxed);
    }
}
