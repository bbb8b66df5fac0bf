//! `fifo send` and `fifo run` as a user runs them: processes of the binary,
//! sampled from /proc, their log lines read back to time the runs and to
//! check the order per group.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fifo_builtin_handlers::log_line::{self, LogEvent};
use fifo_sqs_client::Client;

use crate::bare::{bare_loop_cpu, messages, new_queue, raw_send};
use crate::measure::{localstack_cpu, median, proc_usage};
use crate::report::{Profile, RunResult, SendMemory, SendMemoryRun};
use crate::{PER_GROUP, Plan, WORK};
use fifo_test_support::localstack;

/// The `fifo` binary built next to this program.
pub(crate) fn fifo_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of this program");
    let fifo = exe.with_file_name("fifo");
    assert!(
        fifo.exists(),
        "no fifo binary at {}: build it with the same profile (cargo xtask bench does)",
        fifo.display()
    );
    fifo
}

/// `fifo`, with no setting but the flags given: no environment (its
/// variables could change any setting) and an empty working directory of
/// its own (no `fifo.toml`).
fn fifo() -> Command {
    let mut command = Command::new(fifo_binary());
    command.env_clear().current_dir(empty_dir());
    command
}

/// A directory of this process's own, created empty.
fn empty_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fifo-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        dir
    })
}

/// Spawns `fifo run` whose log lines are collected by a reader thread.
pub(crate) fn spawn_run(
    queue_url: &str,
    args: &[String],
) -> (Child, std::thread::JoinHandle<Vec<String>>) {
    let mut child = fifo()
        .args([
            "--queue-url",
            queue_url,
            "--no-progress",
            "run",
            "--until-empty",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("fifo run starts");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect()
    });
    (child, reader)
}

/// Waits for the children, sampling their CPU time and peak RSS.
pub(crate) fn wait_sampling(children: &mut [Child]) -> (f64, f64) {
    let mut last: Vec<(f64, f64)> = vec![(0.0, 0.0); children.len()];
    loop {
        let mut running = false;
        for (child, last) in children.iter_mut().zip(last.iter_mut()) {
            if child.try_wait().unwrap().is_none() {
                running = true;
                if let Some(usage) = proc_usage(child.id()) {
                    *last = usage;
                }
            }
        }
        if !running {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (
        last.iter().map(|l| l.0).sum(),
        last.iter().map(|l| l.1).fold(0.0, f64::max),
    )
}

/// A start or done line of the log handler.
struct Event {
    /// Seconds since the midnight before the run began.
    at: f64,
    start: bool,
    group: String,
    sequence_number: u128,
}

/// The log lines of one run, read with the log handler's own parser. The
/// log handler stamps the time of day, so a run that crosses midnight has
/// its later lines moved a day on.
fn events(lines: &[String]) -> Vec<Event> {
    let mut events: Vec<Event> = lines
        .iter()
        .filter_map(|line| log_line::parse(line))
        .map(|line| Event {
            at: line.at,
            start: line.event == LogEvent::Start,
            group: line.group.to_owned(),
            sequence_number: line.sequence_number.parse().unwrap_or(0),
        })
        .collect();
    let crosses_midnight =
        events.iter().any(|e| e.at > 20.0 * 3600.0) && events.iter().any(|e| e.at < 4.0 * 3600.0);
    if crosses_midnight {
        for event in events.iter_mut().filter(|e| e.at < 12.0 * 3600.0) {
            event.at += 24.0 * 3600.0;
        }
    }
    events
}

/// Per group, handler starts must follow SQS sequence numbers; counts the
/// places where they do not (across all processes' logs).
fn order_violations(events: &[Event]) -> u64 {
    let mut starts: BTreeMap<&str, Vec<(f64, u128)>> = BTreeMap::new();
    for event in events.iter().filter(|e| e.start) {
        starts
            .entry(&event.group)
            .or_default()
            .push((event.at, event.sequence_number));
    }
    let mut violations = 0;
    for runs in starts.values_mut() {
        runs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        violations += runs.windows(2).filter(|w| w[1].1 <= w[0].1).count() as u64;
    }
    violations
}

/// `fifo send` of the messages, then `processes` × `fifo run --until-empty`
/// with the log handler and no work, timed until the queue is drained.
/// Returns `fifo send`'s msgs/s and the run's figures.
pub(crate) async fn end_to_end(
    client: &Client,
    plan: &Plan,
    run: usize,
    processes: usize,
    run_args: &[String],
) -> (f64, RunResult) {
    let url = new_queue(client, &format!("e2e{run}p{processes}")).await;
    let started = Instant::now();
    let status = fifo()
        .args(["--queue-url", &url, "--no-progress", "send", "--groups"])
        .args([
            plan.groups.to_string(),
            "--count".into(),
            plan.messages.to_string(),
            "--concurrency".into(),
            "8".into(),
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "fifo send failed");
    let send_rate = plan.messages as f64 / started.elapsed().as_secs_f64();

    let localstack_before = localstack_cpu();
    let started = Instant::now();
    let mut children = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..processes {
        let (child, reader) = spawn_run(&url, run_args);
        children.push(child);
        readers.push(reader);
    }
    // Drained is when SQS holds nothing; the exit that follows (noticing the
    // queue is empty) is not processing time. Polled rarely while much is
    // left: LocalStack answers one call at a time, and polling every 20 ms
    // took a quarter of its calls from the run being measured.
    let drained = {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            loop {
                let a = client.queue_attributes(&url).await.unwrap();
                let left = a.visible + a.in_flight;
                if left == 0 {
                    return started.elapsed();
                }
                // About half the time the rest takes at 1000 msgs/s.
                let wait_ms = (left as u64 / 2).clamp(20, 500);
                tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            }
        })
    };
    let (cpu, rss) = tokio::task::block_in_place(|| wait_sampling(&mut children));
    let elapsed = drained.await.unwrap();
    let localstack_share = (localstack_cpu() - localstack_before) / elapsed.as_secs_f64();
    let lines: Vec<String> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    let events = events(&lines);
    let handled = events.iter().filter(|e| e.start).count();
    assert!(
        handled >= plan.messages,
        "only {handled} of {} handled",
        plan.messages
    );
    (
        send_rate,
        RunResult {
            msgs_per_s: plan.messages as f64 / elapsed.as_secs_f64(),
            drain_s: elapsed.as_secs_f64(),
            cpu_us_per_msg: cpu * 1e6 / plan.messages as f64,
            peak_rss_mib: rss,
            localstack_cpu_share: localstack_share,
            order_violations: order_violations(&events),
        },
    )
}

/// What a latency-bound run measured.
pub(crate) struct LatencyRun {
    /// From the first handler start to the last handler end.
    pub(crate) makespan_s: f64,
    pub(crate) localstack_cpu_share: f64,
    /// When the last group first started, after the first start.
    pub(crate) last_group_first_start_s: f64,
    /// The median gap between a group's 10th message ending and its 11th
    /// starting (the refill: delete, unlock, receive again).
    pub(crate) refill_gap_s: f64,
}

/// 20 messages per group, `--work-ms 50`, one `fifo run` per entry of
/// `workers`.
pub(crate) async fn latency_run(
    client: &Client,
    plan: &Plan,
    run: usize,
    workers: &[usize],
    endpoint: &[String],
) -> LatencyRun {
    let url = new_queue(client, &format!("lat{run}w{}", workers[0])).await;
    let n = plan.latency_groups * PER_GROUP;
    raw_send(client, &url, messages(n, plan.latency_groups, "latency"), 8).await;
    let localstack_before = localstack_cpu();
    let started = Instant::now();
    let mut children = Vec::new();
    let mut readers = Vec::new();
    for w in workers {
        let args: Vec<String> = [
            "--workers",
            &w.to_string(),
            "--work-ms",
            &WORK.as_millis().to_string(),
        ]
        .map(String::from)
        .to_vec();
        let args = [args, endpoint.to_vec()].concat();
        let (child, reader) = spawn_run(&url, &args);
        children.push(child);
        readers.push(reader);
    }
    tokio::task::block_in_place(|| wait_sampling(&mut children));
    let share = (localstack_cpu() - localstack_before) / started.elapsed().as_secs_f64();
    let lines: Vec<String> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    let events = events(&lines);
    let first = events
        .iter()
        .filter(|e| e.start)
        .map(|e| e.at)
        .fold(f64::INFINITY, f64::min);
    let last = events
        .iter()
        .filter(|e| !e.start)
        .map(|e| e.at)
        .fold(0.0, f64::max);
    assert_eq!(
        events.iter().filter(|e| !e.start).count(),
        n,
        "every message done once"
    );
    assert_eq!(order_violations(&events), 0, "order per group broken");
    let (stagger, refill) = stagger_and_refill(&events, first);
    LatencyRun {
        makespan_s: last - first,
        localstack_cpu_share: share,
        last_group_first_start_s: stagger,
        refill_gap_s: refill,
    }
}

/// When the last group first started (after the first start), and the
/// median gap between a group's 10th message ending and its 11th starting.
fn stagger_and_refill(events: &[Event], first: f64) -> (f64, f64) {
    let mut by_group: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for event in events {
        let entry = by_group.entry(&event.group).or_default();
        if event.start {
            entry.0.push(event.at)
        } else {
            entry.1.push(event.at)
        }
    }
    let mut stagger: f64 = 0.0;
    let mut gaps = Vec::new();
    for (starts, ends) in by_group.values_mut() {
        starts.sort_by(f64::total_cmp);
        ends.sort_by(f64::total_cmp);
        stagger = stagger.max(starts[0] - first);
        if starts.len() > 10 && ends.len() >= 10 {
            gaps.push(starts[10] - ends[9]);
        }
    }
    (stagger, median(&gaps))
}

/// Peak RSS and rate of `fifo send` for a small and a large count: flat
/// memory means the large send needs no more than the small one.
pub(crate) async fn send_memory(plan: &Plan) -> SendMemory {
    let client = localstack::client().await;
    let mut runs = Vec::new();
    for count in [10_000, plan.send_memory_messages] {
        let url = new_queue(&client, &format!("sendmem{count}")).await;
        let started = Instant::now();
        let mut child = fifo()
            .args([
                "--queue-url",
                &url,
                "--no-progress",
                "send",
                "--groups",
                "100",
            ])
            .args(["--count", &count.to_string(), "--concurrency", "8"])
            .stderr(Stdio::null())
            .spawn()
            .expect("fifo send starts");
        let (cpu_s, peak_rss_mib) = wait_sampling(std::slice::from_mut(&mut child));
        assert!(child.wait().unwrap().success(), "fifo send failed");
        let seconds = started.elapsed().as_secs_f64();
        let stored = client.queue_attributes(&url).await.unwrap().visible;
        println!(
            "  {count} messages: peak RSS {peak_rss_mib:.1} MiB, {:.0} msgs/s, {stored} in the queue",
            count as f64 / seconds
        );
        runs.push(SendMemoryRun {
            messages: count,
            peak_rss_mib,
            msgs_per_s: count as f64 / seconds,
            cpu_us_per_msg: cpu_s * 1e6 / count as f64,
            stored: stored as u64,
        });
    }
    SendMemory {
        date: crate::measure::now_utc(),
        runs,
    }
}

/// Section 12: `fifo run` (no-op, 200 groups, `--workers 16`) under `perf
/// record`, and the top of its report: self time by function. Its CPU per
/// message comes from a run of its own without the profiler, beside the
/// bare SDK loop's on the same queue contents.
pub(crate) async fn profile(client: &Client, plan: &Plan) -> Profile {
    let n = plan.profile_messages;
    let sized = Plan {
        messages: n,
        ..Plan::new(plan.quick)
    };
    let args = vec!["--workers".to_owned(), "16".to_owned()];
    let (_, measured) = end_to_end(client, &sized, 500, 1, &args).await;
    let url = new_queue(client, "profilesdk").await;
    raw_send(client, &url, messages(n, plan.groups, "profilesdk"), 8).await;
    let endpoint = format!("http://{}", localstack::localstack_addr());
    let sdk_cpu = tokio::task::block_in_place(|| bare_loop_cpu(endpoint, url, n, 8));

    let url = new_queue(client, "profile").await;
    raw_send(client, &url, messages(n, plan.groups, "profile"), 8).await;
    let data = empty_dir().join("perf.data");
    let recorded = Command::new("perf")
        .args(["record", "--quiet", "-F", "1999", "-o"])
        .arg(&data)
        .arg("--")
        .arg(fifo_binary())
        .args(["--queue-url", &url, "--no-progress", "run", "--until-empty"])
        .args(&args)
        .env_clear()
        .current_dir(empty_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let top = match recorded {
        Ok(output) if output.status.success() => perf_top(&data),
        Ok(output) => format!(
            "perf record failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(e) => format!("perf is not available here: {e}"),
    };
    println!(
        "  fifo {:.1} µs CPU per message, bare SDK loop {sdk_cpu:.1}",
        measured.cpu_us_per_msg
    );
    Profile {
        messages: n,
        fifo_cpu_us_per_msg: measured.cpu_us_per_msg,
        sdk_cpu_us_per_msg: sdk_cpu,
        top,
    }
}

/// The functions with at least 1 % of the samples, by self time.
fn perf_top(data: &Path) -> String {
    let report = Command::new("perf")
        .args(["report", "--no-children", "--sort", "symbol", "--stdio"])
        .args(["-g", "none", "--percent-limit", "1", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output();
    match report {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| line.trim_end().to_owned() + "\n")
            .collect(),
        Ok(output) => format!(
            "perf report failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(e) => format!("perf is not available here: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn start(ms: u64, group: &str, seq: &str) -> String {
        log_line::start_line(UNIX_EPOCH + Duration::from_millis(ms), group, seq, 1, "{}")
    }

    #[test]
    fn order_violations_count_starts_against_sequence_numbers() {
        let in_order = [start(0, "a", "1"), start(10, "b", "1"), start(20, "a", "2")];
        assert_eq!(order_violations(&events(&in_order)), 0);
        let overtaken = [start(0, "a", "2"), start(10, "a", "1"), start(20, "a", "3")];
        assert_eq!(order_violations(&events(&overtaken)), 1);
        let twice = [start(0, "a", "1"), start(10, "a", "1")];
        assert_eq!(
            order_violations(&events(&twice)),
            1,
            "a repeat is out of order"
        );
    }

    #[test]
    fn a_run_across_midnight_keeps_its_order() {
        let day = 86_400_000;
        let lines = [start(day - 500, "a", "1"), start(day + 500, "a", "2")];
        let events = events(&lines);
        assert!(events[1].at > events[0].at, "the later line moved a day on");
        assert_eq!(order_violations(&events), 0);
    }
}
