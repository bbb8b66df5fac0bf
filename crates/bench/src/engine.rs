//! The engine on the in-memory queue: the latency-bound runs in paused
//! time (scheduling alone) and the soak under random faults. The engine's
//! no-op throughput is a criterion benchmark of its own crate
//! (`crates/worker-pool/benches/engine.rs`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fifo_handler::{Handler, Message, Outcome};
use fifo_worker_pool::memory::{Faults, MemoryQueue};
use fifo_worker_pool::{Counters, PoolConfig};
use tokio_util::sync::CancellationToken;

use crate::measure::{lower_bound, own_cpu_seconds, rss_mib};
use crate::report::{EngineLatency, Soak, SoakFaults, SoakSample};
use crate::{PER_GROUP, Plan, WORK};

/// The latency-bound runs of section 3 on the in-memory queue in paused
/// time, so that only the engine's scheduling shows.
pub(crate) fn latency_alone(plan: &Plan) -> Vec<EngineLatency> {
    let n = plan.latency_groups * PER_GROUP;
    plan.latency_workers
        .iter()
        .map(|&workers| {
            let makespan = std::thread::spawn(move || paused_makespan(n, workers))
                .join()
                .expect("the paused run ends");
            let bound = lower_bound(n, workers);
            EngineLatency {
                workers,
                makespan_s: makespan,
                bound_s: bound,
                ratio: makespan / bound,
            }
        })
        .collect()
}

/// Section 8: a long run of the engine on the in-memory queue with random
/// faults (lost requests and answers, throttling, delays, refused receipt
/// handles) and random handler failures, in paused time. A producer keeps
/// the backlog near `BACKLOG`, so the queue's own memory stays flat and
/// the process's RSS shows the engine's. The handler checks the order
/// promise as it goes (no two runs of a group at once, no message before
/// an earlier one of its group succeeded); the counts are reconciled with
/// the queue's at the end.
pub(crate) fn soak(plan: &Plan) -> Soak {
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

async fn soak_run(n: usize) -> Soak {
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
                samples.lock().unwrap().push(SoakSample {
                    queue_time_s: started.elapsed().as_secs_f64(),
                    succeeded: stats.succeeded,
                    held: stats.in_flight,
                    rss_mib: rss_mib(),
                });
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
    let held: Vec<u64> = samples.iter().map(|s| s.held).collect();
    let rss: Vec<f64> = samples.iter().map(|s| s.rss_mib).collect();
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
    Soak {
        messages: n,
        groups: SOAK_GROUPS,
        backlog: BACKLOG,
        failure_rate: SOAK_FAILURE_RATE,
        faults: SoakFaults {
            lost_requests: faults.lost_requests,
            lost_answers: faults.lost_answers,
            throttled_share: faults.throttled,
            delayed: faults.delayed,
            max_delay_ms: faults.max_delay.as_millis() as u64,
            stale_handles: faults.stale_handles,
        },
        queue_time_s: queue_time,
        wall_s,
        cpu_us_per_msg: cpu_s * 1e6 / n as f64,
        handler_runs: handler.runs.load(std::sync::atomic::Ordering::Relaxed),
        received: stats.received,
        succeeded: stats.succeeded,
        retried: stats.retried,
        failed: stats.failed,
        deleted: stats.deleted,
        released: stats.released,
        lost: stats.lost,
        dead_lettered: stats.dead_lettered,
        accounted,
        queue_deleted: queue.deleted(),
        queue_left: queue.undeleted() as u64,
        queue_dead_letters: queue.dead_letters().len() as u64,
        held_max: held.iter().max().copied().unwrap_or(0),
        held_mean: held.iter().sum::<u64>() as f64 / held.len().max(1) as f64,
        max_in_flight,
        rss_after_warm_up_mib: rss_warm,
        rss_max_after_warm_up_mib: rss_max_after,
        rss_end_mib: rss_end,
        order_violations: violations,
        samples,
    }
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
