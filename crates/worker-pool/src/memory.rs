//! An in-memory queue that follows the SQS FIFO rules the engine relies on,
//! for fast tests and benchmarks of the engine alone: messages of a group
//! come in send order; while any message of a group is in flight the group
//! is locked; a message reappears when its visibility timeout ends; receive
//! counts grow per delivery; after `max_receive_count` deliveries a message
//! moves to the dead-letter list; each delivery gets a new receipt handle and
//! only the latest, unexpired one works; a receive retried with the same
//! `ReceiveRequestAttemptId` after its answer was lost returns the same
//! messages. Time is tokio's, so tests can pause and advance it.
//!
//! [`Faults`] make it misbehave the way a real endpoint does, drawn from a
//! seeded generator: calls that fail before or after they take effect,
//! throttling, delays, receipt handles it no longer accepts, entries of a
//! batch that fail alone, and LocalStack's lax group lock. As on SQS, a
//! visibility change past 12 hours from the receive is refused.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

use crate::queue::{
    DeadLetterCopy, DeadLetterReason, Delivery, EntryFailure, Queue, QueueError, QueueErrorKind,
    ReceiveRequest, Received,
};

/// One queue; clones share it. [`MemoryQueue::view`] gives another handle
/// on the same queue with faults of its own, like a second process behind
/// another network.
#[derive(Debug, Clone, Default)]
pub struct MemoryQueue {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    faults: Arc<Mutex<FaultState>>,
}

#[derive(Debug, Default)]
struct FaultState {
    faults: Faults,
    rng: Option<fastrand::Rng>,
}

/// The calls faults can be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Receives; a receive whose answer was lost leaves its messages in flight,
    /// and a retry with the same attempt id gets them.
    Receive,
    /// Deletes; once answers can be lost, deleting again with the same handle
    /// within a minute succeeds, as on SQS.
    Delete,
    /// Visibility changes: the engine's heartbeats and hand-backs.
    ChangeVisibility,
    /// Dead-letter moves; `stale_handles` does not apply to them.
    DeadLetter,
}

/// How a [`MemoryQueue`] misbehaves. Probabilities are per call (per entry
/// for `stale_handles`), from 0 to 1.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Seeds the generator, so a failing case can be replayed.
    pub seed: u64,
    /// A call fails before it reaches the queue: nothing happens.
    pub lost_requests: f64,
    /// A call takes effect but its answer is lost: the caller sees an error.
    pub lost_answers: f64,
    /// Of those failures, the share reported as throttling rather than as a
    /// network error.
    pub throttled: f64,
    /// A call waits up to `max_delay` before it takes effect.
    pub delayed: f64,
    /// The longest delay; each delayed call waits a random time up to it.
    pub max_delay: Duration,
    /// A delete or visibility entry is refused as if its receipt handle had
    /// expired: the message is left in flight, and comes back when its
    /// visibility ends, within the visibility timeout of its receive at
    /// most (SQS refuses a handle whose lease it counts as over).
    pub stale_handles: f64,
    /// A delete entry fails on its own, as SQS's internal errors do, while
    /// the others of its batch take effect; nothing happens to its message,
    /// and trying again may succeed.
    pub failed_entries: f64,
    /// Only these calls misbehave (all when empty).
    pub calls: Vec<Call>,
    /// LocalStack's group lock: a message of a group becoming visible again
    /// unlocks the group while later ones are still in flight, and a
    /// receive then takes the group's visible messages past those in flight.
    /// A property of the queue, set when it is made.
    pub lax_group_lock: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Every group ever sent to; `group_index` finds one by name.
    groups: Vec<Group>,
    group_index: HashMap<String, usize>,
    /// Where the next receive starts looking, so groups are served round-robin.
    next_group: usize,
    /// Current receipt handle → (group index, sequence).
    handles: HashMap<String, (usize, u64)>,
    dead_letters: Vec<Stored>,
    /// The reasons the engine gave for its dead-letter moves, in order.
    dead_letter_reasons: Vec<DeadLetterReason>,
    /// Bodies deleted, and when (unless `no_history`).
    deletions: Vec<(String, Instant)>,
    deleted: u64,
    /// Long runs (a soak) keep only counts, so memory stays flat.
    no_history: bool,
    /// Whether answers can be lost, so that deletes may be retried.
    answers_lost: bool,
    /// The receipt handles of messages deleted in the last minute: deleting
    /// again with one succeeds, as it does on SQS (a retry after a lost
    /// answer). Oldest first, for pruning.
    deleted_handles: HashMap<String, Instant>,
    deleted_order: VecDeque<(Instant, String)>,
    /// Receives whose answer was lost, by attempt id: a retry with the same
    /// id within a minute gets the same messages.
    lost_answers: HashMap<String, (Instant, Vec<Delivery>)>,
    next_sequence: u64,
    undeleted: usize,
    max_receive_count: Option<u32>,
    visibility_timeout: u32,
    lax_group_lock: bool,
}

/// How long the queue remembers deleted receipt handles and lost answers.
const MEMORY: Duration = Duration::from_secs(60);

impl State {
    fn remember_deleted(&mut self, handle: &str, now: Instant) {
        while let Some((at, old)) = self.deleted_order.front() {
            if now - *at < MEMORY {
                break;
            }
            self.deleted_handles.remove(old);
            self.deleted_order.pop_front();
        }
        self.deleted_handles.insert(handle.to_owned(), now);
        self.deleted_order.push_back((now, handle.to_owned()));
    }
}

#[derive(Debug, Default)]
struct Group {
    name: String,
    /// Undeleted messages in send order.
    messages: VecDeque<Stored>,
    /// Strict: until when the group is locked. Lax: when it may unlock next.
    locked_until: Option<Instant>,
    /// Lax: when a receive last took messages of the group.
    taken_at: Option<Instant>,
}

impl Group {
    fn relock(&mut self, lax: bool, now: Instant) {
        self.locked_until = if lax {
            self.messages
                .iter()
                .filter(|m| m.receipt_handle.is_some() && m.visible_at > now)
                .map(|m| m.visible_at)
                .min()
        } else {
            // Strict: the delivered messages are the group's first ones.
            self.messages
                .iter()
                .take_while(|m| m.receipt_handle.is_some())
                .map(|m| m.visible_at)
                .max()
        };
    }

    /// Strict (SQS): locked while any delivered message is in flight (the
    /// delivered messages always form a prefix). Lax (LocalStack): a
    /// receive locks the group; a delivered message becoming visible again
    /// (handed back, or its timeout over) unlocks it while the others are
    /// still in flight.
    fn is_locked(&self, lax: bool, now: Instant) -> bool {
        if !lax {
            return self.locked_until.is_some_and(|until| until > now);
        }
        let mut in_flight = false;
        for message in self.messages.iter().filter(|m| m.receipt_handle.is_some()) {
            if message.visible_at > now {
                in_flight = true;
            } else if self.taken_at.is_none_or(|taken| message.visible_at > taken) {
                return false;
            }
        }
        in_flight
    }
}

#[derive(Debug, Clone)]
struct Stored {
    id: String,
    body: String,
    sequence: u64,
    receive_count: u32,
    /// Some while delivered and not yet deleted.
    receipt_handle: Option<String>,
    visible_at: Instant,
    /// When its latest delivery was taken, and its visibility timeout then.
    taken_at: Instant,
    lease: Duration,
}

impl Stored {
    fn in_flight(&self, now: Instant) -> bool {
        self.receipt_handle.is_some() && self.visible_at > now
    }
}

/// Why an entry of a batch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The receipt handle is not the message's latest, or its lease ended.
    Stale,
    /// An injected failure of the entry alone.
    Failed,
    /// Visibility past 12 hours from the receive.
    TooLong,
}

impl Refusal {
    fn reason(self, handle: &str) -> String {
        match self {
            Refusal::Stale => format!("receipt handle {handle} is stale or expired"),
            Refusal::Failed => "injected internal error".to_owned(),
            Refusal::TooLong => "visibility timeout past 12 hours from the receive".to_owned(),
        }
    }
}

/// What the fault generator decided for one call.
struct Roll {
    delay: Duration,
    lose_request: bool,
    lose_answer: bool,
    error: QueueError,
}

impl MemoryQueue {
    /// A queue with a 30 s default visibility timeout and no redrive.
    pub fn new() -> MemoryQueue {
        MemoryQueue::with_redrive(None)
    }

    /// A queue that moves a message to its dead-letter list on the receive
    /// after its `max_receive_count`-th.
    pub fn with_redrive(max_receive_count: Option<u32>) -> MemoryQueue {
        MemoryQueue::with_faults(max_receive_count, Faults::default())
    }

    /// A queue that misbehaves as `faults` say.
    pub fn with_faults(max_receive_count: Option<u32>, faults: Faults) -> MemoryQueue {
        let queue = MemoryQueue::default();
        {
            let mut state = queue.lock();
            state.max_receive_count = max_receive_count;
            state.visibility_timeout = 30;
            state.lax_group_lock = faults.lax_group_lock;
        }
        queue.set_faults(faults);
        queue
    }

    /// From now on this handle (and its clones) misbehave as `faults` say;
    /// the group lock stays as the queue was made.
    pub fn set_faults(&self, faults: Faults) {
        if faults.lost_answers > 0.0 {
            self.lock().answers_lost = true;
        }
        let mut state = self
            .faults
            .lock()
            .expect("no panics while the lock is held");
        state.rng = Some(fastrand::Rng::with_seed(faults.seed));
        state.faults = faults;
    }

    /// Another handle on the same queue, misbehaving as `faults` say.
    pub fn view(&self, faults: Faults) -> MemoryQueue {
        let view = MemoryQueue {
            faults: Arc::default(),
            ..self.clone()
        };
        view.set_faults(faults);
        view
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("no panics while the lock is held")
    }

    /// Sends `body` to the end of group `group_id`, visible at once (no delay
    /// and no de-duplication: the same body twice is two messages).
    pub fn send(&self, group_id: &str, body: &str) {
        let mut state = self.lock();
        state.next_sequence += 1;
        state.undeleted += 1;
        let sequence = state.next_sequence;
        let message = Stored {
            id: format!("m-{sequence}"),
            body: body.to_owned(),
            sequence,
            receive_count: 0,
            receipt_handle: None,
            visible_at: Instant::now(),
            taken_at: Instant::now(),
            lease: Duration::ZERO,
        };
        let index = match state.group_index.get(group_id) {
            Some(index) => *index,
            None => {
                state.groups.push(Group {
                    name: group_id.to_owned(),
                    ..Group::default()
                });
                let index = state.groups.len() - 1;
                state.group_index.insert(group_id.to_owned(), index);
                index
            }
        };
        state.groups[index].messages.push_back(message);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Messages not deleted (visible or in flight).
    pub fn undeleted(&self) -> usize {
        self.lock().undeleted
    }

    /// Bodies moved to the dead-letter list, in the order they moved.
    pub fn dead_letters(&self) -> Vec<String> {
        self.lock()
            .dead_letters
            .iter()
            .map(|m| m.body.clone())
            .collect()
    }

    /// Why the engine moved each message it moved to the dead-letter
    /// queue, in order (the queue's own redrive gives none).
    pub fn dead_letter_reasons(&self) -> Vec<DeadLetterReason> {
        self.lock().dead_letter_reasons.clone()
    }

    /// Bodies deleted, and when, in the order they were.
    pub fn deletions(&self) -> Vec<(String, Instant)> {
        self.lock().deletions.clone()
    }

    /// How many messages were deleted (history or not).
    pub fn deleted(&self) -> u64 {
        self.lock().deleted
    }

    /// Keeps counts only, not the bodies deleted, so a long run's memory
    /// stays flat.
    pub fn without_history(self) -> MemoryQueue {
        self.lock().no_history = true;
        self
    }

    /// Takes what one receive returns now: runs of visible messages from
    /// unlocked groups, visiting groups round-robin.
    fn take(&self, options: &ReceiveRequest, now: Instant) -> Vec<Delivery> {
        let mut state = self.lock();
        let state = &mut *state;
        let lax = state.lax_group_lock;
        let visibility = Duration::from_secs(u64::from(
            options
                .visibility_timeout
                .unwrap_or(state.visibility_timeout),
        ));
        let wanted = options.max_messages as usize;
        let mut taken = Vec::new();
        let count = state.groups.len();
        let start = state.next_group;
        for step in 0..count {
            if taken.len() == wanted {
                break;
            }
            let group_index = (start + step) % count;
            let entry = &mut state.groups[group_index];
            if entry.messages.is_empty() || entry.is_locked(lax, now) {
                continue;
            }
            state.next_group = (group_index + 1) % count;
            let name = &entry.name;
            let group = &mut entry.messages;
            let mut index = 0;
            while taken.len() < wanted && index < group.len() {
                if group[index].visible_at > now {
                    // Strict: a later message never passes an invisible
                    // earlier one. Lax: it does.
                    if lax {
                        index += 1;
                        continue;
                    }
                    break;
                }
                let exhausted = state
                    .max_receive_count
                    .is_some_and(|max| group[index].receive_count >= max);
                if exhausted {
                    let moved = group.remove(index).expect("in range");
                    if let Some(handle) = &moved.receipt_handle {
                        state.handles.remove(handle);
                    }
                    state.undeleted -= 1;
                    state.dead_letters.push(moved);
                    continue;
                }
                let message = &mut group[index];
                message.receive_count += 1;
                let handle = format!("{}#{}", message.id, message.receive_count);
                if let Some(old) = message.receipt_handle.replace(handle.clone()) {
                    state.handles.remove(&old);
                }
                state
                    .handles
                    .insert(handle.clone(), (group_index, message.sequence));
                message.visible_at = now + visibility;
                message.taken_at = now;
                message.lease = visibility;
                taken.push(Delivery {
                    message_id: message.id.clone(),
                    receipt_handle: handle,
                    body: message.body.clone(),
                    group_id: name.clone(),
                    sequence_number: format!("{:020}", message.sequence),
                    receive_count: message.receive_count,
                    sent_timestamp_ms: 0,
                    first_received_ms: 0,
                    deduplication_id: None,
                    trace_header: None,
                    sender_id: None,
                    attributes: Default::default(),
                });
                index += 1;
            }
            if lax {
                entry.taken_at = Some(now);
            }
            entry.relock(lax, now);
        }
        taken
    }

    /// When the next invisible message becomes visible again.
    fn next_visible_at(&self, now: Instant) -> Option<Instant> {
        self.lock()
            .groups
            .iter()
            .filter_map(|group| group.locked_until)
            .filter(|at| *at > now)
            .min()
    }

    /// Removes the in-flight message with this receipt handle from its group,
    /// or sets its visibility; stale or expired handles fail.
    fn apply(
        &self,
        handle: &str,
        visibility: Option<u32>,
        now: Instant,
    ) -> Result<Option<Stored>, Refusal> {
        let mut state = self.lock();
        let state = &mut *state;
        let lax = state.lax_group_lock;
        let stale = || Refusal::Stale;
        if visibility.is_none() && state.deleted_handles.contains_key(handle) {
            return Ok(None);
        }
        let (group_index, sequence) = *state.handles.get(handle).ok_or_else(stale)?;
        let entry = &mut state.groups[group_index];
        let group = &mut entry.messages;
        let position = group
            .iter()
            .position(|m| m.sequence == sequence)
            .ok_or_else(stale)?;
        if !group[position].in_flight(now) {
            return Err(stale());
        }
        match visibility {
            Some(seconds) => {
                let visible_at = now + Duration::from_secs(u64::from(seconds));
                if visible_at
                    > group[position].taken_at
                        + Duration::from_secs(u64::from(crate::limits::MAX_INVISIBLE_SECONDS))
                {
                    return Err(Refusal::TooLong);
                }
                group[position].visible_at = visible_at;
                entry.relock(lax, now);
                Ok(None)
            }
            None => {
                let removed = group.remove(position).expect("found");
                entry.relock(lax, now);
                state.handles.remove(handle);
                if state.answers_lost {
                    state.remember_deleted(handle, now);
                }
                state.undeleted -= 1;
                state.deleted += 1;
                if !state.no_history {
                    state.deletions.push((removed.body.clone(), now));
                }
                Ok(Some(removed))
            }
        }
    }

    /// A refused handle's lease is over for SQS: its message comes back
    /// within one visibility timeout of its receive from now.
    fn lease_over(&self, handle: &str, now: Instant) {
        let mut state = self.lock();
        let lax = state.lax_group_lock;
        let Some(&(group_index, sequence)) = state.handles.get(handle) else {
            return;
        };
        // Refused once, refused for good, as on SQS.
        state.handles.remove(handle);
        let group = &mut state.groups[group_index];
        if let Some(message) = group.messages.iter_mut().find(|m| m.sequence == sequence) {
            message.visible_at = message.visible_at.min(now + message.lease);
            group.relock(lax, now);
        }
    }

    fn apply_all(&self, call: Call, entries: &[(&str, Option<u32>)]) -> Vec<EntryFailure> {
        let now = Instant::now();
        tracing::trace!("memory queue: {call:?} {entries:?}");
        let failures = entries
            .iter()
            .enumerate()
            .filter_map(|(index, (handle, visibility))| {
                let refusal = if self.chance(call, |f| f.stale_handles) {
                    self.lease_over(handle, now);
                    Refusal::Stale
                } else if call == Call::Delete && self.chance(call, |f| f.failed_entries) {
                    Refusal::Failed
                } else {
                    self.apply(handle, *visibility, now).err()?
                };
                Some(EntryFailure {
                    index,
                    handle_gone: refusal == Refusal::Stale,
                    reason: refusal.reason(handle),
                })
            })
            .collect();
        self.changed.notify_waiters();
        failures
    }

    fn chance(&self, call: Call, probability: impl Fn(&Faults) -> f64) -> bool {
        let mut state = self
            .faults
            .lock()
            .expect("no panics while the lock is held");
        let FaultState { faults, rng } = &mut *state;
        let p = probability(faults);
        let applies = faults.calls.is_empty() || faults.calls.contains(&call);
        applies && p > 0.0 && rng.as_mut().is_some_and(|rng| rng.f64() < p)
    }

    /// Draws what goes wrong with one call.
    fn roll(&self, call: Call) -> Roll {
        let mut state = self
            .faults
            .lock()
            .expect("no panics while the lock is held");
        let FaultState { faults, rng } = &mut *state;
        let fine = Roll {
            delay: Duration::ZERO,
            lose_request: false,
            lose_answer: false,
            error: injected(false),
        };
        let Some(rng) = rng.as_mut() else {
            return fine;
        };
        if !(faults.calls.is_empty() || faults.calls.contains(&call)) {
            return fine;
        }
        let delay = if rng.f64() < faults.delayed {
            faults.max_delay.mul_f64(rng.f64())
        } else {
            Duration::ZERO
        };
        Roll {
            delay,
            lose_request: rng.f64() < faults.lost_requests,
            lose_answer: rng.f64() < faults.lost_answers,
            error: injected(rng.f64() < faults.throttled),
        }
    }

    /// Runs one call under the faults: delayed, lost before it takes
    /// effect, or with its answer lost after.
    async fn faulty<T>(
        &self,
        kind: Call,
        call: impl AsyncFnOnce() -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        let roll = self.roll(kind);
        if !roll.delay.is_zero() {
            tokio::time::sleep(roll.delay).await;
        }
        if roll.lose_request {
            return Err(roll.error);
        }
        let result = call().await;
        if roll.lose_answer {
            return Err(roll.error);
        }
        result
    }

    async fn receive_now(&self, options: &ReceiveRequest) -> Vec<Delivery> {
        if let Some(id) = &options.attempt_id {
            let replay = self.lock().lost_answers.remove(id);
            if let Some((_, messages)) = replay {
                let state = self.lock();
                let now = Instant::now();
                let still_ours: Vec<Delivery> = messages
                    .into_iter()
                    .filter(|m| state.handles.contains_key(&m.receipt_handle))
                    .filter(|m| {
                        let (group, sequence) = state.handles[&m.receipt_handle];
                        state.groups[group]
                            .messages
                            .iter()
                            .any(|s| s.sequence == sequence && s.in_flight(now))
                    })
                    .collect();
                if !still_ours.is_empty() {
                    return still_ours;
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(u64::from(options.wait_seconds));
        loop {
            // Register for a wake-up before looking, so no change is missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let taken = self.take(options, now);
            if !taken.is_empty() || now >= deadline {
                return taken;
            }
            let wake = self
                .next_visible_at(now)
                .map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

fn injected(throttled: bool) -> QueueError {
    if throttled {
        QueueError::new(QueueErrorKind::Busy, "injected throttling")
    } else {
        QueueError::new(QueueErrorKind::Unreachable, "injected network failure")
    }
}

impl Queue for MemoryQueue {
    async fn receive(&self, options: &ReceiveRequest) -> Result<Received, QueueError> {
        let roll = self.roll(Call::Receive);
        if !roll.delay.is_zero() {
            tokio::time::sleep(roll.delay).await;
        }
        if roll.lose_request {
            return Err(roll.error);
        }
        let messages = self.receive_now(options).await;
        if !messages.is_empty() {
            let handles: Vec<&str> = messages.iter().map(|m| m.receipt_handle.as_str()).collect();
            tracing::trace!(
                lost = roll.lose_answer,
                "memory queue: delivered {handles:?}"
            );
        }
        if roll.lose_answer {
            if let Some(id) = &options.attempt_id {
                let mut state = self.lock();
                let now = Instant::now();
                state.lost_answers.retain(|_, (at, _)| now - *at < MEMORY);
                state.lost_answers.insert(id.clone(), (now, messages));
            }
            return Err(roll.error);
        }
        Ok(Received {
            deliveries: messages,
            malformed: Vec::new(),
        })
    }

    async fn delete(&self, receipt_handles: &[&str]) -> Result<Vec<EntryFailure>, QueueError> {
        self.faulty(Call::Delete, async || {
            let entries: Vec<_> = receipt_handles.iter().map(|h| (*h, None)).collect();
            Ok(self.apply_all(Call::Delete, &entries))
        })
        .await
    }

    async fn change_visibility(
        &self,
        entries: &[(&str, u32)],
    ) -> Result<Vec<EntryFailure>, QueueError> {
        self.faulty(Call::ChangeVisibility, async || {
            let entries: Vec<_> = entries.iter().map(|(h, s)| (*h, Some(*s))).collect();
            Ok(self.apply_all(Call::ChangeVisibility, &entries))
        })
        .await
    }

    async fn dead_letter(
        &self,
        receipt_handle: &str,
        copy: &DeadLetterCopy,
    ) -> Result<(), QueueError> {
        self.faulty(Call::DeadLetter, async || {
            let moved = self
                .apply(receipt_handle, None, Instant::now())
                .map_err(|refusal| {
                    QueueError::new(QueueErrorKind::Refused, refusal.reason(receipt_handle))
                })?;
            let mut state = self.lock();
            if let Some(moved) = moved {
                // A dead-letter move is not a delete of a handled message.
                if !state.no_history {
                    state.deletions.pop();
                }
                state.deleted -= 1;
                state.dead_letters.push(moved);
                state.dead_letter_reasons.push(copy.why.clone());
            }
            drop(state);
            self.changed.notify_waiters();
            Ok(())
        })
        .await
    }

    async fn is_empty(&self) -> Result<bool, QueueError> {
        Ok(self.undeleted() == 0)
    }

    fn max_receive_count(&self) -> Option<u32> {
        self.lock().max_receive_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(max: u32, wait: u32) -> ReceiveRequest {
        ReceiveRequest {
            max_messages: max,
            wait_seconds: wait,
            visibility_timeout: Some(10),
            attempt_id: None,
        }
    }

    fn bodies(messages: &[Delivery]) -> Vec<&str> {
        messages.iter().map(|m| m.body.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_is_locked_while_one_of_its_messages_is_in_flight() {
        let queue = MemoryQueue::new();
        for body in ["a1", "a2", "b1"] {
            queue.send(&body[..1], body);
        }
        let first = queue.receive(&options(1, 0)).await.unwrap().deliveries;
        assert_eq!(bodies(&first), ["a1"]);
        let second = queue.receive(&options(10, 0)).await.unwrap().deliveries;
        assert_eq!(bodies(&second), ["b1"], "group a is locked");
        queue.delete(&[&first[0].receipt_handle]).await.unwrap();
        let third = queue.receive(&options(10, 0)).await.unwrap().deliveries;
        assert_eq!(bodies(&third), ["a2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn messages_reappear_after_their_visibility_timeout_with_a_new_handle() {
        let queue = MemoryQueue::new();
        queue.send("g", "x");
        let first = queue.receive(&options(10, 0)).await.unwrap().deliveries;
        let started = Instant::now();
        let again = queue.receive(&options(10, 20)).await.unwrap().deliveries;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(10),
            "long poll woke at visibility"
        );
        assert_eq!(again[0].receive_count, 2);
        let stale = queue.delete(&[&first[0].receipt_handle]).await.unwrap();
        assert_eq!(stale.len(), 1, "an old receipt handle fails");
        assert!(
            queue
                .delete(&[&again[0].receipt_handle])
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(queue.undeleted(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn redrive_moves_a_message_after_max_receives_and_the_group_continues() {
        let queue = MemoryQueue::with_redrive(Some(2));
        queue.send("g", "poison");
        queue.send("g", "next");
        for _ in 0..2 {
            let got = queue.receive(&options(1, 0)).await.unwrap().deliveries;
            assert_eq!(bodies(&got), ["poison"]);
            queue
                .change_visibility(&[(&got[0].receipt_handle, 0)])
                .await
                .unwrap();
        }
        let got = queue.receive(&options(10, 0)).await.unwrap().deliveries;
        assert_eq!(bodies(&got), ["next"]);
        assert_eq!(queue.dead_letters(), ["poison"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_poll_wakes_when_a_message_arrives() {
        let queue = MemoryQueue::new();
        let sender = queue.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            sender.send("g", "late");
        });
        let started = Instant::now();
        let got = queue.receive(&options(10, 20)).await.unwrap().deliveries;
        assert_eq!(bodies(&got), ["late"]);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
