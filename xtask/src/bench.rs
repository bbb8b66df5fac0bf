//! `cargo xtask bench`: the criterion benchmarks, then `fifo-bench` against
//! LocalStack, with its flags checked first.

use std::process::Command;

use crate::Result;
use crate::project::{cargo, project_root, run, target_dir};

/// The criterion benchmarks (router, engine), then `fifo-bench`, which
/// measures fifo against LocalStack and writes BENCHMARKS.md with the
/// criterion figures. `--rtt`, `--soak-only`, `--hot-only`,
/// `--send-memory-only` and `--from-json` go to `fifo-bench` alone.
pub(crate) fn bench(args: &[String]) -> Result<()> {
    // fifo-bench's flags (checked again there): a typo is refused here,
    // before minutes of criterion.
    let (known, modes) = (xtask::BENCH_FLAGS, xtask::BENCH_MODES);
    let mut given = args.iter();
    while let Some(arg) = given.next() {
        if !known.contains(&arg.as_str()) {
            return Err(format!(
                "unknown bench argument {arg}: expected {}",
                known.join(", ")
            ));
        }
        if arg == "--rtt" {
            given
                .next()
                .filter(|ms| ms.parse::<u64>().is_ok())
                .ok_or("--rtt takes a round trip in whole milliseconds, e.g. `--rtt 20`")?;
        }
    }
    if args.iter().filter(|a| modes.contains(&a.as_str())).count() > 1 {
        return Err(format!("give at most one of {}", modes.join(", ")));
    }
    // Built first, so that a build error costs no benchmark time, and apart:
    // built together, features would unify and the measured fifo would not
    // be the one users get.
    cargo(&["build", "--release", "--package", "fifo-bench"])?;
    cargo(&["build", "--release", "--package", "fifo"])?;
    let whole_run = !args.iter().any(|a| modes.contains(&a.as_str()));
    if whole_run {
        let seconds = if args.iter().any(|a| a == "--quick") {
            "1"
        } else {
            "3"
        };
        let criterion = ["--", "--warm-up-time", "1", "--measurement-time", seconds];
        let router = [
            "bench",
            "--package",
            "fifo-group-router",
            "--bench",
            "router",
        ];
        cargo(&[&router[..], &criterion].concat())?;
        let engine = [
            "bench",
            "--package",
            "fifo-worker-pool",
            "--bench",
            "engine",
        ];
        cargo(&[&engine[..], &criterion].concat())?;
    }
    // fifo-bench runs the fifo binary built beside it. Nothing from this
    // environment reaches it but PATH: the bare SDK loops it compares fifo
    // with must see what fifo sees (no AWS_* settings).
    let mut fifo_bench = Command::new(target_dir().join("release/fifo-bench"));
    fifo_bench
        .args(args)
        .current_dir(project_root())
        .env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        fifo_bench.env("PATH", path);
    }
    run(&mut fifo_bench)
}
