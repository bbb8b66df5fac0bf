//! The sections measured against LocalStack, each a plain async function
//! returning its typed figures; `run_all` runs them in the report's order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fifo_handler::{Handler, Message, Outcome};
use fifo_sqs_client::{Client, ConnectOptions, OutgoingMessage};
use fifo_test_support::localstack;
use fifo_worker_pool::{PoolConfig, SqsQueue};
use tokio_util::sync::CancellationToken;

use crate::bare::{
    bare_loop_cpu, boto3_one_group_loop, emulator_limit, messages, new_queue, one_group_loop,
    ordered_receive_delete, raw_receive_delete, raw_send,
};
use crate::fifo_runs::{end_to_end, latency_run};
use crate::measure::{lower_bound, median, percentile};
use crate::report::{
    AtRtt, ByConcurrency, ByLoops, HotGroup, Latency, Limit, NoOp, Report, RttLatency, RttNoOp,
    ScaleOut, Skew, SkewRun,
};
use crate::{PER_GROUP, Plan, engine, measure};

/// Section 10 alone, at one round trip.
pub(crate) async fn rtt_only(plan: &Plan, rtt_ms: u64) -> AtRtt {
    let client = localstack::client().await;
    at_rtt(&client, plan, rtt_ms).await
}

fn workers_16() -> Vec<String> {
    vec!["--workers".into(), "16".into()]
}

/// A proxy in front of LocalStack adding `rtt_ms` per call, and a client
/// through it.
async fn proxied(rtt_ms: u64) -> (fifo_fault_proxy::Proxy, Client) {
    let proxy =
        fifo_fault_proxy::Proxy::start(localstack::localstack_addr()).expect("the proxy starts");
    proxy.set_latency(Duration::from_millis(rtt_ms) / 2);
    let through = fifo_sqs_client::connect(&ConnectOptions {
        queue_url: &localstack::queue_url("bench.fifo"),
        endpoint_url: Some(&proxy.url()),
        region: None,
    })
    .await
    .expect("a client through the proxy");
    (proxy, through)
}

/// Section 10: the limit, the no-op run with default flags and the
/// latency-bound runs, all through the proxy adding `rtt_ms` per call.
async fn at_rtt(client: &Client, plan: &Plan, rtt_ms: u64) -> AtRtt {
    let (proxy, through) = proxied(rtt_ms).await;
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
        limits.push(ByConcurrency {
            concurrency,
            msgs_per_s: rate,
        });
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
        ordered_limits.push(ByLoops {
            loops,
            msgs_per_s: rate,
        });
    }
    let ordered_limit = ordered_limits
        .iter()
        .map(|l| l.msgs_per_s)
        .fold(0.0, f64::max);
    let limit = limits.iter().map(|l| l.msgs_per_s).fold(0.0, f64::max);
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
            result.msgs_per_s
        );
        no_op.push(result);
    }
    let rate = median(&no_op.iter().map(|r| r.msgs_per_s).collect::<Vec<_>>());
    let mut latency = Vec::new();
    for workers in [16, 64, 100] {
        let mut makespans = Vec::new();
        for run in 0..plan.runs {
            let result = latency_run(client, plan, 300 + run, &[workers], &endpoint).await;
            makespans.push(result.makespan_s);
        }
        let bound = lower_bound(plan.latency_groups * PER_GROUP, workers);
        let makespan = median(&makespans);
        println!(
            "  RTT {rtt_ms} ms: latency-bound W={workers}: {makespan:.2} s, bound {bound:.2} s, ratio {:.3}",
            makespan / bound
        );
        latency.push(RttLatency {
            workers,
            makespan_s: makespan,
            bound_s: bound,
            ratio: makespan / bound,
            all_makespans: makespans,
        });
    }
    AtRtt {
        rtt_ms,
        limit_msgs_per_s: limit,
        limits,
        ordered_limit_msgs_per_s: ordered_limit,
        ordered_limits,
        sdk_cpu_us_per_msg: sdk_cpu,
        no_op: RttNoOp {
            messages: n,
            groups: plan.groups,
            msgs_per_s: rate,
            ratio: rate / limit,
            cpu_us_per_msg: median(&no_op.iter().map(|r| r.cpu_us_per_msg).collect::<Vec<_>>()),
            localstack_cpu_share: median(
                &no_op
                    .iter()
                    .map(|r| r.localstack_cpu_share)
                    .collect::<Vec<_>>(),
            ),
            order_violations: no_op.iter().map(|r| r.order_violations).sum(),
        },
        latency,
    }
}

/// Every section, in the report's order; `criterion` holds the results of
/// the criterion benchmarks of the router and the engine, run just before.
pub(crate) async fn run_all(plan: &Plan, criterion: BTreeMap<String, f64>) -> Report {
    let client = localstack::client().await;
    let machine = measure::machine();

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
            "  run {run}: raw send {send:.0}/s, raw receive+delete {receive:.0}/s, fifo send {fifo_send:.0}/s, fifo run {:.0}/s",
            fifo_run.msgs_per_s
        );
        limit_send.push(send);
        limit_receive.push(receive);
        e2e_send.push(fifo_send);
        e2e_run.push(fifo_run);
    }
    let pick = |figure: fn(&crate::report::RunResult) -> f64| {
        median(&e2e_run.iter().map(figure).collect::<Vec<_>>())
    };
    let run_rate = pick(|r| r.msgs_per_s);
    let limit = Limit {
        send_msgs_per_s: median(&limit_send),
        receive_delete_msgs_per_s: median(&limit_receive),
        all_send: limit_send.clone(),
        all_receive_delete: limit_receive.clone(),
        sdk_cpu_us_per_msg: median(&sdk_cpu),
    };
    let no_op = NoOp {
        messages: plan.messages,
        groups: plan.groups,
        run_msgs_per_s: run_rate,
        run_ratio: run_rate / limit.receive_delete_msgs_per_s,
        send_msgs_per_s: median(&e2e_send),
        send_ratio: median(&e2e_send) / limit.send_msgs_per_s,
        fifo_cpu_us_per_msg: pick(|r| r.cpu_us_per_msg),
        fifo_cpu_s_per_10k: pick(|r| r.cpu_us_per_msg) * 10_000.0 / 1e6,
        fifo_peak_rss_mib: pick(|r| r.peak_rss_mib),
        localstack_cpu_share: pick(|r| r.localstack_cpu_share),
        order_violations: e2e_run.iter().map(|r| r.order_violations).sum(),
        runs: e2e_run.clone(),
    };

    println!("== 3. latency-bound: makespan against max(N·L/W, {PER_GROUP}·L)");
    let mut latency = Vec::new();
    for &workers in &plan.latency_workers {
        let mut runs = Vec::new();
        for run in 0..plan.runs {
            runs.push(latency_run(&client, plan, run, &[workers], &[]).await);
        }
        let figure = |f: fn(&crate::fifo_runs::LatencyRun) -> f64| {
            median(&runs.iter().map(f).collect::<Vec<_>>())
        };
        let n = plan.latency_groups * PER_GROUP;
        let bound = lower_bound(n, workers);
        let makespan = figure(|r| r.makespan_s);
        println!(
            "  W={workers}: makespan {makespan:.2} s, bound {bound:.2} s, ratio {:.3}",
            makespan / bound
        );
        latency.push(Latency {
            workers,
            messages: n,
            makespan_s: makespan,
            bound_s: bound,
            ratio: makespan / bound,
            localstack_cpu_share: figure(|r| r.localstack_cpu_share),
            all_makespans: runs.iter().map(|r| r.makespan_s).collect(),
            last_group_first_start_s: figure(|r| r.last_group_first_start_s),
            refill_gap_p50_s: figure(|r| r.refill_gap_s),
        });
    }

    println!("== 4. skew: one hot group and 99 cold ones");
    let skew = skew(&client, plan).await;

    println!("== 5. the engine alone (in-memory queue)");
    let engine = measure::engine(&criterion, engine::latency_alone(plan));
    println!(
        "  no-op: {:.0} msgs/s, {:.2} µs per message; with batches of {}: {:.0} msgs/s (criterion)",
        engine.no_op_msgs_per_s, engine.us_per_msg, engine.batch, engine.batch_msgs_per_s
    );

    println!("== 8. soak: the engine under random faults (in-memory queue)");
    let soak = engine::soak(plan);

    println!("== 7. scale-out");
    let mut scale_out = Vec::new();
    for processes in [2, 4] {
        let mut rates = Vec::new();
        let mut violations = 0;
        for run in 0..plan.runs {
            let (_, result) = end_to_end(&client, plan, 100 + run, processes, &workers_16()).await;
            rates.push(result.msgs_per_s);
            violations += result.order_violations;
        }
        let workers_total = 32;
        let per_process = vec![workers_total / processes; processes];
        let mut makespans = Vec::new();
        for run in 0..plan.runs {
            makespans.push(
                latency_run(&client, plan, 200 + run, &per_process, &[])
                    .await
                    .makespan_s,
            );
        }
        let n = plan.latency_groups * PER_GROUP;
        let bound = lower_bound(n, workers_total);
        println!(
            "  {processes} processes: no-op {:.0}/s, latency-bound W={workers_total} makespan {:.2} s (bound {bound:.2} s)",
            median(&rates),
            median(&makespans)
        );
        scale_out.push(ScaleOut {
            processes,
            no_op_msgs_per_s: median(&rates),
            no_op_ratio_to_limit: median(&rates) / limit.receive_delete_msgs_per_s,
            order_violations: violations,
            latency_workers_total: workers_total,
            latency_makespan_s: median(&makespans),
            latency_bound_s: bound,
            latency_ratio: median(&makespans) / bound,
        });
    }

    println!("== 9. send memory");
    let send_memory = crate::fifo_runs::send_memory(plan).await;

    println!("== 10. through a proxy adding a round trip");
    let mut rtt = Vec::new();
    for &rtt_ms in &plan.rtts {
        rtt.push(at_rtt(&client, plan, rtt_ms).await);
    }
    println!("== 11. one hot group");
    let hot_group = hot_group(&client, plan).await;

    println!("== 12. where fifo's CPU goes");
    let profile = crate::fifo_runs::profile(&client, plan).await;

    Report {
        hot_group,
        profile: Some(profile),
        machine,
        quick: plan.quick,
        runs: plan.runs,
        limit,
        no_op,
        latency,
        skew,
        engine,
        criterion,
        soak: Some(soak),
        scale_out,
        send_memory: Some(send_memory),
        rtt,
    }
}

/// Section 11 alone, printed as JSON.
pub(crate) async fn hot_only(plan: &Plan) -> Vec<HotGroup> {
    let client = localstack::client().await;
    hot_group(&client, plan).await
}

/// Section 11: one group, at each round trip of `plan.rtts` that is 0 or 20
/// ms, with a no-op handler and 10 ms of work: `fifo run` with default
/// flags, the bare SDK loop of one consumer (receive ten, handle, delete
/// them in one call) and the same loop in boto3, each on the same queue
/// contents through the same proxy.
pub(crate) async fn hot_group(client: &Client, plan: &Plan) -> Vec<HotGroup> {
    let mut rows = Vec::new();
    for rtt_ms in [0, 20] {
        let (proxy, through) = proxied(rtt_ms).await;
        for work_ms in [0, 10] {
            let n = match (rtt_ms, work_ms) {
                (0, 0) => plan.hot_messages,
                (_, 0) => plan.hot_messages / 2,
                _ => plan.hot_messages / 5,
            };
            let work = Duration::from_millis(work_ms);
            let mut args = vec!["--endpoint-url".to_owned(), proxy.url()];
            if work_ms > 0 {
                args.extend(["--work-ms".to_owned(), work_ms.to_string()]);
            }
            let one_group = Plan {
                messages: n,
                groups: 1,
                ..Plan::new(plan.quick)
            };
            let (mut fifo, mut bare, mut boto3) = (Vec::new(), Vec::new(), Vec::new());
            let mut violations = 0;
            for run in 0..plan.runs {
                let label = format!("hot{rtt_ms}w{work_ms}r{run}");
                let (_, result) = end_to_end(client, &one_group, 400 + run, 1, &args).await;
                violations += result.order_violations;
                fifo.push(result.msgs_per_s);
                let url = new_queue(client, &format!("{label}bare")).await;
                raw_send(client, &url, messages(n, 1, &label), 1).await;
                bare.push(one_group_loop(&through, &url, n, work).await);
                let url = new_queue(client, &format!("{label}boto")).await;
                raw_send(client, &url, messages(n, 1, &label), 1).await;
                let proxy_url = proxy.url();
                let python =
                    tokio::task::block_in_place(|| boto3_one_group_loop(&proxy_url, &url, n, work));
                boto3.push(python.unwrap_or(f64::NAN));
                println!(
                    "  RTT {rtt_ms} ms, work {work_ms} ms, {n} messages: fifo {:.0}, bare SDK loop {:.0}, boto3 {:.0} msgs/s",
                    fifo[run], bare[run], boto3[run]
                );
            }
            rows.push(HotGroup {
                rtt_ms,
                work_ms,
                messages: n,
                fifo_msgs_per_s: median(&fifo),
                bare_msgs_per_s: median(&bare),
                boto3_msgs_per_s: median(&boto3),
                all_fifo: fifo,
                order_violations: violations,
            });
        }
    }
    rows
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
async fn skew(client: &Client, plan: &Plan) -> Skew {
    let cold_total = plan.skew_messages / 2;
    let mut results = Vec::new();
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
        let run = SkewRun {
            cold_p50_s: median(&p50s),
            cold_p99_s: median(&p99s),
            hot_p50_s: median(&hot50),
            hot_p99_s: median(&hot99),
        };
        println!(
            "  {label}: cold p50 {:.3} s, p99 {:.3} s",
            run.cold_p50_s, run.cold_p99_s
        );
        results.push(run);
    }
    let cold_only = results.pop().expect("two runs");
    let with_hot = results.pop().expect("two runs");
    Skew {
        messages: plan.skew_messages,
        cold_p50_ratio: with_hot.cold_p50_s / cold_only.cold_p50_s,
        cold_p99_ratio: with_hot.cold_p99_s / cold_only.cold_p99_s,
        with_hot,
        cold_only,
    }
}
