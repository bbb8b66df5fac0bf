//! The run's figures: counters, gauges and histograms (prometheus-client) that
//! the engine updates and a status line, `/metrics` and the health checks read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Live figures of a run, shared with the caller: a status line reads
/// [`Counters::snapshot`], a metrics endpoint [`Counters::register`]s them
/// with a Prometheus registry, health checks ask [`Counters::is_alive`] and
/// [`Counters::is_ready`].
#[derive(Debug)]
pub struct Counters {
    received: Counter,
    succeeded: Counter,
    failed: Counter,
    retried: Counter,
    released: Counter,
    deleted: Counter,
    dead_lettered: Counter,
    rejected: Counter,
    lost: Counter,
    order_risks: Counter,
    malformed: Counter,
    start_failures: Counter,
    extended: Counter,
    extension_failures: Counter,
    in_flight: Gauge,
    busy_groups: Gauge,
    backlogged_groups: Gauge,
    running: Gauge,
    oldest_held_age: Gauge<f64, AtomicU64>,
    blocked_groups: Gauge,
    oldest_blocked_age: Gauge<f64, AtomicU64>,
    process_duration: Histogram,
    operation_duration: Family<Operation, Histogram, fn() -> Histogram>,
    /// When the engine loop last turned, in ms since `created`.
    loop_turned_ms: AtomicU64,
    receiving: AtomicBool,
    created: Instant,
}

/// The labels of an SQS call's duration, after OpenTelemetry's messaging
/// conventions: the operation and, when it failed, the kind of error.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    messaging_system: &'static str,
    messaging_operation_name: &'static str,
    error_type: &'static str,
}

/// From 5 ms to about 80 s: an SQS call, a long poll, a handler.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            received: Counter::default(),
            succeeded: Counter::default(),
            failed: Counter::default(),
            retried: Counter::default(),
            released: Counter::default(),
            deleted: Counter::default(),
            dead_lettered: Counter::default(),
            rejected: Counter::default(),
            lost: Counter::default(),
            order_risks: Counter::default(),
            malformed: Counter::default(),
            start_failures: Counter::default(),
            extended: Counter::default(),
            extension_failures: Counter::default(),
            in_flight: Gauge::default(),
            busy_groups: Gauge::default(),
            backlogged_groups: Gauge::default(),
            running: Gauge::default(),
            oldest_held_age: Gauge::default(),
            blocked_groups: Gauge::default(),
            oldest_blocked_age: Gauge::default(),
            process_duration: duration_histogram(),
            operation_duration: Family::new_with_constructor(duration_histogram),
            loop_turned_ms: AtomicU64::new(0),
            receiving: AtomicBool::new(false),
            created: Instant::now(),
        }
    }
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
    /// Messages SQS may hand out again after a later message of their group
    /// was deleted: their own delete failed in a batch whose later entries
    /// of the group succeeded, and it was never confirmed (the README's
    /// "order risk"). Each is logged as an error.
    pub order_risks: u64,
    /// Received messages lacking what fifo relies on (left to come back).
    pub malformed: u64,
    /// Handler calls that could not start ([`fifo_handler::CannotStart`]):
    /// fifo's own trouble, counted against no message.
    pub start_failures: u64,
    /// Messages held now: queued, running or backing off.
    pub in_flight: u64,
    /// Groups with a message running now, or waiting to run again.
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
            order_risks: self.order_risks - before.order_risks,
            malformed: self.malformed - before.malformed,
            start_failures: self.start_failures - before.start_failures,
            ..*self
        }
    }
}

impl Counters {
    /// The counters as they are now, each read on its own (a snapshot taken
    /// mid-run is not atomic across counters).
    pub fn snapshot(&self) -> Stats {
        Stats {
            received: self.received.get(),
            succeeded: self.succeeded.get(),
            failed: self.failed.get(),
            retried: self.retried.get(),
            released: self.released.get(),
            deleted: self.deleted.get(),
            dead_lettered: self.dead_lettered.get(),
            rejected: self.rejected.get(),
            lost: self.lost.get(),
            order_risks: self.order_risks.get(),
            malformed: self.malformed.get(),
            start_failures: self.start_failures.get(),
            in_flight: self.in_flight.get().max(0) as u64,
            busy_groups: self.busy_groups.get().max(0) as u64,
        }
    }

    /// Adds every figure to `registry`, under OpenTelemetry's messaging
    /// names where they exist and `fifo_*` otherwise (see the README's
    /// metrics table). No group id is a label.
    pub fn register(&self, registry: &mut Registry) {
        let counters: [(&str, &str, &Counter); 14] = [
            (
                "messaging_client_consumed_messages",
                "Messages received from the queue (redeliveries count again)",
                &self.received,
            ),
            (
                "fifo_messages_succeeded",
                "Handler runs that succeeded",
                &self.succeeded,
            ),
            (
                "fifo_messages_failed",
                "Messages whose retries ran out (handed back, or dead-lettered on their last receive)",
                &self.failed,
            ),
            (
                "fifo_messages_retried",
                "In-process retries, those a handler asked for included",
                &self.retried,
            ),
            (
                "fifo_messages_released",
                "Messages handed back to the queue",
                &self.released,
            ),
            (
                "fifo_messages_deleted",
                "Deletes SQS confirmed",
                &self.deleted,
            ),
            (
                "fifo_messages_dead_lettered",
                "Messages moved to the dead-letter queue",
                &self.dead_lettered,
            ),
            (
                "fifo_messages_rejected",
                "Messages their handler rejected",
                &self.rejected,
            ),
            (
                "fifo_messages_lost",
                "Messages given up because their lease could not be kept",
                &self.lost,
            ),
            (
                "fifo_order_risks",
                "Messages SQS may hand out again after a later message of their group was deleted (see the README's order risk)",
                &self.order_risks,
            ),
            (
                "fifo_messages_malformed",
                "Received messages lacking what fifo relies on",
                &self.malformed,
            ),
            (
                "fifo_handler_start_failures",
                "Handler calls that could not start (no descriptor, memory or process left): fifo's trouble, not a message's",
                &self.start_failures,
            ),
            (
                "fifo_heartbeat_extensions",
                "Visibility extensions of held messages SQS confirmed",
                &self.extended,
            ),
            (
                "fifo_heartbeat_failures",
                "Visibility extensions of held messages that failed",
                &self.extension_failures,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        let gauges: [(&str, &str, &Gauge); 5] = [
            (
                "fifo_messages_in_flight",
                "Messages held now: queued, running or backing off",
                &self.in_flight,
            ),
            (
                "fifo_handlers_running",
                "Handler calls running now",
                &self.running,
            ),
            (
                "fifo_groups_busy",
                "Groups with a message running now, or waiting to run again (backoff, retry later)",
                &self.busy_groups,
            ),
            (
                "fifo_groups_backlogged",
                "Groups with messages held and ready but not running: the figure to scale replicas on",
                &self.backlogged_groups,
            ),
            (
                "fifo_groups_blocked",
                "Groups blocked behind a message that failed on every attempt (--exhausted block)",
                &self.blocked_groups,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        registry.register_with_unit(
            "fifo_oldest_held_message_age",
            "Time since the oldest message held was sent (0 when none is)",
            Unit::Seconds,
            self.oldest_held_age.clone(),
        );
        registry.register_with_unit(
            "fifo_oldest_blocked_group_age",
            "Time since the group blocked longest became blocked (0 when none is)",
            Unit::Seconds,
            self.oldest_blocked_age.clone(),
        );
        registry.register_with_unit(
            "messaging_process_duration",
            "Handler calls, from start to outcome",
            Unit::Seconds,
            self.process_duration.clone(),
        );
        registry.register_with_unit(
            "messaging_client_operation_duration",
            "SQS calls (a receive includes its long poll), by operation and error type",
            Unit::Seconds,
            self.operation_duration.clone(),
        );
    }

    /// Whether the engine loop turned within the last `within`, or has not
    /// started yet (the process is up, waiting to begin).
    pub fn is_alive(&self, within: Duration) -> bool {
        let turned = self.loop_turned_ms.load(Relaxed);
        turned == 0 || self.ms_since_created().saturating_sub(turned) <= within.as_millis() as u64
    }

    /// Whether the engine is receiving: running, not stopping, and SQS
    /// answering.
    pub fn is_ready(&self) -> bool {
        self.receiving.load(Relaxed)
    }

    fn ms_since_created(&self) -> u64 {
        // At least 1, so that 0 means "never turned".
        (self.created.elapsed().as_millis() as u64).max(1)
    }

    pub(crate) fn loop_turned(&self, receiving: bool) {
        self.loop_turned_ms.store(self.ms_since_created(), Relaxed);
        self.receiving.store(receiving, Relaxed);
    }
    pub(crate) fn add_received(&self, n: u64) {
        self.received.inc_by(n);
    }
    pub(crate) fn add_succeeded(&self) {
        self.succeeded.inc();
    }
    pub(crate) fn add_failed(&self) {
        self.failed.inc();
    }
    pub(crate) fn add_retried(&self) {
        self.retried.inc();
    }
    pub(crate) fn add_released(&self, n: u64) {
        self.released.inc_by(n);
    }
    pub(crate) fn add_deleted(&self, n: u64) {
        self.deleted.inc_by(n);
    }
    pub(crate) fn add_lost(&self, n: u64) {
        self.lost.inc_by(n);
    }
    pub(crate) fn add_order_risk(&self) {
        self.order_risks.inc();
    }
    pub(crate) fn add_start_failure(&self) {
        self.start_failures.inc();
    }
    pub(crate) fn add_malformed(&self) {
        self.malformed.inc();
    }
    pub(crate) fn add_dead_lettered(&self) {
        self.dead_lettered.inc();
    }
    pub(crate) fn add_rejected(&self) {
        self.rejected.inc();
    }
    pub(crate) fn add_extended(&self, confirmed: u64, failed: u64) {
        self.extended.inc_by(confirmed);
        self.extension_failures.inc_by(failed);
    }
    pub(crate) fn observe_handler(&self, took: Duration) {
        self.process_duration.observe(took.as_secs_f64());
    }
    pub(crate) fn observe_call(
        &self,
        operation: &'static str,
        took: Duration,
        error: Option<&'static str>,
    ) {
        self.operation_duration
            .get_or_create(&Operation {
                messaging_system: "aws_sqs",
                messaging_operation_name: operation,
                error_type: error.unwrap_or(""),
            })
            .observe(took.as_secs_f64());
    }
    pub(crate) fn set_gauges(
        &self,
        in_flight: usize,
        busy_groups: usize,
        backlogged_groups: usize,
        running: usize,
    ) {
        self.in_flight.set(in_flight as i64);
        self.busy_groups.set(busy_groups as i64);
        self.backlogged_groups.set(backlogged_groups as i64);
        self.running.set(running as i64);
    }
    pub(crate) fn set_oldest_held_age(&self, age: Duration) {
        self.oldest_held_age.set(age.as_secs_f64());
    }

    pub(crate) fn set_blocked(&self, groups: usize, oldest: Duration) {
        self.blocked_groups.set(groups as i64);
        self.oldest_blocked_age.set(oldest.as_secs_f64());
    }

    /// Groups blocked now (`--exhausted block`), as of the last lease tick.
    pub fn blocked_groups(&self) -> u64 {
        self.blocked_groups.get().try_into().unwrap_or(0)
    }
}
