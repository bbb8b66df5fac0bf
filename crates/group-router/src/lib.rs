//! Per-group lanes and the order rules of fifo, as pure data structures with
//! no I/O and no clock: which held message may run next, which may be
//! deleted, and what to hand back to the queue, and when. Everything
//! ordering-related lives here so it can be tested exhaustively without a
//! queue.
//!
//! A lane holds one group's held messages in arrival order (the group's
//! order). Each message is at one [`Step`]: queued, out (its handler runs or
//! backs off between retries), done (succeeded, waiting for its delete),
//! deleting, to be moved to the dead-letter queue, being moved, or to be
//! handed back. The rules:
//!
//! - **Run in order**: a lane hands out its first queued message only when
//!   every message before it is done or deleting and nothing is out, so a
//!   handler starts only after every earlier message of its group succeeded.
//!   A batch is that message and queued ones right after it, handed out
//!   together; those its handler did not reach are put back in place.
//! - **Delete together, from the front**: a lane's done messages become
//!   deletable together once every message before them is deleted or being
//!   deleted, so a group's done messages leave in one batch call instead of
//!   one round trip each. A confirmed delete may overtake an earlier one
//!   still under way; [`Router::deleted`] names the earlier messages so
//!   overtaken, for the engine to keep them held until their own delete is
//!   confirmed (see the order risk in the README).
//! - **Dead letters alone, at the front**: a message to be moved to the
//!   dead-letter queue moves only as its lane's first message, and nothing
//!   after it is deleted until it is gone, so a move that fails for good can
//!   still hand the lane back whole.
//! - **Hand back whole**: after a failure (or at shutdown) the failed message
//!   and every later one are handed back together, and only once every
//!   message before them is deleted and nothing of the lane is out. Handing
//!   back part of a group would let SQS deliver a later message while an
//!   earlier one is still held.
//! - **Lost means the rest is lost too**: a message whose lease ended is no
//!   longer ours; neither are the later messages of its lane, which must not
//!   run or be deleted before it.
//!
//! The engine reads the consequences from [`Router::pop_delete`] and
//! [`Router::pop_hand_back`]; [`Router::take_next`] serves ready lanes
//! round-robin, so every ready lane is eventually served.
#![warn(missing_docs)]

use std::collections::{HashMap, VecDeque};

/// Where one held message stands in its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Waiting to be handed out: just received, or put back from a batch
    /// that did not reach it.
    Queued,
    /// Handed out: its handler runs, or backs off before a retry.
    Out,
    /// Succeeded; waits until every earlier message is deleted or deleting.
    Done,
    /// Its delete is under way.
    Deleting,
    /// Failed for good on its last receive (or was rejected): moves to the
    /// dead-letter queue once it is its lane's first message. Its lane goes
    /// on meanwhile, as after a success.
    DeadLetter,
    /// Its move to the dead-letter queue is under way.
    DeadLettering,
    /// To be handed back to the queue with the rest of its lane.
    HandBack,
}

/// The lanes of every group with held messages.
#[derive(Debug)]
pub struct Router<K> {
    lanes: HashMap<String, Lane<K>>,
    /// Groups whose lane may be runnable, in the order they became so.
    /// Entries can be stale; `take_next` checks.
    ready: VecDeque<String>,
    /// Messages that became deletable, in the order they did.
    deletes: VecDeque<K>,
    /// Messages whose move to the dead-letter queue may start, in order.
    dead_letters: VecDeque<K>,
    /// Lanes that became ready to hand back, each in the group's order.
    hand_backs: VecDeque<Vec<K>>,
    /// After `stop`, nothing runs any more and new messages are handed back.
    stopped: bool,
    queued: usize,
    /// Lanes with a message out (one, or a batch).
    out: usize,
}

#[derive(Debug)]
struct Lane<K> {
    messages: VecDeque<(K, Step)>,
    /// Whether the group is in `ready`.
    in_ready: bool,
}

impl<K> Lane<K> {
    fn position(&self, step: Step) -> Option<usize> {
        self.messages.iter().position(|(_, s)| *s == step)
    }

    /// The first message that has not succeeded (nor been given up to the
    /// dead-letter queue).
    fn current(&self) -> Option<usize> {
        self.messages.iter().position(|(_, s)| !settled(*s))
    }

    fn runnable(&self) -> bool {
        self.current()
            .is_some_and(|i| self.messages[i].1 == Step::Queued)
    }

    /// Every message after `index` is handed back with it; an out message
    /// among them follows when its handler ends. Returns how many queued
    /// messages that took.
    fn doom_after(&mut self, index: usize) -> usize {
        let mut unqueued = 0;
        for (_, step) in self.messages.iter_mut().skip(index + 1) {
            match step {
                Step::Queued => {
                    unqueued += 1;
                    *step = Step::HandBack;
                }
                Step::Done | Step::DeadLetter => *step = Step::HandBack,
                Step::Out | Step::Deleting | Step::DeadLettering | Step::HandBack => {}
            }
        }
        unqueued
    }
}

/// Whether a message at `step` is through with its handler for good: the
/// messages after it may run.
fn settled(step: Step) -> bool {
    matches!(
        step,
        Step::Done | Step::Deleting | Step::DeadLetter | Step::DeadLettering
    )
}

/// `key`'s lane and position, if it is at `step` there. Outcomes for
/// anything else are stale (the message was lost meanwhile) and ignored.
fn find<'a, K: Eq>(
    lanes: &'a mut HashMap<String, Lane<K>>,
    group: &str,
    key: K,
    step: Step,
) -> Option<(&'a mut Lane<K>, usize)> {
    let lane = lanes.get_mut(group)?;
    let index = lane.messages.iter().position(|(k, _)| *k == key)?;
    (lane.messages[index].1 == step).then_some((lane, index))
}

impl<K> Default for Router<K> {
    fn default() -> Self {
        Router {
            lanes: HashMap::new(),
            ready: VecDeque::new(),
            deletes: VecDeque::new(),
            dead_letters: VecDeque::new(),
            hand_backs: VecDeque::new(),
            stopped: false,
            queued: 0,
            out: 0,
        }
    }
}

impl<K: Copy + Eq> Router<K> {
    /// An empty router: no lanes, and not stopped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a received message to its group's lane. Messages of one group
    /// must be pushed in the group's order (SQS hands them out so). After
    /// `stop`, or behind a message to be handed back, it is handed back too.
    pub fn push(&mut self, group: &str, key: K) {
        let stopped = self.stopped;
        let lane = self.lanes.entry(group.to_owned()).or_insert_with(|| Lane {
            messages: VecDeque::new(),
            in_ready: false,
        });
        let doomed = stopped || lane.position(Step::HandBack).is_some();
        let step = if doomed { Step::HandBack } else { Step::Queued };
        if step == Step::Queued {
            self.queued += 1;
        }
        lane.messages.push_back((key, step));
        self.settle(group);
    }

    /// Hands out the first queued message of the next runnable lane; its
    /// lane is busy until [`Router::finished`] or [`Router::failed`].
    pub fn take_next(&mut self) -> Option<(String, K)> {
        if self.stopped {
            return None;
        }
        while let Some(group) = self.ready.pop_front() {
            let Some(lane) = self.lanes.get_mut(&group) else {
                continue;
            };
            lane.in_ready = false;
            let Some(index) = lane.current() else {
                continue;
            };
            let (key, step) = &mut lane.messages[index];
            if *step != Step::Queued {
                continue;
            }
            *step = Step::Out;
            let key = *key;
            self.queued -= 1;
            self.out += 1;
            return Some((group, key));
        }
        None
    }

    /// After `key` was handed out: hands out with it, as one batch, up to
    /// `most` of the queued messages right after it in its lane, stopping
    /// at the first that `may_take` refuses. Each then ends with
    /// [`Router::finished`], [`Router::failed`] or [`Router::put_back`].
    pub fn take_following(
        &mut self,
        group: &str,
        key: K,
        most: usize,
        mut may_take: impl FnMut(K) -> bool,
    ) -> Vec<K> {
        let mut taken = Vec::new();
        let Some((lane, index)) = find(&mut self.lanes, group, key, Step::Out) else {
            return taken;
        };
        for (key, step) in lane.messages.iter_mut().skip(index + 1).take(most) {
            if *step != Step::Queued || !may_take(*key) {
                break;
            }
            *step = Step::Out;
            taken.push(*key);
        }
        self.queued -= taken.len();
        taken
    }

    /// An out message that did not run after all (its batch ended before
    /// it): queued again in its place, or handed back if its lane is being
    /// handed back or the router stopped.
    pub fn put_back(&mut self, group: &str, key: K) {
        let stopped = self.stopped;
        let Some((lane, index)) = find(&mut self.lanes, group, key, Step::Out) else {
            return;
        };
        let doomed = stopped || lane.position(Step::HandBack).is_some();
        lane.messages[index].1 = if doomed {
            Step::HandBack
        } else {
            self.queued += 1;
            Step::Queued
        };
        self.out -= usize::from(lane.position(Step::Out).is_none());
        self.settle(group);
    }

    /// The out message of `group` succeeded: it is deleted once every
    /// earlier message is deleted or being deleted, and the lane moves on.
    /// Behind a message to be handed back it is handed back instead:
    /// deleting it would put it before the earlier one.
    pub fn finished(&mut self, group: &str, key: K) {
        self.settle_out(group, key, Step::Done);
    }

    /// The out message of `group` is to be moved to the dead-letter queue:
    /// the lane moves on as after a success, and the move starts once it is
    /// the lane's first message ([`Router::pop_dead_letter`]).
    pub fn dead_letter(&mut self, group: &str, key: K) {
        self.settle_out(group, key, Step::DeadLetter);
    }

    fn settle_out(&mut self, group: &str, key: K, step: Step) {
        let Some((lane, index)) = find(&mut self.lanes, group, key, Step::Out) else {
            return;
        };
        let behind_hand_back = lane.position(Step::HandBack).is_some_and(|h| h < index);
        lane.messages[index].1 = if behind_hand_back {
            Step::HandBack
        } else {
            step
        };
        self.out -= usize::from(lane.position(Step::Out).is_none());
        self.settle(group);
    }

    /// The out message of `group` failed for good (or is given up at
    /// shutdown): it and every later message are handed back together.
    pub fn failed(&mut self, group: &str, key: K) {
        let Some((lane, index)) = find(&mut self.lanes, group, key, Step::Out) else {
            return;
        };
        lane.messages[index].1 = Step::HandBack;
        self.out -= usize::from(lane.position(Step::Out).is_none());
        self.queued -= lane.doom_after(index);
        self.settle(group);
    }

    /// The delete (or dead-letter move) of `key` was confirmed. Returns the
    /// earlier messages of its lane whose delete is still unconfirmed: SQS
    /// could now hand them out again after `key`, so they must stay held
    /// until their own delete is confirmed.
    pub fn deleted(&mut self, group: &str, key: K) -> Vec<K> {
        let Some(lane) = self.lanes.get_mut(group) else {
            return Vec::new();
        };
        let Some(index) = lane
            .messages
            .iter()
            .position(|(k, s)| *k == key && matches!(s, Step::Deleting | Step::DeadLettering))
        else {
            return Vec::new();
        };
        lane.messages.remove(index);
        let overtaken = lane.messages.iter().take(index).map(|(k, _)| *k).collect();
        self.settle(group);
        overtaken
    }

    /// The queue refused to move `group`'s first message to the dead-letter
    /// queue while it is still ours: it and every later message are handed
    /// back.
    pub fn delete_refused(&mut self, group: &str, key: K) {
        let Some((lane, 0)) = find(&mut self.lanes, group, key, Step::DeadLettering) else {
            return;
        };
        lane.messages[0].1 = Step::HandBack;
        self.queued -= lane.doom_after(0);
        self.settle(group);
    }

    /// `key`'s lease ended: it is no longer ours, and neither is anything
    /// after it in its lane (it must not run or be deleted before `key`
    /// comes back). Removes them all; returns the later ones, in order.
    pub fn lost(&mut self, group: &str, key: K) -> Vec<K> {
        let Some(lane) = self.lanes.get_mut(group) else {
            return Vec::new();
        };
        let Some(index) = lane.messages.iter().position(|(k, _)| *k == key) else {
            return Vec::new();
        };
        let was_busy = lane.position(Step::Out).is_some();
        let mut later = Vec::new();
        for (k, step) in lane.messages.drain(index..) {
            if step == Step::Queued {
                self.queued -= 1;
            }
            if k != key {
                later.push(k);
            }
        }
        self.out -= usize::from(was_busy && lane.position(Step::Out).is_none());
        self.settle(group);
        later
    }

    /// Shutdown: nothing more is handed out; every queued message is handed
    /// back, lane by lane, as soon as its lane's running handler ended and
    /// the lane's earlier messages are deleted. Messages pushed later are
    /// handed back too.
    pub fn stop(&mut self) {
        self.stopped = true;
        self.ready.clear();
        let mut groups: Vec<String> = self.lanes.keys().cloned().collect();
        groups.sort_unstable();
        for group in groups {
            let lane = self.lanes.get_mut(&group).expect("listed");
            for (_, step) in lane.messages.iter_mut() {
                if *step == Step::Queued {
                    *step = Step::HandBack;
                    self.queued -= 1;
                }
            }
            self.settle(&group);
        }
    }

    /// The next message that may be deleted now, in its group's order (its
    /// delete is then under way: report it with [`Router::deleted`], or
    /// [`Router::lost`] when SQS no longer takes it).
    pub fn pop_delete(&mut self) -> Option<K> {
        self.deletes.pop_front()
    }

    /// The next message whose move to the dead-letter queue may start (it
    /// is then under way: report it with [`Router::deleted`] or
    /// [`Router::delete_refused`]).
    pub fn pop_dead_letter(&mut self) -> Option<K> {
        self.dead_letters.pop_front()
    }

    /// Whether more of `group`'s held messages may still succeed: one is
    /// queued or out. A delete waiting for company can go once none is.
    pub fn may_finish_more(&self, group: &str) -> bool {
        self.lanes.get(group).is_some_and(|lane| {
            lane.messages
                .iter()
                .any(|(_, s)| matches!(s, Step::Queued | Step::Out))
        })
    }

    /// The next lane to hand back, in the group's order; the router has
    /// forgotten it.
    pub fn pop_hand_back(&mut self) -> Option<Vec<K>> {
        self.hand_backs.pop_front()
    }

    /// Where `key` stands, if it is in a lane.
    pub fn step(&self, group: &str, key: K) -> Option<Step> {
        let lane = self.lanes.get(group)?;
        lane.messages
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, step)| *step)
    }

    /// Each group with held messages, and how many it holds, in no order.
    pub fn lanes(&self) -> impl Iterator<Item = (&str, usize)> {
        self.lanes
            .iter()
            .map(|(group, lane)| (group.as_str(), lane.messages.len()))
    }

    /// The held messages of `group`, in its order, with where each stands
    /// (none when it holds nothing).
    pub fn lane(&self, group: &str) -> impl Iterator<Item = (K, Step)> + '_ {
        self.lanes
            .get(group)
            .into_iter()
            .flat_map(|lane| lane.messages.iter().copied())
    }

    /// The first message of `group` that has not succeeded nor been given
    /// up to the dead-letter queue (the one the rest of the group waits
    /// for), and where it stands; `None` when every held message of the
    /// group has.
    pub fn head(&self, group: &str) -> Option<(K, Step)> {
        let lane = self.lanes.get(group)?;
        lane.current().map(|index| lane.messages[index])
    }

    /// Messages waiting in lanes (not handed out).
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Lanes that may be runnable: at most this many messages can be
    /// handed out now.
    pub fn ready_groups(&self) -> usize {
        self.ready.len()
    }

    /// Groups with a message out.
    pub fn busy_groups(&self) -> usize {
        self.out
    }

    /// Whether `group` has a message out.
    pub fn is_busy(&self, group: &str) -> bool {
        self.lanes
            .get(group)
            .is_some_and(|lane| lane.position(Step::Out).is_some())
    }

    /// No lane holds any message.
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// Draws the consequences of a change to `group`'s lane: a deletable
    /// first message, a lane ready to hand back, a runnable lane.
    fn settle(&mut self, group: &str) {
        let Some(lane) = self.lanes.get_mut(group) else {
            return;
        };
        for (index, (key, step)) in lane.messages.iter_mut().enumerate() {
            match step {
                Step::Deleting => {}
                Step::Done => {
                    *step = Step::Deleting;
                    self.deletes.push_back(*key);
                }
                Step::DeadLetter if index == 0 => {
                    *step = Step::DeadLettering;
                    self.dead_letters.push_back(*key);
                    break;
                }
                _ => break,
            }
        }
        if lane.messages.iter().all(|(_, s)| *s == Step::HandBack) {
            let lane = self.lanes.remove(group).expect("present");
            if !lane.messages.is_empty() {
                self.hand_backs
                    .push_back(lane.messages.into_iter().map(|(k, _)| k).collect());
            }
            return;
        }
        if !self.stopped && !lane.in_ready && lane.runnable() {
            lane.in_ready = true;
            self.ready.push_back(group.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(messages: &[(&str, u32)]) -> Router<u32> {
        let mut router = Router::new();
        for (group, key) in messages {
            router.push(group, *key);
        }
        router
    }

    #[test]
    fn the_head_is_the_first_message_not_settled() {
        let mut r = router(&[("g", 1), ("g", 2), ("g", 3), ("h", 4)]);
        assert_eq!(r.head("g"), Some((1, Step::Queued)));
        let (group, key) = r.take_next().unwrap();
        r.finished(&group, key);
        assert_eq!(r.head(&group), Some((2, Step::Queued)));
        let mut lanes: Vec<(&str, usize)> = r.lanes().collect();
        lanes.sort_unstable();
        assert_eq!(lanes, [("g", 3), ("h", 1)]);
        assert_eq!(r.head("none"), None);
        assert_eq!(r.lane("h").collect::<Vec<_>>().len(), 1);
        assert_eq!(r.lane("none").count(), 0);
    }

    fn deletes(router: &mut Router<u32>) -> Vec<u32> {
        std::iter::from_fn(|| router.pop_delete()).collect()
    }

    #[test]
    fn one_group_runs_one_at_a_time_and_deletes_from_the_front() {
        let mut router = router(&[("g", 1), ("g", 2), ("g", 3)]);
        assert_eq!(router.take_next(), Some(("g".to_owned(), 1)));
        assert_eq!(router.take_next(), None, "the lane is busy");
        router.finished("g", 1);
        assert_eq!(deletes(&mut router), [1]);
        assert_eq!(router.take_next(), Some(("g".to_owned(), 2)));
        router.finished("g", 2);
        assert_eq!(deletes(&mut router), [2], "1 is being deleted: 2 may join");
        assert!(router.may_finish_more("g"), "3 is still queued");
        assert_eq!(router.take_next(), Some(("g".to_owned(), 3)));
        router.finished("g", 3);
        assert!(!router.may_finish_more("g"));
        assert_eq!(deletes(&mut router), [3]);
        assert_eq!(router.deleted("g", 1), [], "nothing before 1");
        assert_eq!(router.deleted("g", 2), []);
        assert_eq!(router.deleted("g", 3), []);
        assert!(router.is_empty());
    }

    #[test]
    fn a_delete_confirmed_before_an_earlier_one_names_the_overtaken() {
        let mut router = router(&[("g", 1), ("g", 2), ("g", 3)]);
        for key in 1..=3 {
            router.take_next();
            router.finished("g", key);
        }
        assert_eq!(deletes(&mut router), [1, 2, 3], "one batch");
        assert_eq!(router.deleted("g", 3), [1, 2]);
        assert_eq!(router.deleted("g", 3), [], "already confirmed: ignored");
        assert_eq!(router.deleted("g", 1), []);
        assert_eq!(router.deleted("g", 2), []);
        assert!(router.is_empty());
    }

    #[test]
    fn only_done_messages_right_behind_deleting_ones_become_deletable() {
        let mut router = router(&[("g", 1), ("g", 2), ("g", 3), ("g", 4)]);
        router.take_next();
        router.finished("g", 1);
        router.take_next();
        router.failed("g", 2);
        assert_eq!(deletes(&mut router), [1]);
        assert_eq!(router.pop_hand_back(), None, "1 is not deleted yet");
        router.deleted("g", 1);
        assert_eq!(router.pop_hand_back(), Some(vec![2, 3, 4]));
    }

    #[test]
    fn a_batch_takes_the_queued_messages_right_after_and_puts_back_the_rest() {
        let mut router = router(&[("g", 1), ("g", 2), ("g", 3), ("g", 4), ("g", 5)]);
        assert_eq!(router.take_next(), Some(("g".to_owned(), 1)));
        assert_eq!(router.take_following("g", 1, 3, |key| key != 5), [2, 3, 4]);
        assert_eq!(router.take_next(), None, "the lane is busy");
        assert_eq!(router.busy_groups(), 1, "one group, however many out");
        // 1 succeeded, 2 failed and backs off, 3 and 4 were not reached.
        router.finished("g", 1);
        router.put_back("g", 3);
        router.put_back("g", 4);
        assert_eq!(router.take_next(), None, "2 is still out");
        assert_eq!(deletes(&mut router), [1]);
        // Its retry takes the rest with it, and 5 this time.
        assert_eq!(router.take_following("g", 2, 9, |_| true), [3, 4, 5]);
        for key in [2, 3] {
            router.finished("g", key);
        }
        router.failed("g", 4);
        assert_eq!(router.busy_groups(), 1, "5 is still out");
        router.put_back("g", 5);
        assert_eq!(router.busy_groups(), 0);
        router.deleted("g", 1);
        router.deleted("g", 2);
        router.deleted("g", 3);
        assert_eq!(router.pop_hand_back(), Some(vec![4, 5]));
        assert!(router.is_empty());
    }

    #[test]
    fn a_batch_put_back_after_stop_is_handed_back() {
        let mut router = router(&[("g", 1), ("g", 2), ("g", 3)]);
        router.take_next();
        assert_eq!(router.take_following("g", 1, 1, |_| true), [2]);
        router.stop();
        router.finished("g", 1);
        router.put_back("g", 2);
        router.deleted("g", 1);
        assert_eq!(router.pop_hand_back(), Some(vec![2, 3]));
    }

    #[test]
    fn groups_are_served_round_robin() {
        let mut router = router(&[("a", 1), ("a", 2), ("b", 1), ("c", 1)]);
        let first: Vec<_> = std::iter::from_fn(|| router.take_next()).collect();
        assert_eq!(
            first,
            [
                ("a".to_owned(), 1),
                ("b".to_owned(), 1),
                ("c".to_owned(), 1)
            ]
        );
        assert_eq!(router.busy_groups(), 3);
        router.finished("a", 1);
        assert_eq!(router.take_next(), Some(("a".to_owned(), 2)));
    }

    #[test]
    fn a_failure_hands_back_the_lane_whole_after_earlier_deletes() {
        let mut router = router(&[("g", 1), ("g", 2), ("g", 3), ("g", 4), ("h", 9)]);
        router.take_next();
        router.finished("g", 1);
        assert_eq!(deletes(&mut router), [1]);
        assert_eq!(router.take_next(), Some(("h".to_owned(), 9)));
        assert_eq!(router.take_next(), Some(("g".to_owned(), 2)));
        router.failed("g", 2);
        assert_eq!(router.pop_hand_back(), None, "1 is not deleted yet");
        assert_eq!(router.take_next(), None, "3 never runs");
        router.deleted("g", 1);
        assert_eq!(router.pop_hand_back(), Some(vec![2, 3, 4]));
        assert_eq!(router.queued(), 0);
        router.push("g", 2);
        assert_eq!(router.take_next(), Some(("g".to_owned(), 2)), "redelivered");
    }

    #[test]
    fn a_dead_letter_moves_alone_at_the_front_and_a_refused_move_hands_back_the_rest() {
        let mut router = router(&[("g", 1), ("g", 2), ("g", 3), ("g", 4)]);
        router.take_next();
        router.finished("g", 1);
        router.take_next();
        router.dead_letter("g", 2);
        assert_eq!(deletes(&mut router), [1]);
        assert_eq!(router.pop_dead_letter(), None, "1 is not deleted yet");
        assert_eq!(
            router.take_next(),
            Some(("g".to_owned(), 3)),
            "the group goes on"
        );
        router.finished("g", 3);
        assert_eq!(deletes(&mut router), [], "3 waits behind the dead letter");
        router.deleted("g", 1);
        assert_eq!(router.pop_dead_letter(), Some(2));
        assert_eq!(deletes(&mut router), [], "nothing overtakes a move");
        router.take_next();
        router.delete_refused("g", 2);
        assert_eq!(router.pop_hand_back(), None, "4 is still running");
        router.finished("g", 4);
        assert_eq!(deletes(&mut router), [], "4 must not be deleted before 2");
        assert_eq!(router.pop_hand_back(), Some(vec![2, 3, 4]));
    }

    #[test]
    fn a_moved_dead_letter_lets_the_rest_be_deleted() {
        let mut router = router(&[("g", 1), ("g", 2)]);
        router.take_next();
        router.dead_letter("g", 1);
        assert_eq!(router.pop_dead_letter(), Some(1));
        router.take_next();
        router.finished("g", 2);
        assert_eq!(deletes(&mut router), []);
        assert_eq!(router.deleted("g", 1), []);
        assert_eq!(deletes(&mut router), [2]);
    }

    #[test]
    fn a_lost_message_takes_the_rest_of_its_lane() {
        let mut router = router(&[("g", 1), ("g", 2), ("g", 3), ("g", 4)]);
        router.take_next();
        router.finished("g", 1);
        assert_eq!(deletes(&mut router), [1]);
        router.take_next();
        assert_eq!(router.lost("g", 2), [3, 4]);
        assert_eq!(router.busy_groups(), 0);
        assert_eq!(router.take_next(), None);
        router.deleted("g", 1);
        assert!(router.is_empty());
        assert_eq!(router.pop_hand_back(), None);
    }

    #[test]
    fn stop_hands_back_idle_lanes_at_once_and_busy_ones_after_their_handler() {
        let mut router = router(&[("a", 1), ("a", 2), ("b", 3), ("b", 4)]);
        assert_eq!(router.take_next(), Some(("a".to_owned(), 1)));
        router.stop();
        assert_eq!(router.pop_hand_back(), Some(vec![3, 4]));
        assert_eq!(router.pop_hand_back(), None, "a's handler still runs");
        assert_eq!(router.take_next(), None);
        router.finished("a", 1);
        assert_eq!(deletes(&mut router), [1]);
        assert_eq!(router.pop_hand_back(), None, "1 is not deleted yet");
        router.deleted("a", 1);
        assert_eq!(router.pop_hand_back(), Some(vec![2]));
        router.push("c", 5);
        assert_eq!(
            router.pop_hand_back(),
            Some(vec![5]),
            "late arrivals go back"
        );
        assert!(router.is_empty());
    }

    #[test]
    fn stop_during_a_failure_hands_back_from_the_failed_message() {
        let mut router = router(&[("a", 1), ("a", 2)]);
        router.take_next();
        router.stop();
        router.failed("a", 1);
        assert_eq!(router.pop_hand_back(), Some(vec![1, 2]));
    }
}
