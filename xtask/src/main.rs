//! `cargo xtask`: the project's automation, in Rust so that it runs wherever
//! cargo does; each subcommand is idempotent and says what it did. Here the
//! commands are dispatched; a file per job does them: LocalStack's lifecycle
//! (`localstack.rs`), the test gate (`test_gate.rs`), the demo (`demo.rs`),
//! the benchmarks (`bench.rs`), the release archive (`dist.rs`), the fault
//! proxy by hand (`proxy.rs`, over the
//! `fifo-fault-proxy` crate), and the project's places and programs
//! (`project.rs`).
#![allow(clippy::print_stdout)]

mod bench;
mod demo;
mod dist;
mod localstack;
// The log handler's line format, read back exactly as fifo writes it. The
// file is std only, so xtask shares it without depending on the handler crate.
#[path = "../../crates/builtin-handlers/src/log_line.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "xtask only reads lines (the writers are fifo's), and within xtask `pub` is the crate"
)]
mod log_line;
mod project;
mod proxy;
mod test_gate;

use std::process::ExitCode;

use bench::bench;
use demo::demo;
use proxy::proxy;
use test_gate::{ensure_nextest, test};

const HELP: &str = "\
cargo xtask <COMMAND>

Commands:
  localstack-up      start LocalStack on port 4566 (Docker if an engine runs, else a host install)
  localstack-down    stop the LocalStack this command started
  localstack-status  say what runs where
  localstack-logs    print LocalStack's log
  test [ARGS..]      fmt check, clippy, the examples, `cargo install` into a temp root, then every
                     test against LocalStack (ARGS go to nextest)
  demo               create a queue, send the seed's two patterns, process them, show a timeline
  dist               the release archive: target/dist/fifo-VERSION-TARGET.tar.gz (fifo, man pages,
                     completions, README, licences), its .sha256 and a CycloneDX SBOM, checked
  bench [--quick]    the criterion benchmarks, then fifo against LocalStack's own limit; writes BENCHMARKS.md
  bench --rtt MS     only the runs through a proxy adding MS per call; prints them
  bench --soak-only  only the engine's soak on the in-memory queue; prints it
  bench --hot-only   only the hot group (one group, RTT 0 and 20 ms); prints it
  bench --send-memory-only  measure `fifo send`'s memory again, into BENCHMARKS.md
  bench --from-json  BENCHMARKS.md again from BENCHMARKS.json
  proxy [--listen ADDR] [--upstream ADDR] [--latency-ms N]
                     a TCP proxy (default 127.0.0.1:4567 -> 127.0.0.1:4566) that adds latency,
                     resets, refused connects or silence, switched by commands on stdin
";

type Result<T, E = String> = std::result::Result<T, E>;

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match command.as_str() {
        "localstack-up" => localstack::up().map(drop),
        "localstack-down" => localstack::down(),
        "localstack-status" => localstack::status(),
        "localstack-logs" => localstack::logs(),
        "test" => ensure_nextest().and_then(|()| with_localstack(|| test(&rest))),
        "demo" => with_localstack(demo),
        "dist" => dist::dist(),
        // These two touch no queue.
        "bench"
            if rest
                .iter()
                .any(|a| a == "--from-json" || a == "--soak-only") =>
        {
            bench(&rest)
        }
        "bench" => with_localstack(|| bench(&rest)),
        "proxy" => proxy(&rest),
        "" | "help" | "-h" | "--help" => {
            print!("{HELP}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{HELP}")),
    }
}

/// Runs `job` with LocalStack up, stopping it afterwards only if this call
/// started it, so a fresh clone ends with nothing left running.
fn with_localstack(job: impl FnOnce() -> Result<()>) -> Result<()> {
    let started = localstack::up()?;
    let result = job();
    if started == localstack::Started::Now
        && let Err(e) = localstack::down()
    {
        eprintln!("xtask: warning: could not stop LocalStack: {e}");
    }
    result
}
