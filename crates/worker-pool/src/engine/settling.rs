//! Settling held messages: a group's done messages deleted together, moves
//! to the dead-letter queue, and hand-backs of whole groups.

use std::collections::{BTreeMap, HashMap, VecDeque};

use fifo_handler::Handler;
use tokio::time::{Duration, Instant};

use super::in_flight::{CallKind, Pending};
use super::{BATCH, Engine, Overtaken, Phase, State, Tracked, message_event, pack};
use crate::calls::{self, Key};
use crate::queue::{
    DeadLetterCopy, DeadLetterReason, EntryFailure, Queue, QueueError, QueueErrorKind,
};

/// Delete calls in flight at once.
const DELETES_IN_FLIGHT: usize = 16;
/// How long a done message may wait for later messages of its group to
/// join its delete call while they still run: about one delete round trip
/// (what the delete would take anyway), within these bounds, and the
/// longest until deletes have been timed.
const DELETE_HOLD: (Duration, Duration) = (Duration::from_millis(2), Duration::from_millis(50));

/// The settling part of the engine: deletes and hand-backs waiting to be
/// sent or under way.
#[derive(Debug)]
pub(super) struct Settling {
    /// Messages to delete, in their groups' order, and since when each waits.
    deletes: VecDeque<(Key, Instant)>,
    /// Groups with a delete call under way, and how many of their messages
    /// are in one: a group's deletes go one call at a time, so that a
    /// partial failure is seen in one answer (see `on_deleted`).
    deleting_groups: HashMap<String, usize>,
    /// The group of each message in a delete call under way.
    pub(super) deleting_keys: HashMap<Key, String>,
    /// When the loop wakes for a delete's hold to end (see `flush_deletes`).
    delete_hold_wake: Option<Instant>,
    /// The backoff of deletes after a failed call: none before then.
    deletes_not_before: Instant,
    /// Lanes handed back, by id (ids grow in the order decided).
    pub(super) releases: HashMap<u64, Release>,
    /// The id the next release gets.
    next_release: u64,
    /// The backoff of hand-backs after a failed call: none before then.
    releases_not_before: Instant,
}

impl Settling {
    pub(super) fn new() -> Settling {
        let now = Instant::now();
        Settling {
            deletes: VecDeque::new(),
            deleting_groups: HashMap::new(),
            deleting_keys: HashMap::new(),
            delete_hold_wake: None,
            deletes_not_before: now,
            releases: HashMap::new(),
            next_release: 0,
            releases_not_before: now,
        }
    }

    /// Whether deletes wait to be sent.
    pub(super) fn deletes_waiting(&self) -> bool {
        !self.deletes.is_empty()
    }
}

/// A lane handed back: its messages go back to the queue in one call, in
/// order, so SQS makes them visible together.
#[derive(Debug)]
pub(super) struct Release {
    /// Its group.
    group: String,
    /// Its messages, in lane order.
    pub(super) keys: Vec<Key>,
    /// The visibility timeout the lane gets: at least 1 s (see
    /// `take_router_decisions`).
    seconds: u32,
    /// The call is under way (or done).
    pub(super) sent: bool,
}

impl<Q: Queue, H: Handler> Engine<Q, H> {
    /// Takes what the router decided: deletes and dead-letter moves in
    /// group order, lanes to hand back.
    pub(super) fn take_router_decisions(&mut self) {
        let now = Instant::now();
        while let Some(key) = self.router.pop_delete() {
            self.settling.deletes.push_back((key, now));
        }
        while let Some(key) = self.router.pop_dead_letter() {
            let wait = self.tracked[&key].kill_left();
            self.move_to_dead_letters(key, wait);
        }
        while let Some(keys) = self.router.pop_hand_back() {
            let seconds = keys
                .iter()
                .map(|key| self.release_seconds(key))
                .max()
                .unwrap_or(1);
            let group = self.tracked[&keys[0]].message.group_id.clone();
            // A later part of a group joins the part still waiting to go
            // back, so the group goes back in one piece and in order.
            let waiting = self
                .settling
                .releases
                .iter_mut()
                .find(|(_, r)| r.group == group && !r.sent);
            let id = match waiting {
                Some((id, release)) => {
                    release.keys.extend_from_slice(&keys);
                    release.seconds = release.seconds.max(seconds);
                    *id
                }
                None => {
                    let id = self.settling.next_release;
                    self.settling.next_release += 1;
                    let release = Release {
                        group,
                        keys: keys.clone(),
                        seconds,
                        sent: false,
                    };
                    self.settling.releases.insert(id, release);
                    id
                }
            };
            for key in &keys {
                self.tracked
                    .get_mut(key)
                    .expect("tracked")
                    .set_state(State::Releasing(id));
            }
        }
    }

    /// How long a message handed back stays invisible: its failure's
    /// backoff (or the delay its handler asked for), and long enough for a
    /// cut-off handler's process to have ended. At least one second: a lane
    /// made visible at once (visibility 0) becomes visible on LocalStack
    /// entry by entry, and a receive waiting meanwhile can be given the
    /// group twice — two processes then run one group at once. Messages
    /// whose timeout runs out are put back all together. On SQS a second
    /// changes nothing.
    fn release_seconds(&self, key: &Key) -> u32 {
        let tracked = &self.tracked[key];
        let seconds = tracked
            .release_after
            .max(tracked.kill_left())
            .as_secs_f64()
            .ceil() as u32;
        seconds.max(1)
    }

    /// Sends deletes, up to ten per call, a group's done messages together
    /// and each group in one call at a time. A full batch goes while fewer
    /// than `DELETES_IN_FLIGHT` calls are under way; a partial one only
    /// when none is, and only once one of its messages need not wait for
    /// company: its group has nothing left that could succeed soon (SQS
    /// hands out no more of a group until its whole delivery is deleted), it
    /// waited about a delete round trip (see [`DELETE_HOLD`]), or the run is
    /// stopping.
    pub(super) fn flush_deletes(&mut self) {
        let now = Instant::now();
        if self.settling.deletes_not_before > now {
            return;
        }
        // A message lost while waiting for its delete is not ours to delete.
        self.settling
            .deletes
            .retain(|(key, _)| self.tracked.contains_key(key));
        let mut next_hold: Option<Instant> = None;
        let hold = self.receiving.pace.fastest().map_or(DELETE_HOLD.1, |took| {
            took.clamp(DELETE_HOLD.0, DELETE_HOLD.1)
        });
        while self.in_flight.deletes() < DELETES_IN_FLIGHT {
            let mut batch: Vec<usize> = Vec::with_capacity(BATCH);
            let mut urgent = self.phase != Phase::Running;
            for (index, (key, since)) in self.settling.deletes.iter().enumerate() {
                let group = self.tracked[key].message.group_id.as_str();
                if self.settling.deleting_groups.contains_key(group) {
                    continue;
                }
                let held_until = *since + hold;
                if held_until <= now || !self.router.may_finish_more(group) {
                    urgent = true;
                } else {
                    next_hold = Some(next_hold.map_or(held_until, |at| at.min(held_until)));
                }
                batch.push(index);
                if batch.len() == BATCH {
                    break;
                }
            }
            let full = batch.len() == BATCH;
            let idle = !batch.is_empty() && urgent && self.in_flight.deletes() == 0;
            if !(full || idle) {
                break;
            }
            let mut keys = Vec::with_capacity(batch.len());
            for index in batch.into_iter().rev() {
                let (key, _) = self.settling.deletes.remove(index).expect("listed");
                keys.push(key);
            }
            keys.reverse();
            let mut handles = Vec::with_capacity(keys.len());
            for key in &keys {
                let tracked = &self.tracked[key];
                let group = tracked.message.group_id.clone();
                handles.push(tracked.message.receipt_handle.clone());
                *self
                    .settling
                    .deleting_groups
                    .entry(group.clone())
                    .or_default() += 1;
                self.settling.deleting_keys.insert(*key, group);
            }
            let call = calls::delete(self.queue.clone(), keys.clone(), handles);
            self.spawn_call(Pending::Delete(keys), call);
        }
        // One wake-up per hold, not one per loop turn.
        if let Some(at) = next_hold
            && self
                .settling
                .delete_hold_wake
                .is_none_or(|set| set <= now || set > at)
        {
            self.settling.delete_hold_wake = Some(at);
            self.wake_at(at);
        }
    }

    /// A delete call ended: its groups may send the next.
    pub(super) fn delete_call_ended(&mut self, keys: &[Key]) {
        for key in keys {
            if let Some(group) = self.settling.deleting_keys.remove(key)
                && let Some(count) = self.settling.deleting_groups.get_mut(&group)
            {
                *count -= 1;
                if *count == 0 {
                    self.settling.deleting_groups.remove(&group);
                }
            }
        }
    }

    /// Confirmed deletes leave; a message whose later messages of its group
    /// were deleted while its own entry failed is overtaken: it is kept
    /// held with its visibility at the most SQS allows (see `pin_overtaken`)
    /// and its delete is tried again; refused, it is an order risk.
    pub(super) fn on_deleted(
        &mut self,
        keys: Vec<Key>,
        result: Result<Vec<EntryFailure>, QueueError>,
    ) {
        // An entry may have been deleted without a message held for it now:
        // given up while its delete was under way (a heartbeat refused), or
        // in a call without an answer. The held messages of its group before
        // it are then overtaken: surely when SQS answered, maybe when not.
        let mut latest_deleted: HashMap<String, Key> = HashMap::new();
        for (index, key) in keys.iter().enumerate() {
            let maybe_deleted = match &result {
                Ok(failures) => {
                    !self.tracked.contains_key(key) && !failures.iter().any(|f| f.index == index)
                }
                Err(err) => err.kind() != QueueErrorKind::Refused,
            };
            if maybe_deleted && let Some(group) = self.settling.deleting_keys.get(key) {
                let latest = latest_deleted.entry(group.clone()).or_insert(*key);
                *latest = (*latest).max(*key);
            }
        }
        let level = if result.is_ok() {
            Overtaken::Surely
        } else {
            Overtaken::Maybe
        };
        let mut overtook = false;
        if !latest_deleted.is_empty() {
            for (key, tracked) in &mut self.tracked {
                if latest_deleted
                    .get(&tracked.message.group_id)
                    .is_some_and(|latest| key < latest)
                {
                    tracked.overtaken = tracked.overtaken.max(level);
                    overtook |= level == Overtaken::Surely;
                }
            }
        }
        self.delete_call_ended(&keys);
        let outcomes = self.sort_result(CallKind::Delete, &keys, result);
        for key in outcomes.done {
            let group = self.tracked[&key].message.group_id.clone();
            self.counters.add_deleted(1);
            self.untrack(key);
            for earlier in self.router.deleted(&group, key) {
                if let Some(tracked) = self.tracked.get_mut(&earlier) {
                    tracked.overtaken = Overtaken::Surely;
                    overtook = true;
                }
            }
        }
        for (key, reason) in outcomes.gone {
            self.lose(key, &format!("SQS refused to delete it: {reason}"));
        }
        // After the losses: a message given up is not pinned.
        if overtook {
            self.pin_overtaken();
        }
        if !outcomes.retry.is_empty() {
            // Tried again, first, when the backoff allows, without waiting
            // for company again.
            let now = Instant::now();
            let long_ago = now.checked_sub(DELETE_HOLD.1).unwrap_or(now);
            for key in outcomes.retry.iter().rev() {
                self.settling.deletes.push_front((*key, long_ago));
            }
            self.settling.deletes_not_before = now + self.retry_delay(CallKind::Delete);
            self.wake_at(self.settling.deletes_not_before);
        }
    }

    /// Sorts a batch call's result by entry: as SQS answered each; all
    /// given up when SQS refused the call itself as invalid; all to try
    /// again when it failed otherwise (SQS in trouble, or the queue gone).
    pub(super) fn sort_result(
        &mut self,
        kind: CallKind,
        keys: &[Key],
        result: Result<Vec<EntryFailure>, QueueError>,
    ) -> Outcomes {
        match result {
            Ok(failures) => {
                self.call_succeeded(kind);
                outcomes(keys, &failures, &self.tracked)
            }
            Err(err) if err.kind() == QueueErrorKind::Refused => Outcomes {
                gone: keys.iter().map(|key| (*key, err.to_string())).collect(),
                ..Outcomes::default()
            },
            Err(err) => {
                self.batch_failed(kind, err);
                Outcomes {
                    retry: keys
                        .iter()
                        .copied()
                        .filter(|k| self.tracked.contains_key(k))
                        .collect(),
                    ..Outcomes::default()
                }
            }
        }
    }

    /// Sends a copy to the dead-letter queue and deletes the original,
    /// after `delay` (a backoff when retrying).
    pub(super) fn move_to_dead_letters(&mut self, key: Key, delay: Duration) {
        let tracked = &self.tracked[&key];
        let why = tracked
            .last_failure
            .clone()
            .unwrap_or_else(|| DeadLetterReason {
                error: String::new(),
                status: None,
                attempts: tracked.attempts + 1,
                receive_count: tracked.message.receive_count,
                failed_at: std::time::SystemTime::now(),
            });
        let copy = DeadLetterCopy {
            body: tracked.message.body.clone(),
            group_id: tracked.message.group_id.clone(),
            dedup_id: tracked.message.id.clone(),
            attributes: tracked.attributes.clone(),
            why,
        };
        let queue = self.queue.clone();
        let receipt_handle = tracked.message.receipt_handle.clone();
        let call = async move {
            tokio::time::sleep(delay).await;
            calls::dead_letter(queue, key, receipt_handle, copy).await
        };
        self.spawn_call_after(Pending::DeadLetter(key), call, delay);
    }

    pub(super) fn on_dead_lettered(&mut self, key: Key, result: Result<(), QueueError>) {
        let Some(tracked) = self.tracked.get(&key) else {
            return;
        };
        let group = tracked.message.group_id.clone();
        match result {
            Ok(()) => {
                message_event(
                    "dead-lettered",
                    &tracked.message,
                    tracked.message.attempt,
                    None,
                    None,
                );
                self.call_succeeded(CallKind::DeadLetter);
                self.counters.add_dead_lettered();
                self.untrack(key);
                self.router.deleted(&group, key);
            }
            Err(err) if err.is_retryable() => {
                self.call_failed(CallKind::DeadLetter, &err);
                self.move_to_dead_letters(key, self.retry_delay(CallKind::DeadLetter));
            }
            Err(err) => {
                // SQS's own redrive moves it on a later receive instead.
                tracing::warn!(
                    "moving message {} of group {group} to the dead-letter queue failed ({err}); handing it back with the rest of its group",
                    tracked.message.id
                );
                self.router.delete_refused(&group, key);
            }
        }
    }

    /// Sends the hand-backs, each lane whole in one call where it fits, and
    /// none while a heartbeat for one of its messages is under way (it could
    /// land after the release and undo it).
    pub(super) fn send_releases(&mut self) {
        let now = Instant::now();
        if self.settling.releases_not_before > now {
            return;
        }
        // While stopping, a receive still under way could take a group
        // handed back and bring it back again (another delivery, one receive
        // closer to the dead-letter queue): the group waits, held, until the
        // receives have ended.
        if self.phase != Phase::Running && self.in_flight.receives() > 0 {
            return;
        }
        // One release of a group at a time, oldest first: two calls under way
        // could land in either order.
        let mut first_of_group: HashMap<&str, u64> = HashMap::new();
        for (id, release) in &self.settling.releases {
            let first = first_of_group.entry(&release.group).or_insert(*id);
            *first = (*first).min(*id);
        }
        let mut ready: Vec<(u64, u32, Vec<Key>)> = self
            .settling
            .releases
            .iter()
            .filter(|(id, r)| {
                !r.sent
                    && first_of_group[r.group.as_str()] == **id
                    && r.keys.iter().all(|k| !self.tracked[k].visibility_call)
            })
            .map(|(id, r)| (*id, r.seconds, r.keys.clone()))
            .collect();
        ready.sort_unstable_by_key(|(id, _, _)| *id);
        let mut lanes_by_seconds: BTreeMap<u32, Vec<Vec<Key>>> = BTreeMap::new();
        for (id, seconds, keys) in ready {
            self.settling.releases.get_mut(&id).expect("listed").sent = true;
            lanes_by_seconds.entry(seconds).or_default().push(keys);
        }
        for (seconds, lanes) in lanes_by_seconds {
            for batch in pack(lanes) {
                self.change_visibility(batch, seconds, true);
            }
        }
    }

    pub(super) fn on_released(
        &mut self,
        keys: Vec<Key>,
        result: Result<Vec<EntryFailure>, QueueError>,
    ) {
        for key in &keys {
            if let Some(tracked) = self.tracked.get_mut(key) {
                tracked.visibility_call = false;
            }
        }
        let outcomes = self.sort_result(CallKind::Visibility, &keys, result);
        for key in outcomes.done {
            self.counters.add_released(1);
            if let Some(tracked) = self.tracked.get(&key) {
                message_event(
                    "released",
                    &tracked.message,
                    tracked.message.attempt,
                    None,
                    None,
                );
            }
            self.finish_release(key);
        }
        for (key, reason) in outcomes.gone {
            if let Some(tracked) = self.tracked.get(&key) {
                tracing::warn!(
                    "handing message {} back failed ({reason}); it comes back when its visibility timeout ends",
                    tracked.message.id
                );
                self.counters.add_lost(1);
                self.finish_release(key);
            }
        }
        self.unsend_releases(&outcomes.retry);
    }

    pub(super) fn finish_release(&mut self, key: Key) {
        if let Some(State::Releasing(id)) = self.tracked.get(&key).map(|t| &t.state)
            && let Some(release) = self.settling.releases.get_mut(id)
        {
            release.keys.retain(|k| *k != key);
            if release.keys.is_empty() {
                let id = *id;
                self.settling.releases.remove(&id);
            }
        }
        self.untrack(key);
    }

    /// These messages' release is to be sent again after a backoff.
    pub(super) fn unsend_releases(&mut self, keys: &[Key]) {
        if keys.is_empty() {
            return;
        }
        for key in keys {
            if let Some(State::Releasing(id)) = self.tracked.get(key).map(|t| &t.state)
                && let Some(release) = self.settling.releases.get_mut(id)
            {
                release.sent = false;
            }
        }
        self.settling.releases_not_before = Instant::now() + self.retry_delay(CallKind::Visibility);
        self.wake_at(self.settling.releases_not_before);
    }
}

/// What a batch call's entries came to, for the messages still held.
#[derive(Debug, Default)]
pub(super) struct Outcomes {
    /// Done as asked.
    pub(super) done: Vec<Key>,
    /// SQS no longer accepts the receipt handle: the message is not ours.
    pub(super) gone: Vec<(Key, String)>,
    /// Worth trying again.
    pub(super) retry: Vec<Key>,
}

/// Sorts a batch's entries (`keys`, in the order sent) by their result,
/// leaving out messages no longer held.
pub(super) fn outcomes(
    keys: &[Key],
    failures: &[EntryFailure],
    held: &HashMap<Key, Tracked>,
) -> Outcomes {
    let mut sorted = Outcomes::default();
    for (index, key) in keys.iter().enumerate() {
        if !held.contains_key(key) {
            continue;
        }
        match failures.iter().find(|f| f.index == index) {
            None => sorted.done.push(*key),
            Some(failure) => {
                if failure.handle_gone {
                    sorted.gone.push((*key, failure.reason.clone()));
                } else {
                    sorted.retry.push(*key);
                }
            }
        }
    }
    sorted
}
