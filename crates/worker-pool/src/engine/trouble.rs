//! SQS trouble: said once when calls start failing (or going unanswered)
//! and once when SQS answers again; each kind of call backs off on its own
//! meanwhile, and an unusable queue ends the run.

use fifo_handler::Handler;
use tokio::time::{Duration, Instant};

use super::in_flight::{CallKind, Pending};
use super::{Engine, Phase};
use crate::queue::{QueueError, QueueErrorKind};
use crate::{Queue, backoff};

/// How long a call (beyond its long poll) may go unanswered before it is
/// reported: one attempt's deadline in the SQS client.
pub(super) const UNANSWERED: Duration = Duration::from_secs(5);

/// SQS trouble: reported once when it starts (a call of any kind fails or
/// goes unanswered) and once when it ends: when every kind of call that
/// failed has been answered since (an empty receive too).
#[derive(Debug, Default)]
pub(super) struct Trouble {
    /// Since when SQS is in trouble; `None` while it answers.
    pub(super) since: Option<Instant>,
    /// When it last ended: calls sent before, which went into the silence
    /// or the outage that ended, do not start it again when they fail.
    ended: Option<Instant>,
    /// Calls failed in this trouble, for the line that ends it.
    failed_calls: u32,
    /// Failures in a row, per kind of call.
    failing: [u32; CallKind::ALL],
    /// When the call whose event is being handled was sent.
    pub(super) event_sent: Option<Instant>,
}

impl Trouble {
    /// Whether a call sent at `sent` belongs to the trouble that ended.
    pub(super) fn before_the_end(&self, sent: Option<Instant>) -> bool {
        matches!((sent, self.ended), (Some(sent), Some(ended)) if sent < ended)
    }
}

impl<Q: Queue, H: Handler> Engine<Q, H> {
    /// A batch call failed as a whole: the queue is unusable, or SQS is in
    /// trouble and the callers retry after a backoff.
    pub(super) fn batch_failed(&mut self, kind: CallKind, err: QueueError) {
        if is_fatal(&err) {
            return self.fail_run(err);
        }
        self.call_failed(kind, &err);
    }

    pub(super) fn call_failed(&mut self, kind: CallKind, err: &QueueError) {
        let failing = &mut self.trouble.failing[kind as usize];
        *failing = failing.saturating_add(1);
        if self.trouble.before_the_end(self.trouble.event_sent) {
            return;
        }
        if self.trouble.since.is_none() {
            tracing::warn!(
                "SQS calls are failing ({}: {err}); retrying with backoff, held messages stay held while their leases last",
                kind.doing()
            );
            self.trouble.since = Some(Instant::now());
        }
        self.trouble.failed_calls = self.trouble.failed_calls.saturating_add(1);
    }

    /// A call without an answer for longer than one attempt may take (a
    /// silent endpoint) is trouble now, though the queue may try it twice
    /// more before it fails: said once, as a failure would be. A receive in
    /// that state is cut and sent again (with the same attempt id, so that
    /// SQS returns what it may have taken meanwhile): while SQS is in
    /// trouble receives poll briefly, so the first one SQS answers ends the
    /// trouble promptly even on an idle queue.
    pub(super) fn notice_unanswered_calls(&mut self) {
        let now = Instant::now();
        let overdue: Vec<(tokio::task::Id, Instant, CallKind)> = self
            .in_flight
            .calls()
            .filter_map(|(id, call)| {
                let kind = call.pending.kind()?;
                let limit = match call.pending {
                    Pending::Receive(slot) => self.receiving.slots[slot].wait + UNANSWERED,
                    _ => UNANSWERED,
                };
                let overdue = now.saturating_duration_since(call.sent) > limit
                    && !self.trouble.before_the_end(Some(call.sent));
                overdue.then_some((*id, call.sent, kind))
            })
            .collect();
        for (id, started, kind) in overdue {
            if self.trouble.since.is_none() {
                tracing::warn!(
                    "SQS calls are failing ({}: no answer for {:.0} s); waiting, then retrying with backoff, held messages stay held while their leases last",
                    kind.doing(),
                    now.saturating_duration_since(started).as_secs_f64()
                );
                self.trouble.since = Some(started);
            }
            let failing = &mut self.trouble.failing[kind as usize];
            *failing = (*failing).max(1);
            if let Some(Pending::Receive(slot)) = self.in_flight.owner(&id) {
                self.receiving.slots[*slot].cut.cancel();
            }
        }
    }

    /// A call of `kind` was answered. The trouble ends once every kind of
    /// call that failed has been answered since (an empty receive counts),
    /// and no call is still without an answer.
    pub(super) fn call_succeeded(&mut self, kind: CallKind) {
        self.trouble.failing[kind as usize] = 0;
        // A kind of call with nothing left to try again (its messages were
        // given up meanwhile) is not failing any more either.
        for other in CallKind::EVERY {
            if !self.has_work(other) {
                self.trouble.failing[other as usize] = 0;
            }
        }
        // Not over while another call is still without an answer.
        if self.trouble.since.is_some() {
            self.notice_unanswered_calls();
        }
        if self.trouble.failing.iter().any(|n| *n > 0) {
            return;
        }
        if let Some(since) = self.trouble.since.take() {
            let failed = match self.trouble.failed_calls {
                0 => String::new(),
                n => format!(" ({n} calls failed)"),
            };
            tracing::warn!(
                "SQS answers again after {:.1} s{failed}; carrying on",
                since.elapsed().as_secs_f64(),
            );
            self.trouble.failed_calls = 0;
            self.trouble.ended = Some(Instant::now());
        }
    }

    /// Whether calls of `kind` are still to be made (or under way).
    fn has_work(&self, kind: CallKind) -> bool {
        match kind {
            CallKind::Receive => self.phase == Phase::Running,
            CallKind::Delete => self.settling.deletes_waiting() || self.in_flight.deletes() > 0,
            CallKind::Visibility => !self.tracked.is_empty(),
            CallKind::DeadLetter => self.in_flight.dead_lettering(),
        }
    }

    /// How long to wait before trying a kind of call again: longer the
    /// more of them failed in a row.
    pub(super) fn retry_delay(&self, kind: CallKind) -> Duration {
        backoff::jittered(
            self.trouble.failing[kind as usize].max(1),
            Duration::from_millis(100),
            Duration::from_secs(5),
        )
    }
}

/// Errors that make the queue unusable for this run.
pub(super) fn is_fatal(err: &QueueError) -> bool {
    err.kind() == QueueErrorKind::Unusable
}

/// A failed call's `error_type` label.
pub(super) fn error_type(kind: QueueErrorKind) -> &'static str {
    match kind {
        QueueErrorKind::Unreachable => "unreachable",
        QueueErrorKind::Busy => "busy",
        QueueErrorKind::Refused => "refused",
        QueueErrorKind::Unusable => "unusable",
        _ => "other",
    }
}
