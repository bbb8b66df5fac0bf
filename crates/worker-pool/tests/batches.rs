//! Batches (`PoolConfig::batch`) on the in-memory queue with paused time:
//! a handler call gets consecutive messages of one group, in order; after a
//! partial success the failed message follows the retry, hand-back and
//! dead-letter rules of single messages, and the ones after it run again
//! after it. Checked from what the handler saw.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fifo_handler::{BatchOutcome, Handler, Message, Outcome};
use fifo_worker_pool::memory::MemoryQueue;
use fifo_worker_pool::{Counters, PoolConfig, Stats};
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;

/// Records each call's bodies; fails a body as often as `failures` says,
/// reporting the messages before it as succeeded.
#[derive(Clone, Default)]
struct Batches {
    calls: Arc<Mutex<Vec<Vec<String>>>>,
    failures: Arc<Mutex<HashMap<String, u32>>>,
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

    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }
}

impl Handler for Batches {
    async fn handle(&self, message: &Message) -> Outcome {
        match self.handle_batch(&[message]).await.error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    async fn handle_batch(&self, messages: &[&Message]) -> BatchOutcome {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let bodies: Vec<String> = messages.iter().map(|m| m.body.clone()).collect();
        self.calls.lock().unwrap().push(bodies.clone());
        let mut failures = self.failures.lock().unwrap();
        for (index, body) in bodies.iter().enumerate() {
            if let Some(left) = failures.get_mut(body)
                && *left > 0
            {
                *left -= 1;
                return BatchOutcome::failed_at(index, format!("{body} fails"));
            }
        }
        BatchOutcome::all(bodies.len())
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

fn fill(queue: &MemoryQueue, groups: &[&str], count: usize) {
    for n in 1..=count {
        for group in groups {
            queue.send(group, &format!("{group}-{n}"));
        }
    }
}

async fn run(queue: &MemoryQueue, handler: &Batches, config: PoolConfig) -> Stats {
    fifo_worker_pool::run(
        queue.clone(),
        handler.clone(),
        config,
        CancellationToken::new(),
        Arc::new(Counters::default()),
    )
    .await
    .expect("the run ends")
}

/// The number in a body `GROUP-N`.
fn position(body: &str) -> usize {
    body.rsplit('-').next().unwrap().parse().unwrap()
}

/// Per group, the bodies in the order the calls got them, keeping only
/// the last time each ran (what a replay leaves behind).
fn last_runs(calls: &[Vec<String>], group: &str) -> Vec<usize> {
    let mut last: Vec<usize> = Vec::new();
    for call in calls {
        for body in call.iter().filter(|b| b.starts_with(&format!("{group}-"))) {
            let n = position(body);
            last.retain(|seen| *seen != n);
            last.push(n);
        }
    }
    last
}

#[tokio::test(start_paused = true)]
async fn a_call_gets_consecutive_messages_of_one_group_in_order() {
    let queue = MemoryQueue::new();
    fill(&queue, &["a", "b", "c"], 10);
    let handler = Batches::default();
    let stats = run(&queue, &handler, config(4)).await;

    assert_eq!(stats.succeeded, 30);
    assert_eq!(queue.undeleted(), 0);
    let calls = handler.calls();
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
    for group in ["a", "b", "c"] {
        assert_eq!(last_runs(&calls, group), (1..=10).collect::<Vec<_>>());
    }
}

#[tokio::test(start_paused = true)]
async fn after_a_partial_success_the_failed_message_is_retried_with_the_ones_after_it() {
    let queue = MemoryQueue::new();
    fill(&queue, &["g"], 6);
    let handler = Batches::failing("g-3", 1);
    let stats = run(&queue, &handler, config(4)).await;

    assert_eq!(stats.succeeded, 6);
    assert_eq!(stats.retried, 1);
    let calls = handler.calls();
    assert_eq!(calls[0], ["g-1", "g-2", "g-3", "g-4"]);
    assert_eq!(
        calls[1],
        ["g-3", "g-4", "g-5", "g-6"],
        "the retry starts at the failed message: {calls:?}"
    );
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
    let calls = handler.calls();
    assert_eq!(last_runs(&calls, "g"), (1..=6).collect::<Vec<_>>());
    assert_eq!(last_runs(&calls, "h"), (1..=6).collect::<Vec<_>>());
    let g1_runs = calls.iter().flatten().filter(|b| *b == "g-1").count();
    assert_eq!(g1_runs, 1, "what succeeded is not run again: {calls:?}");
}

#[tokio::test(start_paused = true)]
async fn a_message_failing_on_its_last_receive_is_dead_lettered_and_its_group_goes_on() {
    let queue = MemoryQueue::with_redrive(Some(1));
    fill(&queue, &["g"], 5);
    let handler = Batches::failing("g-2", 100);
    let config = PoolConfig {
        max_receive_count: Some(1),
        ..config(3)
    };
    let stats = run(&queue, &handler, config).await;

    assert_eq!(queue.dead_letters(), ["g-2"]);
    assert_eq!(stats.succeeded, 4);
    let calls = handler.calls();
    let after: Vec<usize> = last_runs(&calls, "g")
        .into_iter()
        .filter(|n| *n != 2)
        .collect();
    assert_eq!(after, [1, 3, 4, 5], "{calls:?}");
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
    assert_eq!(handler.calls(), [["g-1", "g-2", "g-3"]]);
}
