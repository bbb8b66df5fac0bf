//! Stopping: draining on shutdown, abandoning handlers past the deadline,
//! and ending the run when the queue or a call fails for good.

use fifo_handler::Handler;
use tokio::time::Instant;

use super::{AfterCancel, Backoff, Engine, Phase, State, Timer};
use crate::Error;
use crate::calls::Key;
use crate::queue::{Queue, QueueError};

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
        if self.in_flight.receives() > 0 && self.poll_seconds() > 1 && !self.tracked.is_empty() {
            tracing::warn!(
                "held messages go back once the receives under way have ended, within {} s (a long poll still open could take them again)",
                self.poll_seconds()
            );
        }
        // Retries waiting for their backoff are not running: they go back.
        // A message waiting for its cut-off program to end before it moves
        // to the dead-letter queue still moves (it was said to).
        let mut waiting: Vec<Key> = self
            .tracked
            .iter()
            .filter(|(_, t)| {
                matches!(t.state, State::BackingOff { why, .. } if why != Backoff::KillGrace)
            })
            .map(|(key, _)| *key)
            .collect();
        waiting.sort_unstable();
        self.workers.retry_ready.clear();
        for key in waiting {
            self.unblock(key);
            let tracked = self.tracked.get_mut(&key).expect("listed");
            tracked.set_state(State::InLane);
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
            && self.workers.running.is_empty()
            && self.poll_seconds() > 1
        {
            self.receiving.abort.cancel();
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
            .workers
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
}
