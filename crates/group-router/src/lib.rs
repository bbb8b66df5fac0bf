//! Per-group lanes and the order rules of fifo, as pure data structures with
//! no I/O and no clock: which held message may run next, and what to hand
//! back after a failure. Everything ordering-related lives here so it can be
//! tested exhaustively without a queue.
//!
//! A lane holds one group's messages in arrival order. It is *busy* while
//! one of its messages is out (being handled, retried or backing off), and
//! *ready* when it is idle with messages queued. [`Router::take_next`] serves
//! ready lanes round-robin, so every ready lane is eventually served.

use std::collections::{HashMap, VecDeque};

/// The lanes of every group with held messages.
#[derive(Debug)]
pub struct Router<T> {
    lanes: HashMap<String, Lane<T>>,
    /// Groups whose lane is idle and has messages, in the order they became ready.
    ready: VecDeque<String>,
    queued: usize,
}

#[derive(Debug)]
struct Lane<T> {
    queued: VecDeque<T>,
    busy: bool,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            lanes: HashMap::new(),
            ready: VecDeque::new(),
            queued: 0,
        }
    }
}

impl<T> Router<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a received message to its group's lane. Messages of one group
    /// must be pushed in the group's order (SQS hands them out so).
    pub fn push(&mut self, group: &str, item: T) {
        let lane = self.lanes.entry(group.to_owned()).or_insert_with(|| Lane {
            queued: VecDeque::new(),
            busy: false,
        });
        if !lane.busy && lane.queued.is_empty() {
            self.ready.push_back(group.to_owned());
        }
        lane.queued.push_back(item);
        self.queued += 1;
    }

    /// Hands out the head of the next ready lane and marks that lane busy
    /// until [`Router::succeeded`] or [`Router::failed`] is called for it.
    pub fn take_next(&mut self) -> Option<(String, T)> {
        let group = self.ready.pop_front()?;
        let lane = self.lanes.get_mut(&group).expect("a ready lane exists");
        let item = lane.queued.pop_front().expect("a ready lane has messages");
        lane.busy = true;
        self.queued -= 1;
        Some((group, item))
    }

    /// The message out for `group` succeeded (or was moved to the dead-letter
    /// queue): its lane moves on.
    pub fn succeeded(&mut self, group: &str) {
        let Some(lane) = self.lanes.get_mut(group) else {
            return;
        };
        lane.busy = false;
        if lane.queued.is_empty() {
            self.lanes.remove(group);
        } else {
            self.ready.push_back(group.to_owned());
        }
    }

    /// The message out for `group` failed for good: the rest of its lane is
    /// handed back, in order, to be released to the queue (never run), so
    /// that the group is redelivered from the failed message on.
    pub fn failed(&mut self, group: &str) -> Vec<T> {
        let Some(lane) = self.lanes.remove(group) else {
            return Vec::new();
        };
        self.queued -= lane.queued.len();
        lane.queued.into()
    }

    /// Every message not handed out yet, lane by lane in order; busy lanes
    /// stay (their messages are still out). For shutdown.
    pub fn drain_queued(&mut self) -> Vec<T> {
        let mut drained = Vec::with_capacity(self.queued);
        self.ready.clear();
        self.lanes.retain(|_, lane| {
            drained.extend(lane.queued.drain(..));
            lane.busy
        });
        self.queued = 0;
        drained
    }

    /// Messages waiting in lanes (not handed out).
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Groups with a message out.
    pub fn busy_groups(&self) -> usize {
        self.lanes.values().filter(|lane| lane.busy).count()
    }

    /// Whether `group` has a message out.
    pub fn is_busy(&self, group: &str) -> bool {
        self.lanes.get(group).is_some_and(|lane| lane.busy)
    }

    /// No lane holds or has out any message.
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_group_runs_one_at_a_time_in_order() {
        let mut router = Router::new();
        for n in 1..=3 {
            router.push("g", n);
        }
        assert_eq!(router.take_next(), Some(("g".to_owned(), 1)));
        assert_eq!(router.take_next(), None, "the lane is busy");
        router.succeeded("g");
        assert_eq!(router.take_next(), Some(("g".to_owned(), 2)));
        router.succeeded("g");
        assert_eq!(router.take_next(), Some(("g".to_owned(), 3)));
        router.succeeded("g");
        assert!(router.is_empty());
    }

    #[test]
    fn groups_are_served_round_robin() {
        let mut router = Router::new();
        for (group, n) in [("a", 1), ("a", 2), ("b", 1), ("c", 1)] {
            router.push(group, n);
        }
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
        router.succeeded("a");
        assert_eq!(router.take_next(), Some(("a".to_owned(), 2)));
    }

    #[test]
    fn a_failure_hands_back_the_rest_of_the_lane() {
        let mut router = Router::new();
        for n in 1..=4 {
            router.push("g", n);
        }
        router.push("h", 9);
        assert_eq!(router.take_next(), Some(("g".to_owned(), 1)));
        assert_eq!(router.failed("g"), [2, 3, 4]);
        assert_eq!(router.take_next(), Some(("h".to_owned(), 9)));
        assert_eq!(router.take_next(), None);
        assert_eq!(router.queued(), 0);
    }

    #[test]
    fn drain_keeps_busy_lanes_and_returns_the_rest() {
        let mut router = Router::new();
        for (group, n) in [("a", 1), ("a", 2), ("b", 3)] {
            router.push(group, n);
        }
        router.take_next();
        let mut drained = router.drain_queued();
        drained.sort();
        assert_eq!(drained, [2, 3]);
        assert!(router.is_busy("a"));
        router.succeeded("a");
        assert!(router.is_empty());
    }
}
