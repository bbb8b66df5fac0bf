//! Criterion benchmarks of the engine alone: a no-op handler on the
//! in-memory queue, 100,000 messages over 200 groups, 16 workers, on a
//! one-thread tokio runtime as the `fifo` binary runs it (so the CPU time is
//! at most the time measured). One iteration is one whole run, from the
//! first receive to the last delete; `fifo-bench` quotes these by name and
//! divides the mean by the messages, so a change of name or count is a
//! change there too (`crates/bench/src/measure.rs`).

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use fifo_handler::{Handler, Message, Outcome};
use fifo_worker_pool::PoolConfig;
use fifo_worker_pool::memory::MemoryQueue;
use tokio_util::sync::CancellationToken;

const MESSAGES: usize = 100_000;
const GROUPS: usize = 200;
const WORKERS: usize = 16;

struct NoOp;

impl Handler for NoOp {
    async fn handle(&self, _message: &Message) -> Outcome {
        Ok(())
    }
}

fn filled_queue() -> MemoryQueue {
    let queue = MemoryQueue::new().without_history();
    for i in 0..MESSAGES {
        queue.send(&format!("group-{}", i % GROUPS), "x");
    }
    queue
}

fn no_op(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    for (name, batch) in [
        (format!("engine_no_op_{MESSAGES}"), 1),
        (format!("engine_no_op_{MESSAGES}_batch_10"), 10),
    ] {
        let config = PoolConfig {
            workers: WORKERS,
            batch,
            max_in_flight: 4_000,
            limit: Some(MESSAGES as u64),
            ..PoolConfig::default()
        };
        c.bench_function(&name, |b| {
            b.iter_batched(
                filled_queue,
                |queue| {
                    let stats = runtime
                        .block_on(fifo_worker_pool::run(
                            queue,
                            NoOp,
                            &config,
                            CancellationToken::new(),
                        ))
                        .expect("the run ends cleanly");
                    assert_eq!(stats.succeeded, MESSAGES as u64);
                },
                BatchSize::PerIteration,
            );
        });
    }
}

criterion_group! {
    name = engine;
    // A run takes a fraction of a second: ten of them make a sample.
    config = Criterion::default().sample_size(10);
    targets = no_op
}
criterion_main!(engine);
