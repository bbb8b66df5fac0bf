//! Whole `fifo run` processes against the real LocalStack: SIGTERM,
//! `kill -9` and two processes on one queue. The exec handler appends a
//! start and an end record per run to a file; every assertion comes from
//! those records.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fifo_test_support::binary::*;
use fifo_test_support::localstack::*;
use fifo_test_support::records::{
    Script, assert_order, numbered_groups, records, runs, signal, spawn_run, wait_for,
};
use fifo_test_support::{TempDir, temp_dir};

fn send_three_groups_of_six(url: &str) {
    send(url, &["--groups", "3", "--count", "18"]);
}

#[test]
fn sigterm_drains_and_a_second_run_takes_the_rest_at_once() {
    let url = create_queue(&unique_queue_name("p-term"), &[]);
    send_three_groups_of_six(&url);
    let dir = temp_dir();
    let visibility = ["--visibility-timeout", "60"];
    let mut first = spawn_run(
        &dir,
        &url,
        "first",
        &Script::sleeping("0.3"),
        &[
            &visibility[..],
            &["--workers", "3", "--shutdown-timeout", "20"],
        ]
        .concat(),
    );
    wait_for(&dir, "four handlers to start", |r| runs(r).len() >= 4);
    signal(first.id(), "-TERM", false);
    let exit = first.wait(Duration::from_secs(25));
    assert_eq!(exit.status.code(), Some(0), "a graceful shutdown exits 0");
    assert!(
        runs(&records(&dir)).iter().all(|r| r.succeeded()),
        "every running handler finished before exit"
    );

    let started = Instant::now();
    spawn_run(
        &dir,
        &url,
        "second",
        &Script::sleeping("0.05"),
        &[&visibility[..], &["--until-empty"]].concat(),
    )
    .finish();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the second run waited out the visibility timeout: messages were not handed back"
    );

    let all = records(&dir);
    let runs = runs(&all);
    assert!(
        runs.iter().any(|r| r.runner == "second"),
        "the second run did the rest"
    );
    let unique: BTreeSet<(&str, u64)> = runs.iter().map(|r| (r.group.as_str(), r.seq)).collect();
    assert_eq!(
        (runs.len(), unique.len()),
        (18, 18),
        "each message exactly once"
    );
    assert_order(&all, &numbered_groups(3, 6));
}

#[test]
fn after_kill_9_a_restart_processes_everything_in_order() {
    let url = create_queue(&unique_queue_name("p-kill"), &[]);
    send_three_groups_of_six(&url);
    let dir = temp_dir();
    let visibility = ["--visibility-timeout", "3"];
    let mut first = spawn_run(
        &dir,
        &url,
        "first",
        &Script::sleeping("0.2"),
        &[&visibility[..], &["--workers", "3"]].concat(),
    );
    wait_for(&dir, "five handlers to start", |r| runs(r).len() >= 5);
    signal(first.id(), "-KILL", true);
    first.wait(Duration::from_secs(5));
    let started_before_kill: BTreeSet<(String, u64)> = runs(&records(&dir))
        .into_iter()
        .map(|r| (r.group, r.seq))
        .collect();

    spawn_run(
        &dir,
        &url,
        "second",
        &Script::sleeping("0.05"),
        &[&visibility[..], &["--until-empty"]].concat(),
    )
    .finish();

    let all = records(&dir);
    let runs = runs(&all);
    let mut counts: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for r in &runs {
        *counts.entry((r.group.clone(), r.seq)).or_default() += 1;
    }
    assert_eq!(counts.len(), 18, "every message ran");
    for (message, count) in &counts {
        assert!(
            *count == 1 || started_before_kill.contains(message),
            "{message:?} ran {count} times but was not running at the kill"
        );
    }
    assert_order(&all, &numbered_groups(3, 6));
    for (group, _) in numbered_groups(3, 6) {
        let seqs: Vec<u64> = runs
            .iter()
            .filter(|r| r.runner == "second" && r.group == group)
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
    send(&url, &["--groups", "10", "--count", "100"]);
    let dir = temp_dir();
    let args = ["--until-empty", "--workers", "3", "--max-in-flight", "20"];
    let script = Script::sleeping("0.05");
    let a = spawn_run(&dir, &url, "a", &script, &args);
    let b = spawn_run(&dir, &url, "b", &script, &args);
    a.finish();
    b.finish();

    let all = records(&dir);
    let runs = runs(&all);
    for runner in ["a", "b"] {
        assert!(
            runs.iter().any(|r| r.runner == runner),
            "process {runner} did no work"
        );
    }
    let unique: BTreeSet<(&str, u64)> = runs.iter().map(|r| (r.group.as_str(), r.seq)).collect();
    assert_eq!(unique.len(), 100);
    assert_eq!(runs.len(), 100, "no message ran twice");
    // Also checks that no two runs of a group overlapped across processes.
    assert_order(&all, &numbered_groups(10, 10));
}

#[test]
fn until_empty_exits_1_when_a_message_ended_in_the_dead_letter_queue() {
    let url = create_queue(
        &unique_queue_name("p-dlq"),
        &["--dlq", "--max-receive-count", "1"],
    );
    send(&url, &["--group", "g", "--count", "2"]);
    let dir = temp_dir();
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
        stderr(&output).contains("processed 1 message in"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("dead-lettered 1"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn batches_reach_the_program_in_order_and_a_partial_failure_retries_the_rest() {
    // Each call saves its JSON array; the first call holding group-1's
    // fifth message reports the messages before it done and fails.
    let url = create_queue(&unique_queue_name("p-batch"), &[]);
    send(&url, &["--groups", "3", "--count", "30"]);
    let dir = temp_dir();
    let script = r#"f="call-$(date +%s%N)-$$.json"; cat > "$f"
n=$(sed 's/},{/}\n{/g' "$f" | grep -n 'group-1\\".*\\"seq\\":5[,}]' | cut -d: -f1)
if [ -n "$n" ] && [ ! -e failed-once ]; then : > failed-once; echo $((n - 1)) > "$FIFO_BATCH_DONE"; exit 1; fi"#;
    let args = [
        "--queue-url",
        &url,
        "run",
        "--until-empty",
        "--wait-time",
        "1",
        "--batch",
        "4",
        "--",
        "sh",
        "-c",
        script,
    ];
    let output = fifo_in(&dir, &args, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("processed 30 messages"),
        "{}",
        stderr(&output)
    );

    let calls = saved_calls(&dir);
    assert!(
        calls.iter().any(|call| call.len() > 1),
        "no batch: {calls:?}"
    );
    let mut last: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut fives = Vec::new();
    for call in &calls {
        assert!(call.len() <= 4, "{call:?}");
        for (index, (group, seq)) in call.iter().enumerate() {
            assert_eq!(group, &call[0].0, "one group per call: {call:?}");
            assert_eq!(*seq, call[0].1 + index as u64, "consecutive: {call:?}");
            let runs = last.entry(group.clone()).or_default();
            runs.retain(|s| s != seq);
            runs.push(*seq);
        }
        if call.contains(&("group-1".to_owned(), 5)) {
            fives.push(call.clone());
        }
    }
    for (group, runs) in &last {
        assert_eq!(*runs, (1..=10).collect::<Vec<u64>>(), "{group}: {calls:?}");
    }
    assert_eq!(fives.len(), 2, "group-1's fifth ran twice: {fives:?}");
    assert_eq!(
        fives[1],
        [("group-1".to_owned(), 5)],
        "the failed message is retried alone, still as an array"
    );
}

/// The group and seq of each batch call's messages, from the JSON arrays
/// the program saved, in call order.
fn saved_calls(dir: &TempDir) -> Vec<Vec<(String, u64)>> {
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|file| {
            let array: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
            array
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    let body: serde_json::Value =
                        serde_json::from_str(m["body"].as_str().unwrap()).unwrap();
                    assert_eq!(m["group_id"], body["group"]);
                    (
                        body["group"].as_str().unwrap().to_owned(),
                        body["seq"].as_u64().unwrap(),
                    )
                })
                .collect()
        })
        .collect()
}

#[test]
fn a_batch_done_count_its_exit_contradicts_counts_nothing_done_and_is_said() {
    // The first call fails and writes a count of the whole batch or more,
    // or no count at all: none of the batch counts as done.
    for written in ["5", "6", "100", "abc", "-1"] {
        let url = create_queue(&unique_queue_name("p-done"), &[]);
        send(&url, &["--group", "g", "--count", "5"]);
        let dir = temp_dir();
        let script = r#"cat > "call-$(date +%s%N).json"
if [ ! -e failed-once ]; then : > failed-once; printf '%s\n' "$WRITTEN" > "$FIFO_BATCH_DONE"; exit 1; fi"#;
        let args = [
            "--queue-url",
            &url,
            "run",
            "--until-empty",
            "--wait-time",
            "1",
            "--batch",
            "5",
            "--",
            "sh",
            "-c",
            script,
        ];
        let output = fifo_in(&dir, &args, &[("WRITTEN", written)]);
        let stderr = stderr(&output);
        assert_eq!(output.status.code(), Some(0), "{written}: {stderr}");
        assert!(
            stderr.contains("processed 5 messages"),
            "{written}: {stderr}"
        );
        let warning = stderr
            .lines()
            .find(|line| line.contains("a contradiction"))
            .unwrap_or_else(|| panic!("{written}: no warning at the default level:\n{stderr}"));
        assert!(
            warning.contains("sh exited with exit status: 1")
                && warning.contains(&format!("wrote \"{written}\" to $FIFO_BATCH_DONE"))
                && warning.contains("runs again"),
            "{written}: the warning names the program, the value and what fifo did: {warning}"
        );
        let calls: Vec<Vec<u64>> = saved_calls(&dir)
            .into_iter()
            .map(|call| call.into_iter().map(|(_, seq)| seq).collect())
            .collect();
        assert!(calls.len() >= 2, "{written}: {calls:?}");
        assert_eq!(calls[0][0], 1, "{written}: {calls:?}");
        assert_eq!(
            calls[1],
            [1],
            "{written}: the batch's first message runs again, alone: {calls:?}"
        );
        let last_runs: Vec<u64> = calls[1..].concat();
        assert_eq!(last_runs, [1, 2, 3, 4, 5], "{written}: {calls:?}");
    }
}
