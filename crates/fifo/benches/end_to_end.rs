//! `cargo xtask bench`: fifo against the emulator's own limit, measured in
//! one run, and the engine alone on the in-memory queue. Writes
//! BENCHMARKS.md, BENCHMARKS.json and benchmarks-latency.svg at the project
//! root. Every figure is the median of several runs; every ratio divides
//! figures of the same invocation. Needs LocalStack on localhost:4566.
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fifo_handler::{Handler, Message, Outcome};
use fifo_sqs_client::{Client, ConnectOptions, OutgoingMessage, QueueSpec, ReceiveOptions};
use fifo_worker_pool::memory::{Faults, MemoryQueue};
use fifo_worker_pool::{Counters, PoolConfig, SqsQueue};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ENDPOINT: &str = "http://localhost:4566";

struct Plan {
    quick: bool,
    runs: usize,
    /// Messages for the limit, the no-op run and scale-out.
    messages: usize,
    groups: usize,
    latency_groups: usize,
    latency_workers: Vec<usize>,
    skew_messages: usize,
    engine_messages: usize,
    soak_messages: usize,
    /// The largest `fifo send` whose memory is measured.
    send_memory_messages: usize,
    /// Round trips added by the proxy in section 10, in ms.
    rtts: Vec<u64>,
    /// Messages for the limit and the no-op run through the proxy.
    rtt_messages: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                runs: 3,
                messages: 4_000,
                groups: 200,
                latency_groups: 20,
                latency_workers: vec![4, 16, 32],
                skew_messages: 1_000,
                engine_messages: 100_000,
                soak_messages: 100_000,
                send_memory_messages: 100_000,
                rtts: vec![0, 20],
                rtt_messages: 2_000,
            }
        } else {
            Plan {
                quick,
                runs: 3,
                messages: 20_000,
                groups: 200,
                latency_groups: 100,
                latency_workers: vec![1, 4, 16, 32, 64, 100],
                skew_messages: 4_000,
                engine_messages: 500_000,
                soak_messages: 1_000_000,
                send_memory_messages: 1_000_000,
                rtts: vec![0, 5, 20],
                rtt_messages: 6_000,
            }
        }
    }
}

const WORK: Duration = Duration::from_millis(50);
const PER_GROUP: usize = 20;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let plan = Plan::new(quick);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if std::env::args().any(|a| a == "--soak-only") {
        let soak = soak(&plan);
        println!("{}", serde_json::to_string_pretty(&soak).unwrap());
        return;
    }
    // `--rtt MS` measures section 10 at that round trip alone and prints it.
    if let Some(rtt) = flag_value("--rtt") {
        let rtt = rtt.parse().expect("--rtt takes milliseconds");
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let section = runtime.block_on(async {
            let client = checked_localstack_client().await;
            at_rtt(&client, &plan, rtt).await
        });
        println!("{}", serde_json::to_string_pretty(&section).unwrap());
        return;
    }
    if std::env::args().any(|a| a == "--engine-only") {
        // For profiling the engine alone.
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        runtime.block_on(engine_alone(&plan));
        return;
    }
    // `--from-json` rewrites the report from the last run's figures;
    // `--send-memory-only` measures section 9 again into them.
    let report = if std::env::args().any(|a| a == "--send-memory-only") {
        let text =
            std::fs::read_to_string(root.join("BENCHMARKS.json")).expect("a BENCHMARKS.json");
        let mut report: Value = serde_json::from_str(&text).expect("valid JSON");
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        report["send_memory"] = runtime.block_on(send_memory(&plan));
        report
    } else if std::env::args().any(|a| a == "--from-json") {
        let text =
            std::fs::read_to_string(root.join("BENCHMARKS.json")).expect("a BENCHMARKS.json");
        serde_json::from_str(&text).expect("valid JSON")
    } else {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        runtime.block_on(run_all(&plan))
    };
    let plan = Plan::new(report["quick"].as_bool().unwrap_or(quick));
    std::fs::write(
        root.join("BENCHMARKS.json"),
        serde_json::to_string_pretty(&report).unwrap() + "\n",
    )
    .unwrap();
    std::fs::write(root.join("benchmarks-latency.svg"), latency_svg(&report)).unwrap();
    std::fs::write(root.join("BENCHMARKS.md"), markdown(&report, &plan)).unwrap();
    println!("wrote BENCHMARKS.md, BENCHMARKS.json and benchmarks-latency.svg");
}

/// A client for LocalStack.
async fn localstack_client() -> Client {
    fifo_sqs_client::connect(&ConnectOptions {
        queue_url: &format!("{ENDPOINT}/000000000000/bench.fifo"),
        endpoint_url: None,
        region: None,
    })
    .await
    .unwrap()
}

/// The value after `flag` on the command line.
fn flag_value(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == flag)?;
    Some(args.get(at + 1).expect("a value after the flag").clone())
}

async fn checked_localstack_client() -> Client {
    let client = localstack_client().await;
    if client.list_queue_urls(Some("none")).await.is_err() {
        panic!(
            "LocalStack is not reachable at {ENDPOINT}: start it with `cargo xtask localstack-up`"
        );
    }
    client
}

fn workers_16() -> Vec<String> {
    vec!["--workers".into(), "16".into()]
}

/// Section 10: the limit, the no-op run with default flags and the
/// latency-bound runs, all through the proxy adding `rtt_ms` per call.
async fn at_rtt(client: &Client, plan: &Plan, rtt_ms: u64) -> Value {
    let upstream = "127.0.0.1:4566".parse().unwrap();
    let proxy = xtask::proxy::Proxy::start(upstream).expect("the proxy starts");
    proxy.set_latency(Duration::from_millis(rtt_ms) / 2);
    let through = fifo_sqs_client::connect(&ConnectOptions {
        queue_url: &format!("{ENDPOINT}/000000000000/bench.fifo"),
        endpoint_url: Some(&proxy.url()),
        region: None,
    })
    .await
    .unwrap();
    let n = plan.rtt_messages;
    let mut limits = Vec::new();
    for concurrency in [4, 8, 16, 32, 64] {
        let url = new_queue(client, &format!("rttlimit{rtt_ms}c{concurrency}")).await;
        let all = messages(n, plan.groups, &format!("rtt{rtt_ms}{concurrency}"));
        raw_send(client, &url, all, 8).await;
        let rate = raw_receive_delete(&through, &url, n, concurrency).await;
        println!(
            "  RTT {rtt_ms} ms: bare SDK receive+delete, {concurrency} calls at once: {rate:.0} msgs/s"
        );
        limits.push(json!({ "concurrency": concurrency, "msgs_per_s": rate }));
    }
    // Each loop waits on its group's deletes, so it takes more loops.
    let mut ordered_limits = Vec::new();
    for loops in [32, 64, 128, 256] {
        let url = new_queue(client, &format!("rttordered{rtt_ms}l{loops}")).await;
        let all = messages(n, plan.groups, &format!("rtto{rtt_ms}{loops}"));
        raw_send(client, &url, all, 8).await;
        let rate = ordered_receive_delete(&through, &url, n, loops).await;
        println!(
            "  RTT {rtt_ms} ms: the same, deleting in group order, {loops} loops: {rate:.0} msgs/s"
        );
        ordered_limits.push(json!({ "loops": loops, "msgs_per_s": rate }));
    }
    let ordered_limit = ordered_limits
        .iter()
        .map(|l| l["msgs_per_s"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let limit = limits
        .iter()
        .map(|l| l["msgs_per_s"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let url = new_queue(client, &format!("rttcpu{rtt_ms}")).await;
    raw_send(
        client,
        &url,
        messages(n, plan.groups, &format!("rttcpu{rtt_ms}")),
        8,
    )
    .await;
    let sdk_cpu = bare_loop_cpu(proxy.url(), url, n, 8);
    println!("  RTT {rtt_ms} ms: bare SDK loop, 8 calls at once: {sdk_cpu:.1} µs CPU per message");
    let endpoint = vec!["--endpoint-url".to_owned(), proxy.url()];
    let no_op_plan = Plan {
        messages: n,
        ..Plan::new(plan.quick)
    };
    let mut no_op = Vec::new();
    for run in 0..plan.runs {
        let (_, result) = end_to_end(client, &no_op_plan, 300 + run, 1, &endpoint).await;
        println!(
            "  RTT {rtt_ms} ms: fifo run (default flags) {:.0} msgs/s",
            result["msgs_per_s"].as_f64().unwrap()
        );
        no_op.push(result);
    }
    let pick = |key: &str| {
        median(
            &no_op
                .iter()
                .map(|r| r[key].as_f64().unwrap())
                .collect::<Vec<_>>(),
        )
    };
    let rate = pick("msgs_per_s");
    let mut latency = Vec::new();
    for workers in [16, 64, 100] {
        let makespans: Vec<f64> = {
            let mut all = Vec::new();
            for run in 0..plan.runs {
                all.push(
                    latency_run(client, plan, 300 + run, &[workers], &endpoint)
                        .await
                        .0,
                );
            }
            all
        };
        let bound = lower_bound(plan.latency_groups * PER_GROUP, workers);
        let makespan = median(&makespans);
        println!(
            "  RTT {rtt_ms} ms: latency-bound W={workers}: {makespan:.2} s, bound {bound:.2} s, ratio {:.3}",
            makespan / bound
        );
        latency.push(json!({
            "workers": workers, "makespan_s": makespan, "bound_s": bound,
            "ratio": makespan / bound, "all_makespans": makespans,
        }));
    }
    json!({
        "rtt_ms": rtt_ms,
        "limit_msgs_per_s": limit,
        "limits": limits,
        "ordered_limit_msgs_per_s": ordered_limit,
        "ordered_limits": ordered_limits,
        "sdk_cpu_us_per_msg": sdk_cpu,
        "no_op": {
            "messages": n, "groups": plan.groups,
            "msgs_per_s": rate, "ratio": rate / limit,
            "cpu_us_per_msg": pick("cpu_us_per_msg"),
            "localstack_cpu_share": pick("localstack_cpu_share"),
            "order_violations": no_op.iter().map(|r| r["order_violations"].as_u64().unwrap()).sum::<u64>(),
        },
        "latency": latency,
    })
}

async fn run_all(plan: &Plan) -> Value {
    let client = checked_localstack_client().await;
    let mut report = json!({ "machine": machine(), "quick": plan.quick, "runs": plan.runs });

    println!("== 1. the emulator's limit, 2. end to end with a no-op handler, 6. cost");
    let mut limit_send = Vec::new();
    let mut limit_receive = Vec::new();
    let mut e2e_send = Vec::new();
    let mut e2e_run = Vec::new();
    let mut sdk_cpu = Vec::new();
    for run in 0..plan.runs {
        let (send, receive) = emulator_limit(&client, plan, run, &mut sdk_cpu).await;
        let (fifo_send, fifo_run) = end_to_end(&client, plan, run, 1, &workers_16()).await;
        println!(
            "  run {run}: raw send {send:.0}/s, raw receive+delete {receive:.0}/s, fifo send {:.0}/s, fifo run {:.0}/s",
            fifo_send,
            fifo_run["msgs_per_s"].as_f64().unwrap()
        );
        limit_send.push(send);
        limit_receive.push(receive);
        e2e_send.push(fifo_send);
        e2e_run.push(fifo_run);
    }
    let run_rates: Vec<f64> = e2e_run
        .iter()
        .map(|r| r["msgs_per_s"].as_f64().unwrap())
        .collect();
    let pick = |key: &str| {
        median(
            &e2e_run
                .iter()
                .map(|r| r[key].as_f64().unwrap())
                .collect::<Vec<_>>(),
        )
    };
    report["limit"] = json!({
        "send_msgs_per_s": median(&limit_send),
        "receive_delete_msgs_per_s": median(&limit_receive),
        "all_send": limit_send, "all_receive_delete": limit_receive,
        "sdk_cpu_us_per_msg": median(&sdk_cpu),
    });
    report["no_op"] = json!({
        "messages": plan.messages, "groups": plan.groups,
        "run_msgs_per_s": median(&run_rates),
        "run_ratio": median(&run_rates) / median(&limit_receive),
        "send_msgs_per_s": median(&e2e_send),
        "send_ratio": median(&e2e_send) / median(&limit_send),
        "fifo_cpu_us_per_msg": pick("cpu_us_per_msg"),
        "fifo_cpu_s_per_10k": pick("cpu_us_per_msg") * 10_000.0 / 1e6,
        "fifo_peak_rss_mib": pick("peak_rss_mib"),
        "localstack_cpu_share": pick("localstack_cpu_share"),
        "order_violations": e2e_run.iter().map(|r| r["order_violations"].as_u64().unwrap()).sum::<u64>(),
        "runs": e2e_run,
    });

    println!("== 3. latency-bound: makespan against max(N·L/W, {PER_GROUP}·L)");
    let mut latency = Vec::new();
    for &workers in &plan.latency_workers {
        let mut makespans = Vec::new();
        let mut shares = Vec::new();
        let mut staggers = Vec::new();
        let mut refills = Vec::new();
        for run in 0..plan.runs {
            let result = latency_run(&client, plan, run, &[workers], &[]).await;
            makespans.push(result.0);
            shares.push(result.1);
            staggers.push(result.2);
            refills.push(result.3);
        }
        let n = plan.latency_groups * PER_GROUP;
        let bound = lower_bound(n, workers);
        let makespan = median(&makespans);
        println!(
            "  W={workers}: makespan {makespan:.2} s, bound {bound:.2} s, ratio {:.3}",
            makespan / bound
        );
        latency.push(json!({
            "workers": workers, "messages": n, "makespan_s": makespan, "bound_s": bound,
            "ratio": makespan / bound, "localstack_cpu_share": median(&shares), "all_makespans": makespans,
            "last_group_first_start_s": median(&staggers), "refill_gap_p50_s": median(&refills),
        }));
    }
    report["latency"] = Value::Array(latency);

    println!("== 4. skew: one hot group and 99 cold ones");
    report["skew"] = skew(&client, plan).await;

    println!("== 5. the engine alone (in-memory queue)");
    report["engine"] = engine_alone(plan).await;

    println!("== 8. soak: the engine under random faults (in-memory queue)");
    report["soak"] = soak(plan);

    println!("== 7. scale-out");
    let mut scale = Vec::new();
    for processes in [2, 4] {
        let mut rates = Vec::new();
        let mut violations = 0;
        for run in 0..plan.runs {
            let (_, result) = end_to_end(&client, plan, 100 + run, processes, &workers_16()).await;
            rates.push(result["msgs_per_s"].as_f64().unwrap());
            violations += result["order_violations"].as_u64().unwrap();
        }
        let workers_total = 32;
        let per_process = vec![workers_total / processes; processes];
        let mut makespans = Vec::new();
        for run in 0..plan.runs {
            makespans.push(
                latency_run(&client, plan, 200 + run, &per_process, &[])
                    .await
                    .0,
            );
        }
        let n = plan.latency_groups * PER_GROUP;
        let bound = lower_bound(n, workers_total);
        println!(
            "  {processes} processes: no-op {:.0}/s, latency-bound W={workers_total} makespan {:.2} s (bound {bound:.2} s)",
            median(&rates),
            median(&makespans)
        );
        scale.push(json!({
            "processes": processes,
            "no_op_msgs_per_s": median(&rates),
            "no_op_ratio_to_limit": median(&rates) / median(&limit_receive),
            "order_violations": violations,
            "latency_workers_total": workers_total,
            "latency_makespan_s": median(&makespans),
            "latency_bound_s": bound,
            "latency_ratio": median(&makespans) / bound,
        }));
    }
    report["scale_out"] = Value::Array(scale);
    report["router"] = criterion_results();

    println!("== 9. send memory");
    report["send_memory"] = send_memory(plan).await;

    println!("== 10. through a proxy adding a round trip");
    let mut at = Vec::new();
    for &rtt in &plan.rtts {
        at.push(at_rtt(&client, plan, rtt).await);
    }
    report["rtt"] = Value::Array(at);
    report
}

/// Peak RSS and rate of `fifo send` for a small and a large count: flat
/// memory means the large send needs no more than the small one.
async fn send_memory(plan: &Plan) -> Value {
    let client = localstack_client().await;
    let mut runs = Vec::new();
    for count in [10_000, plan.send_memory_messages] {
        let url = new_queue(&client, &format!("sendmem{count}")).await;
        let started = Instant::now();
        let mut child = fifo()
            .args([
                "--queue-url",
                &url,
                "--no-progress",
                "send",
                "--groups",
                "100",
            ])
            .args(["--count", &count.to_string(), "--concurrency", "8"])
            .stderr(Stdio::null())
            .spawn()
            .expect("fifo send starts");
        let (cpu_s, peak_rss_mib) = wait_sampling(std::slice::from_mut(&mut child));
        assert!(child.wait().unwrap().success(), "fifo send failed");
        let seconds = started.elapsed().as_secs_f64();
        let stored = client.queue_attributes(&url).await.unwrap().visible;
        println!(
            "  {count} messages: peak RSS {peak_rss_mib:.1} MiB, {:.0} msgs/s, {stored} in the queue",
            count as f64 / seconds
        );
        runs.push(json!({
            "messages": count,
            "peak_rss_mib": peak_rss_mib,
            "msgs_per_s": count as f64 / seconds,
            "cpu_us_per_msg": cpu_s * 1e6 / count as f64,
            "stored": stored,
        }));
    }
    json!({ "date": machine()["date"], "runs": runs })
}

fn lower_bound(messages: usize, workers: usize) -> f64 {
    let l = WORK.as_secs_f64();
    (messages as f64 * l / workers as f64).max(PER_GROUP as f64 * l)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn new_queue(client: &Client, label: &str) -> String {
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
fn messages(count: usize, groups: usize, tag: &str) -> Vec<OutgoingMessage> {
    (0..count)
        .map(|i| {
            let group = format!("group-{}", i % groups + 1);
            let seq = i / groups + 1;
            OutgoingMessage {
                body: json!({"group": group, "seq": seq, "send_id": tag}).to_string(),
                group_id: group,
                dedup_id: None,
                ..OutgoingMessage::default()
            }
        })
        .collect()
}

/// Sends with `concurrency` streams of batches, each stream owning whole
/// groups (as `fifo send` does). Returns msgs/s.
async fn raw_send(
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

/// A tight ReceiveMessage(10) + DeleteMessageBatch loop on `concurrency`
/// connections until `total` messages are gone. Returns msgs/s.
/// The bare SDK receive+delete loop's CPU per message, on a one-thread
/// runtime of its own (as `fifo` runs), so that the proxy's threads and the
/// benchmark's other work do not count.
fn bare_loop_cpu(endpoint: String, queue_url: String, total: usize, concurrency: usize) -> f64 {
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

/// CPU seconds (user + system) of the calling thread, from /proc.
fn thread_cpu_seconds() -> f64 {
    stat_cpu_seconds("/proc/thread-self/stat").unwrap_or(f64::NAN)
}

/// CPU seconds (user + system) in a /proc `stat` file (of a process or a
/// thread).
fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().ok()? + fields[12].parse::<f64>().ok()?;
    Some(ticks / 100.0)
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

async fn raw_receive_delete(
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
async fn ordered_receive_delete(
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
async fn emulator_limit(
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

/// CPU seconds (user + system) and peak RSS of a process, from /proc.
fn proc_usage(pid: u32) -> Option<(f64, f64)> {
    let cpu = stat_cpu_seconds(&format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((cpu, hwm_kib / 1024.0))
}

/// LocalStack's process, when it runs on the host (for its CPU share).
fn localstack_pid() -> Option<u32> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.localstack/localstack.pid");
    std::fs::read_to_string(root).ok()?.trim().parse().ok()
}

fn localstack_cpu() -> f64 {
    localstack_pid()
        .and_then(proc_usage)
        .map_or(f64::NAN, |(cpu, _)| cpu)
}

fn fifo() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fifo"));
    for name in [
        "SQS_QUEUE_URL",
        "ENDPOINT_URL",
        "MAX_WORKERS",
        "VISIBILITY_TIMEOUT",
        "WAIT_TIME_SECONDS",
        "MAX_MESSAGES",
    ] {
        command.env_remove(name);
    }
    command
}

/// Spawns `fifo run` whose log lines are collected by a reader thread.
fn spawn_run(queue_url: &str, args: &[String]) -> (Child, std::thread::JoinHandle<Vec<String>>) {
    let mut child = fifo()
        .args([
            "--queue-url",
            queue_url,
            "--no-progress",
            "run",
            "--until-empty",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("fifo run starts");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect()
    });
    (child, reader)
}

/// Waits for the children, sampling their CPU time and peak RSS.
fn wait_sampling(children: &mut [Child]) -> (f64, f64) {
    let mut last: Vec<(f64, f64)> = vec![(0.0, 0.0); children.len()];
    loop {
        let mut running = false;
        for (child, last) in children.iter_mut().zip(last.iter_mut()) {
            if child.try_wait().unwrap().is_none() {
                running = true;
                if let Some(usage) = proc_usage(child.id()) {
                    *last = usage;
                }
            }
        }
        if !running {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (
        last.iter().map(|l| l.0).sum(),
        last.iter().map(|l| l.1).fold(0.0, f64::max),
    )
}

/// A log line: (seconds of the day, start?, group, SQS sequence number, body seq).
/// The log lines of one run, parsed. The log handler stamps the time of
/// day, so a run that crosses midnight has its later lines moved a day on.
fn parse_logs(lines: &[String]) -> Vec<(f64, bool, String, String)> {
    let mut events: Vec<_> = lines.iter().filter_map(|l| parse_log(l)).collect();
    let crosses_midnight =
        events.iter().any(|e| e.0 > 20.0 * 3600.0) && events.iter().any(|e| e.0 < 4.0 * 3600.0);
    if crosses_midnight {
        for event in events.iter_mut().filter(|e| e.0 < 12.0 * 3600.0) {
            event.0 += 24.0 * 3600.0;
        }
    }
    events
}

fn parse_log(line: &str) -> Option<(f64, bool, String, String)> {
    let mut parts = line.get(..12)?.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    let at =
        h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?;
    let start = line[13..].starts_with("start");
    let field = |name: &str| -> Option<String> {
        let rest = &line[line.find(&format!(" {name}="))? + name.len() + 2..];
        Some(rest.split(' ').next()?.to_owned())
    };
    Some((at, start, field("group")?, field("seq")?))
}

/// Per group, handler starts must follow SQS sequence numbers; counts the
/// places where they do not (across all processes' logs).
fn order_violations(lines: &[String]) -> u64 {
    let mut starts: BTreeMap<String, Vec<(f64, u128)>> = BTreeMap::new();
    for (at, start, group, seq) in parse_logs(lines) {
        if start {
            starts
                .entry(group)
                .or_default()
                .push((at, seq.parse().unwrap_or(0)));
        }
    }
    let mut violations = 0;
    for runs in starts.values_mut() {
        runs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        violations += runs.windows(2).filter(|w| w[1].1 <= w[0].1).count() as u64;
    }
    violations
}

/// `fifo send` of the messages, then `processes` × `fifo run --until-empty`
/// with the log handler and no work, timed until the queue is drained.
async fn end_to_end(
    client: &Client,
    plan: &Plan,
    run: usize,
    processes: usize,
    run_args: &[String],
) -> (f64, Value) {
    let url = new_queue(client, &format!("e2e{run}p{processes}")).await;
    let started = Instant::now();
    let status = fifo()
        .args(["--queue-url", &url, "--no-progress", "send", "--groups"])
        .args([
            plan.groups.to_string(),
            "--count".into(),
            plan.messages.to_string(),
            "--concurrency".into(),
            "8".into(),
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "fifo send failed");
    let send_rate = plan.messages as f64 / started.elapsed().as_secs_f64();

    let localstack_before = localstack_cpu();
    let started = Instant::now();
    let mut children = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..processes {
        let (child, reader) = spawn_run(&url, run_args);
        children.push(child);
        readers.push(reader);
    }
    // Drained is when SQS holds nothing; the exit that follows (noticing the
    // queue is empty) is not processing time. Polled rarely while much is
    // left: LocalStack answers one call at a time, and polling every 20 ms
    // took a quarter of its calls from the run being measured.
    let drained = {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            loop {
                let a = client.queue_attributes(&url).await.unwrap();
                let left = a.visible + a.in_flight;
                if left == 0 {
                    return started.elapsed();
                }
                // About half the time the rest takes at 1000 msgs/s.
                let wait_ms = (left as u64 / 2).clamp(20, 500);
                tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            }
        })
    };
    let (cpu, rss) = tokio::task::block_in_place(|| wait_sampling(&mut children));
    let elapsed = drained.await.unwrap();
    let localstack_share = (localstack_cpu() - localstack_before) / elapsed.as_secs_f64();
    let lines: Vec<String> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    let handled = lines
        .iter()
        .filter(|l| l.get(13..18) == Some("start"))
        .count();
    assert!(
        handled >= plan.messages,
        "only {handled} of {} handled",
        plan.messages
    );
    (
        send_rate,
        json!({
            "msgs_per_s": plan.messages as f64 / elapsed.as_secs_f64(),
            "drain_s": elapsed.as_secs_f64(),
            "cpu_us_per_msg": cpu * 1e6 / plan.messages as f64,
            "peak_rss_mib": rss,
            "localstack_cpu_share": localstack_share,
            "order_violations": order_violations(&lines),
        }),
    )
}

/// 20 messages per group, `--work-ms 50`, one `fifo run` per entry of
/// `workers`: the makespan from the first handler start to the last end,
/// and LocalStack's CPU share meanwhile.
async fn latency_run(
    client: &Client,
    plan: &Plan,
    run: usize,
    workers: &[usize],
    endpoint: &[String],
) -> (f64, f64, f64, f64) {
    let url = new_queue(client, &format!("lat{run}w{}", workers[0])).await;
    let n = plan.latency_groups * PER_GROUP;
    raw_send(client, &url, messages(n, plan.latency_groups, "latency"), 8).await;
    let localstack_before = localstack_cpu();
    let started = Instant::now();
    let mut children = Vec::new();
    let mut readers = Vec::new();
    for w in workers {
        let args: Vec<String> = [
            "--workers",
            &w.to_string(),
            "--work-ms",
            &WORK.as_millis().to_string(),
        ]
        .map(String::from)
        .to_vec();
        let args = [args, endpoint.to_vec()].concat();
        let (child, reader) = spawn_run(&url, &args);
        children.push(child);
        readers.push(reader);
    }
    tokio::task::block_in_place(|| wait_sampling(&mut children));
    let share = (localstack_cpu() - localstack_before) / started.elapsed().as_secs_f64();
    let lines: Vec<String> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    let events: Vec<(f64, bool)> = parse_logs(&lines)
        .into_iter()
        .map(|(at, start, _, _)| (at, start))
        .collect();
    let first = events
        .iter()
        .filter(|e| e.1)
        .map(|e| e.0)
        .fold(f64::INFINITY, f64::min);
    let last = events
        .iter()
        .filter(|e| !e.1)
        .map(|e| e.0)
        .fold(0.0, f64::max);
    assert_eq!(
        events.iter().filter(|e| !e.1).count(),
        n,
        "every message done once"
    );
    assert_eq!(order_violations(&lines), 0, "order per group broken");
    let (stagger, refill) = stagger_and_refill(&lines, first);
    (last - first, share, stagger, refill)
}

/// When the last group first started (after the first start), and the
/// median gap between a group's 10th message ending and its 11th starting
/// (the refill: delete, unlock, receive again).
fn stagger_and_refill(lines: &[String], first: f64) -> (f64, f64) {
    let mut by_group: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for (at, start, group, _) in parse_logs(lines) {
        let entry = by_group.entry(group).or_default();
        if start {
            entry.0.push(at)
        } else {
            entry.1.push(at)
        }
    }
    let mut stagger: f64 = 0.0;
    let mut gaps = Vec::new();
    for (starts, ends) in by_group.values_mut() {
        starts.sort_by(f64::total_cmp);
        ends.sort_by(f64::total_cmp);
        stagger = stagger.max(starts[0] - first);
        if starts.len() > 10 && ends.len() >= 10 {
            gaps.push(starts[10] - ends[9]);
        }
    }
    (stagger, median(&gaps))
}

/// Records, per message, the time from its send to its handler's start.
#[derive(Clone, Default)]
struct Waits {
    waits: Arc<Mutex<Vec<(String, f64)>>>,
}

impl Handler for Waits {
    async fn handle(&self, message: &Message) -> Outcome {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as f64;
        let wait = (now_ms - message.sent_timestamp_ms as f64) / 1000.0;
        self.waits
            .lock()
            .unwrap()
            .push((message.group_id.clone(), wait));
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(())
    }
}

/// One hot group with half the messages and 99 cold groups, W = 16, L = 20
/// ms; the same cold messages alone for comparison. Runs until every cold
/// message started.
async fn skew(client: &Client, plan: &Plan) -> Value {
    let cold_total = plan.skew_messages / 2;
    let mut result = json!({});
    for (label, with_hot) in [("with_hot", true), ("cold_only", false)] {
        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        let mut hot50 = Vec::new();
        let mut hot99 = Vec::new();
        for run in 0..plan.runs {
            let url = new_queue(client, &format!("skew{run}{label}")).await;
            // The hot backlog is sent first; the cold messages are then sent
            // the same way in both runs, so their send-to-start times compare.
            let (hot, cold): (Vec<OutgoingMessage>, Vec<OutgoingMessage>) = (0..plan.skew_messages)
                .map(|i| {
                    let group = if i % 2 == 0 {
                        "hot".to_owned()
                    } else {
                        format!("cold-{}", i / 2 % 99)
                    };
                    OutgoingMessage {
                        body: format!("{group}-{i}"),
                        group_id: group,
                        dedup_id: None,
                        ..OutgoingMessage::default()
                    }
                })
                .partition(|m| m.group_id == "hot");
            if with_hot {
                raw_send(client, &url, hot, 8).await;
            }
            raw_send(client, &url, cold, 8).await;
            let handler = Waits::default();
            let shutdown = CancellationToken::new();
            let config = PoolConfig {
                workers: 16,
                wait_time_seconds: 1,
                ..PoolConfig::default()
            };
            let queue = SqsQueue::open(client.clone(), &url).await.unwrap();
            let engine = tokio::spawn({
                let (handler, shutdown) = (handler.clone(), shutdown.clone());
                async move { fifo_worker_pool::run(queue, handler, &config, shutdown).await }
            });
            loop {
                let cold_seen = handler
                    .waits
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|w| w.0 != "hot")
                    .count();
                if cold_seen >= cold_total {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            shutdown.cancel();
            engine.await.unwrap().unwrap();
            let waits = handler.waits.lock().unwrap().clone();
            let mut cold: Vec<f64> = waits.iter().filter(|w| w.0 != "hot").map(|w| w.1).collect();
            let mut hot: Vec<f64> = waits.iter().filter(|w| w.0 == "hot").map(|w| w.1).collect();
            cold.sort_by(f64::total_cmp);
            hot.sort_by(f64::total_cmp);
            p50s.push(percentile(&cold, 0.5));
            p99s.push(percentile(&cold, 0.99));
            hot50.push(percentile(&hot, 0.5));
            hot99.push(percentile(&hot, 0.99));
        }
        result[label] = json!({
            "cold_p50_s": median(&p50s), "cold_p99_s": median(&p99s),
            "hot_p50_s": median(&hot50), "hot_p99_s": median(&hot99),
        });
        println!(
            "  {label}: cold p50 {:.3} s, p99 {:.3} s",
            median(&p50s),
            median(&p99s)
        );
    }
    let ratio50 = result["with_hot"]["cold_p50_s"].as_f64().unwrap()
        / result["cold_only"]["cold_p50_s"].as_f64().unwrap();
    let ratio99 = result["with_hot"]["cold_p99_s"].as_f64().unwrap()
        / result["cold_only"]["cold_p99_s"].as_f64().unwrap();
    result["cold_p50_ratio"] = json!(ratio50);
    result["cold_p99_ratio"] = json!(ratio99);
    result["messages"] = json!(plan.skew_messages);
    result
}

struct Noop;

impl Handler for Noop {
    async fn handle(&self, _message: &Message) -> Outcome {
        Ok(())
    }
}

fn own_cpu_seconds() -> f64 {
    proc_usage(std::process::id()).map_or(f64::NAN, |(cpu, _)| cpu)
}

/// The engine on the in-memory queue: no-op throughput with real time, and
/// the latency-bound runs with paused time (so only scheduling shows).
async fn engine_alone(plan: &Plan) -> Value {
    let n = plan.engine_messages;
    let mut rates = Vec::new();
    let mut cpus = Vec::new();
    let mut batch_rates = Vec::new();
    let mut batch_cpus = Vec::new();
    for _ in 0..plan.runs {
        let (rate, cpu) = engine_no_op(n, plan.groups, 1);
        rates.push(rate);
        cpus.push(cpu);
        let (rate, cpu) = engine_no_op(n, plan.groups, ENGINE_BATCH);
        batch_rates.push(rate);
        batch_cpus.push(cpu);
    }
    println!(
        "  no-op: {:.0} msgs/s, {:.2} µs CPU per message; with batches of {ENGINE_BATCH}: {:.0} msgs/s, {:.2} µs",
        median(&rates),
        median(&cpus),
        median(&batch_rates),
        median(&batch_cpus)
    );

    let mut latency = Vec::new();
    for &workers in &plan.latency_workers {
        let n = plan.latency_groups * PER_GROUP;
        let makespan = std::thread::spawn(move || paused_makespan(n, workers))
            .join()
            .unwrap();
        let bound = lower_bound(n, workers);
        latency.push(json!({ "workers": workers, "makespan_s": makespan, "bound_s": bound, "ratio": makespan / bound }));
    }
    json!({
        "messages": n, "no_op_msgs_per_s": median(&rates), "cpu_us_per_msg": median(&cpus),
        "batch": ENGINE_BATCH, "batch_msgs_per_s": median(&batch_rates),
        "batch_cpu_us_per_msg": median(&batch_cpus), "latency": latency,
    })
}

/// Messages per handler call in the engine-alone run with batches.
const ENGINE_BATCH: usize = 10;

/// The engine with a no-op handler on `n` messages in memory, on one thread
/// as the `fifo` binary runs it, `batch` messages per handler call at most.
/// Returns msgs/s and µs of CPU per message.
fn engine_no_op(n: usize, groups: usize, batch: usize) -> (f64, f64) {
    let queue = MemoryQueue::new().without_history();
    for i in 0..n {
        queue.send(&format!("group-{}", i % groups), "x");
    }
    let config = PoolConfig {
        workers: 16,
        batch,
        max_in_flight: 4_000,
        limit: Some(n as u64),
        ..PoolConfig::default()
    };
    let (elapsed, cpu) = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cpu_before = own_cpu_seconds();
        let started = Instant::now();
        let stats = runtime
            .block_on(fifo_worker_pool::run(
                queue,
                Noop,
                &config,
                CancellationToken::new(),
            ))
            .unwrap();
        assert_eq!(stats.succeeded, n as u64);
        (
            started.elapsed().as_secs_f64(),
            own_cpu_seconds() - cpu_before,
        )
    })
    .join()
    .unwrap();
    (n as f64 / elapsed, cpu * 1e6 / n as f64)
}

/// Section 8: a long run of the engine on the in-memory queue with random
/// faults (lost requests and answers, throttling, delays, refused receipt
/// handles) and random handler failures, in paused time. A producer keeps
/// the backlog near `BACKLOG`, so the queue's own memory stays flat and
/// the process's RSS shows the engine's. The handler checks the order
/// promise as it goes (no two runs of a group at once, no message before
/// an earlier one of its group succeeded); the counts are reconciled with
/// the queue's at the end.
fn soak(plan: &Plan) -> Value {
    let n = plan.soak_messages;
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(soak_run(n))
    })
    .join()
    .unwrap()
}

const SOAK_GROUPS: usize = 1_000;
const BACKLOG: usize = 20_000;
const SOAK_FAILURE_RATE: f64 = 0.02;

/// A no-op handler (10 ms of queue time) that fails now and then and checks
/// the order per group from what it sees.
struct SoakHandler {
    groups: Mutex<Vec<SoakGroup>>,
    runs: std::sync::atomic::AtomicU64,
    violations: std::sync::atomic::AtomicU64,
}

#[derive(Default, Clone, Copy)]
struct SoakGroup {
    running: bool,
    /// Every message up to this one has succeeded.
    done_through: u64,
}

impl Handler for SoakHandler {
    async fn handle(&self, message: &Message) -> Outcome {
        use std::sync::atomic::Ordering::Relaxed;
        let (group, seq) = message.body.split_once(':').expect("GROUP:SEQ");
        let (group, seq): (usize, u64) = (group.parse().unwrap(), seq.parse().unwrap());
        {
            let mut groups = self.groups.lock().unwrap();
            let state = &mut groups[group];
            if state.running || seq > state.done_through + 1 {
                self.violations.fetch_add(1, Relaxed);
            }
            state.running = true;
        }
        self.runs.fetch_add(1, Relaxed);
        // The engine may cut a run off (its lease lost): it ends then too.
        let run = RunGuard {
            groups: &self.groups,
            group,
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(run);
        if fastrand::f64() < SOAK_FAILURE_RATE {
            return Err("a random failure".into());
        }
        let mut groups = self.groups.lock().unwrap();
        let state = &mut groups[group];
        if seq == state.done_through + 1 {
            state.done_through = seq;
        }
        Ok(())
    }
}

/// Marks a group's run as ended when the run ends, however it ends.
struct RunGuard<'a> {
    groups: &'a Mutex<Vec<SoakGroup>>,
    group: usize,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.groups.lock().unwrap()[self.group].running = false;
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

async fn soak_run(n: usize) -> Value {
    let faults = Faults {
        seed: 8,
        lost_requests: 0.01,
        lost_answers: 0.01,
        throttled: 0.3,
        delayed: 0.02,
        max_delay: Duration::from_millis(500),
        stale_handles: 0.002,
        ..Faults::default()
    };
    let queue = MemoryQueue::with_faults(None, faults.clone()).without_history();
    let handler = Arc::new(SoakHandler {
        groups: Mutex::new(vec![SoakGroup::default(); SOAK_GROUPS]),
        runs: Default::default(),
        violations: Default::default(),
    });
    let config = PoolConfig {
        workers: 16,
        max_in_flight: 2_000,
        wait_time_seconds: 1,
        retries: 2,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(2),
        until_empty: true,
        ..PoolConfig::default()
    };
    let max_in_flight = config.max_in_flight;
    let counters = Arc::new(Counters::default());
    let producer = {
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            while sent < n {
                if queue.undeleted() < BACKLOG {
                    for _ in 0..1_000.min(n - sent) {
                        let group = sent % SOAK_GROUPS;
                        let seq = sent / SOAK_GROUPS + 1;
                        queue.send(&group.to_string(), &format!("{group}:{seq}"));
                        sent += 1;
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let counters = counters.clone();
        let samples = samples.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let stats = counters.snapshot();
                samples.lock().unwrap().push(json!({
                    "queue_time_s": started.elapsed().as_secs_f64(),
                    "succeeded": stats.succeeded,
                    "held": stats.in_flight,
                    "rss_mib": rss_mib(),
                }));
            }
        })
    };
    let wall = Instant::now();
    let cpu_before = own_cpu_seconds();
    let queue_started = tokio::time::Instant::now();
    // The engine must not stop before the producer has sent everything:
    // the backlog never runs dry before then.
    let stats = fifo_worker_pool::run_observed(
        queue.clone(),
        SharedHandler(handler.clone()),
        &config,
        CancellationToken::new(),
        counters.clone(),
    )
    .await
    .expect("the soak ends cleanly");
    let queue_time = queue_started.elapsed().as_secs_f64();
    let wall_s = wall.elapsed().as_secs_f64();
    let cpu_s = own_cpu_seconds() - cpu_before;
    producer.await.unwrap();
    sampler.abort();
    let samples = samples.lock().unwrap().clone();
    let held: Vec<u64> = samples
        .iter()
        .map(|s| s["held"].as_u64().unwrap())
        .collect();
    let rss: Vec<f64> = samples
        .iter()
        .map(|s| s["rss_mib"].as_f64().unwrap())
        .collect();
    // After the warm-up (the first fifth of the run, and at least two of
    // the queue's one-minute memories of deleted receipt handles), RSS
    // should stay where it is.
    let warm = (rss.len() / 5).max(24).min(rss.len().saturating_sub(1));
    let rss_warm = rss.get(warm).copied().unwrap_or(f64::NAN);
    let rss_end = rss.last().copied().unwrap_or(f64::NAN);
    let rss_max_after = rss[warm..].iter().copied().fold(f64::NAN, f64::max);
    let accounted = stats.deleted + stats.released + stats.lost + stats.dead_lettered;
    let violations = handler
        .violations
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "  {n} messages: {:.0} s of queue time in {wall_s:.1} s ({:.1} µs CPU per message); \
         received {} = deleted {} + handed back {} + lost {} + dead-lettered {}; queue deleted {}, \
         left {}; held at most {} (limit {max_in_flight}); RSS {rss_warm:.1} MiB after warm-up, \
         {rss_max_after:.1} at most, {rss_end:.1} at the end; order violations {violations}",
        queue_time,
        cpu_s * 1e6 / n as f64,
        stats.received,
        stats.deleted,
        stats.released,
        stats.lost,
        stats.dead_lettered,
        queue.deleted(),
        queue.undeleted(),
        held.iter().max().copied().unwrap_or(0),
    );
    json!({
        "messages": n,
        "groups": SOAK_GROUPS,
        "failure_rate": SOAK_FAILURE_RATE,
        "faults": {
            "lost_requests": faults.lost_requests,
            "lost_answers": faults.lost_answers,
            "throttled_share": faults.throttled,
            "delayed": faults.delayed,
            "max_delay_ms": faults.max_delay.as_millis() as u64,
            "stale_handles": faults.stale_handles,
        },
        "queue_time_s": queue_time,
        "wall_s": wall_s,
        "cpu_us_per_msg": cpu_s * 1e6 / n as f64,
        "handler_runs": handler.runs.load(std::sync::atomic::Ordering::Relaxed),
        "received": stats.received,
        "succeeded": stats.succeeded,
        "retried": stats.retried,
        "failed": stats.failed,
        "deleted": stats.deleted,
        "released": stats.released,
        "lost": stats.lost,
        "dead_lettered": stats.dead_lettered,
        "accounted": accounted,
        "queue_deleted": queue.deleted(),
        "queue_left": queue.undeleted(),
        "queue_dead_letters": queue.dead_letters().len(),
        "held_max": held.iter().max().copied().unwrap_or(0),
        "held_mean": held.iter().sum::<u64>() as f64 / held.len().max(1) as f64,
        "max_in_flight": max_in_flight,
        "rss_after_warm_up_mib": rss_warm,
        "rss_max_after_warm_up_mib": rss_max_after,
        "rss_end_mib": rss_end,
        "order_violations": violations,
        "samples": samples,
    })
}

/// Whether the soak's counts add up (every reception accounted for, the
/// queue emptied, every message deleted there once) and whether RSS stayed
/// within 10 % (and 1 MiB) of its level after the warm-up.
fn soak_verdicts(soak: &Value) -> (bool, bool) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let reconciled = soak["accounted"] == soak["received"]
        && soak["queue_left"].as_u64() == Some(0)
        && soak["queue_deleted"] == soak["messages"];
    let flat =
        f(&soak["rss_max_after_warm_up_mib"]) <= f(&soak["rss_after_warm_up_mib"]) * 1.1 + 1.0;
    (reconciled, flat)
}

/// Lets the soak keep a handle on its handler's checks.
struct SharedHandler(Arc<SoakHandler>);

impl Handler for SharedHandler {
    async fn handle(&self, message: &Message) -> Outcome {
        self.0.handle(message).await
    }
}

/// The latency-bound run on the in-memory queue in paused tokio time.
fn paused_makespan(n: usize, workers: usize) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let queue = MemoryQueue::new();
        let groups = n / PER_GROUP;
        for i in 0..n {
            queue.send(&format!("group-{}", i % groups), "x");
        }
        struct Sleep;
        impl Handler for Sleep {
            async fn handle(&self, _message: &Message) -> Outcome {
                tokio::time::sleep(WORK).await;
                Ok(())
            }
        }
        let config = PoolConfig {
            workers,
            max_in_flight: (workers * 20).max(100),
            limit: Some(n as u64),
            ..PoolConfig::default()
        };
        let started = tokio::time::Instant::now();
        fifo_worker_pool::run(queue, Sleep, &config, CancellationToken::new())
            .await
            .unwrap();
        started.elapsed().as_secs_f64()
    })
}

/// Mean times of the group router's criterion benchmarks, when they ran.
fn criterion_results() -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/criterion");
    let mut results = serde_json::Map::new();
    for name in ["router_push_1000", "router_drain_1000", "router_cycle"] {
        let path: PathBuf = root.join(name).join("new/estimates.json");
        if let Some(ns) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["mean"]["point_estimate"].as_f64())
        {
            results.insert(name.to_owned(), json!(ns));
        }
    }
    Value::Object(results)
}

fn machine() -> Value {
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<f64>()
                    .unwrap_or(0.0)
                    / 1024.0
                    / 1024.0
            })
        })
        .unwrap_or(0.0);
    let output = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_gib": (memory * 10.0).round() / 10.0,
        "cpu": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())).unwrap_or_default(),
        "rustc": output("rustc", &["--version"]),
        "fifo": env!("CARGO_PKG_VERSION"),
        "localstack": "4.13.1 (host install, one Python process)",
        "date": output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    })
}

fn latency_svg(report: &Value) -> String {
    let rows = report["latency"].as_array().cloned().unwrap_or_default();
    let (width, height, margin) = (640.0, 360.0, 50.0);
    let max_y = rows
        .iter()
        .map(|r| {
            r["makespan_s"]
                .as_f64()
                .unwrap()
                .max(r["bound_s"].as_f64().unwrap())
        })
        .fold(0.0, f64::max)
        * 1.1;
    let max_x = rows
        .iter()
        .map(|r| (r["workers"].as_f64().unwrap()).log2())
        .fold(1.0, f64::max);
    let x = |w: f64| margin + w.log2() / max_x * (width - 2.0 * margin);
    let min_y = rows
        .iter()
        .map(|r| {
            f64::min(
                r["makespan_s"].as_f64().unwrap(),
                r["bound_s"].as_f64().unwrap(),
            )
        })
        .fold(f64::INFINITY, f64::min)
        * 0.8;
    // Log scale: the ratio between makespan and bound is what matters.
    let y = |v: f64| {
        height
            - margin
            - (v.ln() - min_y.ln()) / (max_y.ln() - min_y.ln()) * (height - 2.0 * margin)
    };
    let line = |key: &str| {
        rows.iter()
            .map(|r| {
                format!(
                    "{:.1},{:.1}",
                    x(r["workers"].as_f64().unwrap()),
                    y(r[key].as_f64().unwrap())
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">Latency-bound makespan vs lower bound (L = 50 ms, 20 per group)</text>
<line x1="{margin}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">workers W (both axes log scale)</text>
<text x="15" y="{}" transform="rotate(-90 15 {})" text-anchor="middle">seconds</text>
<polyline fill="none" stroke="#888" stroke-dasharray="5,4" stroke-width="2" points="{}"/>
<polyline fill="none" stroke="#c0392b" stroke-width="2" points="{}"/>
<text x="{}" y="{}" fill="#c0392b">fifo makespan</text>
<text x="{}" y="{}" fill="#888">bound max(N·L/W, 20·L)</text>
"##,
        width / 2.0,
        height - margin,
        width - margin,
        height - margin,
        height - margin,
        width / 2.0,
        height - 12.0,
        height / 2.0,
        height / 2.0,
        line("bound_s"),
        line("makespan_s"),
        margin + 20.0,
        height - margin - 36.0,
        margin + 20.0,
        height - margin - 20.0,
    );
    for r in &rows {
        let w = r["workers"].as_f64().unwrap();
        svg += &format!(
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{w}</text>"#,
            x(w),
            height - margin + 16.0
        );
        svg += "\n";
    }
    for v in [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0] {
        if v < min_y || v > max_y {
            continue;
        }
        svg += &format!(
            r#"<text x="{}" y="{:.1}" text-anchor="end">{v}</text>"#,
            margin - 4.0,
            y(v) + 4.0
        );
        svg += &format!(
            r##"<line x1="{margin}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#eee"/>"##,
            y(v),
            width - margin,
            y(v)
        );
        svg += "\n";
    }
    svg + "</svg>\n"
}

/// What bounds the figures that miss their goal, from this run's numbers.
fn bounds(report: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let no_op = &report["no_op"];
    let engine = &report["engine"];
    let limit = &report["limit"];
    let mut md = String::from("\n## Where a goal is missed, and what bounds it\n\n");
    let fifo_cpu = f(&no_op["fifo_cpu_us_per_msg"]);
    let sdk_cpu = f(&limit["sdk_cpu_us_per_msg"]);
    if fifo_cpu > 25.0 {
        md += &format!(
            "**CPU per message ({fifo_cpu:.1} µs, goal 25 µs).** The bare SDK loop of (1), which makes \
             only the `ReceiveMessage` and `DeleteMessageBatch` calls and nothing else, spends {sdk_cpu:.1} µs \
             per message in this same run ({:.0} % of fifo's): the AWS SDK's cost per call, at the \
             floor of 0.2 calls per message that batches of ten allow. Below that needs fewer or \
             cheaper SDK calls.\n\n",
            100.0 * sdk_cpu / fifo_cpu
        );
        let per_rtt: Vec<String> = report["rtt"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|at| {
                format!(
                    "at RTT {} ms fifo {:.1} µs and the bare loop {:.1} µs",
                    at["rtt_ms"],
                    f(&at["no_op"]["cpu_us_per_msg"]),
                    f(&at["sdk_cpu_us_per_msg"])
                )
            })
            .collect();
        if !per_rtt.is_empty() {
            md += &format!(
                "Through the proxy of (10), with the bare loop alone on a thread of its own as fifo \
                 runs: {}. Whatever the round trip does to the CPU per message, it does to the bare \
                 SDK loop too (its calls, not fifo's work around them). The difference between the \
                 two is fifo's own work per message (engine, handler, output). Of what fifo's client \
                 configuration controls, the stalled-stream monitor (timers on every call) is already \
                 off.\n\n",
                per_rtt.join("; ")
            );
        }
    }
    let limit_rate = f(&limit["receive_delete_msgs_per_s"]);
    let run_ratio = f(&no_op["run_ratio"]);
    if run_ratio < 0.9 {
        let rates: Vec<String> = no_op["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| format!("{:.0}", f(&r["msgs_per_s"])))
            .collect();
        let limits: Vec<String> = limit["all_receive_delete"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| format!("{:.0}", f(v)))
            .collect();
        md += &format!(
            "**`fifo run` no-op ({run_ratio:.2} of the limit).** LocalStack was busy {:.2} of a core \
             during fifo's runs, which gave {} msgs/s against the bare loop's {} msgs/s in the runs \
             beside them.\n\n",
            f(&no_op["localstack_cpu_share"]),
            rates.join(", "),
            limits.join(", "),
        );
    }
    for r in report["latency"].as_array().into_iter().flatten() {
        if f(&r["ratio"]) > 1.15 {
            let messages = f(&r["messages"]);
            let needed = messages / f(&r["bound_s"]);
            let at_the_limit = messages / limit_rate;
            md += &format!(
                "**Latency-bound at W = {} ({:.2} s against a bound of {:.2} s).** Reaching the bound \
                 takes {needed:.0} msgs/s through the queue; this run's emulator limit, measured in (1), \
                 is {limit_rate:.0} msgs/s, so the {messages:.0} messages alone need at least \
                 {at_the_limit:.2} s of receives and deletes. Then groups come in one receive at a time: \
                 the last group's first message started {:.3} s after the first one, and after \
                 its 10th message a group waited a median {:.3} s for the next ten (its deletes \
                 confirmed in order, the group unlocked, and a receive among all the others).\n\n",
                r["workers"],
                f(&r["makespan_s"]),
                f(&r["bound_s"]),
                f(&r["last_group_first_start_s"]),
                f(&r["refill_gap_p50_s"]),
            );
        }
    }
    let skew = &report["skew"];
    let skew_worst = f(&skew["cold_p50_ratio"]).max(f(&skew["cold_p99_ratio"]));
    if skew_worst > 1.2 {
        md += &format!(
            "**Skew (cold groups {skew_worst:.2} × slower with the hot group).** The hot group is one \
             lane: it holds one of the 16 workers for its whole backlog (hot p50 {:.2} s), so the cold \
             groups share 15, and receives that return the hot group's ten messages are receives the \
             cold groups wait behind.\n\n",
            f(&skew["with_hot"]["hot_p50_s"]),
        );
    }
    let rate = f(&engine["no_op_msgs_per_s"]).max(f(&engine["batch_msgs_per_s"]));
    if rate < 1e6 {
        md += &format!(
            "**The engine alone ({rate:.0} msgs/s, goal 1,000,000).** {:.2} µs of CPU per message, on \
             one thread, for the engine and the in-memory queue together. Each message is received \
             into an owned message (its id, body, group and sequence number are strings), tracked by \
             id with its lease, pushed into its group's lane, handed to a task of its own (one per \
             handler call) so that handlers run concurrently and a panic stays contained, and deleted by receipt handle in \
             its group's order, its delete confirmed before the next one of its group goes. The \
             router's part costs {:.0} ns per message (criterion `router_cycle`: handed out, \
             finished, deleted). With batches of {} (one task per call, `--batch`), {:.0} msgs/s \
             and {:.2} µs per message: what remains is per message (tracking, lanes, deletes in \
             group order). Against SQS, where the emulator's limit \
             here is {:.0} msgs/s, the engine's share at that rate is {:.1} % of one core.\n\n",
            f(&engine["cpu_us_per_msg"]),
            f(&report["router"]["router_cycle"]),
            engine["batch"],
            f(&engine["batch_msgs_per_s"]),
            f(&engine["batch_cpu_us_per_msg"]),
            limit_rate,
            limit_rate * f(&engine["cpu_us_per_msg"]) / 1e4,
        );
    }
    md
}

/// Section 10: per round trip, the limit, the no-op run and the
/// latency-bound runs, with what bounds a missed goal.
fn rtt_markdown(report: &Value, plan: &Plan) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let Some(all) = report["rtt"].as_array() else {
        return String::new();
    };
    let mut md = format!(
        "## 10. On a network with a round trip\n\nThe same runs through a TCP proxy of ours that delays each direction by half the round trip (RTT), as a region's SQS endpoint does. The limit: the bare SDK receive+delete loop through the proxy, the best of 4 to 64 calls at once ({} messages over {} groups). The ordered bare loop: the same loop deleting as fifo must, each message only once every earlier one of its group is deleted (batches of ten shared by all loops), the best of 32 to 256 loops; a loop receives again only once its deletes are done. `fifo run --until-empty` with default flags (5 workers) on as many messages, timed until SQS holds none. Latency-bound: {} messages, {} groups of {PER_GROUP}, L = 50 ms, `--workers W --work-ms 50` and no other flag.\n\n",
        plan.rtt_messages,
        plan.groups,
        plan.latency_groups * PER_GROUP,
        plan.latency_groups,
    );
    md += "| RTT (ms) | limit (msgs/s) | limit by calls at once | ordered bare loop (msgs/s), by loops | fifo no-op (msgs/s) | ratio | ratio to the ordered bare loop | LocalStack CPU (cores) | fifo CPU per message (µs) | bare SDK loop CPU per message (µs) | W=16 makespan / bound | W=64 | W=100 |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for at in all {
        let by_concurrency: Vec<String> = at["limits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| format!("{}: {:.0}", l["concurrency"], f(&l["msgs_per_s"])))
            .collect();
        let ordered_by_loops: Vec<String> = at["ordered_limits"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|l| format!("{}: {:.0}", l["loops"], f(&l["msgs_per_s"])))
            .collect();
        let latency: Vec<String> = at["latency"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{:.2} / {:.2} s ({:.2})",
                    f(&r["makespan_s"]),
                    f(&r["bound_s"]),
                    f(&r["ratio"])
                )
            })
            .collect();
        md += &format!(
            "| {} | {:.0} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {} |\n",
            at["rtt_ms"],
            f(&at["limit_msgs_per_s"]),
            by_concurrency.join(", "),
            ordered_by_loops.join(", "),
            f(&at["no_op"]["msgs_per_s"]),
            f(&at["no_op"]["ratio"]),
            f(&at["no_op"]["msgs_per_s"]) / f(&at["ordered_limit_msgs_per_s"]),
            f(&at["no_op"]["localstack_cpu_share"]),
            f(&at["no_op"]["cpu_us_per_msg"]),
            f(&at["sdk_cpu_us_per_msg"]),
            latency.join(" | "),
        );
    }
    md += "\n";
    for at in all {
        if f(&at["no_op"]["ratio"]) >= 0.9 {
            continue;
        }
        let ordered = f(&at["ordered_limit_msgs_per_s"]);
        let fifo = f(&at["no_op"]["msgs_per_s"]);
        let verdict = if fifo >= ordered {
            format!(
                "below fifo's {fifo:.0}: in this run, what the rule costs on this emulator covers the gap"
            )
        } else {
            format!(
                "and fifo {:.2} × that: the rest of the gap is fifo's own",
                fifo / ordered
            )
        };
        md += &format!(
            "**RTT {} ms, no-op ({fifo:.0} of {:.0} msgs/s).** The limit's loop deletes a receive's ten messages in one call, so it holds each group for one delete. fifo may delete a message only once every earlier one of its group is deleted (a replay is then always in order), so a group's ten messages take ten deletes one after another: a group is held ten deletes long instead of one, so more groups must be held at once for the same throughput. The ordered bare loop (the same loop under that rule, no fifo code) reached at best {ordered:.0} msgs/s in this run, {verdict}.\n\n",
            at["rtt_ms"],
            f(&at["limit_msgs_per_s"]),
        );
    }
    for at in all {
        let limit = f(&at["limit_msgs_per_s"]);
        for r in at["latency"].as_array().unwrap() {
            if f(&r["ratio"]) <= 1.15 {
                continue;
            }
            let messages = (plan.latency_groups * PER_GROUP) as f64;
            md += &format!(
                "**RTT {} ms, W = {} ({:.2} s against {:.2} s).** The bound needs {:.0} msgs/s through the queue; the emulator's limit through the proxy in this run is {limit:.0} msgs/s, so the {messages:.0} messages need at least {:.2} s of receives and deletes: {:.2} × that.\n\n",
                at["rtt_ms"],
                r["workers"],
                f(&r["makespan_s"]),
                f(&r["bound_s"]),
                messages / f(&r["bound_s"]),
                messages / limit,
                f(&r["makespan_s"]) / (messages / limit),
            );
        }
    }
    md
}

/// The largest makespan-to-bound ratio of a list of latency-bound runs.
fn worst_ratio(runs: &Value) -> f64 {
    runs.as_array()
        .unwrap()
        .iter()
        .map(|r| r["ratio"].as_f64().unwrap_or(f64::NAN))
        .fold(0.0, f64::max)
}

fn markdown(report: &Value, plan: &Plan) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let verdict = |met: bool| if met { "**met**" } else { "**missed**" };
    let m = &report["machine"];
    let limit = &report["limit"];
    let no_op = &report["no_op"];
    let engine = &report["engine"];
    let skew = &report["skew"];
    let mut md = String::new();
    md += "# Benchmarks\n\n";
    md += &format!(
        "Written by `cargo xtask bench{}` on {} ({} cores, {} GiB, {}; {}; LocalStack {}). \
         Every figure is the median of {} runs; every ratio divides figures measured in this same invocation. \
         LocalStack is one Python process: its CPU share is given in cores (1.0 = one core busy).\n\n",
        if plan.quick { " --quick" } else { "" },
        m["date"].as_str().unwrap_or(""),
        m["cores"],
        m["memory_gib"],
        m["cpu"].as_str().unwrap_or(""),
        m["rustc"].as_str().unwrap_or(""),
        m["localstack"].as_str().unwrap_or(""),
        plan.runs
    );
    md += "## Summary\n\n| goal | measured | verdict |\n|---|---|---|\n";
    let run_ratio = f(&no_op["run_ratio"]);
    let send_ratio = f(&no_op["send_ratio"]);
    md += &format!(
        "| `fifo run` no-op ≥ 0.90 × the emulator's receive+delete limit | {run_ratio:.2} ({:.0} of {:.0} msgs/s) | {} |\n",
        f(&no_op["run_msgs_per_s"]),
        f(&limit["receive_delete_msgs_per_s"]),
        verdict(run_ratio >= 0.9)
    );
    md += &format!(
        "| `fifo send` ≥ 0.90 × the emulator's send limit | {send_ratio:.2} ({:.0} of {:.0} msgs/s) | {} |\n",
        f(&no_op["send_msgs_per_s"]),
        f(&limit["send_msgs_per_s"]),
        verdict(send_ratio >= 0.9)
    );
    let worst = worst_ratio(&report["latency"]);
    md += &format!(
        "| latency-bound makespan ≤ 1.15 × bound at every W | worst {worst:.2} | {} |\n",
        verdict(worst <= 1.15)
    );
    let skew_ratio = f(&skew["cold_p99_ratio"]).max(f(&skew["cold_p50_ratio"]));
    md += &format!(
        "| cold groups with a hot group within 1.2 × cold alone (p50 and p99) | {:.2} (p50), {:.2} (p99) | {} |\n",
        f(&skew["cold_p50_ratio"]),
        f(&skew["cold_p99_ratio"]),
        verdict(skew_ratio <= 1.2)
    );
    let engine_best = f(&engine["no_op_msgs_per_s"]).max(f(&engine["batch_msgs_per_s"]));
    md += &format!(
        "| engine alone ≥ 1,000,000 msgs/s (no-op, in-memory queue; batches where they help) | {:.0} msgs/s (batches of {}: {:.0}) | {} |\n",
        f(&engine["no_op_msgs_per_s"]),
        engine["batch"],
        f(&engine["batch_msgs_per_s"]),
        verdict(engine_best >= 1e6)
    );
    md += &format!(
        "| fifo CPU ≤ 25 µs per message end to end | {:.1} µs | {} |\n",
        f(&no_op["fifo_cpu_us_per_msg"]),
        verdict(f(&no_op["fifo_cpu_us_per_msg"]) <= 25.0)
    );
    md += &format!(
        "| fifo peak RSS ≤ 50 MiB | {:.1} MiB | {} |\n",
        f(&no_op["fifo_peak_rss_mib"]),
        verdict(f(&no_op["fifo_peak_rss_mib"]) <= 50.0)
    );
    let violations: u64 = no_op["order_violations"].as_u64().unwrap_or(0)
        + report["scale_out"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["order_violations"].as_u64().unwrap_or(0))
            .sum::<u64>();
    md += &format!(
        "| order per group intact in every end-to-end run | {violations} violations | {} |\n",
        verdict(violations == 0)
    );
    let soak = &report["soak"];
    if soak.is_object() {
        let (reconciled, flat) = soak_verdicts(soak);
        let held_ok = soak["held_max"].as_u64() <= soak["max_in_flight"].as_u64();
        let ordered = soak["order_violations"].as_u64() == Some(0);
        md += &format!(
            "| soak under random faults: counts reconciled, held messages bounded, RSS flat, order intact | {} messages; {}; held ≤ {}; RSS {:.1} → {:.1} MiB; {} violations | {} |\n",
            soak["messages"],
            if reconciled {
                "reconciled"
            } else {
                "not reconciled"
            },
            soak["held_max"],
            f(&soak["rss_after_warm_up_mib"]),
            f(&soak["rss_max_after_warm_up_mib"]),
            soak["order_violations"],
            verdict(reconciled && flat && held_ok && ordered)
        );
    }
    let send_memory = &report["send_memory"]["runs"];
    if let [small, large] = send_memory
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let flat = f(&large["peak_rss_mib"]) <= 1.5 * f(&small["peak_rss_mib"]);
        md += &format!(
            "| `fifo send` memory flat whatever `--count` | peak RSS {:.1} MiB for {} messages, {:.1} MiB for {} | {} |\n",
            f(&large["peak_rss_mib"]),
            large["messages"],
            f(&small["peak_rss_mib"]),
            small["messages"],
            verdict(flat)
        );
    }
    for at in report["rtt"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let rtt = &at["rtt_ms"];
        let ratio = f(&at["no_op"]["ratio"]);
        md += &format!(
            "| RTT {rtt} ms: `fifo run` no-op, default flags, ≥ 0.90 × the limit through the proxy | {ratio:.2} ({:.0} of {:.0} msgs/s) | {} |\n",
            f(&at["no_op"]["msgs_per_s"]),
            f(&at["limit_msgs_per_s"]),
            verdict(ratio >= 0.9)
        );
        let worst = worst_ratio(&at["latency"]);
        md += &format!(
            "| RTT {rtt} ms: latency-bound makespan ≤ 1.15 × bound at W = 16, 64, 100 | worst {worst:.2} | {} |\n",
            verdict(worst <= 1.15)
        );
    }
    md += "\n";

    md += "## 1. The limit: the emulator's own throughput\n\n";
    md += "A tight loop on the same Rust SDK client, best of 4 and 8 concurrent connections, messages over 200 groups.\n\n| call | msgs/s |\n|---|---|\n";
    md += &format!(
        "| `SendMessageBatch` (10 per call) | {:.0} |\n| `ReceiveMessage(10)` + `DeleteMessageBatch` | {:.0} |\n\n",
        f(&limit["send_msgs_per_s"]),
        f(&limit["receive_delete_msgs_per_s"])
    );

    md += &format!(
        "## 2. End to end, no-op handler\n\n{} messages over {} groups. `fifo send --groups {} --count {} --concurrency 8`, then `fifo run --until-empty --workers 16` (log handler, no work), timed until SQS holds no message.\n\n",
        plan.messages, plan.groups, plan.groups, plan.messages
    );
    md += "| what | msgs/s | ratio to the limit | LocalStack CPU (cores) |\n|---|---|---|---|\n";
    md += &format!(
        "| `fifo run` | {:.0} | {run_ratio:.2} | {:.2} |\n| `fifo send` | {:.0} | {send_ratio:.2} | |\n\n",
        f(&no_op["run_msgs_per_s"]),
        f(&no_op["localstack_cpu_share"]),
        f(&no_op["send_msgs_per_s"])
    );

    md += &format!(
        "## 3. Latency-bound\n\n{} messages, {} groups of {PER_GROUP}, handler work L = 50 ms (`fifo run --until-empty --workers W --work-ms 50`). Makespan: first handler start to last handler end, from the log handler's lines. With fewer workers than groups, the last group's first start and the refill gap mostly show groups waiting for a free worker; with as many workers as groups, they show the emulator's receive pace.\n\n",
        plan.latency_groups * PER_GROUP,
        plan.latency_groups
    );
    md += "| W | makespan (s) | bound (s) | ratio | last group's first start (s) | refill gap p50 (s) | LocalStack CPU (cores) | verdict |\n|---|---|---|---|---|---|---|---|\n";
    for r in report["latency"].as_array().unwrap() {
        md += &format!(
            "| {} | {:.2} | {:.2} | {:.3} | {:.3} | {:.3} | {:.2} | {} |\n",
            r["workers"],
            f(&r["makespan_s"]),
            f(&r["bound_s"]),
            f(&r["ratio"]),
            f(&r["last_group_first_start_s"]),
            f(&r["refill_gap_p50_s"]),
            f(&r["localstack_cpu_share"]),
            verdict(f(&r["ratio"]) <= 1.15)
        );
    }
    md += "\n![makespan and bound against W](benchmarks-latency.svg)\n\n";

    md += &format!(
        "## 4. Skew\n\n{} messages: one hot group holding half, 99 cold groups the rest; W = 16, L = 20 ms, in process on `SqsQueue`. The hot backlog is sent first, then the cold messages, the same way as in the run without the hot group. Time from send (SQS's SentTimestamp) to handler start, per class; the same cold messages without the hot group for comparison.\n\n",
        skew["messages"]
    );
    md += "| run | cold p50 (s) | cold p99 (s) | hot p50 (s) | hot p99 (s) |\n|---|---|---|---|---|\n";
    for label in ["with_hot", "cold_only"] {
        let r = &skew[label];
        md += &format!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            label.replace('_', " "),
            f(&r["cold_p50_s"]),
            f(&r["cold_p99_s"]),
            f(&r["hot_p50_s"]),
            f(&r["hot_p99_s"])
        );
    }
    md += &format!(
        "\nCold with hot ÷ cold alone: p50 {:.2}, p99 {:.2}.\n\n",
        f(&skew["cold_p50_ratio"]),
        f(&skew["cold_p99_ratio"])
    );

    md += &format!(
        "## 5. The engine alone\n\nThe in-memory queue (SQS FIFO rules, no network). No-op: {} messages over {} groups, W = 16, real time, on a one-thread tokio runtime as in `fifo`.\n\n",
        engine["messages"], plan.groups
    );
    md += &format!(
        "| what | figure |\n|---|---|\n| no-op throughput | {:.0} msgs/s |\n| CPU per message (engine + in-memory queue) | {:.2} µs |\n| no-op throughput, batches of {} | {:.0} msgs/s |\n| CPU per message, batches of {} | {:.2} µs |\n",
        f(&engine["no_op_msgs_per_s"]),
        f(&engine["cpu_us_per_msg"]),
        engine["batch"],
        f(&engine["batch_msgs_per_s"]),
        engine["batch"],
        f(&engine["batch_cpu_us_per_msg"])
    );
    for (name, ns) in report["router"].as_object().into_iter().flatten() {
        md += &format!("| criterion `{name}` | {:.0} ns |\n", f(ns));
    }
    md += "\nLatency-bound on the in-memory queue in paused time (scheduling alone):\n\n| W | makespan (s) | bound (s) | ratio |\n|---|---|---|---|\n";
    for r in engine["latency"].as_array().unwrap() {
        md += &format!(
            "| {} | {:.2} | {:.2} | {:.3} |\n",
            r["workers"],
            f(&r["makespan_s"]),
            f(&r["bound_s"]),
            f(&r["ratio"])
        );
    }

    md += &format!(
        "\n## 6. Cost\n\nFrom the `fifo run` processes of (2), sampled from /proc every 10 ms. \
         For comparison, the CPU that the bare SDK loop of (1) spends per message received and \
         deleted (the same calls and nothing else), measured in the benchmark process.\n\n\
         | what | figure | goal |\n|---|---|---|\n\
         | fifo CPU per message | {:.1} µs | ≤ 25 µs |\n\
         | fifo CPU per 10,000 messages | {:.3} s | |\n\
         | bare SDK receive+delete loop, CPU per message | {:.1} µs | |\n\
         | fifo peak RSS | {:.1} MiB | ≤ 50 MiB |\n\n",
        f(&no_op["fifo_cpu_us_per_msg"]),
        f(&no_op["fifo_cpu_s_per_10k"]),
        f(&limit["sdk_cpu_us_per_msg"]),
        f(&no_op["fifo_peak_rss_mib"])
    );

    md += "## 7. Scale-out\n\n(2) and (3) with several `fifo run` processes on one queue; order per group checked from all processes' log lines together.\n\n| processes | no-op msgs/s | ratio to the limit | order violations | latency-bound makespan, 32 workers in all (s) | bound (s) | ratio |\n|---|---|---|---|---|---|---|\n";
    for s in report["scale_out"].as_array().unwrap() {
        md += &format!(
            "| {} | {:.0} | {:.2} | {} | {:.2} | {:.2} | {:.3} |\n",
            s["processes"],
            f(&s["no_op_msgs_per_s"]),
            f(&s["no_op_ratio_to_limit"]),
            s["order_violations"],
            f(&s["latency_makespan_s"]),
            f(&s["latency_bound_s"]),
            f(&s["latency_ratio"])
        );
    }
    let soak = &report["soak"];
    if soak.is_object() {
        let (reconciled, flat) = soak_verdicts(soak);
        md += &format!(
            "\n## 8. Soak\n\n{} messages over {} groups through the engine on the in-memory queue \
             (one thread, paused time, a producer keeping a backlog of {}), with random faults on \
             every call — {:.0} % of requests lost, {:.0} % of answers lost (a throttling error for \
             {:.0} % of those failures), {:.0} % of calls delayed up to {} ms, {:.1} % of receipt \
             handles refused — and {:.0} % of handler runs failing. The handler checked the order as \
             it went; the counts are reconciled with the queue's.\n\n\
             | what | figure |\n|---|---|\n\
             | queue time / wall time | {:.0} s / {:.1} s |\n\
             | CPU per message (engine + in-memory queue + faults) | {:.2} µs |\n\
             | handler runs (retries and redeliveries included) | {} |\n\
             | received = deleted + handed back + lost + dead-lettered | {} = {} + {} + {} + {} ({}) |\n\
             | the queue: deleted, left | {}, {} ({} deletes took effect without the engine learning it — the answer was lost, or came after the engine had given the message up — so it counted them lost) |\n\
             | held messages: at most (limit), mean | {} ({}), {:.0} |\n\
             | RSS after warm-up, at most after it, at the end | {:.1} MiB, {:.1} MiB, {:.1} MiB ({}) |\n\
             | order violations seen by the handler | {} |\n",
            soak["messages"],
            soak["groups"],
            BACKLOG,
            f(&soak["faults"]["lost_requests"]) * 100.0,
            f(&soak["faults"]["lost_answers"]) * 100.0,
            f(&soak["faults"]["throttled_share"]) * 100.0,
            f(&soak["faults"]["delayed"]) * 100.0,
            soak["faults"]["max_delay_ms"],
            f(&soak["faults"]["stale_handles"]) * 100.0,
            f(&soak["failure_rate"]) * 100.0,
            f(&soak["queue_time_s"]),
            f(&soak["wall_s"]),
            f(&soak["cpu_us_per_msg"]),
            soak["handler_runs"],
            soak["received"],
            soak["deleted"],
            soak["released"],
            soak["lost"],
            soak["dead_lettered"],
            if reconciled {
                "reconciled"
            } else {
                "**not reconciled**"
            },
            soak["queue_deleted"],
            soak["queue_left"],
            soak["queue_deleted"].as_u64().unwrap_or(0) - soak["deleted"].as_u64().unwrap_or(0),
            soak["held_max"],
            soak["max_in_flight"],
            f(&soak["held_mean"]),
            f(&soak["rss_after_warm_up_mib"]),
            f(&soak["rss_max_after_warm_up_mib"]),
            f(&soak["rss_end_mib"]),
            if flat { "flat" } else { "**growing**" },
            soak["order_violations"],
        );
    }
    if let Some(runs) = report["send_memory"]["runs"].as_array() {
        md += &format!(
            "\n## 9. Send memory\n\n`fifo send --groups 100 --count N --concurrency 8` into a new queue; peak RSS from /proc \
             (VmHWM). `send` generates and reads messages as it sends them, so its memory does not grow with N. \
             Measured on {}.\n\n| N | peak RSS (MiB) | msgs/s | CPU per message (µs) | in the queue after |\n|---|---|---|---|---|\n",
            report["send_memory"]["date"].as_str().unwrap_or("")
        );
        for r in runs {
            md += &format!(
                "| {} | {:.1} | {:.0} | {:.1} | {} |\n",
                r["messages"],
                f(&r["peak_rss_mib"]),
                f(&r["msgs_per_s"]),
                f(&r["cpu_us_per_msg"]),
                r["stored"]
            );
        }
    }
    md += "\n";
    md += &rtt_markdown(report, plan);
    md += &bounds(report);
    md += "\n## Reproduce\n\n```sh\ncargo xtask bench           # the full run (about 30 minutes here)\ncargo xtask bench --quick   # a short run (a few minutes)\ncargo xtask bench --rtt 20  # section 10 at one round trip, printed\ncargo bench -p fifo --bench end_to_end -- --send-memory-only   # section 9 again\n```\n\nRaw figures: [BENCHMARKS.json](BENCHMARKS.json).\n";
    md
}
