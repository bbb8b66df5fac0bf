//! The router's order rules over random interleavings of receives,
//! outcomes, deletes, lost leases and a shutdown, against a model of one
//! SQS FIFO queue:
//! (a) a message runs only after every earlier message of its group
//!     succeeded, and at most one message per group is out;
//! (b) a message becomes deletable only after it succeeded and every
//!     earlier message of its group was deleted or is being deleted (so a
//!     group's done messages go in one call), and a delete confirmed before
//!     an earlier one names exactly the earlier ones still being deleted,
//!     which the engine keeps held; a dead-letter move starts only when
//!     every earlier message was deleted, and nothing later is deleted
//!     while it is under way;
//! (c) a lane is handed back whole and in order: exactly the held messages
//!     from the failed one on, once nothing earlier is held and nothing of
//!     the group is out or being deleted;
//! (d) a lost message takes exactly the later held messages of its group;
//! (e) a ready lane is served within a few handouts.

use std::collections::{BTreeMap, HashMap};

use fifo_group_router::{Router, Step};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Send a new message to group N.
    Send(u8),
    /// A receive brings the next deliverable message of group N, if any.
    Receive(u8),
    /// A worker asks for work.
    Next,
    /// The out message of the Nth busy group succeeds, fails, or is to be
    /// dead-lettered.
    Finish(u8, Outcome),
    /// The Nth delete under way is confirmed, refused, or its lease is lost.
    Delete(u8, DeleteResult),
    /// The Nth held message's lease ends.
    Lose(u8),
    Stop,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Succeeded,
    Failed,
    DeadLetter,
}

#[derive(Debug, Clone, Copy)]
enum DeleteResult {
    Confirmed,
    Refused,
    Lost,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..4u8).prop_map(Op::Send),
        4 => (0..4u8).prop_map(Op::Receive),
        4 => Just(Op::Next),
        4 => (any::<u8>(), prop_oneof![
            8 => Just(Outcome::Succeeded),
            2 => Just(Outcome::Failed),
            1 => Just(Outcome::DeadLetter),
        ]).prop_map(|(n, outcome)| Op::Finish(n, outcome)),
        4 => (any::<u8>(), prop_oneof![
            8 => Just(DeleteResult::Confirmed),
            1 => Just(DeleteResult::Refused),
            1 => Just(DeleteResult::Lost),
        ]).prop_map(|(n, r)| Op::Delete(n, r)),
        1 => any::<u8>().prop_map(Op::Lose),
        1 => Just(Op::Stop),
    ]
}

/// A message: its group and its place in the group's send order.
type Msg = (u8, u32);

/// Where a message stands, as the queue and the engine would see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the queue, deliverable.
    Visible,
    /// Received and in a lane.
    Held,
    Out,
    Succeeded,
    Deleting,
    /// To be moved to the dead-letter queue.
    ToDeadLetter,
    DeadLettering,
    Deleted,
}

struct Model {
    states: BTreeMap<Msg, State>,
    sent: HashMap<u8, u32>,
}

impl Model {
    fn group(&self, group: u8) -> impl Iterator<Item = (u32, State)> + '_ {
        self.states
            .range((group, 0)..=(group, u32::MAX))
            .map(|(&(_, seq), &state)| (seq, state))
    }

    fn set(&mut self, msg: Msg, state: State) {
        self.states.insert(msg, state);
    }

    fn held(&self) -> Vec<Msg> {
        self.states
            .iter()
            .filter(|(_, s)| !matches!(s, State::Visible | State::Deleted))
            .map(|(m, _)| *m)
            .collect()
    }

    fn in_state(&self, state: State) -> Vec<Msg> {
        self.states
            .iter()
            .filter(|(_, s)| **s == state)
            .map(|(m, _)| *m)
            .collect()
    }
}

fn pick<T: Copy>(items: &[T], n: u8) -> Option<T> {
    (!items.is_empty()).then(|| items[n as usize % items.len()])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn order_rules_hold(ops in prop::collection::vec(op(), 1..300)) {
        let mut router: Router<Msg> = Router::new();
        let mut model = Model { states: BTreeMap::new(), sent: HashMap::new() };
        let mut stopped = false;
        let mut waiting: HashMap<u8, usize> = HashMap::new();

        for op in ops {
            match op {
                Op::Send(group) => {
                    let seq = model.sent.entry(group).or_insert(0);
                    *seq += 1;
                    let msg = (group, *seq);
                    model.set(msg, State::Visible);
                }
                Op::Receive(group) => {
                    // SQS delivers a group's messages in order: the first
                    // visible one (everything before it is held or deleted).
                    let deliverable = model.group(group).find(|(_, s)| *s == State::Visible);
                    if let Some((seq, _)) = deliverable {
                        model.set((group, seq), State::Held);
                        router.push(&group.to_string(), (group, seq));
                    }
                }
                Op::Next => {
                    let Some((name, (group, seq))) = router.take_next() else {
                        continue;
                    };
                    prop_assert!(!stopped, "a message ran after stop");
                    prop_assert_eq!(name, group.to_string());
                    prop_assert_eq!(model.states[&(group, seq)], State::Held);
                    prop_assert!(
                        model.group(group).all(|(s, state)| s >= seq || matches!(state, State::Succeeded | State::Deleting | State::Deleted | State::ToDeadLetter | State::DeadLettering)),
                        "(a) {:?} ran before an earlier message of its group succeeded: {:?}", (group, seq), model.group(group).collect::<Vec<_>>()
                    );
                    prop_assert!(
                        model.group(group).all(|(_, state)| state != State::Out),
                        "(a) two messages of group {} out", group
                    );
                    model.set((group, seq), State::Out);
                    waiting.remove(&group);
                    for (other, count) in waiting.iter_mut() {
                        *count += 1;
                        prop_assert!(*count <= 4, "(e) group {} starved", other);
                    }
                }
                Op::Finish(n, outcome) => {
                    let Some(msg) = pick(&model.in_state(State::Out), n) else { continue };
                    let group = msg.0.to_string();
                    match outcome {
                        Outcome::Succeeded => {
                            model.set(msg, State::Succeeded);
                            router.finished(&group, msg);
                        }
                        Outcome::Failed => {
                            model.set(msg, State::Held);
                            router.failed(&group, msg);
                        }
                        Outcome::DeadLetter => {
                            model.set(msg, State::ToDeadLetter);
                            router.dead_letter(&group, msg);
                        }
                    }
                }
                Op::Delete(n, result) => {
                    let mut under_way = model.in_state(State::Deleting);
                    under_way.extend(model.in_state(State::DeadLettering));
                    let Some(msg) = pick(&under_way, n) else { continue };
                    let group = msg.0.to_string();
                    let moving = model.states[&msg] == State::DeadLettering;
                    match result {
                        DeleteResult::Confirmed => {
                            let earlier: Vec<Msg> = model
                                .group(msg.0)
                                .filter(|(s, state)| *s < msg.1 && *state != State::Deleted)
                                .map(|(s, _)| (msg.0, s))
                                .collect();
                            prop_assert!(
                                earlier.iter().all(|m| model.states[m] == State::Deleting),
                                "(b) {:?} deleted while an earlier message is held otherwise: {:?}",
                                msg, model.group(msg.0).collect::<Vec<_>>()
                            );
                            model.set(msg, State::Deleted);
                            let overtaken = router.deleted(&group, msg);
                            prop_assert_eq!(overtaken, earlier, "(b) the overtaken, misnamed");
                        }
                        // The engine reports a refused dead-letter move so;
                        // a refused delete means the lease is gone.
                        DeleteResult::Refused if moving => {
                            model.set(msg, State::Held);
                            router.delete_refused(&group, msg);
                        }
                        DeleteResult::Refused | DeleteResult::Lost => {
                            lose(&mut router, &mut model, msg)?;
                        }
                    }
                }
                Op::Lose(n) => {
                    let Some(msg) = pick(&model.held(), n) else { continue };
                    lose(&mut router, &mut model, msg)?;
                }
                Op::Stop => {
                    stopped = true;
                    router.stop();
                }
            }

            settle(&mut router, &mut model)?;

            // Lanes that could run right now start counting for (e).
            for group in 0..4u8 {
                let current = model
                    .group(group)
                    .find(|(_, s)| matches!(s, State::Held | State::Out));
                let runnable = !stopped
                    && current.is_some_and(|(seq, s)| {
                        s == State::Held
                            && router.step(&group.to_string(), (group, seq)) == Some(Step::Queued)
                    });
                if runnable {
                    waiting.entry(group).or_insert(0);
                } else {
                    waiting.remove(&group);
                }
            }
            prop_assert_eq!(router.busy_groups(), model.in_state(State::Out).len());
        }

        // (f) Nothing gets stuck: after a shutdown, once every running
        // handler ends and every delete is answered, each held message was
        // deleted or handed back and the router is empty.
        router.stop();
        settle(&mut router, &mut model)?;
        loop {
            let out = model.in_state(State::Out);
            let deleting = model.in_state(State::Deleting);
            if out.is_empty() && deleting.is_empty() && model.in_state(State::DeadLettering).is_empty() {
                break;
            }
            for msg in out {
                model.set(msg, State::Succeeded);
                router.finished(&msg.0.to_string(), msg);
            }
            for msg in deleting.into_iter().chain(model.in_state(State::DeadLettering)) {
                model.set(msg, State::Deleted);
                router.deleted(&msg.0.to_string(), msg);
            }
            settle(&mut router, &mut model)?;
        }
        prop_assert!(model.held().is_empty(), "(f) stuck: {:?}", model.held());
        prop_assert!(router.is_empty(), "(f) the router still holds lanes");
    }
}

/// Takes the deletes and hand-backs the router decided on, checking (b)
/// and (c), and applies them to the model.
fn settle(router: &mut Router<Msg>, model: &mut Model) -> Result<(), TestCaseError> {
    while let Some(msg) = router.pop_delete() {
        prop_assert_eq!(
            model.states[&msg],
            State::Succeeded,
            "(b) {:?} deleted before it succeeded",
            msg
        );
        prop_assert!(
            model
                .group(msg.0)
                .all(|(s, state)| s >= msg.1 || matches!(state, State::Deleted | State::Deleting)),
            "(b) {:?} deletable before an earlier message of its group: {:?}",
            msg,
            model.group(msg.0).collect::<Vec<_>>()
        );
        model.set(msg, State::Deleting);
    }
    while let Some(msg) = router.pop_dead_letter() {
        prop_assert_eq!(model.states[&msg], State::ToDeadLetter);
        prop_assert!(
            model
                .group(msg.0)
                .all(|(s, state)| s >= msg.1 || state == State::Deleted),
            "(b) {:?} moved before an earlier message of its group was deleted: {:?}",
            msg,
            model.group(msg.0).collect::<Vec<_>>()
        );
        prop_assert!(
            model
                .group(msg.0)
                .all(|(s, state)| s <= msg.1 || !matches!(state, State::Deleting | State::Deleted)),
            "(b) a later message deleted before the move of {:?}: {:?}",
            msg,
            model.group(msg.0).collect::<Vec<_>>()
        );
        model.set(msg, State::DeadLettering);
    }
    while let Some(lane) = router.pop_hand_back() {
        let group = lane[0].0;
        let held: Vec<Msg> = model.held().into_iter().filter(|m| m.0 == group).collect();
        prop_assert_eq!(
            &lane,
            &held,
            "(c) a lane handed back in part or out of order"
        );
        prop_assert!(
            held.iter().all(|m| matches!(
                model.states[m],
                State::Held | State::Succeeded | State::ToDeadLetter
            )),
            "(c) handed back while out or deleting: {:?}",
            model.group(group).collect::<Vec<_>>()
        );
        prop_assert!(
            model
                .group(group)
                .all(|(s, state)| s >= lane[0].1 || state == State::Deleted),
            "(c) handed back while an earlier message is held"
        );
        for msg in lane {
            model.set(msg, State::Visible);
        }
    }

    Ok(())
}

/// `msg`'s lease ends: (d) the router gives up exactly the later held
/// messages of its group, and they all become deliverable again.
fn lose(router: &mut Router<Msg>, model: &mut Model, msg: Msg) -> Result<(), TestCaseError> {
    let later: Vec<Msg> = model
        .held()
        .into_iter()
        .filter(|m| m.0 == msg.0 && m.1 > msg.1)
        .collect();
    let returned = router.lost(&msg.0.to_string(), msg);
    prop_assert_eq!(
        &returned,
        &later,
        "(d) a lost message took the wrong messages"
    );
    for m in std::iter::once(msg).chain(later) {
        model.set(m, State::Visible);
    }
    Ok(())
}
