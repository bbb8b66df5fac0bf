//! Steering: a group blocked behind a message that failed on every attempt
//! allowed (`Exhausted::Block`), and what operators ask through a
//! [`Steering`](crate::Steering) handle: the groups held, skipping or
//! retrying a group's head, pausing and resuming.

use std::time::SystemTime;

use fifo_handler::{Handler, HandlerError};
use tokio::time::{Duration, Instant};

use super::{Backoff, Engine, Phase, State, Timer, message_event};
use crate::backoff;
use crate::calls::Key;
use crate::limits::MAX_INVISIBLE_SECONDS;
use crate::queue::{DeadLetterReason, Queue};
use crate::steering::{GroupState, GroupStatus, Head, Request, SteerError};
use fifo_group_router::Step;

/// A blocked message goes back with its group this long before SQS's
/// 12-hour limit would make it impossible to keep, beyond a visibility
/// timeout.
const HAND_BACK_MARGIN: Duration = Duration::from_secs(300);

impl<Q: Queue, H: Handler> Engine<Q, H> {
    /// `key` failed on every attempt allowed and blocks its group: it stays
    /// held (heartbeats keep its lease), the rest of its group waits behind
    /// it, and it runs again after a slow backoff, until it succeeds or an
    /// operator skips it. Near SQS's 12-hour limit it goes back with its
    /// group instead, to be received, and blocked, again.
    pub(super) fn block(&mut self, key: Key, error: &HandlerError) {
        let visibility = self.visibility();
        let tracked = self.tracked.get_mut(&key).expect("tracked");
        tracked.attempts += 1;
        let attempts = tracked.attempts;
        let (id, group) = (tracked.message.id.clone(), tracked.message.group_id.clone());
        // Never while its cut-off program may still be ending.
        let delay = backoff::blocked(
            attempts,
            self.config.backoff_base,
            self.config.blocked_retry_max,
        )
        .max(tracked.kill_left());
        let now = Instant::now();
        let most_held = Duration::from_secs(u64::from(MAX_INVISIBLE_SECONDS));
        // A heartbeat asks for a visibility timeout more: SQS refuses it
        // past 12 hours from the receive.
        let keep_until = (tracked.received + most_held)
            .checked_sub(visibility + HAND_BACK_MARGIN)
            .unwrap_or(tracked.received);
        if now + delay >= keep_until {
            self.counters.add_failed();
            tracked.release_after = Duration::ZERO;
            self.unblock(key);
            tracing::warn!(
                "message {id} of group {group} is still blocked ({error}), and SQS keeps a message at most 12 hours from its receive: handing it back with the rest of its group while it can; whoever receives it next runs it again, and blocks the group again if it keeps failing"
            );
            return self.router.failed(&group, key);
        }
        self.counters.add_retried();
        message_event("blocked", &tracked.message, attempts, None, Some(error));
        if tracked.blocked_since.is_none() {
            tracked.blocked_since = Some(SystemTime::now());
            let tried = match attempts {
                1 => "its only attempt".to_owned(),
                n => format!("all {n} attempts"),
            };
            let way_out = if self.queue.max_receive_count().is_some() {
                format!("until it succeeds or is skipped (fifo groups skip {group})")
            } else {
                "until it succeeds (the queue has no dead-letter queue to skip it to)".to_owned()
            };
            tracing::warn!(
                "message {id} of group {group} failed on {tried} ({error}); group {group} is blocked: the rest of it waits, and this message runs again every {} s at most {way_out}",
                self.config.blocked_retry_max.as_secs_f64()
            );
            self.measure_blocked();
        } else {
            tracing::info!(
                "message {id} of group {group} is still blocked after {attempts} attempts ({error}); next run in {delay:?}"
            );
        }
        let until = now + delay;
        self.tracked
            .get_mut(&key)
            .expect("tracked")
            .back_off(Backoff::Blocked, until);
        self.add_timer(until, Timer::Retry(key));
    }

    /// Answers an operator's request.
    pub(super) fn on_request(&mut self, request: Request) {
        if request.abandoned() {
            // Its caller was told nothing was done.
            return;
        }
        // A requester that gave up waiting meanwhile is no reason to fail.
        match request {
            Request::Groups(answer) => {
                let _ = answer.send(self.groups());
            }
            Request::Skip(group, answer) => {
                let _ = answer.send(self.skip(&group));
            }
            Request::Retry(group, answer) => {
                let _ = answer.send(self.retry_now(&group));
            }
            Request::Pause(pause, answer) => {
                self.pause(pause);
                let _ = answer.send(self.paused);
            }
        }
    }

    /// Every group held: blocked ones first, then the longest in their
    /// state.
    fn groups(&self) -> Vec<GroupStatus> {
        let mut groups: Vec<GroupStatus> = self
            .router
            .lanes()
            .map(|(group, held)| self.status_of(group, held))
            .collect();
        groups.sort_by(|a, b| {
            let key = |g: &GroupStatus| (g.state != GroupState::Blocked, g.since);
            key(a).cmp(&key(b)).then_with(|| a.group.cmp(&b.group))
        });
        groups
    }

    /// One group as operators see it; `None` when nothing of it is held.
    fn group_status(&self, group: &str) -> Option<GroupStatus> {
        let held = self.router.lane(group).count();
        (held > 0).then(|| self.status_of(group, held))
    }

    /// A group that holds `held` messages, as operators see it.
    fn status_of(&self, group: &str, held: usize) -> GroupStatus {
        let Some((key, step)) = self.router.head(group) else {
            return GroupStatus {
                group: group.to_owned(),
                state: GroupState::Settling,
                held,
                head: None,
                attempts: 0,
                last_error: None,
                since: self.settling_since(group),
            };
        };
        let tracked = &self.tracked[&key];
        let state = match (step, &tracked.state) {
            (Step::Queued, _) => GroupState::Queued,
            (Step::Out, State::Running(_) | State::Cancelling { .. }) => GroupState::Running,
            (Step::Out, State::BackingOff { why, .. }) => match why {
                Backoff::Blocked => GroupState::Blocked,
                Backoff::RetryLater => GroupState::RetryLater,
                Backoff::Retry | Backoff::NotStarted => GroupState::BackingOff,
                // It moves to the dead-letter queue once its program is gone.
                Backoff::KillGrace => GroupState::Settling,
            },
            // Between two steps within one turn of the loop.
            (Step::Out, State::InLane) => GroupState::Queued,
            _ => GroupState::Settling,
        };
        let since = match (state, tracked.blocked_since) {
            (GroupState::Blocked, Some(blocked)) => blocked,
            _ => tracked.since,
        };
        GroupStatus {
            group: group.to_owned(),
            state,
            held,
            head: Some(Head {
                message_id: tracked.message.id.clone(),
                sequence_number: tracked.message.sequence_number.clone(),
            }),
            attempts: tracked.attempts,
            last_error: tracked.last_failure.as_ref().map(|f| f.error.clone()),
            since,
        }
    }

    /// When a group with nothing left to run got there: its latest
    /// message's last change.
    fn settling_since(&self, group: &str) -> SystemTime {
        self.router
            .lane(group)
            .filter_map(|(key, _)| self.tracked.get(&key))
            .map(|t| t.since)
            .max()
            .unwrap_or_else(SystemTime::now)
    }

    /// The head of `group` and the group's status, or why there is none.
    fn head_of(&self, group: &str) -> Result<(Key, GroupStatus), SteerError> {
        let status = self
            .group_status(group)
            .ok_or_else(|| SteerError::NotHeld(group.to_owned()))?;
        if self.phase != Phase::Running {
            return Err(SteerError::NotApplicable(
                "the run is stopping: its groups are going back to the queue".to_owned(),
            ));
        }
        let key = self.router.head(group).map(|(key, _)| key);
        match key {
            Some(key) => Ok((key, status)),
            None => Err(not_applicable(&status, "nothing is left to run")),
        }
    }

    /// Moves a blocked group's head to the dead-letter queue now; the group
    /// goes on.
    fn skip(&mut self, group: &str) -> Result<GroupStatus, SteerError> {
        let (key, status) = self.head_of(group)?;
        if status.state == GroupState::Running && self.tracked[&key].blocked_since.is_some() {
            return Err(SteerError::NotApplicable(format!(
                "group {group} is blocked and its head is running again right now: skip it once that run has ended (fifo groups shows it blocked again)"
            )));
        }
        if status.state != GroupState::Blocked {
            return Err(not_applicable(
                &status,
                "only a blocked group's head can be skipped (a blocked head shows running while it runs again)",
            ));
        }
        if self.queue.max_receive_count().is_none() {
            return Err(SteerError::NotApplicable(format!(
                "group {group} is blocked, but the queue had no dead-letter queue (no redrive policy) when this run started, so its head has nowhere to go: give the queue a redrive policy (aws sqs set-queue-attributes, or the console) and restart fifo run, or let the head succeed (fifo groups retry {group})"
            )));
        }
        let tracked = self.tracked.get_mut(&key).expect("the head is held");
        let last = tracked.last_failure.take();
        tracked.last_failure = Some(DeadLetterReason {
            error: match &last {
                Some(last) => format!("skipped by operator; last error: {}", last.error),
                None => "skipped by operator".to_owned(),
            },
            status: last.as_ref().and_then(|l| l.status.clone()),
            attempts: tracked.attempts,
            receive_count: tracked.message.receive_count,
            failed_at: last.map_or_else(SystemTime::now, |l| l.failed_at),
        });
        self.counters.add_failed();
        message_event("skipped", &tracked.message, tracked.attempts, None, None);
        tracing::warn!(
            "message {} of group {group} skipped by an operator after {}: moving it to the dead-letter queue; the group goes on",
            tracked.message.id,
            counted(tracked.attempts, "attempt")
        );
        self.unblock(key);
        self.dead_letter_once_gone(key);
        self.group_status(group)
            .ok_or_else(|| SteerError::NotHeld(group.to_owned()))
    }

    /// Runs a group's head again now (once its cut-off program, if any,
    /// is gone), instead of after its backoff.
    fn retry_now(&mut self, group: &str) -> Result<GroupStatus, SteerError> {
        let (key, status) = self.head_of(group)?;
        if self.paused.is_some() {
            return Err(SteerError::NotApplicable(
                "the run is paused: resume it first (fifo groups resume)".to_owned(),
            ));
        }
        let tracked = self.tracked.get_mut(&key).expect("the head is held");
        let why = match tracked.state {
            State::BackingOff { why, .. } if why != Backoff::KillGrace => why,
            _ => {
                return Err(not_applicable(
                    &status,
                    "only the head of a group that is blocked, backing off or asked to retry later can be run again now",
                ));
            }
        };
        let at = Instant::now() + tracked.kill_left();
        tracked.back_off(why, at);
        tracing::info!(
            "message {} of group {group} runs again now, as an operator asked",
            tracked.message.id
        );
        self.add_timer(at, Timer::Retry(key));
        self.group_status(group)
            .ok_or_else(|| SteerError::NotHeld(group.to_owned()))
    }

    /// Paused, no handler starts and nothing is received; held messages
    /// keep their leases and running handlers finish.
    fn pause(&mut self, pause: bool) {
        match (pause, self.paused) {
            (true, None) => {
                self.paused = Some(SystemTime::now());
                tracing::warn!(
                    "paused by an operator: no handler starts and nothing is received until resumed; held messages keep their leases, running handlers finish"
                );
            }
            (false, Some(since)) => {
                self.paused = None;
                let paused = since.elapsed().unwrap_or_default();
                tracing::warn!(
                    "resumed by an operator after {:.1} s paused",
                    paused.as_secs_f64()
                );
            }
            _ => {}
        }
    }

    /// `key` no longer blocks its group (it succeeded, ended otherwise, or
    /// was skipped): since when it did, if it did.
    pub(super) fn unblock(&mut self, key: Key) -> Option<SystemTime> {
        let since = self.tracked.get_mut(&key)?.blocked_since.take();
        if since.is_some() {
            self.measure_blocked();
        }
        since
    }

    /// How many groups are blocked and since when the oldest is, for the
    /// metrics: measured when a group blocks or unblocks, and on each tick
    /// for the age (it looks at every held message).
    pub(super) fn measure_blocked(&mut self) {
        let mut blocked = 0;
        let mut oldest: Option<SystemTime> = None;
        for since in self.tracked.values().filter_map(|t| t.blocked_since) {
            blocked += 1;
            oldest = Some(oldest.map_or(since, |o| o.min(since)));
        }
        let age = oldest.map_or(Duration::ZERO, |since| {
            since.elapsed().unwrap_or(Duration::ZERO)
        });
        self.counters.set_blocked(blocked, age);
    }
}

/// `1 attempt`, `2 attempts`.
fn counted(n: u32, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A refusal that says what the group is doing.
fn not_applicable(status: &GroupStatus, why: &str) -> SteerError {
    SteerError::NotApplicable(format!(
        "group {} is {}: {why}",
        status.group,
        status.state.name()
    ))
}
