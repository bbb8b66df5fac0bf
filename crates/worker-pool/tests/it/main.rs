//! The engine's integration tests, on the in-memory queue and (feature
//! `sqs`) on LocalStack, in one test binary so that the workspace links it
//! once.

mod batches;
mod engine;
mod faults;
mod pace;
mod readme;
#[cfg(feature = "sqs")]
mod sqs;
mod steering;

use fifo_worker_pool::memory::MemoryQueue;

/// Sends `count` messages to each group, one of each group in turn;
/// bodies are `GROUP-N`.
fn fill(queue: &MemoryQueue, groups: &[&str], count: usize) {
    for n in 1..=count {
        for group in groups {
            queue.send(group, &format!("{group}-{n}"));
        }
    }
}
