//! The bare SDK loops, which make fifo's calls and nothing else: the
//! emulator's limit that fifo's throughput is divided by, the same loop
//! under fifo's order rule, and the sends that fill the queues.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fifo_sqs_client::{Client, ConnectOptions, OutgoingMessage, QueueSpec, ReceiveOptions};

use crate::Plan;
use crate::measure::{own_cpu_seconds, thread_cpu_seconds};

/// A new FIFO queue of the benchmark's own, named after `label`.
pub(crate) async fn new_queue(client: &Client, label: &str) -> String {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
        % 1_000_000_000;
    let spec = QueueSpec {
        name: format!("bench-{label}-{stamp}.fifo"),
        visibility_timeout: 60,
        high_throughput: false,
        redrive: None,
    };
    client.create_fifo_queue(&spec).await.unwrap()
}

/// `count` messages spread round-robin over `groups`, with the bodies
/// `fifo send --groups` would make (`seq` counts per group).
pub(crate) fn messages(count: usize, groups: usize, tag: &str) -> Vec<OutgoingMessage> {
    (0..count)
        .map(|i| {
            let group = format!("group-{}", i % groups + 1);
            let seq = i / groups + 1;
            OutgoingMessage {
                body: serde_json::json!({"group": group, "seq": seq, "send_id": tag}).to_string(),
                group_id: group,
                dedup_id: None,
                ..OutgoingMessage::default()
            }
        })
        .collect()
}

/// Sends with `concurrency` streams of batches, each stream owning whole
/// groups (as `fifo send` does). Returns msgs/s.
pub(crate) async fn raw_send(
    client: &Client,
    queue_url: &str,
    all: Vec<OutgoingMessage>,
    concurrency: usize,
) -> f64 {
    let mut streams: Vec<Vec<OutgoingMessage>> = vec![Vec::new(); concurrency];
    let mut owner: HashMap<String, usize> = HashMap::new();
    for m in all {
        let next = owner.len() % concurrency;
        let stream = *owner.entry(m.group_id.clone()).or_insert(next);
        streams[stream].push(m);
    }
    let total: usize = streams.iter().map(Vec::len).sum();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for stream in streams {
        let client = client.clone();
        let url = queue_url.to_owned();
        tasks.spawn(async move {
            for batch in stream.chunks(10) {
                let sent = client.send_batch(&url, batch).await.unwrap();
                assert!(sent.iter().all(Result::is_ok));
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    total as f64 / started.elapsed().as_secs_f64()
}

/// The bare SDK receive+delete loop's CPU per message, on a one-thread
/// runtime of its own (as `fifo` runs), so that the proxy's threads and the
/// benchmark's other work do not count.
pub(crate) fn bare_loop_cpu(
    endpoint: String,
    queue_url: String,
    total: usize,
    concurrency: usize,
) -> f64 {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let client = fifo_sqs_client::connect(&ConnectOptions {
                queue_url: &queue_url,
                endpoint_url: Some(&endpoint),
                region: None,
            })
            .await
            .unwrap();
            let before = thread_cpu_seconds();
            raw_receive_delete(&client, &queue_url, total, concurrency).await;
            (thread_cpu_seconds() - before) * 1e6 / total as f64
        })
    })
    .join()
    .unwrap()
}

/// One receive of the bare loops: up to ten messages, a second's long
/// poll, with an attempt id so that a receive the SDK retries gets the same
/// messages back rather than leaving them invisible for the timeout.
async fn bare_receive(client: &Client, url: &str) -> Vec<fifo_sqs_client::ReceivedMessage> {
    let options = ReceiveOptions {
        max_messages: 10,
        wait_seconds: 1,
        visibility_timeout: Some(60),
        attempt_id: Some(format!("bench-{:016x}", fastrand::u64(..))),
    };
    client.receive(url, &options).await.unwrap().messages
}

/// A tight ReceiveMessage(10) + DeleteMessageBatch loop on `concurrency`
/// connections until `total` messages are gone. Returns msgs/s.
pub(crate) async fn raw_receive_delete(
    client: &Client,
    queue_url: &str,
    total: usize,
    concurrency: usize,
) -> f64 {
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = queue_url.to_owned();
        let done = done.clone();
        tasks.spawn(async move {
            while done.load(std::sync::atomic::Ordering::Relaxed) < total {
                let got = bare_receive(&client, &url).await;
                if got.is_empty() {
                    continue;
                }
                let handles: Vec<&str> = got.iter().map(|m| m.receipt_handle.as_str()).collect();
                client.delete_batch(&url, &handles).await.unwrap();
                done.fetch_add(got.len(), std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    total as f64 / started.elapsed().as_secs_f64()
}

/// The bare loop of [`raw_receive_delete`] under fifo's order rule: a
/// message is deleted only once every earlier one of its group was, so each
/// group's messages of a receive are deleted one after another (the groups
/// side by side), in batches of ten shared by all the loops (a full batch
/// while fewer than 16 calls are under way, a partial one when none is, as
/// fifo's engine batches). Unlike fifo, a loop receives again only once its
/// deletes are done, so the groups it holds are the loops there are.
pub(crate) async fn ordered_receive_delete(
    client: &Client,
    queue_url: &str,
    total: usize,
    concurrency: usize,
) -> f64 {
    type Entry = (String, tokio::sync::oneshot::Sender<()>);
    let (to_batcher, mut entries) = tokio::sync::mpsc::unbounded_channel::<Entry>();
    let batcher = {
        let client = client.clone();
        let url = queue_url.to_owned();
        tokio::spawn(async move {
            let mut waiting: std::collections::VecDeque<Entry> = Default::default();
            let mut calls = tokio::task::JoinSet::new();
            let mut open = true;
            loop {
                while (waiting.len() >= 10 && calls.len() < 16)
                    || (!waiting.is_empty() && calls.is_empty())
                {
                    let batch: Vec<Entry> = waiting.drain(..waiting.len().min(10)).collect();
                    let client = client.clone();
                    let url = url.clone();
                    calls.spawn(async move {
                        let handles: Vec<&str> = batch.iter().map(|(h, _)| h.as_str()).collect();
                        let failed = client.delete_batch(&url, &handles).await.unwrap();
                        assert!(failed.is_empty(), "a delete failed: {failed:?}");
                        for (_, deleted) in batch {
                            let _ = deleted.send(());
                        }
                    });
                }
                if !open && waiting.is_empty() && calls.is_empty() {
                    return;
                }
                tokio::select! {
                    entry = entries.recv(), if open => match entry {
                        Some(entry) => waiting.push_back(entry),
                        None => open = false,
                    },
                    Some(joined) = calls.join_next() => joined.unwrap(),
                }
            }
        })
    };
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = queue_url.to_owned();
        let done = done.clone();
        let to_batcher = to_batcher.clone();
        tasks.spawn(async move {
            while done.load(std::sync::atomic::Ordering::Relaxed) < total {
                let got = bare_receive(&client, &url).await;
                let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for message in got {
                    chains
                        .entry(message.group_id)
                        .or_default()
                        .push(message.receipt_handle);
                }
                let mut groups = tokio::task::JoinSet::new();
                for (_, handles) in chains {
                    let (to_batcher, done) = (to_batcher.clone(), done.clone());
                    groups.spawn(async move {
                        for handle in handles {
                            let (deleted, confirmed) = tokio::sync::oneshot::channel();
                            to_batcher.send((handle, deleted)).unwrap();
                            confirmed.await.unwrap();
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    });
                }
                while groups.join_next().await.is_some() {}
            }
        });
    }
    drop(to_batcher);
    while tasks.join_next().await.is_some() {}
    batcher.await.unwrap();
    total as f64 / started.elapsed().as_secs_f64()
}

/// The emulator's own throughput for the calls fifo makes, at the best of a
/// few concurrencies.
pub(crate) async fn emulator_limit(
    client: &Client,
    plan: &Plan,
    run: usize,
    sdk_cpu: &mut Vec<f64>,
) -> (f64, f64) {
    let mut best_send: f64 = 0.0;
    let mut best_receive: f64 = 0.0;
    for concurrency in [4, 8] {
        let url = new_queue(client, &format!("limit{run}c{concurrency}")).await;
        let all = messages(
            plan.messages,
            plan.groups,
            &format!("limit{run}{concurrency}"),
        );
        best_send = best_send.max(raw_send(client, &url, all, concurrency).await);
        let cpu_before = own_cpu_seconds();
        best_receive =
            best_receive.max(raw_receive_delete(client, &url, plan.messages, concurrency).await);
        sdk_cpu.push((own_cpu_seconds() - cpu_before) * 1e6 / plan.messages as f64);
    }
    (best_send, best_receive)
}

/// A plain one-thread consumer of one group: receive up to ten, handle
/// them one after another (`work` each), delete them in one call, again,
/// until `total` messages are gone. What fifo's hot group is held against.
/// Returns msgs/s.
pub(crate) async fn one_group_loop(
    client: &Client,
    queue_url: &str,
    total: usize,
    work: std::time::Duration,
) -> f64 {
    let started = Instant::now();
    let mut done = 0;
    while done < total {
        let got = bare_receive(client, queue_url).await;
        for _ in &got {
            if !work.is_zero() {
                tokio::time::sleep(work).await;
            }
        }
        if got.is_empty() {
            continue;
        }
        let handles: Vec<&str> = got.iter().map(|m| m.receipt_handle.as_str()).collect();
        let failed = client.delete_batch(queue_url, &handles).await.unwrap();
        assert!(failed.is_empty(), "a delete failed: {failed:?}");
        done += got.len();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// The same consumer written the way most people would, in Python with
/// boto3 (from LocalStack's own virtualenv), one thread; `None` when that
/// Python is not there.
pub(crate) fn boto3_one_group_loop(
    endpoint: &str,
    queue_url: &str,
    total: usize,
    work: std::time::Duration,
) -> Option<f64> {
    const SCRIPT: &str = r#"
import sys, time, boto3
endpoint, url, total, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
started, done = time.monotonic(), 0
while done < total:
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                              VisibilityTimeout=60).get("Messages", [])
    for _ in got:
        if work:
            time.sleep(work)
    if got:
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
        done += len(got)
print(total / (time.monotonic() - started))
"#;
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.localstack/venv/bin/python");
    if !python.exists() {
        return None;
    }
    let output = std::process::Command::new(python)
        .args(["-c", SCRIPT, endpoint, queue_url])
        .arg(total.to_string())
        .arg(work.as_secs_f64().to_string())
        .output()
        .ok()?;
    assert!(
        output.status.success(),
        "the boto3 consumer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}
