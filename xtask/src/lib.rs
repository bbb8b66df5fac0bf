//! The library half of xtask: the benchmark program's flags ([`BENCH_MODES`],
//! [`BENCH_FLAGS`]), listed once for `fifo-bench` and for `cargo xtask
//! bench`, which checks them before minutes of criterion.
//!
//! It is std only, so that `fifo-bench` reads the flags without building
//! more than this.

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
