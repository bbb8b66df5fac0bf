//! How many receives the engine keeps under way when `pollers` is not
//! fixed: the in-memory queue behind a network with a round trip, in paused
//! time. Figures come from what the queue saw, never from timing.

use std::sync::{Arc, Mutex};

use fifo_test_support::recorder::{Recorder, order_violations};
use fifo_worker_pool::memory::MemoryQueue;
use fifo_worker_pool::{
    DeadLetterCopy, EntryFailure, MAX_POLLERS, PoolConfig, Queue, QueueError, ReceiveRequest,
    Received, Stats,
};
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;

/// The in-memory queue behind a network: each call takes `rtt` more, and
/// with `serial` SQS serves one call at a time for that long (a server that
/// only queues calls beyond one).
#[derive(Clone)]
struct Remote {
    queue: MemoryQueue,
    rtt: Duration,
    serial: Option<Duration>,
    server: Arc<tokio::sync::Mutex<()>>,
    seen: Arc<Mutex<Seen>>,
}

#[derive(Debug, Default)]
struct Seen {
    receiving: usize,
    most_receiving: usize,
    /// The most under way once the first `SETTLED` receives were made.
    most_receiving_settled: usize,
    receives: usize,
}

/// Receives after which the number under way should have settled.
const SETTLED: usize = 100;

impl Remote {
    fn new(queue: &MemoryQueue, rtt: Duration, serial: Option<Duration>) -> Remote {
        Remote {
            queue: queue.clone(),
            rtt,
            serial,
            server: Arc::default(),
            seen: Arc::default(),
        }
    }

    /// One call over the wire: half the round trip there, SQS's turn
    /// (waiting for the server with `serial`), half back.
    async fn call<T>(&self, sqs: impl std::future::Future<Output = T>) -> T {
        tokio::time::sleep(self.rtt / 2).await;
        if let Some(service) = self.serial {
            let _busy = self.server.lock().await;
            tokio::time::sleep(service).await;
        }
        let answer = sqs.await;
        tokio::time::sleep(self.rtt / 2).await;
        answer
    }

    fn seen(&self) -> (usize, usize) {
        let seen = self.seen.lock().unwrap();
        (seen.most_receiving, seen.receives)
    }
}

impl Queue for Remote {
    async fn receive(&self, options: &ReceiveRequest) -> Result<Received, QueueError> {
        {
            let mut seen = self.seen.lock().unwrap();
            seen.receiving += 1;
            seen.receives += 1;
            seen.most_receiving = seen.most_receiving.max(seen.receiving);
            if seen.receives > SETTLED {
                seen.most_receiving_settled = seen.most_receiving_settled.max(seen.receiving);
            }
        }
        let output = self.call(self.queue.receive(options)).await;
        self.seen.lock().unwrap().receiving -= 1;
        output
    }
    async fn delete(&self, handles: &[&str]) -> Result<Vec<EntryFailure>, QueueError> {
        self.call(self.queue.delete(handles)).await
    }
    async fn change_visibility(
        &self,
        entries: &[(&str, u32)],
    ) -> Result<Vec<EntryFailure>, QueueError> {
        self.call(self.queue.change_visibility(entries)).await
    }
    async fn dead_letter(&self, handle: &str, copy: &DeadLetterCopy) -> Result<(), QueueError> {
        self.call(self.queue.dead_letter(handle, copy)).await
    }
    async fn is_empty(&self) -> Result<bool, QueueError> {
        self.call(self.queue.is_empty()).await
    }
    fn max_receive_count(&self) -> Option<u32> {
        self.queue.max_receive_count()
    }
}

fn adapting(workers: usize) -> PoolConfig {
    PoolConfig {
        workers,
        pollers: None,
        max_in_flight: 2000,
        wait_time_seconds: 20,
        until_empty: true,
        ..PoolConfig::default()
    }
}

/// `groups` groups of `count` messages; returns (group, body) in send order.
fn fill(queue: &MemoryQueue, groups: usize, count: usize) -> Vec<(String, String)> {
    let mut sent = Vec::new();
    for n in 1..=count {
        for g in 1..=groups {
            let (group, body) = (format!("g{g}"), format!("g{g}-{n}"));
            queue.send(&group, &body);
            sent.push((group, body));
        }
    }
    sent
}

async fn run_on(
    remote: &Remote,
    handler: &Recorder,
    config: PoolConfig,
    shutdown: CancellationToken,
) -> Stats {
    handler
        .run_on(remote.clone(), config, shutdown)
        .await
        .expect("the run ends cleanly")
}

#[tokio::test(start_paused = true)]
async fn receives_multiply_while_workers_wait_for_groups() {
    let queue = MemoryQueue::new();
    let sent = fill(&queue, 100, 8);
    let remote = Remote::new(&queue, Duration::from_millis(20), None);
    let handler = Recorder::new(Duration::from_millis(50));
    let stats = run_on(&remote, &handler, adapting(100), CancellationToken::new()).await;

    assert_eq!(stats.succeeded, 800);
    assert!(order_violations(&handler.records(), &sent, &[]).is_empty());
    let (most, _) = remote.seen();
    assert_eq!(
        most, MAX_POLLERS,
        "100 workers waiting for 100 groups: as many receives as allowed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fixed_number_of_pollers_stays_fixed() {
    let queue = MemoryQueue::new();
    fill(&queue, 100, 4);
    let remote = Remote::new(&queue, Duration::from_millis(20), None);
    let handler = Recorder::new(Duration::from_millis(50));
    let config = PoolConfig {
        pollers: Some(3),
        ..adapting(100)
    };
    let stats = run_on(&remote, &handler, config, CancellationToken::new()).await;

    assert_eq!(stats.succeeded, 400);
    assert_eq!(remote.seen().0, 3);
}

#[tokio::test(start_paused = true)]
async fn busy_workers_get_no_more_than_two_receives_at_once() {
    // Ten workers with long work and many groups: the groups ready to run
    // cover the workers all along, so receives beyond the first two would
    // only hold more messages here. Small receives under a low
    // max_in_flight make receives go on all along, as held messages finish.
    let queue = MemoryQueue::new();
    let sent = fill(&queue, 300, 2);
    let remote = Remote::new(&queue, Duration::from_millis(20), None);
    let handler = Recorder::new(Duration::from_secs(1));
    let config = PoolConfig {
        max_in_flight: 40,
        max_messages: 2,
        ..adapting(10)
    };
    let stats = run_on(&remote, &handler, config, CancellationToken::new()).await;

    assert_eq!(stats.succeeded, 600);
    assert!(order_violations(&handler.records(), &sent, &[]).is_empty());
    let settled = remote.seen.lock().unwrap().most_receiving_settled;
    assert!(
        settled <= 2,
        "{settled} receives under way at once while every worker was busy"
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_that_only_queues_calls_gets_few_receives_at_once() {
    // SQS serving one call at a time: more receives under way only make
    // every call wait longer, which deletes show. Workers always wait (no
    // work), so without noticing that, all MAX_POLLERS would stay under way.
    let queue = MemoryQueue::new();
    let sent = fill(&queue, 100, 30);
    let remote = Remote::new(
        &queue,
        Duration::from_millis(1),
        Some(Duration::from_millis(2)),
    );
    let handler = Recorder::new(Duration::ZERO);
    let stats = run_on(&remote, &handler, adapting(16), CancellationToken::new()).await;

    assert_eq!(stats.succeeded, 3000);
    assert!(order_violations(&handler.records(), &sent, &[]).is_empty());
    let settled = remote.seen.lock().unwrap().most_receiving_settled;
    assert!(
        settled <= MAX_POLLERS * 3 / 4,
        "{settled} receives under way at once on a server that serves one call at a time"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_queue_costs_one_long_poll_at_a_time() {
    let queue = MemoryQueue::new();
    fill(&queue, 50, 2);
    let remote = Remote::new(&queue, Duration::from_millis(20), None);
    let handler = Recorder::new(Duration::from_millis(10));
    let config = PoolConfig {
        until_empty: false,
        ..adapting(50)
    };
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (remote, handler, shutdown) = (remote.clone(), handler.clone(), shutdown.clone());
        async move { run_on(&remote, &handler, config, shutdown).await }
    });
    // Drained within the first minute; then ten idle minutes.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(handler.counters.snapshot().succeeded, 100);
    let before = remote.seen().1;
    tokio::time::sleep(Duration::from_secs(600)).await;
    let idle_receives = remote.seen().1 - before;
    shutdown.cancel();
    run.await.unwrap();

    // One 20-second long poll at a time: 30 in ten minutes.
    assert!(
        idle_receives <= 31,
        "{idle_receives} receives in ten idle minutes"
    );
}
