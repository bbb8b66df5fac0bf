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
    /// Each call under way, so that one that panics is resolved too.
    /// Changed only by `insert` and `remove`, which keep the counts with it.
    calls: HashMap<Id, Call>,
    /// SQS calls under way, by kind: asked on every turn of the loop, so
    /// counted as calls start and end rather than each time (counting
    /// `calls` on every turn cost the engine benchmark time).
    by_kind: [usize; CallKind::ALL],
    /// Emptiness checks under way (not SQS calls of a kind that fails).
    empty_checks: usize,
}

/// A call under way.
#[derive(Debug)]
pub(super) struct Call {
    /// What it is about.
    pub(super) pending: Pending,
    /// When it went out (or goes out, after its delay): one of SQS's
    /// unanswered for too long is trouble before the queue gives up on it
    /// (see `notice_unanswered_calls`).
    pub(super) sent: Instant,
}

impl InFlight {
    /// Receives under way.
    pub(super) fn receives(&self) -> usize {
        self.by_kind[CallKind::Receive as usize]
    }

    /// Delete calls under way.
    pub(super) fn deletes(&self) -> usize {
        self.by_kind[CallKind::Delete as usize]
    }

    /// Whether a move to the dead-letter queue is under way.
    pub(super) fn dead_lettering(&self) -> bool {
        self.by_kind[CallKind::DeadLetter as usize] > 0
    }

    /// Whether the queue is being asked if it is empty.
    pub(super) fn checking_empty(&self) -> bool {
        self.empty_checks > 0
    }

    /// Every call under way.
    pub(super) fn calls(&self) -> impl Iterator<Item = (&Id, &Call)> {
        self.calls.iter()
    }

    /// What the call `id` is about.
    pub(super) fn owner(&self, id: &Id) -> Option<&Pending> {
        self.calls.get(id).map(|call| &call.pending)
    }

    fn insert(&mut self, id: Id, call: Call) {
        *self.count_of(&call.pending) += 1;
        self.calls.insert(id, call);
    }

    /// The call `id` ended: what it was about, and when it went out.
    pub(super) fn remove(&mut self, id: &Id) -> Option<Call> {
        let call = self.calls.remove(id)?;
        *self.count_of(&call.pending) -= 1;
        Some(call)
    }

    fn count_of(&mut self, pending: &Pending) -> &mut usize {
        match pending.kind() {
            Some(kind) => &mut self.by_kind[kind as usize],
            None => &mut self.empty_checks,
        }
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
    /// The kind of SQS call it is; `None` for the emptiness check, which
    /// neither starts nor ends trouble.
    pub(super) fn kind(&self) -> Option<CallKind> {
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
        let id = self.in_flight.tasks.spawn(call).id();
        let sent = Instant::now() + starts_after;
        self.in_flight.insert(id, Call { pending, sent });
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
        let Some(call) = self.in_flight.remove(&err.id()) else {
            return;
        };
        match call.pending {
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
