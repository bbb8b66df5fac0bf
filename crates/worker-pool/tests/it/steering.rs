//! Operators steering the engine, on the in-memory queue with paused tokio
//! time: a group blocked by a message out of attempts, unblocked by its own
//! success, skipped or retried by hand; pause and resume; rate limits.
//! Assertions come from the handler's records and the queue.

use fifo_test_support::recorder::{Fault, Recorder};
use fifo_worker_pool::memory::MemoryQueue;

use crate::fill;
use fifo_worker_pool::{
    Exhausted, GroupState, GroupStatus, PoolConfig, Stats, SteerError, Steering, steering,
};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The engine tests' settings, blocking after one retry.
fn config() -> PoolConfig {
    PoolConfig {
        retries: 1,
        exhausted: Exhausted::Block,
        blocked_retry_max: Duration::from_secs(5),
        ..crate::engine::config()
    }
}

/// Starts a steered run; its handle and the run's task.
fn start(
    queue: &MemoryQueue,
    handler: &Recorder,
    config: PoolConfig,
) -> (Steering, JoinHandle<Stats>) {
    let (steering, inbox) = steering();
    let (queue, handler) = (queue.clone(), handler.clone());
    let run = tokio::spawn(async move {
        handler
            .run_steered(queue, config, CancellationToken::new(), inbox)
            .await
            .expect("the run ends cleanly")
    });
    (steering, run)
}

/// Asks for the groups every 100 ms of tokio time until `group` is in
/// `state`.
async fn wait_for(steering: &Steering, group: &str, state: GroupState) -> Vec<GroupStatus> {
    for _ in 0..10_000 {
        let groups = steering.groups().await.expect("the run answers");
        if groups.iter().any(|g| g.group == group && g.state == state) {
            return groups;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("group {group} never became {state:?}");
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_message_blocks_its_group_until_it_succeeds() {
    let queue = MemoryQueue::with_redrive(Some(2));
    fill(&queue, &["g", "h"], 3);
    // Two attempts per delivery (retries: 1), then blocked: it succeeds on
    // its eighth run, long after a dead-letter policy would have given up.
    let handler = Recorder::new(Duration::from_millis(10)).fault("g-1", Fault::FailTimes(7));
    let (_steering, run) = start(&queue, &handler, config());
    let stats = run.await.unwrap();

    assert!(queue.dead_letters().is_empty(), "nothing dead-lettered");
    let successes = handler.successes();
    assert_eq!(successes["g"], ["g-1", "g-2", "g-3"]);
    assert_eq!(successes["h"], ["h-1", "h-2", "h-3"]);
    let records = handler.records();
    let g1: Vec<_> = records.iter().filter(|r| r.body == "g-1").collect();
    assert_eq!(g1.len(), 8);
    assert!(
        g1.iter().all(|r| r.receive_count == 1),
        "held all along, never handed back: {g1:?}"
    );
    for pair in g1.windows(2) {
        let gap = pair[1].start - pair[0].end;
        assert!(
            gap <= Duration::from_secs(5),
            "waited {gap:?}, over the cap"
        );
    }
    let g1_ok = g1.last().unwrap();
    assert!(g1_ok.ok);
    let g2 = records.iter().find(|r| r.body == "g-2").unwrap();
    assert!(g2.start >= g1_ok.end, "the group waited behind its head");
    let h_done = records
        .iter()
        .filter(|r| r.group == "h")
        .map(|r| r.end)
        .max();
    assert!(h_done.unwrap() < g1_ok.start, "other groups went on");
    assert_eq!(
        (stats.failed, stats.dead_lettered, stats.released),
        (0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_blocked_group_is_shown_first_and_skip_dead_letters_its_head() {
    let queue = MemoryQueue::with_redrive(Some(5));
    fill(&queue, &["g"], 3);
    fill(&queue, &["h"], 1);
    let handler = Recorder::new(Duration::from_millis(10)).fault("g-1", Fault::FailTimes(u32::MAX));
    let (steering, run) = start(&queue, &handler, config());

    let groups = wait_for(&steering, "g", GroupState::Blocked).await;
    assert_eq!(handler.counters.blocked_groups(), 1);
    let blocked = &groups[0];
    assert_eq!(blocked.group, "g", "blocked groups first: {groups:?}");
    assert_eq!((blocked.held, blocked.attempts), (3, 2));
    assert_eq!(
        blocked.last_error.as_deref(),
        Some("injected failure of g-1")
    );
    let head = blocked.head.as_ref().expect("a head");
    assert!(!head.message_id.is_empty() && !head.sequence_number.is_empty());
    assert_eq!(
        steering.skip("nobody").await,
        Err(SteerError::NotHeld("nobody".to_owned()))
    );

    let skipped = steering.skip("g").await.expect("a blocked head is skipped");
    assert_eq!(skipped.group, "g");
    assert_ne!(skipped.state, GroupState::Blocked);
    assert_eq!(handler.counters.blocked_groups(), 0, "unblocked at once");
    let stats = run.await.unwrap();

    assert_eq!(queue.dead_letters(), ["g-1"]);
    let why = &queue.dead_letter_reasons()[0];
    assert_eq!(
        why.error,
        "skipped by operator; last error: injected failure of g-1"
    );
    assert_eq!(handler.successes()["g"], ["g-2", "g-3"]);
    let g1_runs = handler.records().iter().filter(|r| r.body == "g-1").count();
    assert!(g1_runs >= 2, "ran out of attempts before it blocked");
    assert_eq!(stats.dead_lettered, 1);
}

#[tokio::test(start_paused = true)]
async fn skip_needs_a_blocked_group_and_a_dead_letter_queue() {
    let queue = MemoryQueue::with_redrive(None);
    fill(&queue, &["g"], 2);
    fill(&queue, &["slow"], 1);
    let handler = Recorder::new(Duration::from_millis(10))
        .fault("g-1", Fault::FailTimes(u32::MAX))
        .fault("slow-1", Fault::Hang(1));
    let config = PoolConfig {
        handler_timeout: Some(Duration::from_secs(600)),
        ..config()
    };
    let (steering, run) = start(&queue, &handler, config);

    wait_for(&steering, "g", GroupState::Blocked).await;
    let Err(SteerError::NotApplicable(why)) = steering.skip("g").await else {
        panic!("no dead-letter queue to skip to");
    };
    assert!(why.contains("no dead-letter queue"), "{why}");
    let Err(SteerError::NotApplicable(why)) = steering.skip("slow").await else {
        panic!("a running group is not blocked");
    };
    assert_eq!(
        why,
        "group slow is running: only a blocked group's head can be skipped (a blocked head shows running while it runs again)"
    );
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn retry_runs_a_blocked_head_now_instead_of_after_its_backoff() {
    let queue = MemoryQueue::with_redrive(None);
    fill(&queue, &["g"], 2);
    let handler = Recorder::new(Duration::from_millis(10)).fault("g-1", Fault::FailTimes(1));
    // No retries: the first failure blocks, and the next run is a minute away.
    let config = PoolConfig {
        retries: 0,
        backoff_base: Duration::from_secs(60),
        blocked_retry_max: Duration::from_secs(3600),
        ..config()
    };
    let (steering, run) = start(&queue, &handler, config);

    wait_for(&steering, "g", GroupState::Blocked).await;
    let asked = Instant::now();
    let retried = steering
        .retry("g")
        .await
        .expect("a blocked head runs again");
    assert_eq!(retried.group, "g");
    run.await.unwrap();

    assert_eq!(handler.successes()["g"], ["g-1", "g-2"]);
    let g1_ok = handler
        .records()
        .into_iter()
        .find(|r| r.body == "g-1" && r.ok)
        .unwrap();
    assert!(
        g1_ok.start - asked < Duration::from_secs(1),
        "ran {:?} after the operator asked, not after its backoff",
        g1_ok.start - asked
    );
}

#[tokio::test(start_paused = true)]
async fn pause_stops_starts_and_receives_and_held_messages_keep_their_leases() {
    let queue = MemoryQueue::with_redrive(None);
    fill(&queue, &["a", "b", "c"], 4);
    let handler = Recorder::new(Duration::from_secs(1));
    let (steering, run) = start(&queue, &handler, config());

    // Let the first handlers start, then pause for longer than three
    // visibility timeouts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let paused = Instant::now();
    assert!(steering.pause(true).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!handler.counters.is_ready(), "not ready while paused");
    tokio::time::sleep(Duration::from_secs(100)).await;
    let resumed = Instant::now();
    assert_eq!(steering.pause(false).await.unwrap(), None);
    let stats = run.await.unwrap();

    let records = handler.records();
    let during: Vec<_> = records
        .iter()
        .filter(|r| r.start > paused && r.start < resumed)
        .collect();
    assert!(
        during.is_empty(),
        "handlers started while paused: {during:?}"
    );
    assert!(
        records.iter().any(|r| r.start < paused && r.end > paused),
        "a handler running at the pause finished"
    );
    assert!(records.iter().all(|r| r.ok && r.receive_count == 1));
    assert_eq!((stats.succeeded, stats.lost), (12, 0));
}

#[tokio::test(start_paused = true)]
async fn a_group_over_its_rate_waits_in_its_lane_not_in_a_worker() {
    let queue = MemoryQueue::with_redrive(None);
    fill(&queue, &["g", "h"], 5);
    let handler = Recorder::new(Duration::from_millis(1));
    let config = PoolConfig {
        workers: 1,
        group_rate: Some(1.0),
        ..config()
    };
    let began = Instant::now();
    let (_steering, run) = start(&queue, &handler, config);
    run.await.unwrap();

    let records = handler.records();
    for group in ["g", "h"] {
        let starts: Vec<Instant> = records
            .iter()
            .filter(|r| r.group == group)
            .map(|r| r.start)
            .collect();
        assert_eq!(starts.len(), 5);
        for pair in starts.windows(2) {
            assert!(
                pair[1] - pair[0] >= Duration::from_millis(999),
                "group {group} started twice within a second: {starts:?}"
            );
        }
    }
    // One worker, two groups of five at one a second each: had a limited
    // message held the worker, the groups would have taken turns (9 s).
    let last = records.iter().map(|r| r.end).max().unwrap();
    assert!(
        last - began < Duration::from_secs(6),
        "took {:?}",
        last - began
    );
}

#[tokio::test(start_paused = true)]
async fn the_run_rate_spaces_starts_across_groups() {
    let queue = MemoryQueue::with_redrive(None);
    fill(&queue, &["a", "b", "c", "d"], 5);
    let handler = Recorder::new(Duration::from_millis(1));
    let config = PoolConfig {
        max_rate: Some(4.0),
        ..config()
    };
    let (_steering, run) = start(&queue, &handler, config);
    run.await.unwrap();

    let mut starts: Vec<Instant> = handler.records().iter().map(|r| r.start).collect();
    starts.sort_unstable();
    assert_eq!(starts.len(), 20);
    // A burst of four, then one every 250 ms: never nine within a second.
    for (i, window) in starts.windows(9).enumerate() {
        assert!(
            window[8] - window[0] >= Duration::from_millis(999),
            "nine starts within a second from start {i}: {starts:?}"
        );
    }
    assert!(starts[19] - starts[0] >= Duration::from_millis(3999));
}

#[tokio::test(start_paused = true)]
async fn an_operator_never_runs_a_cut_off_head_or_its_group_beside_its_ending_program() {
    let queue = MemoryQueue::with_redrive(Some(5));
    fill(&queue, &["g"], 2);
    fill(&queue, &["h"], 1);
    // g-1 hangs past its timeout every time; h-1 hangs once, then succeeds.
    let handler = Recorder::new(Duration::from_millis(10))
        .fault("g-1", Fault::Hang(u32::MAX))
        .fault("h-1", Fault::Hang(1));
    let config = PoolConfig {
        retries: 0,
        handler_timeout: Some(Duration::from_secs(1)),
        blocked_retry_max: Duration::from_secs(600),
        ..config()
    };
    let grace = config.kill_grace();
    let (steering, run) = start(&queue, &handler, config);

    wait_for(&steering, "h", GroupState::Blocked).await;
    steering
        .retry("h")
        .await
        .expect("a blocked head runs again");
    wait_for(&steering, "g", GroupState::Blocked).await;
    steering.skip("g").await.expect("a blocked head is skipped");
    run.await.unwrap();

    let records = handler.records();
    let first = |body: &str| records.iter().find(|r| r.body == body).unwrap().clone();
    let h_runs: Vec<_> = records.iter().filter(|r| r.body == "h-1").collect();
    assert_eq!(h_runs.len(), 2);
    assert!(
        h_runs[1].start >= h_runs[0].end + grace,
        "h-1 ran again while its cut-off run could still be ending: {h_runs:?}"
    );
    assert!(
        first("g-2").start >= first("g-1").end + grace,
        "g-2 ran while the skipped g-1 could still be ending"
    );
    assert_eq!(queue.dead_letters(), ["g-1"]);
}

#[tokio::test(start_paused = true)]
async fn a_long_visibility_timeout_still_blocks() {
    let queue = MemoryQueue::with_redrive(None);
    fill(&queue, &["g"], 2);
    let handler = Recorder::new(Duration::from_millis(10)).fault("g-1", Fault::FailTimes(3));
    // Seven hours: heartbeats can keep it for five more before SQS's
    // 12-hour limit, so it is not handed back.
    let config = PoolConfig {
        retries: 0,
        visibility_timeout: 25_000,
        ..config()
    };
    let (_steering, run) = start(&queue, &handler, config);
    let stats = run.await.unwrap();

    assert_eq!(handler.successes()["g"], ["g-1", "g-2"]);
    assert!(handler.records().iter().all(|r| r.receive_count == 1));
    assert_eq!((stats.released, stats.failed), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_request_its_caller_gave_up_on_is_never_acted_on() {
    let queue = MemoryQueue::with_redrive(None);
    fill(&queue, &["g"], 3);
    let handler = Recorder::new(Duration::from_millis(10));
    let (steering, inbox) = steering();
    // Asked before the engine runs (as while `--http-ready` waits): the
    // caller is told nothing was done...
    assert_eq!(steering.pause(true).await, Err(SteerError::NoAnswer));
    let run = handler.run_steered(queue.clone(), config(), CancellationToken::new(), inbox);
    // ...and the run, once started, is not paused by it.
    let stats = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run was not paused by a request nobody waited for")
        .unwrap();
    assert_eq!(stats.succeeded, 3);
}

#[tokio::test(start_paused = true)]
async fn a_skip_still_moves_its_message_when_the_run_stops_during_the_kill_grace() {
    let queue = MemoryQueue::with_redrive(Some(5));
    fill(&queue, &["g"], 2);
    let handler = Recorder::new(Duration::from_millis(10)).fault("g-1", Fault::Hang(u32::MAX));
    let config = PoolConfig {
        retries: 0,
        handler_timeout: Some(Duration::from_secs(1)),
        blocked_retry_max: Duration::from_secs(600),
        until_empty: false,
        ..config()
    };
    let (steering, inbox) = steering();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (queue, handler, shutdown) = (queue.clone(), handler.clone(), shutdown.clone());
        async move { handler.run_steered(queue, config, shutdown, inbox).await }
    });

    wait_for(&steering, "g", GroupState::Blocked).await;
    let skipped = steering.skip("g").await.expect("a blocked head is skipped");
    assert_eq!(
        skipped.state,
        GroupState::Settling,
        "it waits for its program"
    );
    shutdown.cancel();
    let stats = run.await.unwrap().expect("the run ends cleanly");

    assert_eq!(
        queue.dead_letters(),
        ["g-1"],
        "moved as the operator was told"
    );
    assert!(
        handler.records().iter().all(|r| r.body != "g-2"),
        "g-2 never ran"
    );
    assert_eq!((stats.dead_lettered, stats.released), (1, 1));
}
