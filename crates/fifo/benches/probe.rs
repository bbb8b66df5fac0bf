use fifo_handler::{Handler, Message, Outcome};
use fifo_worker_pool::{Counters, PoolConfig, memory::MemoryQueue};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

struct Noop;
impl Handler for Noop {
    async fn handle(&self, _m: &Message) -> Outcome {
        Ok(())
    }
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for workers in [5usize, 16, 64] {
        let n = 200_000;
        let q = MemoryQueue::new();
        for i in 0..n {
            q.send(&format!("g{}", i % 200), "x");
        }
        let cfg = PoolConfig {
            workers,
            pollers: 2,
            max_in_flight: 4000,
            wait_time_seconds: 20,
            limit: Some(n as u64),
            ..PoolConfig::default()
        };
        let t = Instant::now();
        let stats = rt
            .block_on(fifo_worker_pool::run(
                q.clone(),
                Noop,
                cfg,
                CancellationToken::new(),
                Arc::new(Counters::default()),
            ))
            .unwrap();
        let e = t.elapsed();
        println!(
            "workers {workers}: {} msgs in {:?} = {:.0} msgs/s",
            stats.succeeded,
            e,
            stats.succeeded as f64 / e.as_secs_f64()
        );
        let _ = Duration::ZERO;
    }
}
