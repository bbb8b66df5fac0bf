//! The engine in process against the real LocalStack: order within a group,
//! parallel groups, retries, dead letters and heartbeats. Every assertion
//! comes from what the handler recorded.

use std::collections::BTreeMap;
use std::time::Duration;

use fifo_sqs_client::{AttributeValue, Client, MessageAttribute, OutgoingMessage, QueueSpec};
use fifo_test_support::localstack::{client, drain, unique_queue_name};
use fifo_test_support::recorder::{Fault, Recorder, max_overlap};
use fifo_worker_pool::{PoolConfig, SqsQueue, Stats};
use tokio_util::sync::CancellationToken;

/// Creates a queue (with a dead-letter queue after `max_receive_count`
/// receives, if given) and returns the queue to run on.
async fn new_queue(client: &Client, test: &str, max_receive_count: Option<u32>) -> SqsQueue {
    let name = unique_queue_name(test);
    let mut spec = QueueSpec {
        name: name.clone(),
        visibility_timeout: 30,
        high_throughput: false,
        redrive: None,
    };
    if let Some(count) = max_receive_count {
        let dlq = QueueSpec {
            name: format!("{}-dlq.fifo", name.trim_end_matches(".fifo")),
            ..spec.clone()
        };
        let url = client.create_fifo_queue(&dlq).await.unwrap();
        let arn = client.queue_attributes(&url).await.unwrap().arn;
        spec.redrive = Some((arn, count));
    }
    let url = client.create_fifo_queue(&spec).await.unwrap();
    SqsQueue::open(client.clone(), &url).await.unwrap()
}

/// Sends `GROUP-1..GROUP-count` to each group, in order.
async fn send(queue: &SqsQueue, groups: &[&str], count: usize) {
    let messages: Vec<OutgoingMessage> = groups
        .iter()
        .flat_map(|g| {
            (1..=count).map(move |n| OutgoingMessage {
                body: format!("{g}-{n}"),
                group_id: g.to_string(),
                dedup_id: None,
                attributes: attributes(n),
            })
        })
        .collect();
    for batch in messages.chunks(10) {
        let sent = queue.client().send_batch(queue.url(), batch).await.unwrap();
        assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    }
}

/// Message attributes of every type, so that a copy can be compared.
fn attributes(n: usize) -> BTreeMap<String, MessageAttribute> {
    let attribute = |data_type: &str, value: AttributeValue| MessageAttribute {
        data_type: data_type.to_owned(),
        value,
    };
    BTreeMap::from([
        (
            "origin".to_owned(),
            attribute("String", AttributeValue::Text("engine test".to_owned())),
        ),
        (
            "n".to_owned(),
            attribute("Number", AttributeValue::Text(n.to_string())),
        ),
        (
            "raw".to_owned(),
            attribute("Binary", AttributeValue::Binary(vec![0, 159, 255, n as u8])),
        ),
    ])
}

fn config() -> PoolConfig {
    PoolConfig {
        workers: 5,
        pollers: Some(2),
        wait_time_seconds: 1,
        retries: 3,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(2),
        until_empty: true,
        ..PoolConfig::default()
    }
}

async fn run(queue: &SqsQueue, handler: &Recorder, config: PoolConfig) -> Stats {
    let run = handler.run_on(queue.clone(), config, CancellationToken::new());
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ends by itself")
        .expect("the run ends cleanly")
}

fn bodies(group: &str, numbers: &[usize]) -> Vec<String> {
    numbers.iter().map(|n| format!("{group}-{n}")).collect()
}

#[tokio::test]
async fn one_group_is_processed_one_to_five_one_at_a_time() {
    let client = client().await;
    let queue = new_queue(&client, "e-same", None).await;
    send(&queue, &["same"], 5).await;
    let handler = Recorder::new(Duration::from_millis(100));
    let stats = run(&queue, &handler, config()).await;

    assert_eq!(
        handler.successes()["same"],
        bodies("same", &[1, 2, 3, 4, 5])
    );
    let records = handler.records();
    assert_eq!(records.len(), 5, "each message ran once");
    assert!(
        records.windows(2).all(|w| w[0].end <= w[1].start),
        "two overlapped"
    );
    assert_eq!((stats.succeeded, stats.deleted), (5, 5));
}

#[tokio::test]
async fn different_groups_run_side_by_side() {
    let client = client().await;
    let queue = new_queue(&client, "e-groups", None).await;
    let groups = ["g1", "g2", "g3", "g4", "g5"];
    send(&queue, &groups, 1).await;
    let handler = Recorder::new(Duration::from_millis(300));
    run(&queue, &handler, config()).await;

    assert_eq!(handler.successes().len(), 5);
    let overlap = max_overlap(&handler.records());
    assert!(overlap >= 4, "only {overlap} handlers overlapped");
}

#[tokio::test]
async fn a_failure_mid_group_keeps_the_group_in_order_and_holds_no_other_group() {
    let client = client().await;
    let queue = new_queue(&client, "e-retry", None).await;
    send(&queue, &["g"], 6).await;
    send(&queue, &["other"], 3).await;
    let handler = Recorder::new(Duration::from_millis(50)).fault("g-3", Fault::FailTimes(2));
    let stats = run(&queue, &handler, config()).await;

    let successes = handler.successes();
    assert_eq!(successes["g"], bodies("g", &[1, 2, 3, 4, 5, 6]));
    assert_eq!(successes["other"], bodies("other", &[1, 2, 3]));
    let records = handler.records();
    let g3_ok = records
        .iter()
        .find(|r| r.body == "g-3" && r.ok)
        .unwrap()
        .end;
    let after: Vec<_> = records
        .iter()
        .filter(|r| r.group == "g" && r.body.as_str() > "g-3" && r.start < g3_ok)
        .collect();
    assert!(after.is_empty(), "started before g-3 succeeded: {after:?}");
    let other_done = records
        .iter()
        .filter(|r| r.group == "other")
        .map(|r| r.end)
        .max()
        .unwrap();
    assert!(other_done < g3_ok, "the other group waited for g");
    assert_eq!((stats.retried, stats.failed), (2, 0));
}

#[tokio::test]
async fn a_poison_message_ends_in_the_dead_letter_queue_and_its_group_goes_on() {
    let client = client().await;
    let queue = new_queue(&client, "e-poison", Some(2)).await;
    send(&queue, &["g"], 4).await;
    send(&queue, &["h"], 3).await;
    let handler = Recorder::new(Duration::from_millis(10)).fault("g-2", Fault::FailTimes(u32::MAX));
    let config = PoolConfig {
        retries: 1,
        ..config()
    };
    let stats = run(&queue, &handler, config).await;

    let successes = handler.successes();
    assert_eq!(successes["g"], bodies("g", &[1, 3, 4]));
    assert_eq!(successes["h"], bodies("h", &[1, 2, 3]));
    let dead = drain(&client, queue.dead_letter_url().unwrap()).await;
    let summary: Vec<_> = dead
        .iter()
        .map(|m| (m.group_id.as_str(), m.body.as_str()))
        .collect();
    assert_eq!(summary, [("g", "g-2")]);
    let mut originals = dead[0].attributes.clone();
    originals.retain(|name, _| !name.starts_with("fifo."));
    assert_eq!(originals, attributes(2), "the copy keeps its attributes");
    let reason = &dead[0].attributes["fifo.reason"].value;
    assert_eq!(
        reason,
        &fifo_sqs_client::AttributeValue::Text("injected failure of g-2".to_owned()),
        "and says why"
    );
    assert_eq!((stats.failed, stats.dead_lettered), (2, 1));
    let poison_runs: BTreeMap<u32, usize> = handler
        .records()
        .iter()
        .filter(|r| r.body == "g-2")
        .fold(BTreeMap::new(), |mut runs, r| {
            *runs.entry(r.receive_count).or_default() += 1;
            runs
        });
    assert_eq!(
        poison_runs,
        BTreeMap::from([(1, 2), (2, 2)]),
        "two deliveries, two attempts each"
    );
}

#[tokio::test]
async fn a_handler_slower_than_the_visibility_timeout_runs_once() {
    let client = client().await;
    let queue = new_queue(&client, "e-slow", None).await;
    send(&queue, &["g"], 2).await;
    send(&queue, &["h"], 1).await;
    let handler = Recorder::new(Duration::from_secs(5));
    let config = PoolConfig {
        visibility_timeout: 2,
        ..config()
    };
    let stats = run(&queue, &handler, config).await;

    let records = handler.records();
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(
        records.iter().all(|r| r.ok && r.receive_count == 1),
        "{records:?}"
    );
    assert_eq!(handler.successes()["g"], bodies("g", &[1, 2]));
    assert_eq!(stats.received, 3, "a message was delivered twice");
}

/// Passes every call to LocalStack, noting how many messages each receive
/// brought and how many entries each delete call carried.
#[derive(Clone)]
struct CountingDeletes {
    queue: SqsQueue,
    deliveries: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    deletes: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
}

impl fifo_worker_pool::Queue for CountingDeletes {
    async fn receive(
        &self,
        options: &fifo_worker_pool::ReceiveRequest,
    ) -> Result<fifo_worker_pool::Received, fifo_worker_pool::QueueError> {
        let received = self.queue.receive(options).await?;
        if !received.deliveries.is_empty() {
            self.deliveries
                .lock()
                .unwrap()
                .push(received.deliveries.len());
        }
        Ok(received)
    }
    async fn delete(
        &self,
        handles: &[&str],
    ) -> Result<Vec<fifo_worker_pool::EntryFailure>, fifo_worker_pool::QueueError> {
        self.deletes.lock().unwrap().push(handles.len());
        self.queue.delete(handles).await
    }
    async fn change_visibility(
        &self,
        entries: &[(&str, u32)],
    ) -> Result<Vec<fifo_worker_pool::EntryFailure>, fifo_worker_pool::QueueError> {
        self.queue.change_visibility(entries).await
    }
    async fn dead_letter(
        &self,
        handle: &str,
        copy: &fifo_worker_pool::DeadLetterCopy,
    ) -> Result<(), fifo_worker_pool::QueueError> {
        self.queue.dead_letter(handle, copy).await
    }
    async fn is_empty(&self) -> Result<bool, fifo_worker_pool::QueueError> {
        self.queue.is_empty().await
    }
    fn max_receive_count(&self) -> Option<u32> {
        self.queue.max_receive_count()
    }
}

#[tokio::test]
async fn a_hot_groups_done_messages_leave_together_in_one_delete_call() {
    let client = client().await;
    let queue = new_queue(&client, "e-hot", None).await;
    send(&queue, &["hot"], 30).await;
    // At a region's round trip (10 ms each way through our proxy), so that
    // a delete's hold (about one round trip) outlasts a delivery's handlers.
    let proxy = fifo_fault_proxy::Proxy::start(fifo_test_support::localstack::localstack_addr())
        .expect("the proxy starts");
    proxy.set_latency(Duration::from_millis(10));
    let through = fifo_sqs_client::connect(&fifo_sqs_client::ConnectOptions {
        queue_url: queue.url(),
        endpoint_url: Some(&proxy.url()),
        region: None,
    })
    .await
    .expect("a client through the proxy");
    let counting = CountingDeletes {
        queue: SqsQueue::open(through, queue.url()).await.unwrap(),
        deliveries: Default::default(),
        deletes: Default::default(),
    };
    let handler = Recorder::new(Duration::ZERO);
    let config = PoolConfig {
        pollers: Some(1),
        ..config()
    };
    let stats = tokio::time::timeout(
        Duration::from_secs(60),
        handler.run_on(counting.clone(), config, CancellationToken::new()),
    )
    .await
    .expect("the run ends by itself")
    .expect("the run ends cleanly");

    let numbers: Vec<usize> = (1..=30).collect();
    assert_eq!(handler.successes()["hot"], bodies("hot", &numbers));
    assert_eq!(handler.records().len(), 30, "each message ran once");
    assert_eq!(stats.deleted, 30);
    let deletes = counting.deletes.lock().unwrap().clone();
    let deliveries = counting.deliveries.lock().unwrap().clone();
    assert_eq!(deletes.iter().sum::<usize>(), 30, "{deletes:?}");
    // LocalStack hands out the group in deliveries of up to ten (fewer when
    // busy); each delivery's messages leave together.
    assert!(
        deletes.len() <= deliveries.len() && deletes.iter().any(|n| *n >= 5),
        "a group's done messages go in one call per delivery, not one call each: deletes {deletes:?}, deliveries {deliveries:?}"
    );
    assert!(drain(&client, queue.url()).await.is_empty());
}
