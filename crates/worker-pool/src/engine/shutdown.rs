//! Stopping: draining on shutdown, abandoning handlers past the deadline,
//! and ending the run when the queue or a call fails for good.

use super::*;

impl<Q: Queue, H: Handler> Engine<Q, H> {
    /// Stops taking work. Every held message not running is handed back with
    /// its lane, a lane with a running handler once that handler ended.
    ///
    /// Receives under way are cut short once nothing is held any more (see
    /// `cut_receives_when_idle`).
    pub(super) fn begin_drain(&mut self) {
        self.phase = Phase::Draining;
        let deadline = Instant::now() + self.config.shutdown_timeout;
        self.add_timer(deadline, Timer::DrainDeadline);
        self.router.stop();
        // Said now, or the wait looks like a hang.
        if self.receiving > 0 && self.poll_seconds() > 1 && !self.tracked.is_empty() {
            tracing::warn!(
                "held messages go back once the receives under way have ended, within {} s (a long poll still open could take them again)",
                self.poll_seconds()
            );
        }
        // Retries waiting for their backoff are not running: they go back.
        let mut waiting: Vec<Key> = self
            .tracked
            .iter()
            .filter(|(_, t)| matches!(t.state, State::BackingOff))
            .map(|(key, _)| *key)
            .collect();
        waiting.sort_unstable();
        self.retry_ready.clear();
        for key in waiting {
            let tracked = self.tracked.get_mut(&key).expect("listed");
            tracked.state = State::InLane;
            let group = tracked.message.group_id.clone();
            self.router.failed(&group, key);
        }
    }

    /// While draining, once nothing is held (nothing is left to hand back),
    /// a receive still under way is cut short. Not before: cutting a
    /// receive only drops our end of the connection, and the server-side
    /// long poll would then swallow what is handed back later (hiding it for
    /// a visibility timeout). Hand-backs wait for the receives instead (see
    /// `send_releases`). Short polls (a second at most, as with
    /// `until_empty`) are not cut at all: waiting for them costs at most a
    /// second, and a cut one would swallow what is sent during it, for a
    /// visibility timeout.
    pub(super) fn cut_receives_when_idle(&mut self) {
        if self.phase != Phase::Running
            && self.tracked.is_empty()
            && self.running.is_empty()
            && self.poll_seconds() > 1
        {
            self.abort_receives.cancel();
        }
    }

    pub(super) fn abandon(&mut self) {
        if self.phase != Phase::Draining {
            return;
        }
        self.phase = Phase::Abandoned;
        // One message per handler call still running: cancelling it
        // cancels its whole batch.
        let mut calls: Vec<Key> = self
            .running
            .values()
            .filter_map(|keys| keys.first().copied())
            .filter(|key| {
                matches!(
                    self.tracked.get(key).map(|t| &t.state),
                    Some(State::Running(_))
                )
            })
            .collect();
        if calls.is_empty() {
            return;
        }
        calls.sort_unstable();
        tracing::warn!(
            "{} handlers still running after the shutdown timeout: cancelling them and handing their groups back",
            calls.len()
        );
        for key in calls {
            self.cancel(key, AfterCancel::HandBack);
        }
    }

    /// The queue is unusable: stop, hand back what can be, end with `err`.
    pub(super) fn fail_run(&mut self, err: QueueError) {
        tracing::error!("stopping: {err}");
        if self.fatal.is_none() {
            self.fatal = Some(Error::Queue(err));
        }
        self.shutdown.cancel();
    }

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
        let kind = match &pending {
            Pending::Receive(_) => Some(CallKind::Receive),
            Pending::Delete(_) => Some(CallKind::Delete),
            Pending::DeadLetter(_) => Some(CallKind::DeadLetter),
            Pending::Visibility(_) => Some(CallKind::Visibility),
            Pending::IsEmpty => None,
        };
        let id = self.calls.spawn(call).id();
        self.call_owners.insert(id, pending);
        if let Some(kind) = kind {
            self.call_started
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
        self.call_started.remove(&err.id());
        let Some(pending) = self.call_owners.remove(&err.id()) else {
            return;
        };
        match pending {
            Pending::Receive(slot) => {
                self.receiving -= 1;
                self.slots[slot].busy = false;
            }
            Pending::IsEmpty => self.checking_empty = false,
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
