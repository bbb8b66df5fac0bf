//! The calls to the queue under way: what each is about and when it went
//! out, starting them, and resolving one that panicked. How many receives
//! or deletes are under way is counted here, as calls start and end, and
//! nowhere else.

use std::collections::HashMap;

use fifo_handler::Handler;
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::{Duration, Instant};

use super::Engine;
use crate::calls::{Event, Key};
use crate::{Error, Queue};

/// The calls under way.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    /// The calls' tasks; each returns its [`Event`].
    pub(super) tasks: JoinSet<Event>,
    /// What each call is about, so that one that panics is resolved too.
    /// Changed only by `insert` and `remove`, which keep `counts` with it.
    owners: HashMap<Id, Pending>,
    /// When each call to SQS went out (or goes out, after its delay), and
    /// its kind: one unanswered for too long is trouble before the queue
    /// gives up on it (see `notice_unanswered_calls`).
    pub(super) started: HashMap<Id, (Instant, CallKind)>,
    /// How many of `owners` are of each counted kind: asked on every turn
    /// of the loop, so counted as calls start and end rather than each time
    /// (counting `owners` on every turn cost the engine benchmark time).
    counts: Counts,
}

/// Calls under way by kind (see [`Pending::count_in`]).
#[derive(Debug, Default)]
struct Counts {
    /// Receives.
    receives: usize,
    /// Delete calls.
    deletes: usize,
    /// Moves to the dead-letter queue.
    dead_letters: usize,
    /// Emptiness checks.
    empty_checks: usize,
}

impl InFlight {
    /// Receives under way.
    pub(super) fn receives(&self) -> usize {
        self.counts.receives
    }

    /// Delete calls under way.
    pub(super) fn deletes(&self) -> usize {
        self.counts.deletes
    }

    /// Whether a move to the dead-letter queue is under way.
    pub(super) fn dead_lettering(&self) -> bool {
        self.counts.dead_letters > 0
    }

    /// Whether the queue is being asked if it is empty.
    pub(super) fn checking_empty(&self) -> bool {
        self.counts.empty_checks > 0
    }

    /// What the call `id` is about.
    pub(super) fn owner(&self, id: &Id) -> Option<&Pending> {
        self.owners.get(id)
    }

    fn insert(&mut self, id: Id, pending: Pending) {
        if let Some(count) = pending.count_in(&mut self.counts) {
            *count += 1;
        }
        self.owners.insert(id, pending);
    }

    /// The call `id` ended: what it was about, and when it went out.
    pub(super) fn remove(&mut self, id: &Id) -> (Option<Pending>, Option<(Instant, CallKind)>) {
        let pending = self.owners.remove(id);
        if let Some(count) = pending.as_ref().and_then(|p| p.count_in(&mut self.counts)) {
            *count -= 1;
        }
        (pending, self.started.remove(id))
    }
}

/// What a call under way is about.
#[derive(Debug)]
pub(super) enum Pending {
    /// A receive, in this slot.
    Receive(usize),
    /// A delete of these messages.
    Delete(Vec<Key>),
    /// A move of this message to the dead-letter queue.
    DeadLetter(Key),
    /// A visibility change of these messages: heartbeats or a hand-back.
    Visibility(Vec<Key>),
    /// Whether the queue is empty (`until_empty`).
    IsEmpty,
}

impl Pending {
    /// Its kind's count, when its kind is counted.
    fn count_in<'a>(&self, counts: &'a mut Counts) -> Option<&'a mut usize> {
        match self {
            Pending::Receive(_) => Some(&mut counts.receives),
            Pending::Delete(_) => Some(&mut counts.deletes),
            Pending::DeadLetter(_) => Some(&mut counts.dead_letters),
            Pending::IsEmpty => Some(&mut counts.empty_checks),
            Pending::Visibility(_) => None,
        }
    }

    /// The kind of SQS call it is; `None` for the emptiness check, which
    /// neither starts nor ends trouble.
    fn kind(&self) -> Option<CallKind> {
        match self {
            Pending::Receive(_) => Some(CallKind::Receive),
            Pending::Delete(_) => Some(CallKind::Delete),
            Pending::DeadLetter(_) => Some(CallKind::DeadLetter),
            Pending::Visibility(_) => Some(CallKind::Visibility),
            Pending::IsEmpty => None,
        }
    }
}

/// The kinds of calls, for reporting trouble and backing off each on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallKind {
    /// `ReceiveMessage`.
    Receive,
    /// `DeleteMessageBatch`.
    Delete,
    /// `ChangeMessageVisibilityBatch`: heartbeats, pins and hand-backs.
    Visibility,
    /// A copy to the dead-letter queue and the original's delete.
    DeadLetter,
}

impl CallKind {
    pub(super) const ALL: usize = 4;
    pub(super) const EVERY: [CallKind; CallKind::ALL] = [
        CallKind::Receive,
        CallKind::Delete,
        CallKind::Visibility,
        CallKind::DeadLetter,
    ];

    /// The SQS operation, as the metrics name it.
    pub(super) fn operation_name(self) -> &'static str {
        match self {
            CallKind::Receive => "ReceiveMessage",
            CallKind::Delete => "DeleteMessageBatch",
            CallKind::Visibility => "ChangeMessageVisibilityBatch",
            CallKind::DeadLetter => "MoveToDeadLetterQueue",
        }
    }

    pub(super) fn doing(self) -> &'static str {
        match self {
            CallKind::Receive => "receiving",
            CallKind::Delete => "deleting",
            CallKind::Visibility => "changing visibility",
            CallKind::DeadLetter => "moving to the dead-letter queue",
        }
    }
}

impl<Q: Queue, H: Handler> Engine<Q, H> {
    /// Starts a call to the queue.
    pub(super) fn spawn_call(
        &mut self,
        pending: Pending,
        call: impl std::future::Future<Output = Event> + Send + 'static,
    ) {
        self.spawn_call_after(pending, call, Duration::ZERO);
    }

    /// Starts a call that first waits `starts_after`: it counts as under
    /// way (see `notice_unanswered_calls`) only after that.
    pub(super) fn spawn_call_after(
        &mut self,
        pending: Pending,
        call: impl std::future::Future<Output = Event> + Send + 'static,
        starts_after: Duration,
    ) {
        let kind = pending.kind();
        let id = self.in_flight.tasks.spawn(call).id();
        self.in_flight.insert(id, pending);
        if let Some(kind) = kind {
            self.in_flight
                .started
                .insert(id, (Instant::now() + starts_after, kind));
        }
    }

    /// A call panicked (a bug in the queue implementation): its outcome is
    /// unknown, so what it was about is resolved as if it had failed for
    /// good, and the run ends with an error.
    pub(super) fn on_call_failure(&mut self, err: &JoinError) {
        let message = if err.is_panic() {
            "a call to the queue panicked"
        } else {
            "a call to the queue was cancelled"
        };
        tracing::error!("stopping: {message}");
        if self.fatal.is_none() {
            self.fatal = Some(Error::Internal(message.to_owned()));
        }
        self.shutdown.cancel();
        let (Some(pending), _) = self.in_flight.remove(&err.id()) else {
            return;
        };
        match pending {
            Pending::Receive(slot) => {
                self.receiving.slots[slot].busy = false;
            }
            Pending::IsEmpty => {}
            Pending::Delete(keys) => {
                self.delete_call_ended(&keys);
                for key in keys {
                    self.lose(key, message);
                }
            }
            Pending::Visibility(keys) => {
                for key in keys {
                    if let Some(tracked) = self.tracked.get_mut(&key) {
                        tracked.visibility_call = false;
                    }
                    self.lose(key, message);
                }
            }
            Pending::DeadLetter(key) => self.lose(key, message),
        }
    }
}
