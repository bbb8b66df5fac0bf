//! Micro-benchmarks of the router's per-message operations, over 200 groups:
//! a message is pushed, handed out, finishes, and its delete is confirmed.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use fifo_group_router::Router;

fn groups() -> Vec<String> {
    (0..200).map(|g| format!("group-{g}")).collect()
}

fn filled(groups: &[String]) -> Router<usize> {
    let mut router = Router::new();
    for i in 0..1000 {
        router.push(&groups[i % groups.len()], i);
    }
    router
}

/// The handler succeeded and SQS confirmed the delete.
fn complete(router: &mut Router<usize>, group: &str, item: usize) {
    router.finished(group, item);
    let deletable = router.pop_delete().expect("the lane's first message");
    router.deleted(group, deletable);
}

fn benches(c: &mut Criterion) {
    let groups = groups();
    c.bench_function("router_push_1000", |b| {
        b.iter_batched(
            Router::new,
            |mut router| {
                for i in 0..1000 {
                    router.push(&groups[i % groups.len()], i);
                }
                router
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("router_drain_1000", |b| {
        b.iter_batched(
            || filled(&groups),
            |mut router| {
                while let Some((group, item)) = router.take_next() {
                    black_box(item);
                    complete(&mut router, &group, item);
                }
                router
            },
            BatchSize::SmallInput,
        )
    });
    // Steady state: one message handed out, completed, and a new one pushed.
    let mut router = filled(&groups);
    c.bench_function("router_cycle", |b| {
        b.iter(|| {
            let (group, item) = router.take_next().expect("always work");
            complete(&mut router, &group, item);
            router.push(&group, black_box(item));
        })
    });
}

criterion_group!(router, benches);
criterion_main!(router);
