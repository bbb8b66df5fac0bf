//! `cargo xtask`: the project's automation, in Rust so that it runs wherever
//! cargo does. LocalStack lifecycle (`localstack.rs`), the test gate, the demo,
//! the benchmarks and the fault proxy (the `fifo-fault-proxy` crate, which
//! tests run in-process); each subcommand is idempotent and says what it did.
#![allow(clippy::print_stdout)]

mod localstack;
// The log handler's line format, read back exactly as fifo writes it. The
// file is std only, so xtask shares it without depending on our crates.
#[path = "../../crates/handler/src/log_line.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "xtask only reads lines (the writers are fifo's), and within xtask `pub` is the crate"
)]
mod log_line;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use fifo_fault_proxy::{Fault, Proxy};

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

const PROXY_USAGE: &str = "cargo xtask proxy [--listen ADDR] [--upstream ADDR] [--latency-ms N]";
const PROXY_COMMANDS: &str = "pass, latency MS, reset, reset ACTION, refuse, silent, stats, quit";

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

/// The cargo-nextest `cargo xtask test` installs when none is found.
const NEXTEST_VERSION: &str = "0.9.143";

fn test(nextest_args: &[String]) -> Result<()> {
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The README's library example is one of them.
    cargo(&["build", "--workspace", "--examples"])?;
    // The engine builds without the AWS SDK (the workspace turns `sqs` on).
    cargo(&["check", "--package", "fifo-worker-pool", "--all-targets"])?;
    install_check()?;
    let mut args = vec!["nextest", "run", "--workspace"];
    if std::env::var_os("CI").is_some() {
        args.extend(["--profile", "ci"]);
    }
    args.extend(nextest_args.iter().map(String::as_str));
    cargo(&args)
}

/// `cargo install --path crates/fifo --locked`, as the README tells users,
/// into a new root under the target directory; the installed `fifo
/// --version` must answer. It builds the dev profile (`--debug`) into a
/// target directory of its own: the release build users get would double
/// the test's build time, and the shared one would be rebuilt with other
/// features under the tests' feet.
fn install_check() -> Result<()> {
    let dir = target_dir().join("install-check");
    let root = dir.join("root");
    // A root left by an interrupted run is ours to remove.
    let _ = std::fs::remove_dir_all(&root);
    let mut install = cargo_command();
    install
        .args([
            "install",
            "--path",
            "crates/fifo",
            "--locked",
            "--debug",
            "--quiet",
        ])
        .arg("--root")
        .arg(&root)
        .arg("--target-dir")
        .arg(dir.join("target"))
        .current_dir(project_root());
    let installed = run(&mut install).and_then(|()| {
        let output = Command::new(root.join("bin/fifo"))
            .arg("--version")
            .output()
            .map_err(|e| format!("the installed fifo does not run: {e}"))?;
        let version = String::from_utf8_lossy(&output.stdout);
        if output.status.success() && version.starts_with("fifo ") {
            println!("installed and ran {}", version.trim());
            Ok(())
        } else {
            Err(format!(
                "the installed `fifo --version` answered {version:?}"
            ))
        }
    });
    let _ = std::fs::remove_dir_all(&root);
    installed
}

/// The criterion benchmarks (router, engine), then `fifo-bench`, which
/// measures fifo against LocalStack and writes BENCHMARKS.md with the
/// criterion figures. `--rtt`, `--soak-only`, `--hot-only`,
/// `--send-memory-only` and `--from-json` go to `fifo-bench` alone.
fn bench(args: &[String]) -> Result<()> {
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

/// Runs the fault proxy until `quit` or the end of stdin, switching it by
/// the commands read there and printing the state after each.
fn proxy(args: &[String]) -> Result<()> {
    let (mut listen, mut upstream, mut latency_ms) = ("127.0.0.1:4567", "127.0.0.1:4566", 0);
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .map(String::as_str)
            .ok_or_else(|| format!("{flag} needs a value\nusage: {PROXY_USAGE}"));
        match flag.as_str() {
            "--listen" => listen = value?,
            "--upstream" => upstream = value?,
            "--latency-ms" => {
                latency_ms = value?
                    .parse()
                    .map_err(|_| "--latency-ms takes a whole number of milliseconds".to_owned())?;
            }
            other => return Err(format!("unknown flag `{other}`\nusage: {PROXY_USAGE}")),
        }
    }
    let (listen, upstream) = (socket_addr(listen)?, socket_addr(upstream)?);
    let proxy =
        Proxy::start_on(listen, upstream).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    proxy.set_latency(Duration::from_millis(latency_ms));
    println!(
        "proxy listening on {} and forwarding to {upstream}; commands: {PROXY_COMMANDS}",
        proxy.url()
    );
    for line in std::io::stdin().lines() {
        let line = line.map_err(|e| format!("cannot read stdin: {e}"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            [] => continue,
            ["pass"] => proxy.set_fault(Fault::None),
            ["latency", ms] => match ms.parse() {
                Ok(ms) => {
                    latency_ms = ms;
                    proxy.set_latency(Duration::from_millis(ms));
                }
                Err(_) => {
                    eprintln!("error: `latency` takes milliseconds, e.g. `latency 50`");
                    continue;
                }
            },
            ["reset"] => proxy.set_fault(Fault::ResetAll),
            ["reset", action] => proxy.set_fault(Fault::ResetAction(action.to_owned())),
            ["refuse"] => proxy.set_fault(Fault::Refuse),
            ["silent"] => proxy.set_fault(Fault::Silent),
            ["stats"] => println!("{}", proxy.stats()),
            ["quit"] => break,
            _ => {
                eprintln!("error: unknown command `{line}`; commands: {PROXY_COMMANDS}");
                continue;
            }
        }
        println!("{}, latency {latency_ms} ms", proxy.fault());
    }
    drop(proxy);
    println!("proxy stopped");
    Ok(())
}

fn socket_addr(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| format!("bad address `{addr}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{addr}` resolves to no address"))
}

fn demo() -> Result<()> {
    cargo(&["build", "--quiet", "--package", "fifo"])?;
    let fifo = target_dir().join("debug/fifo");
    // A queue of its own, so earlier messages never mix into the timeline.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let queue = format!("fifo-demo-{stamp}.fifo");
    let queue_url = format!("http://localhost:4566/000000000000/{queue}");
    let with_queue = |args: &[&str]| -> Vec<String> {
        ["--queue-url", queue_url.as_str()]
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect()
    };
    step(
        "create a FIFO queue",
        &fifo,
        &with_queue(&["create-queue", &queue]),
    )?;
    step(
        "send 5 messages to one group: they must be handled 1→5, one at a time",
        &fifo,
        &with_queue(&["send", "--group", "same", "--count", "5"]),
    )?;
    step(
        "send 5 messages to 5 groups: they may be handled side by side",
        &fifo,
        &with_queue(&["send", "--groups", "5", "--count", "5"]),
    )?;
    step(
        "list the queue",
        &fifo,
        &with_queue(&["list-queues", "--prefix", "fifo-demo-"]),
    )?;

    let run_args = with_queue(&[
        "run",
        "--until-empty",
        "--workers",
        "5",
        "--work-ms",
        "500",
        "--wait-time",
        "1",
    ]);
    println!(
        "\n==> process it: 5 workers, 500 ms of work per message\n$ fifo {}",
        run_args[2..].join(" ")
    );
    let output = Command::new(&fifo)
        .args(&run_args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run fifo: {e}"))?;
    let log = String::from_utf8_lossy(&output.stdout);
    print!("{log}");
    if !output.status.success() {
        return Err(format!("fifo run failed ({})", output.status));
    }
    println!("\n{}", timeline(&log)?);
    Ok(())
}

/// One handled message, from the log handler's start and done lines.
struct Span {
    group: String,
    seq: u64,
    start: f64,
    end: f64,
}

/// Draws the log handler's output as a timeline, one row per message, and
/// says whether group `same` ran in order, one at a time.
fn timeline(log: &str) -> Result<String> {
    let mut spans: Vec<Span> = Vec::new();
    let mut open: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for line in log.lines().filter_map(log_line::parse) {
        match line.event {
            log_line::LogEvent::Start => {
                // The demo's bodies carry the order they were sent in.
                let seq = line
                    .body
                    .and_then(|body| body.split("\"seq\":").nth(1))
                    .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
                    .unwrap_or(0);
                open.insert(line.sequence_number.to_owned(), spans.len());
                spans.push(Span {
                    group: line.group.to_owned(),
                    seq,
                    start: line.at,
                    end: line.at,
                });
            }
            log_line::LogEvent::Done => {
                if let Some(&index) = open.get(line.sequence_number) {
                    spans[index].end = line.at;
                }
            }
        }
    }
    if spans.is_empty() {
        return Err("the run printed no messages".to_owned());
    }
    let origin = spans.iter().map(|s| s.start).fold(f64::INFINITY, f64::min);
    for span in &mut spans {
        span.start -= origin;
        span.end -= origin;
    }
    spans.sort_by(|a, b| {
        (a.group != "same", &a.group, a.seq).cmp(&(b.group != "same", &b.group, b.seq))
    });
    let scale = 0.1; // seconds per column
    let mut chart = String::from("timeline (one █ = 100 ms)\n");
    for span in &spans {
        let from = (span.start / scale).round() as usize;
        let to = ((span.end / scale).round() as usize).max(from + 1);
        chart += &format!(
            "  {:<8} #{} {}{}\n",
            span.group,
            span.seq,
            " ".repeat(from),
            "█".repeat(to - from)
        );
    }
    let same: Vec<&Span> = spans.iter().filter(|s| s.group == "same").collect();
    let in_order = same.iter().map(|s| s.seq).eq(1..=5);
    let one_at_a_time = same.windows(2).all(|w| w[0].end <= w[1].start + 0.0005);
    chart += &format!(
        "\ngroup same: {} {}\n",
        same.iter()
            .map(|s| s.seq.to_string())
            .collect::<Vec<_>>()
            .join(" → "),
        if in_order && one_at_a_time {
            "in order, one at a time"
        } else {
            "OUT OF ORDER"
        }
    );
    let others: Vec<&Span> = spans.iter().filter(|s| s.group != "same").collect();
    let most_at_once = others
        .iter()
        .map(|s| {
            others
                .iter()
                .filter(|o| o.start <= s.start && s.start < o.end)
                .count()
        })
        .max()
        .unwrap_or(0);
    chart += &format!(
        "the other {} groups: up to {most_at_once} side by side\n",
        others.len()
    );
    if !(in_order && one_at_a_time) {
        return Err(format!("{chart}group `same` was not processed in order"));
    }
    Ok(chart)
}

fn step(title: &str, program: &Path, args: &[String]) -> Result<()> {
    println!("\n==> {title}\n$ fifo {}", args[2..].join(" "));
    run(Command::new(program).args(args))
}

/// Runs cargo (the one that started us, as `CARGO` says) in the project root.
fn cargo(args: &[&str]) -> Result<()> {
    println!("$ cargo {}", args.join(" "));
    run(cargo_command().args(args).current_dir(project_root()))
}

/// `cargo`, finding the tools installed into the project too.
fn cargo_command() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    let tools = tools_dir().join("bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let paths = std::iter::once(tools).chain(std::env::split_paths(&path));
    if let Ok(path) = std::env::join_paths(paths) {
        command.env("PATH", path);
    }
    command
}

/// Where `cargo xtask` installs the tools it needs: inside the project, so
/// nothing outside it changes.
fn tools_dir() -> PathBuf {
    project_root().join(".tools")
}

/// Installs cargo-nextest into the project when cargo cannot find one, or
/// when the one installed there is not the pinned version any more.
fn ensure_nextest() -> Result<()> {
    let found = cargo_command()
        .args(["nextest", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let ours = tools_dir().join("bin").join("cargo-nextest").exists();
    match found {
        Some(version) if !ours || version.contains(NEXTEST_VERSION) => return Ok(()),
        Some(_) => println!(
            "the cargo-nextest in .tools/ is not {NEXTEST_VERSION}: installing that version (about ten minutes on two cores)"
        ),
        None => println!(
            "cargo-nextest not found: installing cargo-nextest {NEXTEST_VERSION} into .tools/ (once, about ten minutes on two cores)"
        ),
    }
    let root = tools_dir();
    let root = root.to_str().ok_or("the project path is not UTF-8")?;
    cargo(&[
        "install",
        "cargo-nextest",
        "--version",
        NEXTEST_VERSION,
        "--locked",
        "--root",
        root,
    ])
    .map_err(|e| {
        format!(
            "{e}\nhint: it needs crates.io; or install any cargo-nextest yourself (https://nexte.st), cargo finds it on PATH"
        )
    })
}

/// Runs `command`; an error names it by its program and arguments (not
/// its environment, which holds the whole PATH for cargo).
fn run(command: &mut Command) -> Result<()> {
    let shown = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let status = command
        .status()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` when set (relative
/// to the project root if relative), else `target/` in the project.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => project_root().join(dir),
        None => project_root().join("target"),
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the project root")
        .to_path_buf()
}
