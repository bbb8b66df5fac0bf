//! Leases: extending every held message before its visibility timeout ends
//! (a group's messages together), and giving up what SQS would not let us
//! keep.

use std::collections::{BTreeMap, HashSet};

use fifo_handler::Handler;
use tokio::time::{Duration, Instant};

use super::in_flight::{CallKind, Pending};
use super::{AfterCancel, BATCH, Engine, Overtaken, Phase, State, Tracked, pack};
use crate::calls::{self, Key};
use crate::limits::MAX_INVISIBLE_SECONDS;
use crate::queue::{EntryFailure, Queue, QueueError};

/// SQS keeps a message invisible for at most this long after a receive.
const MAX_INVISIBLE: Duration = Duration::from_secs(MAX_INVISIBLE_SECONDS as u64);

impl<Q: Queue, H: Handler> Engine<Q, H> {
    /// Gives up messages whose lease is about to end without a confirmed
    /// extension, and extends every lane with a message due for it.
    pub(super) fn on_tick(&mut self) {
        self.notice_unanswered_calls();
        self.measure_oldest_held();
        self.measure_blocked();
        self.rates.forget_idle_groups();
        self.give_up_expiring();
        self.pin_overtaken();
        let now = Instant::now();
        let extend_at = self.visibility() * 2 / 3;

        // Past the shutdown deadline nothing is extended any more: whatever
        // is still held then (a delete or hand-back SQS keeps failing) is
        // given up when its lease ends, so shutdown is bounded.
        if self.phase == Phase::Abandoned {
            return;
        }
        let due: HashSet<&str> = self
            .tracked
            .values()
            .filter(|t| t.extendable() && t.expires.saturating_duration_since(now) <= extend_at)
            .map(|t| t.message.group_id.as_str())
            .collect();
        if due.is_empty() {
            return;
        }
        // Whole lanes together, in order, so a lane's messages share one
        // deadline: were they ever to expire, they would come back together.
        let mut lanes: BTreeMap<&str, Vec<Key>> = BTreeMap::new();
        for (key, t) in &self.tracked {
            if t.extendable() && due.contains(t.message.group_id.as_str()) {
                lanes
                    .entry(t.message.group_id.as_str())
                    .or_default()
                    .push(*key);
            }
        }
        let lanes: Vec<Vec<Key>> = lanes
            .into_values()
            .map(|mut keys| {
                keys.sort_unstable();
                keys
            })
            .collect();
        for batch in pack(lanes) {
            self.change_visibility(batch, self.config.visibility_timeout, false);
        }
    }

    /// A message whose lease ends within a sixth of the visibility timeout
    /// is given up: SQS may hand it to someone else soon, so it must not
    /// start, and a running handler must end before then.
    pub(super) fn give_up_expiring(&mut self) {
        let now = Instant::now();
        let mut at_risk: Vec<Key> = self
            .tracked
            .iter()
            .filter(|(_, t)| self.at_risk(t, now))
            .map(|(key, _)| *key)
            .collect();
        at_risk.sort_unstable();
        // An outage runs out many leases at once: one line for them all.
        let mut losses = Losses::default();
        for key in at_risk {
            self.lose_into(key, &mut losses);
        }
        losses.report("SQS confirmed no visibility extension before the lease ran out");
    }

    /// Whether a lease ends too soon to keep: past the shutdown deadline, an
    /// overtaken message's long one ends the wait for its delete too.
    pub(super) fn at_risk(&self, tracked: &Tracked, now: Instant) -> bool {
        tracked.expires.saturating_duration_since(now) <= self.lease_margin()
            || (tracked.pinned && self.phase == Phase::Abandoned)
    }

    /// Sets each overtaken message's visibility to the most SQS allows
    /// (12 hours from its receive, less a minute), ten to a call: while its
    /// delete is tried again, only a crash or an outage that long could let
    /// SQS replay it after the later messages already deleted. One that
    /// failed is tried again on the next tick.
    pub(super) fn pin_overtaken(&mut self) {
        let now = Instant::now();
        let mut due: Vec<(Key, u32)> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.overtaken == Overtaken::Surely && !t.pinned && !t.visibility_call)
            .filter_map(|(key, t)| {
                let left = (t.received + MAX_INVISIBLE)
                    .saturating_duration_since(now)
                    .saturating_sub(Duration::from_secs(60));
                let seconds = u32::try_from(left.as_secs()).unwrap_or(u32::MAX);
                (seconds > self.config.visibility_timeout).then_some((*key, seconds))
            })
            .collect();
        due.sort_unstable();
        for batch in due.chunks(BATCH) {
            let seconds = batch.iter().map(|(_, s)| *s).min().expect("a chunk");
            let keys = batch.iter().map(|(key, _)| *key).collect();
            self.change_visibility(keys, seconds, false);
        }
    }

    /// Sends one visibility change for up to ten messages: a heartbeat, or
    /// a hand-back (`release`).
    pub(super) fn change_visibility(&mut self, keys: Vec<Key>, seconds: u32, release: bool) {
        let mut handles = Vec::with_capacity(keys.len());
        for key in &keys {
            let tracked = self.tracked.get_mut(key).expect("tracked");
            tracked.visibility_call = true;
            handles.push(tracked.message.receipt_handle.clone());
        }
        let call =
            calls::change_visibility(self.queue.clone(), keys.clone(), handles, seconds, release);
        self.spawn_call(Pending::Visibility(keys), call);
    }

    pub(super) fn on_extended(
        &mut self,
        keys: Vec<Key>,
        seconds: u32,
        sent_at: Instant,
        result: Result<Vec<EntryFailure>, QueueError>,
    ) {
        for key in &keys {
            if let Some(tracked) = self.tracked.get_mut(key) {
                tracked.visibility_call = false;
            }
        }
        // Failed entries are tried again on a later tick, while the lease lasts.
        let outcomes = self.sort_result(CallKind::Visibility, &keys, result);
        self.counters.add_extended(
            outcomes.done.len() as u64,
            (outcomes.gone.len() + outcomes.retry.len()) as u64,
        );
        let expires = sent_at + Duration::from_secs(u64::from(seconds));
        for key in outcomes.done {
            let tracked = self.tracked.get_mut(&key).expect("held");
            tracked.expires = tracked.expires.max(expires);
            tracked.pinned |= seconds > self.config.visibility_timeout;
        }
        for (key, reason) in outcomes.gone {
            // An overtaken message's delete may have landed with its answer
            // lost: the delete tried again tells (SQS accepts it again with
            // the same handle), not this refusal.
            if let Some(tracked) = self.tracked.get_mut(&key)
                && tracked.overtaken != Overtaken::No
            {
                tracked.pinned = true;
                continue;
            }
            self.lose(key, &format!("SQS refused to extend it: {reason}"));
        }
    }

    /// How long ago the oldest message held was sent, for the metrics:
    /// measured on each tick, not on each event, since it looks at every
    /// held message.
    fn measure_oldest_held(&mut self) {
        let oldest = self
            .tracked
            .values()
            .map(|t| t.message.sent_timestamp_ms)
            .filter(|&ms| ms > 0)
            .min();
        let age = oldest.map_or(Duration::ZERO, |sent| {
            let sent = std::time::UNIX_EPOCH + Duration::from_millis(sent);
            std::time::SystemTime::now()
                .duration_since(sent)
                .unwrap_or(Duration::ZERO)
        });
        self.counters.set_oldest_held_age(age);
    }

    /// `key` is no longer ours, nor is anything after it in its lane: a
    /// running handler is cancelled; nothing is handed back (handing back
    /// later messages while SQS may still hold `key` would let them overtake).
    pub(super) fn lose(&mut self, key: Key, why: &str) {
        let mut losses = Losses::default();
        self.lose_into(key, &mut losses);
        losses.report(why);
    }

    /// [`Engine::lose`], counted into `losses` to be reported with others.
    fn lose_into(&mut self, key: Key, losses: &mut Losses) {
        // Lanes the router just decided to hand back become releases first,
        // so that a loss among them is seen as one.
        self.take_router_decisions();
        let Some(tracked) = self.tracked.get(&key) else {
            return;
        };
        let later = match tracked.state {
            State::Cancelling {
                then: AfterCancel::Lose,
                ..
            } => return,
            // A lane waiting to go back stays together: if one of its
            // messages is lost, so are the others (they share its lease, and
            // handing back only some would let them overtake it).
            State::Releasing(id) => match self.settling.releases.get(&id) {
                Some(release) if !release.sent => {
                    release.keys.iter().copied().filter(|k| *k != key).collect()
                }
                _ => Vec::new(),
            },
            _ => self.router.lost(&tracked.message.group_id, key),
        };
        let tracked = &self.tracked[&key];
        let group = tracked.message.group_id.clone();
        // A later message's delete already sent may land all the same.
        let later_deleting = later
            .iter()
            .any(|k| self.settling.deleting_keys.contains_key(k));
        if tracked.overtaken != Overtaken::No || later_deleting {
            self.counters.add_order_risk();
            tracing::error!(
                "order risk: message {} of group {group} is given up while later messages of its group were or may be deleted: SQS may deliver it again after them",
                tracked.message.id
            );
        }
        let running = [key]
            .iter()
            .chain(&later)
            .filter(|k| {
                matches!(
                    self.tracked.get(k).map(|t| &t.state),
                    Some(State::Running(_))
                )
            })
            .count();
        tracing::debug!(
            "lost message {} of group {group} and {} later messages of its group",
            tracked.message.id,
            later.len()
        );
        losses.groups += 1;
        losses.messages += 1 + later.len();
        losses.cancelled += running;
        losses
            .first
            .get_or_insert_with(|| (tracked.message.id.clone(), group, later.len()));
        for key in [key].into_iter().chain(later) {
            self.give_up(key);
        }
    }

    /// Stops holding a message that the router no longer has.
    pub(super) fn give_up(&mut self, key: Key) {
        let Some(tracked) = self.tracked.get(&key) else {
            return;
        };
        match tracked.state {
            State::Running(_) | State::Cancelling { .. } => self.cancel(key, AfterCancel::Lose),
            State::Releasing(_) => {
                self.finish_release(key);
                self.counters.add_lost(1);
            }
            State::InLane | State::BackingOff { .. } => {
                self.workers.retry_ready.retain(|k| *k != key);
                self.untrack(key);
                self.counters.add_lost(1);
            }
        }
    }

    pub(super) fn untrack(&mut self, key: Key) {
        if let Some(tracked) = self.tracked.remove(&key)
            && self.by_message_id.get(&tracked.message.id) == Some(&key)
        {
            self.by_message_id.remove(&tracked.message.id);
        }
    }
}

/// Messages given up together (one lost message and the later ones of its
/// group, per group), reported in one line.
#[derive(Debug, Default)]
struct Losses {
    /// Groups with a message lost.
    groups: usize,
    /// Messages given up, later ones of their groups included.
    messages: usize,
    /// Running handlers cancelled.
    cancelled: usize,
    /// The first group's message id, group and later messages, named when
    /// it is the only one.
    first: Option<(String, String, usize)>,
}

impl Losses {
    fn report(&self, why: &str) {
        let Some((id, group, later)) = &self.first else {
            return;
        };
        if self.groups == 1 {
            tracing::warn!(
                "lost message {id} of group {group}: {why}; it{} will be delivered again{}",
                if *later == 0 {
                    String::new()
                } else {
                    format!(" and {later} later messages of its group")
                },
                if self.cancelled > 0 {
                    "; its running handler was cancelled"
                } else {
                    ""
                }
            );
        } else {
            tracing::warn!(
                "lost messages of {} groups, {} messages in all: {why}; they will be delivered again; {} running handlers were cancelled (their ids at debug level)",
                self.groups,
                self.messages,
                self.cancelled
            );
        }
    }
}
