//! The engine on the in-memory queue with paused tokio time: order, retry,
//! release, heartbeat, shutdown, dead letters, limits and backpressure.
//! Assertions come from what the handler recorded, never from sleeps.

use std::collections::BTreeMap;

use fifo_test_support::recorder::{Fault, Recorder, max_overlap};
use fifo_worker_pool::memory::MemoryQueue;

use crate::fill;
use fifo_worker_pool::{PoolConfig, Stats};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The engine's settings in these tests (the steering tests start from them).
pub(crate) fn config() -> PoolConfig {
    PoolConfig {
        workers: 5,
        pollers: Some(1),
        max_in_flight: 100,
        wait_time_seconds: 1,
        visibility_timeout: 30,
        retries: 3,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(2),
        until_empty: true,
        ..PoolConfig::default()
    }
}

fn expected(groups: &[&str], count: usize) -> BTreeMap<String, Vec<String>> {
    groups
        .iter()
        .map(|g| {
            (
                g.to_string(),
                (1..=count).map(|n| format!("{g}-{n}")).collect(),
            )
        })
        .collect()
}

/// A token cancelled (as by Ctrl-C) after `delay` of tokio time.
fn cancelled_after(delay: Duration) -> CancellationToken {
    let token = CancellationToken::new();
    let canceller = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        canceller.cancel();
    });
    token
}

async fn run_with(
    queue: &MemoryQueue,
    handler: &Recorder,
    config: PoolConfig,
    shutdown: CancellationToken,
) -> Stats {
    handler
        .run_on(queue.clone(), config, shutdown)
        .await
        .expect("the run ends cleanly")
}

async fn run_until_done(queue: &MemoryQueue, handler: &Recorder, config: PoolConfig) -> Stats {
    run_with(queue, handler, config, CancellationToken::new()).await
}

#[tokio::test(start_paused = true)]
async fn groups_run_in_order_and_in_parallel() {
    let queue = MemoryQueue::new();
    let groups = ["a", "b", "c", "d", "e", "f", "g"];
    fill(&queue, &groups, 10);
    let handler = Recorder::new(Duration::from_millis(100));
    let stats = run_until_done(&queue, &handler, config()).await;

    assert_eq!(handler.successes(), expected(&groups, 10));
    let records = handler.records();
    for group in groups {
        let mine: Vec<_> = records.iter().filter(|r| r.group == group).collect();
        assert!(
            mine.windows(2).all(|w| w[0].end <= w[1].start),
            "group {group} overlapped itself"
        );
    }
    assert_eq!(
        max_overlap(&records),
        5,
        "five workers busy at once, never more"
    );
    assert_eq!((stats.succeeded, stats.deleted, stats.failed), (70, 70, 0));
    assert_eq!(queue.undeleted(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failure_mid_group_is_retried_in_place_and_holds_only_its_group() {
    let queue = MemoryQueue::new();
    for n in 1..=6 {
        queue.send("g", &format!("g-{n}"));
    }
    fill(&queue, &["h"], 3);
    let handler = Recorder::new(Duration::from_millis(10)).fault("g-3", Fault::FailTimes(2));
    let stats = run_until_done(&queue, &handler, config()).await;

    assert_eq!(
        handler.successes(),
        expected(&["g", "h"], 6)
            .into_iter()
            .filter(|(g, _)| g == "g")
            .chain(expected(&["h"], 3))
            .collect()
    );
    let records = handler.records();
    let g3_ok = records
        .iter()
        .find(|r| r.body == "g-3" && r.ok)
        .unwrap()
        .end;
    let g4_start = records.iter().find(|r| r.body == "g-4").unwrap().start;
    assert!(g4_start >= g3_ok, "g-4 started before g-3 succeeded");
    let h_done = records
        .iter()
        .filter(|r| r.group == "h")
        .map(|r| r.end)
        .max()
        .unwrap();
    assert!(h_done < g3_ok, "group h waited for group g");
    assert_eq!((stats.retried, stats.failed, stats.released), (2, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_release_the_group_and_sqs_redelivers_it_in_order() {
    let queue = MemoryQueue::new();
    fill(&queue, &["g"], 4);
    let handler = Recorder::new(Duration::from_millis(10)).fault("g-2", Fault::FailTimes(3));
    let config = PoolConfig {
        retries: 1,
        ..config()
    };
    let stats = run_until_done(&queue, &handler, config).await;

    assert_eq!(handler.successes(), expected(&["g"], 4));
    let starts: Vec<(String, u32)> = handler
        .records()
        .iter()
        .map(|r| (r.body.clone(), r.receive_count))
        .collect();
    let expected_starts: Vec<(String, u32)> = [
        ("g-1", 1),
        ("g-2", 1),
        ("g-2", 1),
        ("g-2", 2),
        ("g-2", 2),
        ("g-3", 2),
        ("g-4", 2),
    ]
    .iter()
    .map(|(b, c)| (b.to_string(), *c))
    .collect();
    assert_eq!(
        starts, expected_starts,
        "g-3 and g-4 never ran before g-2 succeeded"
    );
    assert_eq!(stats.failed, 1);
    assert_eq!(
        stats.released, 3,
        "g-2 with its backoff, g-3 and g-4 at once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_is_a_failure_and_the_worker_survives() {
    let queue = MemoryQueue::new();
    fill(&queue, &["g"], 3);
    let handler = Recorder::new(Duration::ZERO).fault("g-1", Fault::Panic(1));
    let stats = run_until_done(&queue, &handler, config()).await;
    assert_eq!(handler.successes(), expected(&["g"], 3));
    assert_eq!(stats.retried, 1);
}

#[tokio::test(start_paused = true)]
async fn a_handler_past_its_timeout_fails_and_is_retried() {
    let queue = MemoryQueue::new();
    fill(&queue, &["g"], 2);
    let handler = Recorder::new(Duration::ZERO).fault("g-1", Fault::Hang(1));
    let config = PoolConfig {
        handler_timeout: Some(Duration::from_secs(1)),
        ..config()
    };
    let stats = run_until_done(&queue, &handler, config).await;
    assert_eq!(handler.successes(), expected(&["g"], 2));
    assert_eq!(stats.retried, 1);
}

#[tokio::test(start_paused = true)]
async fn the_heartbeat_keeps_a_slow_message_from_being_delivered_twice() {
    let queue = MemoryQueue::new();
    fill(&queue, &["g"], 2);
    fill(&queue, &["h"], 1);
    let handler = Recorder::new(Duration::from_secs(5));
    let config = PoolConfig {
        visibility_timeout: 2,
        ..config()
    };
    let stats = run_until_done(&queue, &handler, config).await;
    assert_eq!(
        handler.successes(),
        expected(&["g"], 2)
            .into_iter()
            .chain(expected(&["h"], 1))
            .collect()
    );
    assert!(
        handler.records().iter().all(|r| r.receive_count == 1),
        "a message was delivered twice"
    );
    assert_eq!(stats.received, 3);
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_running_handlers_finish_and_releases_the_rest_at_once() {
    let queue = MemoryQueue::new();
    fill(&queue, &["a", "b"], 5);
    let handler = Recorder::new(Duration::from_secs(2));
    let token = cancelled_after(Duration::from_millis(500));
    let config = PoolConfig {
        until_empty: false,
        ..config()
    };
    let stats = run_with(&queue, &handler, config, token).await;

    assert_eq!(
        handler.successes(),
        expected(&["a", "b"], 1),
        "the two running handlers finished"
    );
    assert_eq!((stats.succeeded, stats.deleted, stats.released), (2, 2, 8));
    assert_eq!(stats.in_flight, 0);
    // The released messages are visible a second later, in order (see
    // `release_seconds` in the engine).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let options = fifo_worker_pool::ReceiveRequest {
        max_messages: 10,
        wait_seconds: 0,
        visibility_timeout: None,
        attempt_id: None,
    };
    let again = fifo_worker_pool::Queue::receive(&queue, &options)
        .await
        .unwrap()
        .deliveries;
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for message in again {
        by_group
            .entry(message.group_id)
            .or_default()
            .push(message.body);
    }
    let rest = |g: &str| (2..=5).map(|n| format!("{g}-{n}")).collect::<Vec<_>>();
    assert_eq!(
        by_group,
        BTreeMap::from([("a".to_owned(), rest("a")), ("b".to_owned(), rest("b"))])
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_abandons_handlers_that_outlive_the_shutdown_timeout() {
    let queue = MemoryQueue::new();
    fill(&queue, &["g"], 1);
    let handler = Recorder::new(Duration::from_secs(600));
    let token = cancelled_after(Duration::from_secs(1));
    let started = Instant::now();
    let config = PoolConfig {
        until_empty: false,
        shutdown_timeout: Duration::from_secs(3),
        ..config()
    };
    let kill_grace = config.kill_grace();
    let stats = run_with(&queue, &handler, config, token).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(4) + kill_grace,
        "one second of work, three of grace, then the cancelled handler's kill grace"
    );
    assert_eq!((stats.succeeded, stats.released), (0, 1));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let options = fifo_worker_pool::ReceiveRequest {
        max_messages: 10,
        wait_seconds: 0,
        visibility_timeout: None,
        attempt_id: None,
    };
    assert_eq!(
        fifo_worker_pool::Queue::receive(&queue, &options)
            .await
            .unwrap()
            .deliveries
            .len(),
        1,
        "handed back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_poison_message_goes_to_the_dead_letter_queue_and_its_group_continues() {
    let queue = MemoryQueue::with_redrive(Some(2));
    fill(&queue, &["g"], 3);
    fill(&queue, &["h"], 3);
    let handler = Recorder::new(Duration::from_millis(10)).fault("g-1", Fault::FailTimes(u32::MAX));
    let config = PoolConfig {
        retries: 1,
        ..config()
    };
    let stats = run_until_done(&queue, &handler, config).await;

    assert_eq!(queue.dead_letters(), ["g-1"]);
    let why = &queue.dead_letter_reasons()[0];
    assert_eq!(why.error, "injected failure of g-1");
    assert_eq!((why.attempts, why.receive_count), (2, 2), "retries: 1");
    let successes = handler.successes();
    assert_eq!(successes["g"], ["g-2", "g-3"]);
    assert_eq!(successes["h"], ["h-1", "h-2", "h-3"]);
    assert_eq!((stats.failed, stats.dead_lettered), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_rejected_message_goes_to_the_dead_letter_queue_at_once_and_its_group_continues() {
    let queue = MemoryQueue::with_redrive(Some(5));
    fill(&queue, &["g"], 3);
    let handler = Recorder::new(Duration::from_millis(10)).fault("g-2", Fault::Reject(u32::MAX));
    let stats = run_until_done(&queue, &handler, config()).await;

    assert_eq!(queue.dead_letters(), ["g-2"]);
    let why = &queue.dead_letter_reasons()[0];
    assert_eq!(why.error, "rejected: injected reject of g-2");
    assert_eq!((why.attempts, why.receive_count), (1, 1));
    assert_eq!(handler.successes()["g"], ["g-1", "g-3"]);
    let runs_of_g2 = handler.records().iter().filter(|r| r.body == "g-2").count();
    assert_eq!(runs_of_g2, 1, "a reject skips the retries left");
    assert_eq!(
        (
            stats.rejected,
            stats.dead_lettered,
            stats.failed,
            stats.retried
        ),
        (1, 1, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_reject_without_a_dead_letter_queue_is_a_failure_never_a_delete() {
    let queue = MemoryQueue::new();
    fill(&queue, &["g"], 2);
    let handler = Recorder::new(Duration::from_millis(10)).fault("g-1", Fault::Reject(2));
    let config = PoolConfig {
        retries: 3,
        ..config()
    };
    let stats = run_until_done(&queue, &handler, config).await;

    assert_eq!(handler.successes()["g"], ["g-1", "g-2"]);
    assert!(queue.dead_letters().is_empty());
    assert_eq!((stats.rejected, stats.retried, stats.failed), (0, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn retry_later_waits_as_asked_and_counts_no_failure() {
    let queue = MemoryQueue::with_redrive(Some(2));
    fill(&queue, &["g"], 2);
    let wait = Duration::from_secs(7);
    let handler = Recorder::new(Duration::from_millis(10)).fault("g-1", Fault::RetryLater(5, wait));
    // No retries at all: five requests to wait are not failures.
    let config = PoolConfig {
        retries: 0,
        ..config()
    };
    let stats = run_until_done(&queue, &handler, config).await;

    assert_eq!(handler.successes()["g"], ["g-1", "g-2"]);
    assert!(queue.dead_letters().is_empty());
    assert_eq!((stats.failed, stats.retried, stats.released), (0, 5, 0));
    let runs: Vec<_> = handler
        .records()
        .into_iter()
        .filter(|r| r.body == "g-1")
        .collect();
    assert_eq!(runs.len(), 6);
    for pair in runs.windows(2) {
        assert!(pair[1].start - pair[0].end >= wait, "waited as asked");
        assert_eq!(pair[1].receive_count, 1, "held, not handed back");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_later_now_still_waits_the_first_backoff_step() {
    let queue = MemoryQueue::new();
    fill(&queue, &["g"], 1);
    let handler = Recorder::new(Duration::ZERO).fault("g-1", Fault::RetryLater(20, Duration::ZERO));
    let stats = run_until_done(&queue, &handler, config()).await;

    assert_eq!((stats.succeeded, stats.retried, stats.failed), (1, 20, 0));
    let runs = handler.records();
    for pair in runs.windows(2) {
        assert!(
            pair[1].start - pair[0].end >= config().backoff_base,
            "no tight loop"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_limit_stops_after_that_many_successes() {
    let queue = MemoryQueue::new();
    fill(&queue, &["a", "b", "c"], 4);
    let handler = Recorder::new(Duration::from_millis(10));
    let config = PoolConfig {
        until_empty: false,
        limit: Some(5),
        ..config()
    };
    let stats = run_until_done(&queue, &handler, config).await;
    assert_eq!(stats.succeeded, 5);
    assert_eq!(queue.undeleted(), 7);
}

#[tokio::test(start_paused = true)]
async fn pollers_stop_receiving_at_max_in_flight() {
    let queue = MemoryQueue::new();
    let groups: Vec<String> = (0..50).map(|g| format!("g{g}")).collect();
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    fill(&queue, &groups, 2);
    let handler = Recorder::new(Duration::from_millis(50));
    let config = PoolConfig {
        workers: 2,
        pollers: Some(2),
        max_in_flight: 20,
        ..config()
    };
    let stats = run_until_done(&queue, &handler, config).await;
    assert_eq!(stats.succeeded, 100);
    let seen = *handler.max_in_flight_seen.lock().unwrap();
    assert!((10..=20).contains(&seen), "held {seen} at once");
}
