//! Running handlers: dispatch in the router's order, outcomes, in-process
//! retries, and cancelling a handler (waiting out its kill grace).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use fifo_handler::{Handler, HandlerError, Verdict};
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::{Duration, Instant};

use super::fate::{Facts, Fate, HandBack, fate};
use super::rates::Limited;
use super::work::{Attempt, Ran, work};
use super::{AfterCancel, Backoff, Engine, Phase, State, Timer, Tracked, message_event};
use crate::Exhausted;
use crate::backoff;
use crate::calls::Key;
use crate::queue::{DeadLetterReason, Queue};

/// The workers' part of the engine: handler calls under way and the
/// retries due.
#[derive(Debug, Default)]
pub(super) struct Workers {
    /// The handler calls' tasks; each returns how its messages went.
    pub(super) tasks: JoinSet<Ran>,
    /// The messages, in lane order, of each handler call running or being
    /// cancelled (each call takes one worker).
    pub(super) running: HashMap<Id, Vec<Key>>,
    /// Retries whose backoff is over: they go before new work.
    pub(super) retry_ready: VecDeque<Key>,
    /// Handler runs that succeeded in this run, for `limit`.
    succeeded: u64,
    /// Handlers failing to start (fifo's own trouble), as `trouble` is SQS's.
    unstarted: Unstarted,
}

impl<Q: Queue, H: Handler> Engine<Q, H> {
    /// Starts handlers while workers are free: due retries first, then the
    /// next ready lane; none while paused. A message over a rate limit goes
    /// back where it was (its lane, or the retries due) and the loop wakes
    /// when the limit allows it.
    pub(super) fn dispatch(&mut self) {
        if self.paused.is_some() {
            return;
        }
        let mut limited: Vec<(Key, bool)> = Vec::new();
        while self.workers.running.len() < self.config.workers && self.batch_room() > 0 {
            let (key, retry) = match self.workers.retry_ready.pop_front() {
                // Due twice (an operator's retry and its own timer): once.
                Some(key)
                    if !matches!(
                        self.tracked.get(&key).map(|t| &t.state),
                        Some(State::BackingOff { .. })
                    ) =>
                {
                    continue;
                }
                Some(key) => (key, true),
                None if self.phase == Phase::Running => match self.router.take_next() {
                    Some((_, key)) => (key, false),
                    None => break,
                },
                None => break,
            };
            match self.admit(key) {
                Ok(()) => self.start(key),
                Err(Limited::Group(at)) => {
                    limited.push((key, retry));
                    self.wake_for_rate(at);
                }
                Err(Limited::All(at)) => {
                    limited.push((key, retry));
                    self.wake_for_rate(at);
                    break;
                }
            }
        }
        // Put back only now: back in its lane at once, a limited group
        // would be handed out again within this very loop.
        for (key, retry) in limited {
            if retry {
                self.workers.retry_ready.push_back(key);
            } else if let Some(tracked) = self.tracked.get(&key) {
                let group = tracked.message.group_id.clone();
                self.router.put_back(&group, key);
            }
        }
    }

    /// Takes a start for `key` from the rate limits, if there are any.
    fn admit(&self, key: Key) -> Result<(), Limited> {
        if !self.rates.any() {
            return Ok(());
        }
        match self.tracked.get(&key) {
            Some(tracked) => self.rates.admit(&tracked.message.group_id),
            None => Ok(()),
        }
    }

    fn wake_for_rate(&mut self, at: Instant) {
        if self.rates.wake_needed(at) {
            self.wake_at(at);
        }
    }

    /// Messages one more handler call may take: `batch`, but no more than
    /// `limit` leaves to succeed.
    fn batch_room(&self) -> usize {
        let Some(limit) = self.config.limit else {
            return self.config.batch;
        };
        let running: usize = self.workers.running.values().map(Vec::len).sum();
        let left = limit.saturating_sub(self.workers.succeeded + running as u64);
        self.config
            .batch
            .min(usize::try_from(left).unwrap_or(usize::MAX))
    }

    /// Runs `key` (out of its lane), with the queued messages right after
    /// it when batches are asked for.
    pub(super) fn start(&mut self, key: Key) {
        let Some(tracked) = self.tracked.get(&key) else {
            return;
        };
        let now = Instant::now();
        if self.at_risk(tracked, now) {
            return self.lose(key, "its lease was about to run out when its turn came");
        }
        let group = tracked.message.group_id.clone();
        let mut keys = vec![key];
        // A message that failed before (here, or in an earlier delivery)
        // runs alone: a batch's timeout or crash is blamed on its first
        // message, which must not be retried, released or dead-lettered
        // for the others' sake.
        let most = if fresh(tracked) {
            self.batch_room().saturating_sub(1)
        } else {
            0
        };
        if most > 0 {
            // A later message whose lease is about to run out ends the
            // batch (it is lost on its own turn, not run), as does one that
            // ran before.
            let safe_until = now + self.lease_margin();
            let tracked = &self.tracked;
            keys.extend(self.router.take_following(&group, key, most, |k| {
                tracked
                    .get(&k)
                    .is_some_and(|t| t.expires > safe_until && fresh(t))
            }));
        }
        for k in &keys {
            let tracked = self.tracked.get_mut(k).expect("tracked");
            let attempt = tracked.attempts + 1;
            if tracked.message.attempt != attempt {
                Arc::make_mut(&mut tracked.message).attempt = attempt;
            }
            message_event("started", &tracked.message, attempt, None, None);
        }
        let messages = keys
            .iter()
            .map(|k| self.tracked[k].message.clone())
            .collect();
        let handler = self.handler.clone();
        let (batches, timeout) = (self.config.batch > 1, self.config.handler_timeout);
        let counters = self.counters.clone();
        let task = self.workers.tasks.spawn(async move {
            let started = Instant::now();
            let mut ran = work(handler, messages, batches, timeout).await;
            ran.took = started.elapsed();
            counters.observe_handler(ran.took);
            ran
        });
        for k in &keys {
            self.tracked
                .get_mut(k)
                .expect("tracked")
                .set_state(State::Running(task.clone()));
        }
        self.workers.running.insert(task.id(), keys);
    }

    pub(super) fn on_worker(&mut self, joined: Result<(tokio::task::Id, Ran), JoinError>) {
        let (id, ran) = match joined {
            Ok((id, ran)) => (id, Some(ran)),
            // Panicked outside the handler (dropping it): as a panic inside.
            Err(err) if err.is_panic() => (err.id(), Some(Ran::panicked())),
            // Cancelled: its messages end when the kill grace passes (see
            // `cancel_done`).
            Err(err) => (err.id(), None),
        };
        let Some(keys) = self.workers.running.get(&id) else {
            return;
        };
        let cancelled = keys.iter().any(|key| {
            matches!(
                self.tracked.get(key).map(|t| &t.state),
                Some(State::Cancelling { .. })
            )
        });
        if cancelled {
            // It had ended by itself: no need to wait out the kill grace.
            if ran.is_some() {
                self.cancel_done(id);
            }
            return;
        }
        let Some(ran) = ran else {
            return;
        };
        let keys = self.workers.running.remove(&id).expect("running");
        let unstarted = ran.succeeded == 0
            && matches!(&ran.failed, Some(Attempt::Failed { error, .. })
                if Verdict::of(error) == Verdict::CannotStart);
        if !unstarted {
            self.handlers_start_again();
        }
        let mut attempts = keys.into_iter();
        for key in attempts.by_ref().take(ran.succeeded) {
            self.log_run(key, "succeeded", ran.took, None);
            self.end_run(key, Attempt::Succeeded);
        }
        if let Some(failed) = ran.failed
            && let Some(key) = attempts.next()
        {
            // A request to wait is not a failure: its event is `retried`;
            // nor is a handler that could not start.
            if let Attempt::Failed { error, .. } = &failed
                && !matches!(
                    Verdict::of(error),
                    Verdict::RetryLater(_) | Verdict::CannotStart
                )
            {
                self.log_run(key, "failed", ran.took, Some(error));
            }
            // The messages after it were not run: back in their place
            // first, so that a failure for good hands them back with it.
            for later in attempts {
                self.put_back(later);
            }
            self.end_run(key, failed);
        }
    }

    /// A handler call's outcome for one of its messages, as a structured event.
    fn log_run(
        &self,
        key: Key,
        event: &'static str,
        took: Duration,
        error: Option<&dyn std::fmt::Display>,
    ) {
        if let Some(tracked) = self.tracked.get(&key) {
            message_event(
                event,
                &tracked.message,
                tracked.message.attempt,
                Some(took),
                error,
            );
        }
    }

    /// One message of a handler call that ended.
    fn end_run(&mut self, key: Key, attempt: Attempt) {
        let Some(tracked) = self.tracked.get_mut(&key) else {
            return;
        };
        if matches!(tracked.state, State::Running(_)) {
            tracked.set_state(State::InLane);
            self.on_attempt(key, attempt);
        }
    }

    /// A message of a batch that its handler did not reach.
    fn put_back(&mut self, key: Key) {
        let Some(tracked) = self.tracked.get_mut(&key) else {
            return;
        };
        if matches!(tracked.state, State::Running(_)) {
            tracked.set_state(State::InLane);
            let group = tracked.message.group_id.clone();
            self.router.put_back(&group, key);
        }
    }

    /// Applies a message's [`fate`] after its handler ran.
    pub(super) fn on_attempt(&mut self, key: Key, attempt: Attempt) {
        // A success needs no facts: every message's path, kept short.
        let Attempt::Failed { error, cut_off } = attempt else {
            return self.succeeded(key);
        };
        let kill_grace = self.config.kill_grace();
        let tracked = self.tracked.get_mut(&key).expect("tracked");
        if cut_off {
            // The cut-off handler may still be ending (an exec handler's
            // process group gets the kill grace): whatever becomes of the
            // message waits it out (see `kill_left`), an operator's retry
            // or skip included, so that it never runs twice at once nor
            // beside its group's next message.
            tracked.kill_ends = Some(Instant::now() + kill_grace + KILL_MARGIN);
        }
        let verdict = Verdict::of(&error);
        let facts = Facts {
            verdict: Some(verdict),
            running: self.phase == Phase::Running,
            attempts: tracked.attempts,
            retries: self.config.retries,
            receive_count: tracked.message.receive_count,
            max_receive_count: self.queue.max_receive_count(),
            blocks: self.config.exhausted == Exhausted::Block,
        };
        let fate = fate(facts);
        match fate {
            Fate::Done => self.succeeded(key),
            Fate::NotStarted => self.could_not_start(key, &error),
            Fate::Wait(after) => self.wait(key, after, &error, true),
            Fate::HandBack(HandBack::Waiting(after)) => self.wait(key, after, &error, false),
            Fate::Retry | Fate::Block | Fate::DeadLetter { .. } | Fate::HandBack(_) => {
                self.record_failure(key, &error);
                if verdict == Verdict::Reject && facts.max_receive_count.is_none() {
                    let message = &self.tracked[&key].message;
                    tracing::warn!(
                        "message {} of group {} was rejected by its handler ({error}), but the queue has no dead-letter queue: it counts as a failure and is retried, never deleted",
                        message.id,
                        message.group_id
                    );
                }
                match fate {
                    Fate::Retry => self.retry(key, &error),
                    Fate::Block => self.block(key, &error),
                    _ => self.end_delivery(key, fate, &error),
                }
            }
        }
    }

    /// Its handler succeeded: the router may delete it; `limit` may be reached.
    fn succeeded(&mut self, key: Key) {
        self.counters.add_succeeded();
        self.workers.succeeded += 1;
        if let Some(since) = self.unblock(key) {
            let tracked = &self.tracked[&key];
            tracing::warn!(
                "message {} of group {} succeeded on attempt {}: the group is no longer blocked (it was for {:.1} s)",
                tracked.message.id,
                tracked.message.group_id,
                tracked.attempts + 1,
                since.elapsed().unwrap_or_default().as_secs_f64()
            );
        }
        let group = self.tracked[&key].message.group_id.clone();
        self.router.finished(&group, key);
        if self
            .config
            .limit
            .is_some_and(|limit| self.workers.succeeded >= limit)
        {
            self.shutdown.cancel();
        }
    }

    /// Its handler asked to run it again later: not a failure, so the
    /// attempt does not count against its retries. It waits in its lane
    /// (`now`), or goes back hidden as long when the run is stopping.
    fn wait(&mut self, key: Key, after: Option<Duration>, error: &HandlerError, now: bool) {
        let tracked = self.tracked.get_mut(&key).expect("tracked");
        let (id, group) = (tracked.message.id.clone(), tracked.message.group_id.clone());
        tracked.waits += 1;
        // Never sooner than the first backoff step, so that a service
        // answering "now" is not asked in a tight loop.
        let delay = after
            .unwrap_or_else(|| {
                backoff::jittered(
                    tracked.waits,
                    self.config.backoff_base,
                    self.config.backoff_max,
                )
            })
            .clamp(self.config.backoff_base, LONGEST_WAIT);
        // Handed back meanwhile (a shutdown), it stays hidden as long.
        tracked.release_after = delay;
        if !now {
            tracing::info!(
                "message {id} of group {group} asked to run again later ({error}); handing it back with the rest of its group, hidden for {delay:?}"
            );
            return self.router.failed(&group, key);
        }
        self.counters.add_retried();
        message_event(
            "retried",
            &tracked.message,
            tracked.attempts + 1,
            None,
            Some(error),
        );
        let until = Instant::now() + delay;
        tracked.back_off(Backoff::RetryLater, until);
        let waits = tracked.waits;
        if waits == 1 {
            tracing::warn!(
                "message {id} of group {group} asked to run again later ({error}); retry in {delay:?}, not counted as a failure; its group waits"
            );
        } else {
            tracing::info!(
                "message {id} of group {group} asked to run again later, {waits} times now ({error}); retry in {delay:?}"
            );
        }
        self.add_timer(until, Timer::Retry(key));
    }

    /// Keeps a failure as a dead letter would tell it, should it become one.
    fn record_failure(&mut self, key: Key, error: &HandlerError) {
        let tracked = self.tracked.get_mut(&key).expect("tracked");
        tracked.last_failure = Some(DeadLetterReason {
            error: error.to_string(),
            status: fifo_handler::status_of(error).map(str::to_owned),
            attempts: tracked.attempts + 1,
            receive_count: tracked.message.receive_count,
            failed_at: std::time::SystemTime::now(),
        });
    }

    /// A failure with retries left: it runs again after a backoff.
    fn retry(&mut self, key: Key, error: &HandlerError) {
        let tracked = self.tracked.get_mut(&key).expect("tracked");
        tracked.attempts += 1;
        let attempt = tracked.attempts;
        self.counters.add_retried();
        message_event("retried", &tracked.message, attempt + 1, None, Some(error));
        let delay = backoff::jittered(attempt, self.config.backoff_base, self.config.backoff_max)
            .max(tracked.kill_left());
        tracing::info!(
            "message {} of group {} failed ({error}); retry {attempt} of {} in {delay:?}",
            tracked.message.id,
            tracked.message.group_id,
            self.config.retries
        );
        let until = Instant::now() + delay;
        tracked.back_off(Backoff::Retry, until);
        self.add_timer(until, Timer::Retry(key));
    }

    /// It failed for good in this delivery: to the dead-letter queue, or
    /// back to the queue with the rest of its lane.
    fn end_delivery(&mut self, key: Key, fate: Fate, error: &HandlerError) {
        debug_assert!(fate.ends_the_delivery(), "{fate:?}");
        // A blocked message that ends otherwise (a reject, a shutdown) no
        // longer blocks its group.
        self.unblock(key);
        let tracked = self.tracked.get_mut(&key).expect("tracked");
        let (id, group) = (tracked.message.id.clone(), tracked.message.group_id.clone());
        if fate == (Fate::DeadLetter { rejected: true }) {
            self.counters.add_rejected();
            message_event(
                "rejected",
                &tracked.message,
                tracked.attempts + 1,
                None,
                Some(error),
            );
        } else {
            self.counters.add_failed();
        }
        match fate {
            Fate::DeadLetter { rejected } => {
                if rejected {
                    tracing::warn!(
                        "message {id} of group {group} was rejected by its handler ({error}); moving it to the dead-letter queue"
                    );
                } else {
                    tracing::warn!(
                        "message {id} of group {group} failed on its last allowed receive ({error}); moving it to the dead-letter queue"
                    );
                }
                self.dead_letter_once_gone(key);
            }
            Fate::HandBack(HandBack::Exhausted) => {
                let seconds = backoff::release_seconds(
                    tracked.message.receive_count,
                    self.config.backoff_base,
                    self.config.backoff_max,
                );
                tracked.release_after = Duration::from_secs(u64::from(seconds));
                tracing::warn!(
                    "message {id} of group {group} failed after {} attempt{} ({error}); it and the rest of its group go back to the queue in {seconds} s",
                    tracked.attempts + 1,
                    if tracked.attempts == 0 { "" } else { "s" },
                );
                self.router.failed(&group, key);
            }
            _ => {
                tracing::warn!(
                    "message {id} of group {group} failed ({error}); handing it back with the rest of its group"
                );
                self.router.failed(&group, key);
            }
        }
    }

    /// The handler of `key` could not start: fifo's own trouble (no file
    /// descriptor, memory or process left), not the message's. It waits in
    /// its lane and starts again after a backoff that grows while starts
    /// keep failing, no attempt counted; the trouble is said once when it
    /// begins and once when handlers start again.
    fn could_not_start(&mut self, key: Key, error: &HandlerError) {
        self.counters.add_start_failure();
        if let Some(tracked) = self.tracked.get(&key) {
            message_event(
                "not-started",
                &tracked.message,
                tracked.attempts + 1,
                None,
                Some(error),
            );
        }
        let trouble = &mut self.workers.unstarted;
        trouble.in_a_row = trouble.in_a_row.saturating_add(1);
        trouble.failed = trouble.failed.saturating_add(1);
        trouble.last_failed = Some(Instant::now());
        if trouble.since.is_none() {
            trouble.since = Some(Instant::now());
            tracing::warn!(
                "cannot start handlers ({error}): fifo's own trouble, not the messages'; they wait in their groups and start again with backoff, no attempt counted"
            );
        }
        let delay = backoff::jittered(
            trouble.in_a_row,
            Duration::from_millis(100),
            Duration::from_secs(5),
        );
        let tracked = self.tracked.get_mut(&key).expect("tracked");
        if self.phase == Phase::Running {
            let until = Instant::now() + delay;
            tracked.back_off(Backoff::NotStarted, until);
            self.add_timer(until, Timer::Retry(key));
        } else {
            let group = tracked.message.group_id.clone();
            self.router.failed(&group, key);
        }
    }

    /// A handler started: the backoff starts over, and a trouble starting
    /// them is over once none failed for [`CALM`] (at a limit, starts fail
    /// and succeed by turns: that is one trouble, not many).
    fn handlers_start_again(&mut self) {
        let trouble = &mut self.workers.unstarted;
        trouble.in_a_row = 0;
        if trouble
            .last_failed
            .is_some_and(|last| last.elapsed() < CALM)
        {
            return;
        }
        if let Some(since) = trouble.since.take() {
            tracing::warn!(
                "handlers start again after {:.1} s ({} starts failed); carrying on",
                since.elapsed().as_secs_f64(),
                trouble.failed
            );
            trouble.failed = 0;
        }
    }

    pub(super) fn on_retry_due(&mut self, key: Key) {
        let Some(tracked) = self.tracked.get_mut(&key) else {
            return;
        };
        // A timer an operator's retry made early, or one for an earlier
        // backoff of the same message, is stale.
        match tracked.state {
            State::BackingOff { why, until }
                if why != Backoff::KillGrace && until <= Instant::now() => {}
            _ => return,
        }
        if self.phase == Phase::Running {
            self.workers.retry_ready.push_back(key);
        } else {
            tracked.set_state(State::InLane);
            let group = tracked.message.group_id.clone();
            self.router.failed(&group, key);
        }
    }

    /// Moves `key` to the dead-letter queue, and its group on, once its
    /// cut-off program (if any) is gone.
    pub(super) fn dead_letter_once_gone(&mut self, key: Key) {
        let tracked = self.tracked.get_mut(&key).expect("tracked");
        let left = tracked.kill_left();
        if left > Duration::ZERO {
            let gone = Instant::now() + left;
            tracked.back_off(Backoff::KillGrace, gone);
            return self.add_timer(gone, Timer::DeadLetter(key));
        }
        tracked.set_state(State::InLane);
        let group = tracked.message.group_id.clone();
        self.router.dead_letter(&group, key);
    }

    /// A message whose move to the dead-letter queue waited for its cut-off
    /// program (failed on its last receive, or skipped): the program is
    /// gone, so it moves and its group goes on.
    pub(super) fn on_dead_letter_due(&mut self, key: Key) {
        let Some(tracked) = self.tracked.get_mut(&key) else {
            return;
        };
        if matches!(
            tracked.state,
            State::BackingOff {
                why: Backoff::KillGrace,
                ..
            }
        ) {
            self.dead_letter_once_gone(key);
        }
    }

    /// Cancels the handler call running `key` (with every message of its
    /// batch); it counts as running until it ended.
    pub(super) fn cancel(&mut self, key: Key, then: AfterCancel) {
        let task = match self.tracked.get(&key).map(|t| &t.state) {
            Some(State::Running(handle)) => {
                handle.abort();
                let task = handle.id();
                let at = Instant::now() + self.config.kill_grace();
                self.add_timer(at, Timer::CancelDone(task));
                task
            }
            Some(State::Cancelling { task, .. }) => *task,
            _ => return,
        };
        for key in self.workers.running.get(&task).into_iter().flatten() {
            if let Some(tracked) = self.tracked.get_mut(key)
                && matches!(tracked.state, State::Running(_) | State::Cancelling { .. })
            {
                tracked.set_state(State::Cancelling { then, task });
            }
        }
    }

    /// A cancelled handler call has ended (or its kill grace passed): its
    /// worker is free, and its messages are given up or handed back.
    pub(super) fn cancel_done(&mut self, task: tokio::task::Id) {
        let Some(keys) = self.workers.running.remove(&task) else {
            return;
        };
        for key in keys {
            let Some(tracked) = self.tracked.get_mut(&key) else {
                continue;
            };
            let State::Cancelling { then, .. } = tracked.state else {
                continue;
            };
            match then {
                AfterCancel::Lose => {
                    // A message of the batch before the one lost is still in
                    // its lane: it goes too (the later ones already went).
                    let group = tracked.message.group_id.clone();
                    self.router.lost(&group, key);
                    self.untrack(key);
                    self.counters.add_lost(1);
                }
                AfterCancel::HandBack => {
                    tracked.set_state(State::InLane);
                    let group = tracked.message.group_id.clone();
                    self.router.failed(&group, key);
                }
            }
        }
    }
}

/// Whether a message never ran before: neither attempted here nor, as far
/// as SQS tells, delivered before.
fn fresh(tracked: &Tracked) -> bool {
    tracked.attempts == 0 && tracked.message.receive_count <= 1
}

/// The longest a handler may ask to wait before its message runs again.
/// Well under SQS's 12 hours from a receive, after which a held message
/// can no longer be kept (nor handed back hidden that long).
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

/// How long handlers must start without one failing to start for that
/// trouble to be over.
const CALM: Duration = Duration::from_secs(5);

/// Beyond the kill grace, for the killed processes to be gone.
const KILL_MARGIN: Duration = Duration::from_millis(500);

/// Handlers that could not start: since when, how many (in a row, for the
/// backoff, and in all), and the last one.
#[derive(Debug, Default)]
struct Unstarted {
    /// Since when handlers fail to start; `None` while they start.
    since: Option<Instant>,
    /// Failures to start in a row, for the backoff.
    in_a_row: u32,
    /// Failures to start in this trouble, for the line that ends it.
    failed: u32,
    /// When a handler last failed to start.
    last_failed: Option<Instant>,
}
