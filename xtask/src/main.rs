//! `cargo xtask`: the project's automation, in Rust so that it runs wherever
//! cargo does. LocalStack lifecycle (`localstack.rs`), the test gate, the demo
//! and the benchmarks; each subcommand is idempotent and says what it did.
#![allow(clippy::print_stdout)]

mod localstack;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const HELP: &str = "\
cargo xtask <COMMAND>

Commands:
  localstack-up      start LocalStack on port 4566 (Docker if an engine runs, else a host install)
  localstack-down    stop the LocalStack this command started
  localstack-status  say what runs where
  localstack-logs    print LocalStack's log
  test [ARGS..]      fmt check, clippy, then every test against LocalStack (ARGS go to nextest)
  demo               create a queue, send the seed's two patterns, list the queue
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
        "test" => with_localstack(|| test(&rest)),
        "demo" => with_localstack(demo),
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

fn test(nextest_args: &[String]) -> Result<()> {
    let nextest = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["nextest", "--version"])
        .output();
    if !nextest.is_ok_and(|o| o.status.success()) {
        return Err(
            "cargo-nextest is not installed\nhint: cargo install cargo-nextest --locked".to_owned(),
        );
    }
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    let mut args = vec!["nextest", "run", "--workspace"];
    if std::env::var_os("CI").is_some() {
        args.extend(["--profile", "ci"]);
    }
    args.extend(nextest_args.iter().map(String::as_str));
    cargo(&args)
}

fn demo() -> Result<()> {
    let queue = "test-fifo-queue.fifo";
    cargo(&["build", "--quiet", "--package", "fifo"])?;
    let fifo = project_root().join("target/debug/fifo");
    step("create the queue", &fifo, &["create-queue", queue])?;
    step(
        "send 5 messages to one group: they must be handled 1→5 in order",
        &fifo,
        &["send", "--group", "same", "--count", "5"],
    )?;
    step(
        "send 5 messages to 5 groups: they may be handled side by side",
        &fifo,
        &["send", "--groups", "5", "--count", "5"],
    )?;
    step("list the queues", &fifo, &["list-queues"])?;
    Ok(())
}

fn step(title: &str, program: &Path, args: &[&str]) -> Result<()> {
    println!("\n==> {title}\n$ fifo {}", args.join(" "));
    run(Command::new(program).args(args))
}

/// Runs cargo (the one that started us, as `CARGO` says) in the project root.
fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("$ cargo {}", args.join(" "));
    run(Command::new(cargo).args(args).current_dir(project_root()))
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed ({status})"))
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the project root")
        .to_path_buf()
}
