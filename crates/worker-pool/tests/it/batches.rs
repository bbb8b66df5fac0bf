//! Batches (`PoolConfig::batch`) on the in-memory queue with paused time:
//! a handler call gets consecutive messages of one group, in order; after a
//! partial success the failed message follows the retry, hand-back and
//! dead-letter rules of single messages, and the ones after it run again
//! after it. Checked from what the handler saw.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fifo_handler::{BatchOutcome, Handler, Message, Outcome};
use fifo_worker_pool::memory::MemoryQueue;
use fifo_worker_pool::{PoolConfig, Stats};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::fill;

/// Records each call (its bodies, when it started, how many it reported
/// succeeded); fails a body as often as `failures` says, reporting the
/// messages before it as succeeded; hangs on a body in `hangs`.
#[derive(Clone, Default)]
struct Batches {
    calls: Arc<Mutex<Vec<Call>>>,
    failures: Arc<Mutex<HashMap<String, u32>>>,
    hangs: Arc<Mutex<Vec<String>>>,
}

#[derive(Debug, Clone)]
struct Call {
    bodies: Vec<String>,
    start: Instant,
    /// `None`: cut off before it reported.
    succeeded: Option<usize>,
}

impl Batches {
    fn failing(body: &str, times: u32) -> Batches {
        let batches = Batches::default();
        batches
            .failures
            .lock()
            .unwrap()
            .insert(body.to_owned(), times);
        batches
    }

    fn hanging(body: &str) -> Batches {
        let batches = Batches::default();
        batches.hangs.lock().unwrap().push(body.to_owned());
        batches
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn bodies(&self) -> Vec<Vec<String>> {
        self.calls().into_iter().map(|c| c.bodies).collect()
    }
}

impl Handler for Batches {
    async fn handle(&self, _message: &Message) -> Outcome {
        unreachable!("with batches asked for, every call is a batch, even of one")
    }

    async fn handle_batch(&self, messages: &[&Message]) -> BatchOutcome {
        let bodies: Vec<String> = messages.iter().map(|m| m.body.clone()).collect();
        let index = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(Call {
                bodies: bodies.clone(),
                start: Instant::now(),
                succeeded: None,
            });
            calls.len() - 1
        };
        let hangs = bodies
            .iter()
            .any(|b| self.hangs.lock().unwrap().contains(b));
        tokio::time::sleep(Duration::from_millis(if hangs { 3_600_000 } else { 10 })).await;
        let outcome = {
            let mut failures = self.failures.lock().unwrap();
            let failed = bodies.iter().position(|body| {
                failures.get_mut(body).is_some_and(|left| {
                    *left > 0 && {
                        *left -= 1;
                        true
                    }
                })
            });
            match failed {
                Some(index) => BatchOutcome::failed_at(index, format!("{} fails", bodies[index])),
                None => BatchOutcome::all(bodies.len()),
            }
        };
        self.calls.lock().unwrap()[index].succeeded = Some(outcome.succeeded);
        outcome
    }
}

fn config(batch: usize) -> PoolConfig {
    PoolConfig {
        workers: 3,
        batch,
        pollers: Some(1),
        max_in_flight: 100,
        wait_time_seconds: 1,
        retries: 1,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        until_empty: true,
        ..PoolConfig::default()
    }
}

async fn run(queue: &MemoryQueue, handler: &Batches, config: PoolConfig) -> Stats {
    fifo_worker_pool::run(
        queue.clone(),
        handler.clone(),
        &config,
        CancellationToken::new(),
    )
    .await
    .expect("the run ends")
}

/// The number in a body `GROUP-N`.
fn position(body: &str) -> usize {
    body.rsplit('-').next().unwrap().parse().unwrap()
}

/// Checks, from the calls alone, that every call of a group started right
/// after the messages its earlier calls reported succeeded, and that each
/// group's messages all succeeded in the end (dead letters aside).
fn assert_in_order(calls: &[Call], groups: &[&str], count: usize, dead_letters: &[&str]) {
    for group in groups {
        let mut done = 0;
        for call in calls
            .iter()
            .filter(|c| c.bodies[0].starts_with(&format!("{group}-")))
        {
            let first = position(&call.bodies[0]);
            // A dead letter runs until it moves; then the group goes on.
            let moved = dead_letters.contains(&format!("{group}-{}", done + 1).as_str());
            if moved && first == done + 2 {
                done += 1;
            }
            assert_eq!(
                first,
                done + 1,
                "a call of {group} did not start right after what succeeded: {calls:#?}"
            );
            done += call.succeeded.unwrap_or(0);
        }
        assert!(
            done >= count - dead_letters.len(),
            "{group} did not finish: {calls:#?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_gets_consecutive_messages_of_one_group_in_order() {
    let queue = MemoryQueue::new();
    fill(&queue, &["a", "b", "c"], 10);
    let handler = Batches::default();
    let stats = run(&queue, &handler, config(4)).await;

    assert_eq!(stats.succeeded, 30);
    assert_eq!(queue.undeleted(), 0);
    assert_in_order(&handler.calls(), &["a", "b", "c"], 10, &[]);
    let calls = handler.bodies();
    assert!(calls.iter().all(|call| call.len() <= 4), "{calls:?}");
    assert!(
        calls.len() < 30,
        "{} calls for 30 messages: no batches",
        calls.len()
    );
    for call in &calls {
        let group = call[0].split('-').next().unwrap();
        let first = position(&call[0]);
        let expected: Vec<String> = (first..first + call.len())
            .map(|n| format!("{group}-{n}"))
            .collect();
        assert_eq!(*call, expected, "not consecutive messages of one group");
    }
}

#[tokio::test(start_paused = true)]
async fn after_a_partial_success_the_failed_message_is_retried_alone_and_the_rest_follow() {
    let queue = MemoryQueue::new();
    fill(&queue, &["g"], 6);
    let handler = Batches::failing("g-3", 1);
    let stats = run(&queue, &handler, config(4)).await;

    assert_eq!(stats.succeeded, 6);
    assert_eq!(stats.retried, 1);
    assert_in_order(&handler.calls(), &["g"], 6, &[]);
    let calls = handler.bodies();
    assert_eq!(calls[0], ["g-1", "g-2", "g-3", "g-4"]);
    assert_eq!(calls[1], ["g-3"], "the failed message is retried alone");
    assert_eq!(calls[2], ["g-4", "g-5", "g-6"]);
    assert_eq!(queue.undeleted(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_message_failing_for_good_goes_back_with_the_rest_of_its_group_in_order() {
    // One retry in process, then the queue: g-3 fails three times, so it
    // and everything after it go back and come again, in order.
    let queue = MemoryQueue::new();
    fill(&queue, &["g", "h"], 6);
    let handler = Batches::failing("g-3", 3);
    let stats = run(&queue, &handler, config(4)).await;

    assert_eq!(stats.released, 4, "g-3 to g-6 go back");
    assert_eq!(queue.undeleted(), 0);
    assert_in_order(&handler.calls(), &["g", "h"], 6, &[]);
    let calls = handler.bodies();
    let g1_runs = calls.iter().flatten().filter(|b| *b == "g-1").count();
    assert_eq!(g1_runs, 1, "what succeeded is not run again: {calls:?}");
}

#[tokio::test(start_paused = true)]
async fn a_message_failing_on_its_last_receive_is_dead_lettered_and_its_group_goes_on() {
    let queue = MemoryQueue::with_redrive(Some(1));
    fill(&queue, &["g"], 5);
    let handler = Batches::failing("g-2", 100);
    let config = config(3);
    let stats = run(&queue, &handler, config).await;

    assert_eq!(queue.dead_letters(), ["g-2"]);
    assert_eq!(stats.succeeded, 4);
    assert_in_order(&handler.calls(), &["g"], 5, &["g-2"]);
    assert_eq!(queue.undeleted(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_limit_is_not_overrun_by_a_batch() {
    let queue = MemoryQueue::new();
    fill(&queue, &["g"], 10);
    let handler = Batches::default();
    let config = PoolConfig {
        limit: Some(3),
        until_empty: false,
        ..config(8)
    };
    let stats = run(&queue, &handler, config).await;

    assert_eq!(stats.succeeded, 3);
    assert_eq!(handler.bodies(), [["g-1", "g-2", "g-3"]]);
}

#[tokio::test(start_paused = true)]
async fn a_batch_cut_off_by_its_timeout_dead_letters_only_the_message_that_hangs() {
    // Each timeout is blamed on the call's first message, which then runs
    // alone and succeeds, until the one that hangs runs alone and, on its
    // last receive, goes to the dead-letter queue. The group goes on only
    // once its cut-off call's kill grace has passed.
    let queue = MemoryQueue::with_redrive(Some(1));
    fill(&queue, &["g"], 5);
    let handler = Batches::hanging("g-3");
    let config = PoolConfig {
        handler_timeout: Some(Duration::from_secs(1)),
        ..config(5)
    };
    let grace = config.kill_grace();
    let stats = run(&queue, &handler, config).await;

    assert_eq!(queue.dead_letters(), ["g-3"]);
    assert_eq!(stats.succeeded, 4);
    let calls = handler.calls();
    assert_in_order(&calls, &["g"], 5, &["g-3"]);
    let last_g3 = calls.iter().rfind(|c| c.bodies == ["g-3"]).unwrap();
    let after = calls.iter().find(|c| c.bodies[0] == "g-4").unwrap();
    assert!(
        after.start >= last_g3.start + Duration::from_secs(1) + grace,
        "g-4 started while g-3's cut-off program could still run: {calls:#?}"
    );
}
