//! Whole `fifo run` processes against the real LocalStack: SIGTERM,
//! `kill -9` and two processes on one queue. The exec handler appends a
//! start and an end record per message to a file; every assertion comes
//! from those records.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Appends `start|end RUNNER GROUP NANOS BODY` around `sleep $WORK`.
const SCRIPT: &str = r#"body=$(cat)
echo "start $RUNNER $FIFO_GROUP_ID $(date +%s%N) $body" >> "$RECORDS"
sleep "$WORK"
echo "end $RUNNER $FIFO_GROUP_ID $(date +%s%N) $body" >> "$RECORDS""#;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    start: bool,
    runner: String,
    group: String,
    nanos: u128,
    seq: u64,
}

fn records(dir: &TempDir) -> Vec<Record> {
    let text = std::fs::read_to_string(dir.0.join("records")).unwrap_or_default();
    let mut records: Vec<Record> = text
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(5, ' ').collect();
            let body: serde_json::Value =
                serde_json::from_str(fields[4]).expect("a generated body");
            Record {
                start: fields[0] == "start",
                runner: fields[1].to_owned(),
                group: fields[2].to_owned(),
                nanos: fields[3].parse().unwrap(),
                seq: body["seq"].as_u64().unwrap(),
            }
        })
        .collect();
    records.sort_by_key(|r| r.nanos);
    records
}

/// Starts `fifo run` in the background with the recording exec handler.
fn spawn_run(dir: &TempDir, url: &str, runner: &str, work: &str, run_args: &[&str]) -> Child {
    let records = dir.0.join("records");
    let mut args = vec!["--queue-url", url, "run", "--wait-time", "1"];
    args.extend_from_slice(run_args);
    args.extend(["--", "sh", "-c", SCRIPT]);
    let env = [
        ("RECORDS", records.to_str().unwrap()),
        ("WORK", work),
        ("RUNNER", runner),
    ];
    let mut command: Command = fifo_command(dir, &args, &env);
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command.spawn().expect("fifo run starts")
}

/// Waits until `ready` holds for the records (the event we act on).
fn wait_for(dir: &TempDir, what: &str, ready: impl Fn(&[Record]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready(&records(dir)) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fifo run did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, signal: &str, group: bool) {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let status = Command::new("kill")
        .args([signal, "--", &target])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Asserts per group: the runs' ends are the messages 1..=count in order
/// (ignoring `duplicates_allowed` repeats), and no two runs of a group overlapped
/// except for duplicates.
fn assert_order(records: &[Record], groups: &[String], count: u64) {
    for group in groups {
        let mine: Vec<&Record> = records.iter().filter(|r| &r.group == group).collect();
        let mut first_ends: Vec<u64> = Vec::new();
        for r in mine.iter().filter(|r| !r.start) {
            if !first_ends.contains(&r.seq) {
                first_ends.push(r.seq);
            }
        }
        assert_eq!(
            first_ends,
            (1..=count).collect::<Vec<_>>(),
            "group {group}: {mine:?}"
        );
    }
}

/// Waits for a `fifo run --until-empty` and asserts it succeeded.
fn finish(child: Child) {
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn send_three_groups_of_six(url: &str) {
    ok(fifo(&[
        "--queue-url",
        url,
        "send",
        "--groups",
        "3",
        "--count",
        "18",
    ]));
}

fn group_names(count: usize) -> Vec<String> {
    (1..=count).map(|g| format!("group-{g}")).collect()
}

#[test]
fn sigterm_drains_and_a_second_run_takes_the_rest_at_once() {
    let url = create_queue(&unique_queue_name("p-term"), &[]);
    send_three_groups_of_six(&url);
    let dir = TempDir::new();
    let visibility = ["--visibility-timeout", "60"];
    let mut first = spawn_run(
        &dir,
        &url,
        "first",
        "0.3",
        &[
            &visibility[..],
            &["--workers", "3", "--shutdown-timeout", "20"],
        ]
        .concat(),
    );
    wait_for(&dir, "four handlers to start", |r| {
        r.iter().filter(|r| r.start).count() >= 4
    });
    signal(first.id(), "-TERM", false);
    let status = wait_exit(&mut first, Duration::from_secs(25));
    assert_eq!(status.code(), Some(0), "a graceful shutdown exits 0");
    let after_first = records(&dir);
    let starts = after_first.iter().filter(|r| r.start).count();
    let ends = after_first.iter().filter(|r| !r.start).count();
    assert_eq!(starts, ends, "every running handler finished before exit");

    let started = Instant::now();
    finish(spawn_run(
        &dir,
        &url,
        "second",
        "0.05",
        &[&visibility[..], &["--until-empty"]].concat(),
    ));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the second run waited out the visibility timeout: messages were not handed back"
    );

    let all = records(&dir);
    assert!(
        all.iter().any(|r| r.runner == "second"),
        "the second run did the rest"
    );
    let ends: Vec<(String, u64)> = all
        .iter()
        .filter(|r| !r.start)
        .map(|r| (r.group.clone(), r.seq))
        .collect();
    let unique: BTreeSet<_> = ends.iter().cloned().collect();
    assert_eq!(
        (ends.len(), unique.len()),
        (18, 18),
        "each message exactly once"
    );
    assert_order(&all, &group_names(3), 6);
}

#[test]
fn after_kill_9_a_restart_processes_everything_in_order() {
    let url = create_queue(&unique_queue_name("p-kill"), &[]);
    send_three_groups_of_six(&url);
    let dir = TempDir::new();
    let visibility = ["--visibility-timeout", "3"];
    let mut first = spawn_run(
        &dir,
        &url,
        "first",
        "0.2",
        &[&visibility[..], &["--workers", "3"]].concat(),
    );
    wait_for(&dir, "five handlers to start", |r| {
        r.iter().filter(|r| r.start).count() >= 5
    });
    signal(first.id(), "-KILL", true);
    wait_exit(&mut first, Duration::from_secs(5));
    let started_before_kill: BTreeSet<(String, u64)> = records(&dir)
        .iter()
        .filter(|r| r.start)
        .map(|r| (r.group.clone(), r.seq))
        .collect();

    finish(spawn_run(
        &dir,
        &url,
        "second",
        "0.05",
        &[&visibility[..], &["--until-empty"]].concat(),
    ));

    let all = records(&dir);
    let mut runs: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for r in all.iter().filter(|r| r.start) {
        *runs.entry((r.group.clone(), r.seq)).or_default() += 1;
    }
    assert_eq!(runs.len(), 18, "every message ran");
    for (message, count) in &runs {
        assert!(
            *count == 1 || started_before_kill.contains(message),
            "{message:?} ran {count} times but was not running at the kill"
        );
    }
    assert_order(&all, &group_names(3), 6);
    let second_starts: Vec<&Record> = all
        .iter()
        .filter(|r| r.start && r.runner == "second")
        .collect();
    for group in group_names(3) {
        let seqs: Vec<u64> = second_starts
            .iter()
            .filter(|r| r.group == group)
            .map(|r| r.seq)
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "group {group} restarted out of order: {seqs:?}"
        );
    }
}

#[test]
fn two_processes_share_a_queue_and_keep_each_group_in_order() {
    let url = create_queue(&unique_queue_name("p-two"), &[]);
    ok(fifo(&[
        "--queue-url",
        &url,
        "send",
        "--groups",
        "10",
        "--count",
        "100",
    ]));
    let dir = TempDir::new();
    let args = ["--until-empty", "--workers", "3", "--max-in-flight", "20"];
    let a = spawn_run(&dir, &url, "a", "0.05", &args);
    let b = spawn_run(&dir, &url, "b", "0.05", &args);
    finish(a);
    finish(b);

    let all = records(&dir);
    for runner in ["a", "b"] {
        assert!(
            all.iter().any(|r| r.runner == runner),
            "process {runner} did no work"
        );
    }
    let ends: BTreeSet<(String, u64)> = all
        .iter()
        .filter(|r| !r.start)
        .map(|r| (r.group.clone(), r.seq))
        .collect();
    assert_eq!(ends.len(), 100);
    assert_eq!(
        all.iter().filter(|r| !r.start).count(),
        100,
        "no message ran twice"
    );
    assert_order(&all, &group_names(10), 10);
    for group in group_names(10) {
        let mine: Vec<&Record> = all.iter().filter(|r| r.group == group).collect();
        assert!(
            mine.chunks(2).all(|pair| pair.len() == 2
                && pair[0].start
                && !pair[1].start
                && pair[0].seq == pair[1].seq),
            "runs of group {group} overlapped across processes: {mine:?}"
        );
    }
}

#[test]
fn until_empty_exits_1_when_a_message_ended_in_the_dead_letter_queue() {
    let url = create_queue(
        &unique_queue_name("p-dlq"),
        &["--dlq", "--max-receive-count", "1"],
    );
    ok(fifo(&[
        "--queue-url",
        &url,
        "send",
        "--group",
        "g",
        "--count",
        "2",
    ]));
    let dir = TempDir::new();
    let args = [
        "--queue-url",
        &url,
        "run",
        "--until-empty",
        "--wait-time",
        "1",
        "--retries",
        "0",
        "--",
        "sh",
        "-c",
        r#"grep -q '"seq":1' && exit 1; exit 0"#,
    ];
    let output = fifo_in(&dir, &args, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("processed 1 messages"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("dead-lettered 1"),
        "{}",
        stderr(&output)
    );
}
