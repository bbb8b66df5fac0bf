//! `fifo send` against LocalStack at its edges: a bad line holds back the
//! rest of its group, SQS's silent de-duplication is counted and warned of,
//! and a connection cut mid-send leaves no gap in any group and counts the
//! batches whose answer was lost as unknown. What is in the queue is read
//! back from SQS, never taken from fifo's word.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use fifo_fault_proxy::{Fault, Proxy};
use fifo_test_support::binary::*;
use fifo_test_support::localstack::*;
use fifo_test_support::temp_dir;

/// `fifo send --file - ARGS` with `input` on stdin.
fn send_stdin(url: &str, input: &str, args: &[&str]) -> Output {
    let mut all = vec!["--queue-url", url, "send", "--file", "-"];
    all.extend_from_slice(args);
    let mut child = fifo_command(&temp_dir(), &all, &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fifo starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The counts in fifo's summary line: "sent S of T messages …, D
/// de-duplicated by SQS, R refused, …" as {"sent": S, "total": T, …}.
fn summary(stderr: &str) -> BTreeMap<String, u64> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("sent "))
        .unwrap_or_else(|| panic!("no summary in:\n{stderr}"));
    let words: Vec<&str> = line
        .split([' ', ',', ';'])
        .filter(|w| !w.is_empty())
        .collect();
    let mut counts = BTreeMap::from([
        ("sent".to_owned(), words[1].parse().unwrap()),
        ("total".to_owned(), words[3].parse().unwrap()),
    ]);
    for pair in words.windows(2).skip(4) {
        if let Ok(n) = pair[0].parse::<u64>() {
            counts.insert(pair[1].to_owned(), n);
        }
    }
    counts
}

/// Bodies in the queue by group, in the order SQS keeps them.
async fn bodies_by_group(url: &str) -> BTreeMap<String, Vec<String>> {
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for message in drain(&client().await, url).await {
        by_group
            .entry(message.group_id.clone())
            .or_default()
            .push(message.body);
    }
    by_group
}

/// `fifo send --groups GROUPS --count TOTAL` through a fault proxy that
/// slows each call, returned once `batches` batches went through it (the
/// moment a test acts on).
fn slow_send_under_way(url: &str, groups: u64, total: u64, batches: u64) -> (Proxy, Child) {
    require_localstack();
    let proxy = Proxy::start(localstack_addr()).expect("the fault proxy starts");
    // Slow enough that the send is still going when the test acts.
    proxy.set_latency(Duration::from_millis(10));
    let child = fifo_command(
        &temp_dir(),
        &[
            "--queue-url",
            url,
            "--endpoint-url",
            &proxy.url(),
            "send",
            "--groups",
            &groups.to_string(),
            "--count",
            &total.to_string(),
        ],
        &[],
    )
    .stderr(Stdio::piped())
    .spawn()
    .expect("fifo starts");
    let sent = || {
        proxy
            .stats()
            .requests
            .get("SendMessageBatch")
            .copied()
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent() < batches {
        assert!(Instant::now() < deadline, "the send never got going");
        std::thread::sleep(Duration::from_millis(5));
    }
    (proxy, child)
}

/// Every group in the queue holds its generated messages 1, 2, 3… with no
/// gap; returns how many messages there are.
fn assert_no_gap(stored: BTreeMap<String, Vec<String>>) -> u64 {
    let mut count = 0;
    for (group, bodies) in stored {
        let seqs: Vec<u64> = bodies
            .iter()
            .map(|b| {
                serde_json::from_str::<serde_json::Value>(b).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        count += seqs.len() as u64;
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "group {group} has a gap or is out of order"
        );
    }
    count
}

#[tokio::test]
async fn a_bad_line_on_stdin_holds_back_the_rest_of_its_group_only() {
    let url = create_queue(&unique_queue_name("s-stdin"), &[]);
    let input = [
        r#"{"body": "a1", "group": "g"}"#,
        r#"{"body": "b1", "group": "h"}"#,
        r#"{"body": "a2", "group": "g", "dedup_id": "bad id"}"#,
        r#"{"body": "b2", "group": "h"}"#,
        r#"{"body": "a3", "group": "g"}"#,
    ]
    .join("\n");
    let output = send_stdin(&url, &input, &[]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refused: line 3 of -: the de-duplication id `bad id`"),
        "{err}"
    );
    assert!(
        err.contains("held back: line 5 of -: an earlier message of group g"),
        "{err}"
    );
    let counts = summary(&err);
    assert_eq!(
        (
            counts["sent"],
            counts["total"],
            counts["refused"],
            counts["held"]
        ),
        (3, 5, 1, 1),
        "{err}"
    );
    assert!(
        err.contains("hint: a de-duplication id is 1 to 128"),
        "{err}"
    );
    let expected = BTreeMap::from([
        ("g".to_owned(), vec!["a1".to_owned()]),
        ("h".to_owned(), vec!["b1".to_owned(), "b2".to_owned()]),
    ]);
    assert_eq!(bodies_by_group(&url).await, expected);
}

#[tokio::test]
async fn a_bad_line_in_a_file_sends_nothing() {
    let url = create_queue(&unique_queue_name("s-file"), &[]);
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("m.txt"),
        "one\ntwo\nthree\nfour\n".replace("two", r#"{"body": "two", "dedup_id": "bad id"}"#),
    )
    .unwrap();
    let output = fifo_in(
        &dir,
        &[
            "--queue-url",
            &url,
            "send",
            "--file",
            "m.txt",
            "--format",
            "jsonl",
        ],
        &[],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refused: line 1 of m.txt: not valid JSON")
            && err.contains("error: 4 lines of m.txt cannot be sent"),
        "{err}"
    );
    // As text, the same file has nothing wrong.
    let output = fifo_in(
        &dir,
        &[
            "--queue-url",
            &url,
            "send",
            "--file",
            "m.txt",
            "--format",
            "text",
            "--dedup-id",
            "bad id",
        ],
        &[],
    );
    let err = stderr(&output);
    assert!(
        err.contains("error: --dedup-id `bad id`: the de-duplication id `bad id` contains ' '"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("m.jsonl"),
        [
            r#"{"body": "one"}"#,
            r#"{"body": "two", "dedup_id": "bad id"}"#,
            r#"{"body": "three", "dedup_id": ""}"#,
            "{not json",
            r#"{"body": "five", "group": "a b"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let output = fifo_in(
        &dir,
        &["--queue-url", &url, "send", "--file", "m.jsonl"],
        &[],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: 4 lines of m.jsonl cannot be sent (listed above); nothing was sent"),
        "{err}"
    );
    assert!(
        err.contains("refused: line 2 of m.jsonl: the de-duplication id `bad id` contains ' '"),
        "{err}"
    );
    assert!(
        err.contains("refused: line 3 of m.jsonl: the de-duplication id is empty"),
        "{err}"
    );
    // Past a line that is not JSON, the check goes on.
    assert!(
        err.contains("refused: line 4 of m.jsonl: not valid JSON")
            && err.contains("refused: line 5 of m.jsonl: the group id `a b` contains ' '"),
        "{err}"
    );
    assert!(
        bodies_by_group(&url).await.is_empty(),
        "nothing may be sent"
    );
}

#[tokio::test]
async fn what_sqs_drops_as_a_duplicate_is_warned_of_and_counted() {
    let url = create_queue(&unique_queue_name("s-dedup"), &[]);
    let output = send_stdin(&url, "inc\ninc\ninc\n", &[]);
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    assert!(
        err.contains("warning: line 2 of -: same body as line 1"),
        "{err}"
    );
    assert!(
        err.contains("de-duplicated: line 3 of -: SQS dropped it as a duplicate of line 1"),
        "{err}"
    );
    let counts = summary(&err);
    assert_eq!(
        (counts["sent"], counts["total"], counts["de-duplicated"]),
        (1, 3, 2),
        "{err}"
    );
    assert_eq!(bodies_by_group(&url).await.values().flatten().count(), 1);

    // Content de-duplication spans groups: b's copy is dropped.
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("ab.jsonl"),
        "{\"body\": \"same\", \"group\": \"a\"}\n{\"body\": \"same\", \"group\": \"b\"}\n",
    )
    .unwrap();
    let output = fifo_in(
        &dir,
        &["--queue-url", &url, "send", "--file", "ab.jsonl"],
        &[],
    );
    let err = stderr(&output);
    assert!(err.contains("warning: line 2 of ab.jsonl: same body as line 1 in this queue (de-duplication spans groups)"), "{err}");
    // Two groups race on two streams: which copy SQS keeps is not known.
    assert!(
        err.contains(
            "de-duplicated: lines 1 and 2 of ab.jsonl: SQS kept the one that reached it first"
        ),
        "{err}"
    );
    assert_eq!(summary(&err)["sent"], 1, "{err}");
    let stored = bodies_by_group(&url).await;
    assert_eq!(
        stored.values().flatten().collect::<Vec<_>>(),
        ["same"],
        "{stored:?}"
    );
}

#[tokio::test]
async fn a_connection_cut_mid_send_leaves_no_gap_and_counts_the_unknown() {
    let url = create_queue(&unique_queue_name("s-cut"), &[]);
    let total = 3000;
    let (proxy, child) = slow_send_under_way(&url, 30, total, 20);
    proxy.set_fault(Fault::ResetAll);
    let output = child.wait_with_output().unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("error: sending to"), "{err}");
    let counts = summary(&err);
    let unknown = counts.get("unknown").copied().unwrap_or(0);
    let accounted: u64 = ["sent", "unknown", "not", "refused", "held"]
        .iter()
        .map(|k| counts.get(*k).copied().unwrap_or(0))
        .sum();
    assert_eq!(accounted, total, "every message is counted once: {err}");
    assert!(counts["sent"] < total, "{err}");

    let in_queue = assert_no_gap(bodies_by_group(&url).await);
    assert!(
        (counts["sent"]..=counts["sent"] + unknown).contains(&in_queue),
        "{in_queue} in the queue, {} sent and {unknown} unknown: {err}",
        counts["sent"]
    );
}

#[test]
fn create_queue_checks_an_existing_queue_before_creating_anything() {
    let name = unique_queue_name("s-exists");
    create_queue(&name, &[]);
    let output = fifo(&["create-queue", &name, "--dlq"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "already exists with other settings: it has no dead-letter queue; nothing was created"
        ),
        "{err}"
    );
    let dlq = name.replace(".fifo", "-dlq.fifo");
    assert!(
        !queue_counts(&dlq).contains_key(&dlq),
        "the dead-letter queue was created"
    );

    let output = fifo(&["create-queue", &name, "--visibility-timeout", "60"]);
    assert!(
        stderr(&output).contains("its visibility timeout is 30 s, not 60 s"),
        "{}",
        stderr(&output)
    );

    let output = fifo(&["create-queue", &dlq, "--dlq", &dlq]);
    assert!(
        stderr(&output).contains("names the queue itself"),
        "{}",
        stderr(&output)
    );
    assert!(!queue_counts(&dlq).contains_key(&dlq));
}

#[tokio::test]
async fn a_line_of_unknown_group_on_stdin_is_counted_and_stops_the_input() {
    let url = create_queue(&unique_queue_name("s-stop"), &[]);
    let input = "{\"body\": \"a\"}\n{\"body\": \"b\"}\n{bad\n{\"body\": \"c\"}\n";
    let output = send_stdin(&url, input, &[]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    let counts = summary(&err);
    assert_eq!(
        (counts["sent"], counts["total"], counts["refused"]),
        (2, 3, 1),
        "{err}"
    );
    assert!(err.contains("the rest of the input was not read"), "{err}");
    assert!(
        err.contains("error: line 3 of -: not valid JSON")
            && err.contains("nothing after it was read or sent"),
        "{err}"
    );
    assert_eq!(bodies_by_group(&url).await.values().flatten().count(), 2);
}

#[tokio::test]
async fn ctrl_c_stops_after_the_batches_under_way_and_says_what_was_sent() {
    let url = create_queue(&unique_queue_name("s-int"), &[]);
    let total = 5000u64;
    let (_proxy, child) = slow_send_under_way(&url, 10, total, 10);
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("error: interrupted:"), "{err}");
    let counts = summary(&err);
    let not_attempted = counts.get("not").copied().unwrap_or(0);
    assert!(not_attempted > 0, "{err}");
    assert_eq!(counts["sent"] + not_attempted, total, "{err}");

    let in_queue = assert_no_gap(bodies_by_group(&url).await);
    assert_eq!(in_queue, counts["sent"], "{err}");
}
