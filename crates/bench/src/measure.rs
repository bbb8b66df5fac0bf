//! Figures from the machine (/proc), from criterion's results, and the
//! arithmetic every section shares.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::report::{Engine, EngineLatency, Machine};
use crate::{PER_GROUP, WORK};

/// The latency-bound runs' lower bound: `max(N·L/W, PER_GROUP·L)`.
pub(crate) fn lower_bound(messages: usize, workers: usize) -> f64 {
    let l = WORK.as_secs_f64();
    (messages as f64 * l / workers as f64).max(PER_GROUP as f64 * l)
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// CPU seconds (user + system) of the calling thread.
pub(crate) fn thread_cpu_seconds() -> f64 {
    stat_cpu_seconds("/proc/thread-self/stat").unwrap_or(f64::NAN)
}

/// CPU seconds (user + system) of this process.
pub(crate) fn own_cpu_seconds() -> f64 {
    proc_usage(std::process::id()).map_or(f64::NAN, |(cpu, _)| cpu)
}

/// CPU seconds (user + system) in a /proc `stat` file (of a process or a
/// thread).
fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().ok()? + fields[12].parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds (user + system) and peak RSS in MiB of a process.
pub(crate) fn proc_usage(pid: u32) -> Option<(f64, f64)> {
    let cpu = stat_cpu_seconds(&format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((cpu, hwm_kib / 1024.0))
}

/// This process's resident memory now, in MiB.
pub(crate) fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// LocalStack's CPU seconds so far, when it runs on the host (NaN in a
/// container, whose process we cannot see).
pub(crate) fn localstack_cpu() -> f64 {
    localstack_pid()
        .and_then(proc_usage)
        .map_or(f64::NAN, |(cpu, _)| cpu)
}

/// The process `cargo xtask localstack-up` started on the host, if any.
fn localstack_pid() -> Option<u32> {
    let pid_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.localstack/localstack.pid");
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// `4.13.1 (on the host)`: the version LocalStack reports, and where it runs.
fn localstack_description() -> String {
    let version = localstack_version().unwrap_or_else(|| "unknown version".to_owned());
    let place = if localstack_pid().is_some() {
        "on the host, one Python process"
    } else {
        "not on the host (a container?)"
    };
    format!("{version} ({place})")
}

/// From LocalStack's health endpoint, with a plain HTTP/1.0 request.
fn localstack_version() -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect("127.0.0.1:4566").ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    stream
        .write_all(b"GET /_localstack/health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (_, body) = answer.split_once("\r\n\r\n")?;
    let health: serde_json::Value = serde_json::from_str(body).ok()?;
    health["version"].as_str().map(str::to_owned)
}

/// The criterion benchmarks the report quotes: the router's per-message
/// operations, and the engine's no-op runs.
const CRITERION: [&str; 5] = [
    "router_push_1000",
    "router_drain_1000",
    "router_cycle",
    ENGINE_NO_OP,
    ENGINE_NO_OP_BATCHES,
];
/// The engine's criterion benchmarks (`crates/worker-pool/benches/engine.rs`,
/// whose constants these repeat): the messages, groups and workers of a
/// run, and the batch size of the second.
const ENGINE_NO_OP: &str = "engine_no_op_100000";
const ENGINE_NO_OP_BATCHES: &str = "engine_no_op_100000_batch_10";
const ENGINE_MESSAGES: usize = 100_000;
const ENGINE_GROUPS: usize = 200;
const ENGINE_WORKERS: usize = 16;
const ENGINE_BATCH: usize = 10;

/// Mean ns per iteration of each criterion benchmark, from the
/// `estimates.json` criterion wrote into `dir`. Panics when one is missing
/// or older than an hour (`cargo xtask bench` runs them seconds before):
/// the report would otherwise quote a figure from another run.
pub(crate) fn criterion_results(dir: &Path) -> BTreeMap<String, f64> {
    let mut results = BTreeMap::new();
    for name in CRITERION {
        let path = dir.join(name).join("new/estimates.json");
        // An error means a time in the future: not this run's either.
        let age = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .map(|modified| modified.elapsed().map_err(drop));
        if let Some(age) = age.filter(|age| age.is_err() || age.is_ok_and(|a| a.as_secs() > 3600)) {
            panic!(
                "the criterion result at {} is not from the last hour ({}): run `cargo xtask bench`, which runs the criterion benchmarks first",
                path.display(),
                age.map_or_else(
                    |()| "its time is in the future".to_owned(),
                    |a| format!("{} minutes old", a.as_secs() / 60)
                )
            );
        }
        let mean = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|estimates| estimates["mean"]["point_estimate"].as_f64())
            .unwrap_or_else(|| {
                panic!(
                    "no criterion result at {}: run the criterion benchmarks first (cargo xtask bench does)",
                    path.display()
                )
            });
        results.insert(name.to_owned(), mean);
    }
    results
}

/// The engine's figures from its criterion benchmarks (wall time on one
/// thread, so its CPU time is at most that) and the paused-time latency
/// runs.
pub(crate) fn engine(criterion: &BTreeMap<String, f64>, latency: Vec<EngineLatency>) -> Engine {
    let per_message_ns = |name: &str| criterion[name] / ENGINE_MESSAGES as f64;
    Engine {
        messages: ENGINE_MESSAGES,
        groups: ENGINE_GROUPS,
        workers: ENGINE_WORKERS,
        no_op_msgs_per_s: 1e9 / per_message_ns(ENGINE_NO_OP),
        us_per_msg: per_message_ns(ENGINE_NO_OP) / 1e3,
        batch: ENGINE_BATCH,
        batch_msgs_per_s: 1e9 / per_message_ns(ENGINE_NO_OP_BATCHES),
        batch_us_per_msg: per_message_ns(ENGINE_NO_OP_BATCHES) / 1e3,
        latency,
    }
}

pub(crate) fn machine() -> Machine {
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib,
        cpu,
        rustc: output("rustc", &["--version"]),
        fifo: env!("CARGO_PKG_VERSION").to_owned(),
        localstack: localstack_description(),
        date: now_utc(),
    }
}

/// `2026-11-26 04:11 UTC`.
pub(crate) fn now_utc() -> String {
    output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
