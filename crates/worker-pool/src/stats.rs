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
    delete_failed: AtomicU64,
    dead_lettered: AtomicU64,
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
    /// Messages whose retries ran out; released to come back later.
    pub failed: u64,
    /// In-process retries.
    pub retried: u64,
    /// Messages handed back to the queue unprocessed (after a failure of an
    /// earlier message of their group, or at shutdown), failed ones included.
    pub released: u64,
    pub deleted: u64,
    /// Deletes that failed after retries: those messages will come back.
    pub delete_failed: u64,
    /// Failed messages that had reached the queue's max receive count, so
    /// SQS moves them to the dead-letter queue.
    pub dead_lettered: u64,
    /// Messages held now: queued, running or backing off.
    pub in_flight: u64,
    /// Groups with a message running now.
    pub busy_groups: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Stats {
        Stats {
            received: self.received.load(Relaxed),
            succeeded: self.succeeded.load(Relaxed),
            failed: self.failed.load(Relaxed),
            retried: self.retried.load(Relaxed),
            released: self.released.load(Relaxed),
            deleted: self.deleted.load(Relaxed),
            delete_failed: self.delete_failed.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
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
    pub(crate) fn add_delete_failed(&self, n: u64) {
        self.delete_failed.fetch_add(n, Relaxed);
    }
    pub(crate) fn add_dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Relaxed);
    }
    pub(crate) fn set_gauges(&self, in_flight: usize, busy_groups: usize) {
        self.in_flight.store(in_flight as u64, Relaxed);
        self.busy_groups.store(busy_groups as u64, Relaxed);
    }
}
