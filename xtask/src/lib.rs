//! The library half of xtask: test infrastructure that the workspace's
//! integration tests use in-process and that the `cargo xtask` binary also
//! offers by hand. Today that is [`proxy`], a TCP proxy that puts latency,
//! resets, refused connects and silence between fifo and LocalStack, and
//! the benchmark program's flags ([`BENCH_MODES`], [`BENCH_FLAGS`]), which
//! `cargo xtask bench` checks before minutes of criterion.
//!
//! It stays on std threads, with `socket2` as its one dependency, so that
//! xtask keeps building fast on a fresh machine.

pub mod proxy;

/// The flags of `fifo-bench` that run one part alone; at most one is given.
pub const BENCH_MODES: [&str; 5] = [
    "--rtt",
    "--soak-only",
    "--hot-only",
    "--send-memory-only",
    "--from-json",
];

/// Every flag of `fifo-bench`: `--quick` and the modes.
pub const BENCH_FLAGS: [&str; 6] = [
    "--quick",
    BENCH_MODES[0],
    BENCH_MODES[1],
    BENCH_MODES[2],
    BENCH_MODES[3],
    BENCH_MODES[4],
];
