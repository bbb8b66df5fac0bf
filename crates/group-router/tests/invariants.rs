//! The router's order rules over random interleavings of receives and
//! outcomes: (a) a message runs only after every earlier message of its
//! group succeeded; (b) at most one message per group is out; (c) after a
//! failure the rest of the lane is handed back, never run; (d) every ready
//! lane is served within one round of the others.

use std::collections::{HashMap, HashSet};

use fifo_group_router::Router;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    /// A receive brings the next message of group N.
    Receive(u8),
    /// A worker asks for work.
    Next,
    /// The out message of the Nth busy group (mod count) succeeds or fails.
    Finish(u8, bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..5u8).prop_map(Step::Receive),
        Just(Step::Next),
        (any::<u8>(), prop::bool::weighted(0.8)).prop_map(|(n, ok)| Step::Finish(n, ok)),
    ]
}

/// A message: its group and its place in the group's send order.
type Msg = (u8, u32);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn order_rules_hold(steps in prop::collection::vec(step(), 1..200)) {
        let mut router: Router<Msg> = Router::new();
        let mut sent: HashMap<u8, u32> = HashMap::new();
        // The last message of each group that succeeded, and what is out.
        let mut done: HashMap<u8, u32> = HashMap::new();
        let mut out: HashMap<u8, u32> = HashMap::new();
        // Messages handed back after a failure: they must never run.
        let mut handed_back: HashSet<Msg> = HashSet::new();
        // Ready-lane fairness: how many handouts since each ready group was last served.
        let mut waiting: HashMap<u8, usize> = HashMap::new();

        for step in steps {
            match step {
                Step::Receive(group) => {
                    let seq = sent.entry(group).or_insert(0);
                    *seq += 1;
                    router.push(&group.to_string(), (group, *seq));
                }
                Step::Next => {
                    let Some((name, (group, seq))) = router.take_next() else {
                        continue;
                    };
                    prop_assert_eq!(name, group.to_string());
                    prop_assert!(!out.contains_key(&group), "(b) two messages of group {} out", group);
                    prop_assert!(!handed_back.contains(&(group, seq)), "(c) {:?} ran after being handed back", (group, seq));
                    let last_done = done.get(&group).copied().unwrap_or(0);
                    prop_assert_eq!(seq, last_done + 1, "(a) group {} ran {} after {}", group, seq, last_done);
                    out.insert(group, seq);
                    // (d): no lane that was ready waits more than one round of the others.
                    waiting.remove(&group);
                    for (other, count) in waiting.iter_mut() {
                        *count += 1;
                        prop_assert!(*count <= 5, "(d) group {} starved", other);
                    }
                }
                Step::Finish(n, ok) => {
                    if out.is_empty() {
                        continue;
                    }
                    let mut busy: Vec<u8> = out.keys().copied().collect();
                    busy.sort();
                    let group = busy[n as usize % busy.len()];
                    let seq = out.remove(&group).unwrap();
                    if ok {
                        done.insert(group, seq);
                        router.succeeded(&group.to_string());
                    } else {
                        let rest = router.failed(&group.to_string());
                        // The group restarts from the failed message: redelivery
                        // brings it and the rest again, in order.
                        prop_assert!(rest.iter().zip(seq + 1..).all(|(m, s)| *m == (group, s)), "(c) rest in order");
                        handed_back.extend(rest.iter().copied());
                        let resend_from = seq;
                        let last = sent[&group];
                        for s in resend_from..=last {
                            handed_back.remove(&(group, s));
                            router.push(&group.to_string(), (group, s));
                        }
                    }
                }
            }
            // Lanes that are ready right now start counting.
            for group in 0..5u8 {
                let name = group.to_string();
                let has_queued = sent.get(&group).is_some_and(|&last| {
                    let base = out.get(&group).copied().unwrap_or_else(|| done.get(&group).copied().unwrap_or(0));
                    last > base
                });
                if has_queued && !router.is_busy(&name) {
                    waiting.entry(group).or_insert(0);
                }
            }
            prop_assert_eq!(router.busy_groups(), out.len());
        }
    }
}
