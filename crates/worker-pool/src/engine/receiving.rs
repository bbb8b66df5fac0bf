//! Receiving: keeping enough receives under way while there is room under
//! `max_in_flight` (a fixed number with `pollers`, else as many as pay, see
//! [`Pace`]), and tracking what they bring.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use fifo_handler::{Handler, Message};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::in_flight::{CallKind, Pending};
use super::trouble::is_fatal;
use super::{Engine, Overtaken, Phase, State, Tracked, message_event};
use crate::backoff;
use crate::calls;
use crate::queue::{Delivery, Queue, QueueError, QueueErrorKind, ReceiveRequest};

/// The receiving part of the engine: its slots and how many of them to use.
#[derive(Debug)]
pub(super) struct Receiving {
    /// One receive under way at most per slot.
    pub(super) slots: Vec<Slot>,
    /// How many receives to keep under way.
    pub(super) pace: Pace,
    /// Cuts receives under way short; see `cut_receives_when_idle`.
    pub(super) abort: CancellationToken,
}

impl Receiving {
    pub(super) fn new(pollers: Option<usize>) -> Receiving {
        let now = Instant::now();
        let slots = (0..pollers.unwrap_or(crate::MAX_POLLERS))
            .map(|poller| Slot {
                busy: false,
                cut: CancellationToken::new(),
                wait: Duration::ZERO,
                attempt_id: new_attempt_id(poller),
                attempt_sent: None,
                attempt_retried: false,
                failures: 0,
                not_before: now,
            })
            .collect();
        Receiving {
            slots,
            pace: Pace::new(pollers),
            abort: CancellationToken::new(),
        }
    }
}

/// A receive slot: one receive under way at most (`pollers` slots, or
/// [`crate::MAX_POLLERS`] when they adapt).
#[derive(Debug)]
pub(super) struct Slot {
    /// A receive of this slot is under way.
    pub(super) busy: bool,
    /// Cuts this slot's receive short: one without an answer past its long
    /// poll is sent again (see `notice_unanswered_calls`).
    pub(super) cut: CancellationToken,
    /// The long poll of its receive under way.
    pub(super) wait: Duration,
    /// Kept after a network error, so that SQS returns the same messages.
    pub(super) attempt_id: String,
    /// When a receive with `attempt_id` went out first, and whether it went
    /// out again since: messages returned by a retry were taken (and their
    /// visibility timeout started) no later than that first receive.
    pub(super) attempt_sent: Option<Instant>,
    /// See `attempt_sent`.
    pub(super) attempt_retried: bool,
    /// Receives failed in a row, for its backoff.
    pub(super) failures: u32,
    /// Its backoff: no receive before then.
    pub(super) not_before: Instant,
}

impl Slot {
    pub(super) fn new_attempt(&mut self, slot_index: usize) {
        self.attempt_id = new_attempt_id(slot_index);
        self.attempt_sent = None;
        self.attempt_retried = false;
    }
}

/// How many receives to keep under way when their number adapts.
///
/// One FIFO receive brings the messages of one or a few groups, so workers
/// waiting for groups need more receives under way, the more the longer a
/// receive takes. Each receive that brings messages while workers wait adds
/// one (so the number doubles per round trip), until SQS queues calls: then
/// deletes, which never wait like a long poll does, are answered slower
/// than the fastest recent one. From the first such delete on, growth is
/// one per round trip, and while the smoothed delete time stays well above
/// the fastest, one per round trip comes off. A receive that comes back
/// empty takes one away too: down to one when nothing is held, so an idle
/// queue costs one long poll at a time, and down to two while messages are
/// held, whose groups come back to receives waiting for them.
#[derive(Debug)]
pub(super) struct Pace {
    /// Receives wanted under way; `None` when fixed by `pollers`.
    target: Option<usize>,
    /// The fastest delete answers in this window and the one before: what
    /// a call costs when SQS is not queueing it, following a network that
    /// got slower within two windows.
    fastest: [Option<Duration>; 2],
    /// When the current window of `fastest` ends.
    window_ends: Instant,
    /// Recent delete answers, smoothed.
    recent: Option<Duration>,
    /// Until a delete waited behind other calls, the target grows by one
    /// per receive (doubling per round trip); after, by one per `target`
    /// receives.
    slow_start: bool,
    /// Receives counted towards the next step of `target`, up or down.
    credit: usize,
    /// Deletes answered so far (counting up to [`KNOWN_AFTER`]).
    deletes: usize,
}

/// How long one window of [`Pace::fastest`] lasts.
const PACE_WINDOW: Duration = Duration::from_secs(10);
/// The fewest receives kept under way while messages come in.
const BUSY_POLLERS: usize = 2;
/// The most receives under way before SQS answered a few deletes.
const UNKNOWN_POLLERS: usize = 4;
/// Deletes answered before their fastest counts as what a call costs: the
/// first ones wait for connections and for SQS starting up.
const KNOWN_AFTER: usize = 8;

impl Pace {
    pub(super) fn new(pollers: Option<usize>) -> Pace {
        Pace {
            target: pollers.is_none().then_some(BUSY_POLLERS),
            fastest: [None, None],
            window_ends: Instant::now() + PACE_WINDOW,
            recent: None,
            slow_start: true,
            credit: 0,
            deletes: 0,
        }
    }

    /// Whether the number of receives adapts (no fixed `pollers`).
    pub(super) fn adapts(&self) -> bool {
        self.target.is_some()
    }

    /// Receives to keep under way, given the slots there are.
    pub(super) fn wanted(&self, slots: usize) -> usize {
        self.target.unwrap_or(slots)
    }

    /// A delete was answered after `took`.
    pub(super) fn on_delete(&mut self, took: Duration) {
        self.deletes = (self.deletes + 1).min(KNOWN_AFTER);
        let now = Instant::now();
        if now >= self.window_ends {
            self.fastest = [None, self.fastest[0]];
            self.window_ends = now + PACE_WINDOW;
        }
        let current = &mut self.fastest[0];
        *current = Some(current.map_or(took, |fastest| fastest.min(took)));
        // Doubling overshoots by a round trip's worth of receives before the
        // smoothed figure shows SQS queueing: one delete clearly slower than
        // the fastest ends it, and growth goes on one per round trip.
        if self.slow_start && self.delayed(took, 3) {
            self.slow_start = false;
        }
        self.recent = Some(match self.recent {
            Some(recent) if took > recent => recent + (took - recent) / 8,
            Some(recent) => recent - (recent - took) / 8,
            None => took,
        });
    }

    /// Whether SQS queues calls: recent deletes took much longer than the
    /// fastest.
    fn queueing(&self) -> bool {
        self.recent.is_some_and(|recent| self.delayed(recent, 4))
    }

    /// Whether a delete that took `took` waited behind other calls: more
    /// than `halves`/2 times the fastest, and a millisecond or two more
    /// (noise on a fast network).
    fn delayed(&self, took: Duration, halves: u32) -> bool {
        self.fastest().is_some_and(|fastest| {
            took > fastest * halves / 2 + Duration::from_millis(u64::from(halves) / 2)
        })
    }

    /// The fastest delete answer of the two windows.
    pub(super) fn fastest(&self) -> Option<Duration> {
        self.fastest.iter().flatten().min().copied()
    }

    /// A receive brought `count` messages; `workers_waiting`: some workers
    /// had no group to run; `holding`: messages are held.
    pub(super) fn on_receive(&mut self, count: usize, workers_waiting: bool, holding: bool) {
        let queueing = self.queueing();
        let fastest = self.fastest();
        // Until a few deletes were answered, how fast SQS is is unknown.
        let most = if self.deletes < KNOWN_AFTER {
            UNKNOWN_POLLERS
        } else {
            crate::MAX_POLLERS
        };
        let Some(target) = self.target.as_mut() else {
            return;
        };
        let before = *target;
        if count == 0 {
            // Nothing to receive now: fewer long polls, down to one when
            // nothing is held (an idle queue) and two while held groups may
            // come back; more again, doubling, once receives bring messages.
            let floor = if holding { BUSY_POLLERS } else { 1 };
            *target = target.saturating_sub(1).max(floor);
            self.slow_start = true;
        } else if queueing {
            // One fewer per round trip: SQS answers late for a round trip
            // after it stopped queueing, and taking one away per receive
            // over that time would fall to the floor each time.
            self.slow_start = false;
            self.credit += 1;
            if self.credit >= *target {
                *target = target.saturating_sub(1).max(BUSY_POLLERS);
                self.credit = 0;
            }
        } else if workers_waiting {
            self.credit += 1;
            if self.slow_start || self.credit >= *target {
                *target = (*target + 1).min(most);
                self.credit = 0;
            }
        }
        if *target != before {
            tracing::debug!(
                "receives under way: {} (received {count}, queueing {queueing}, workers waiting {workers_waiting}, deletes take {:?}, fastest {:?})",
                *target,
                self.recent,
                fastest
            );
        }
    }
}

impl<Q: Queue, H: Handler> Engine<Q, H> {
    /// Starts receives while there is room for a full one under
    /// `max_in_flight` and a slot is free.
    /// The long poll of each receive. With `until_empty`, short polls
    /// notice the end promptly; while SQS is in trouble, its return.
    pub(super) fn poll_seconds(&self) -> u32 {
        if self.config.until_empty || self.trouble.since.is_some() {
            self.config.wait_time_seconds.min(1)
        } else {
            self.config.wait_time_seconds
        }
    }

    pub(super) fn receive_more(&mut self) {
        if self.phase != Phase::Running || self.paused.is_some() {
            return;
        }
        let now = Instant::now();
        let wanted = self.config.max_messages as usize;
        let wait_seconds = self.poll_seconds();
        // A slot backing off after a failed receive keeps its place, so
        // that the other slots do not retry at once in its stead.
        let backing_off = self
            .receiving
            .slots
            .iter()
            .filter(|slot| !slot.busy && slot.not_before > now)
            .count();
        for slot_index in 0..self.receiving.slots.len() {
            let room = self
                .config
                .max_in_flight
                .saturating_sub(self.tracked.len() + self.in_flight.receives() * wanted);
            let in_use = self.in_flight.receives() + backing_off;
            if room < wanted || in_use >= self.receiving.pace.wanted(self.receiving.slots.len()) {
                return;
            }
            // Adapting, receives beyond the first two go only while workers
            // would wait: not when the groups ready to run cover them and one
            // more (the next worker to finish its group). The first two keep
            // receiving up to `max_in_flight`, as fixed pollers do, so a
            // group whose held messages ran out comes back at once.
            if self.receiving.pace.adapts()
                && in_use >= BUSY_POLLERS
                && self.router.ready_groups() > self.idle_workers()
            {
                return;
            }
            let slot = &mut self.receiving.slots[slot_index];
            if slot.busy || slot.not_before > now {
                continue;
            }
            slot.busy = true;
            if slot.attempt_sent.is_some() {
                slot.attempt_retried = true;
            } else {
                slot.attempt_sent = Some(now);
            }
            let options = ReceiveRequest {
                max_messages: self.config.max_messages,
                wait_seconds,
                visibility_timeout: Some(self.config.visibility_timeout),
                attempt_id: Some(slot.attempt_id.clone()),
            };
            slot.cut = self.receiving.abort.child_token();
            slot.wait = Duration::from_secs(wait_seconds.into());
            let call = calls::receive(self.queue.clone(), options, slot_index, slot.cut.clone());
            self.spawn_call(Pending::Receive(slot_index), call);
        }
    }

    pub(super) fn on_received(
        &mut self,
        slot_index: usize,
        result: Option<Result<crate::Received, QueueError>>,
    ) {
        let visibility = self.visibility();
        let slot = &mut self.receiving.slots[slot_index];
        slot.busy = false;
        let Some(result) = result else { return };
        let output = match result {
            Ok(output) => output,
            Err(err) => {
                if is_fatal(&err) || err.kind() == QueueErrorKind::Refused {
                    return self.fail_run(err);
                }
                slot.failures += 1;
                // After a network error SQS may have taken messages for us:
                // the same attempt id gets them back. Otherwise a new one.
                if err.kind() != QueueErrorKind::Unreachable {
                    slot.new_attempt(slot_index);
                }
                let delay = backoff::jittered(
                    slot.failures,
                    Duration::from_millis(200),
                    Duration::from_secs(10),
                );
                let not_before = Instant::now() + delay;
                slot.not_before = not_before;
                self.wake_at(not_before);
                self.call_failed(CallKind::Receive, &err);
                return;
            }
        };
        // SQS started the messages' visibility timeout when it took them:
        // about when it answered, or, for a retry of an attempt whose answer
        // was lost, as early as that attempt.
        let taken = match (slot.attempt_retried, slot.attempt_sent) {
            (true, Some(first)) => first,
            _ => Instant::now(),
        };
        let expires = taken + visibility;
        slot.failures = 0;
        slot.new_attempt(slot_index);
        let workers_waiting = self.idle_workers() > self.router.ready_groups();
        let holding = !self.tracked.is_empty();
        self.receiving
            .pace
            .on_receive(output.deliveries.len(), workers_waiting, holding);
        self.call_succeeded(CallKind::Receive);
        for malformed in &output.malformed {
            self.counters.add_malformed();
            tracing::error!(
                "received a malformed message (id {}, group {}): {}; it is left to come back after its visibility timeout",
                malformed.message_id.as_deref().unwrap_or("missing"),
                malformed.group_id.as_deref().unwrap_or("missing"),
                malformed.reason
            );
        }
        if output.deliveries.is_empty() {
            self.check_empty();
        }
        for message in output.deliveries {
            self.track(message, expires);
        }
        // A receive retried after a lost answer may bring messages whose
        // lease is nearly over already.
        if expires.saturating_duration_since(Instant::now()) <= self.lease_margin() {
            self.give_up_expiring();
        }
    }

    /// Workers with no handler to run.
    fn idle_workers(&self) -> usize {
        self.config
            .workers
            .saturating_sub(self.workers.running.len())
    }

    pub(super) fn track(&mut self, received: Delivery, expires: Instant) {
        self.counters.add_received(1);
        let visibility = self.visibility();
        if let Some(&key) = self.by_message_id.get(&received.message_id) {
            let tracked = self.tracked.get_mut(&key).expect("indexed");
            let group = tracked.message.group_id.clone();
            if self.router.step(&group, key).is_some() {
                // Delivered again while in its lane: SQS let the lease lapse.
                // The new delivery takes the old one's place in the lane.
                self.counters.add_lost(1);
                let message = Arc::make_mut(&mut tracked.message);
                message.receipt_handle = received.receipt_handle;
                message.receive_count = received.receive_count;
                tracked.expires = expires;
                // A new lease: pinned again if it is still overtaken.
                tracked.received = expires - visibility;
                tracked.pinned = false;
                return;
            }
            // The old delivery had left its lane. Handed back: the hand-back
            // took effect though its answer was lost. Being given up: it ends
            // on its own. Either way the new delivery is a message of its
            // lane like any other, in its place before the later ones.
            if let State::Releasing(_) = tracked.state {
                self.counters.add_released(1);
                self.finish_release(key);
            } else {
                self.by_message_id.remove(&received.message_id);
            }
        }
        let key = self.next_key;
        self.next_key += 1;
        // The handler sees the text attributes (String and Number ones),
        // each with its type.
        let (mut attributes, mut attribute_types) = (BTreeMap::new(), BTreeMap::new());
        for (name, attribute) in &received.attributes {
            if let Some(text) = attribute.text() {
                attributes.insert(name.clone(), text.to_owned());
                attribute_types.insert(name.clone(), attribute.data_type.clone());
            }
        }
        let message = Message {
            id: received.message_id,
            group_id: received.group_id,
            body: received.body,
            receive_count: received.receive_count,
            sequence_number: received.sequence_number,
            sent_timestamp_ms: received.sent_timestamp_ms,
            first_received_ms: received.first_received_ms,
            deduplication_id: received.deduplication_id,
            trace_header: received.trace_header,
            sender_id: received.sender_id,
            attempt: 1,
            attributes,
            attribute_types,
            receipt_handle: received.receipt_handle,
        };
        message_event("received", &message, 0, None, None);
        self.by_message_id.insert(message.id.clone(), key);
        self.router.push(&message.group_id, key);
        self.tracked.insert(
            key,
            Tracked {
                message: Arc::new(message),
                attributes: received.attributes,
                expires,
                visibility_call: false,
                attempts: 0,
                waits: 0,
                received: expires - self.visibility(),
                overtaken: Overtaken::No,
                pinned: false,
                last_failure: None,
                blocked_since: None,
                release_after: Duration::ZERO,
                kill_ends: None,
                state: State::InLane,
                since: SystemTime::now(),
            },
        );
    }

    /// With `until_empty`: after an empty receive with nothing held, ask the
    /// queue whether anything is left anywhere (in flight elsewhere, delayed).
    pub(super) fn check_empty(&mut self) {
        if !self.config.until_empty
            || self.in_flight.checking_empty()
            || self.phase != Phase::Running
            || !self.tracked.is_empty()
            || !self.workers.running.is_empty()
        {
            return;
        }
        self.spawn_call(Pending::IsEmpty, calls::is_empty(self.queue.clone()));
    }
}

pub(super) fn new_attempt_id(poller: usize) -> String {
    format!("fifo-{poller}-{:016x}", fastrand::u64(..))
}
