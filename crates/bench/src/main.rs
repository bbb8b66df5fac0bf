//! `fifo-bench`, run by `cargo xtask bench`: fifo against the emulator's own
//! limit, measured in one run, and the engine alone on the in-memory queue.
//! Writes BENCHMARKS.md, BENCHMARKS.json and benchmarks-latency.svg at the
//! project root. Every figure is the median of several runs (criterion's,
//! quoted from its results, are means of its samples); every ratio
//! divides figures of the same invocation. Needs LocalStack on
//! localhost:4566, the `fifo` binary next to this one, and the criterion
//! benchmarks of the router and the engine run just before (xtask does
//! all three).
//!
//! Layout: `emulator.rs` the sections against LocalStack, in order;
//! `bare.rs` the bare SDK loops (the limit) and `fifo_runs.rs` the `fifo`
//! processes they are compared with; `engine.rs` the runs on the in-memory
//! queue; `measure.rs` /proc, medians and criterion's results; `report.rs`
//! the typed figures; `markdown.rs` the report.
#![allow(
    clippy::print_stdout,
    reason = "a program whose output is its progress"
)]

mod bare;
mod emulator;
mod engine;
mod fifo_runs;
mod markdown;
mod measure;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use report::Report;

/// How much each section measures.
struct Plan {
    quick: bool,
    runs: usize,
    /// Messages for the limit, the no-op run and scale-out.
    messages: usize,
    groups: usize,
    latency_groups: usize,
    latency_workers: Vec<usize>,
    skew_messages: usize,
    soak_messages: usize,
    /// The largest `fifo send` whose memory is measured.
    send_memory_messages: usize,
    /// Round trips added by the proxy in section 10, in ms.
    rtts: Vec<u64>,
    /// Messages for the limit and the no-op run through the proxy.
    rtt_messages: usize,
    /// Messages of the hot group at RTT 0 with a no-op handler (fewer for
    /// the slower cells).
    hot_messages: usize,
    /// Messages of the profiled run.
    profile_messages: usize,
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
                soak_messages: 100_000,
                send_memory_messages: 100_000,
                rtts: vec![0, 20],
                rtt_messages: 2_000,
                hot_messages: 1_000,
                profile_messages: 10_000,
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
                soak_messages: 1_000_000,
                send_memory_messages: 1_000_000,
                rtts: vec![0, 5, 20],
                rtt_messages: 6_000,
                hot_messages: 2_000,
                profile_messages: 30_000,
            }
        }
    }
}

/// The handler work of the latency-bound runs.
const WORK: Duration = Duration::from_millis(50);
/// Messages per group in the latency-bound runs.
const PER_GROUP: usize = 20;

const USAGE: &str = "\
fifo-bench [--quick]        every section; writes BENCHMARKS.md, BENCHMARKS.json, benchmarks-latency.svg
fifo-bench --rtt MS         section 10 at one round trip, printed as JSON
fifo-bench --soak-only      section 8, printed as JSON
fifo-bench --hot-only       section 11, printed as JSON
fifo-bench --send-memory-only   section 9 again, into the last run's figures
fifo-bench --from-json      the report again from BENCHMARKS.json";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo xtask bench` checks the same list before running criterion.
    let (known, modes) = (xtask::BENCH_FLAGS, xtask::BENCH_MODES);
    let rtt_at = args.iter().position(|a| a == "--rtt");
    let rtt = match rtt_at {
        Some(at) => match args.get(at + 1).map(|ms| ms.parse::<u64>()) {
            Some(Ok(ms)) => Some(ms),
            _ => return usage("--rtt takes a round trip in whole milliseconds, e.g. `--rtt 20`"),
        },
        None => None,
    };
    let rtt_value_at = rtt_at.map(|at| at + 1);
    if let Some((_, unknown)) = args
        .iter()
        .enumerate()
        .find(|(i, a)| !known.contains(&a.as_str()) && Some(*i) != rtt_value_at)
    {
        return usage(&format!("unknown argument {unknown}"));
    }
    if args.iter().filter(|a| modes.contains(&a.as_str())).count() > 1 {
        return usage(&format!("give at most one of {}", modes.join(", ")));
    }
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let plan = Plan::new(has("--quick"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let runtime = || tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    if has("--soak-only") {
        let soak = engine::soak(&plan);
        println!(
            "{}",
            serde_json::to_string_pretty(&soak).expect("figures serialize")
        );
        return ExitCode::SUCCESS;
    }
    if has("--hot-only") {
        let rows = runtime().block_on(emulator::hot_only(&plan));
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("figures serialize")
        );
        return ExitCode::SUCCESS;
    }
    if let Some(rtt) = rtt {
        let section = runtime().block_on(emulator::rtt_only(&plan, rtt));
        println!(
            "{}",
            serde_json::to_string_pretty(&section).expect("figures serialize")
        );
        return ExitCode::SUCCESS;
    }
    let report = if has("--send-memory-only") {
        let mut report = read_report(&root);
        report.send_memory = Some(runtime().block_on(fifo_runs::send_memory(&plan)));
        report
    } else if has("--from-json") {
        read_report(&root)
    } else {
        // Checked first: a missing binary or a missing or stale result stops
        // the run before its minutes against LocalStack, not after.
        fifo_runs::fifo_binary();
        let criterion = measure::criterion_results(&criterion_dir());
        runtime().block_on(emulator::run_all(&plan, criterion))
    };
    let plan = Plan::new(report.quick);
    let write = |name: &str, text: String| {
        std::fs::write(root.join(name), text).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    };
    write(
        "BENCHMARKS.json",
        serde_json::to_string_pretty(&report).expect("figures serialize") + "\n",
    );
    write("benchmarks-latency.svg", markdown::latency_svg(&report));
    write("BENCHMARKS.md", markdown::markdown(&report, &plan));
    println!("wrote BENCHMARKS.md, BENCHMARKS.json and benchmarks-latency.svg");
    ExitCode::SUCCESS
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("error: {problem}\n{USAGE}");
    ExitCode::from(2)
}

fn read_report(root: &Path) -> Report {
    let path = root.join("BENCHMARKS.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{} is not this version's figures ({e}): run the whole benchmark again",
            path.display()
        )
    })
}

/// Where criterion wrote its results: `criterion/` in the target directory
/// this program was built into.
fn criterion_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of this program");
    // target/<profile>/fifo-bench
    exe.parent()
        .and_then(Path::parent)
        .expect("fifo-bench runs from a target directory")
        .join("criterion")
}
