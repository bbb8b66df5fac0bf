//! Apps written for AWS Lambda under `fifo run` against the real LocalStack:
//! one Python handler (`tests/apps/lambda_sqs.py`), served as Lambda Web
//! Adapter's pass-through route for `--http-format lambda` and run as a
//! program for `--batch-format lambda`. The app keeps its own records of
//! every message it handled and every event it was given; every assertion
//! comes from them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command};

use fifo_test_support::binary::*;
use fifo_test_support::http::{free_addr, get};
use fifo_test_support::localstack::*;
use fifo_test_support::records::{Event, Record, assert_order, numbered_groups, records};
use fifo_test_support::{TempDir, temp_dir};
use md5::{Digest, Md5};
use serde_json::Value;

fn app() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/apps/lambda_sqs.py")
}

/// The Python interpreter itself (a version manager's shim needs more of
/// the environment than fifo passes on to its programs).
fn python() -> String {
    let output = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs: these tests need it");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The app's environment: where it records, and what fails once.
fn app_env(dir: &TempDir, fail_once: &str) -> Vec<(&'static str, String)> {
    let file = |name: &str| dir.path().join(name).display().to_string();
    vec![
        ("RECORDS", file("records")),
        ("EVENTS", file("events")),
        ("FAIL_ONCE", fail_once.to_owned()),
    ]
}

/// The app served on `addr`, stopped when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The events the app was given, in order.
fn events(dir: &TempDir) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.path().join("events")).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str(line).expect("the app writes JSON lines"))
        .collect()
}

fn group_and_seq(record: &Value) -> (String, u64) {
    let group = record["attributes"]["MessageGroupId"].as_str().unwrap();
    let body: Value = serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
    (group.to_owned(), body["seq"].as_u64().unwrap())
}

/// Every event is Lambda's, for one group's consecutive messages in order;
/// some hold more than one.
fn assert_lambda_events(events: &[Value], queue_url: &str) {
    let name = queue_url.rsplit('/').next().unwrap();
    let arn = format!("arn:aws:sqs:us-east-1:000000000000:{name}");
    assert!(!events.is_empty());
    for event in events {
        let records = event["Records"].as_array().expect("Records");
        let keys: Vec<(String, u64)> = records.iter().map(group_and_seq).collect();
        assert!(
            keys.windows(2)
                .all(|pair| pair[0].0 == pair[1].0 && pair[1].1 == pair[0].1 + 1),
            "one group's consecutive messages per event: {keys:?}"
        );
        for record in records {
            let body = record["body"].as_str().unwrap();
            assert_eq!(
                record["md5OfBody"].as_str().unwrap(),
                format!("{:x}", Md5::digest(body.as_bytes()))
            );
            assert!(!record["messageId"].as_str().unwrap().is_empty());
            assert!(!record["receiptHandle"].as_str().unwrap().is_empty());
            assert_eq!(record["eventSource"], "aws:sqs");
            assert_eq!(record["eventSourceARN"], arn.as_str());
            assert_eq!(record["awsRegion"], "us-east-1");
            assert!(record["messageAttributes"].is_object(), "{record}");
            let attributes = record["attributes"].as_object().unwrap();
            for name in [
                "MessageGroupId",
                "SequenceNumber",
                "MessageDeduplicationId",
                "ApproximateReceiveCount",
                "SentTimestamp",
                "SenderId",
                "ApproximateFirstReceiveTimestamp",
            ] {
                let value = attributes.get(name).and_then(Value::as_str);
                assert!(value.is_some_and(|v| !v.is_empty()), "{name} in {record}");
            }
        }
    }
    assert!(
        events
            .iter()
            .any(|e| e["Records"].as_array().unwrap().len() > 1),
        "no event held a batch"
    );
}

/// Lambda's rule for FIFO queues, from the app's records: in the event
/// where `group`'s message `seq` first failed, the messages before it
/// succeeded and never ran again, and the ones after it were not run then
/// but in a later event, after it succeeded.
fn assert_failure_replayed(events: &[Value], records: &[Record], group: &str, seq: u64) {
    let runs_of = |s: u64| -> Vec<&Record> {
        records
            .iter()
            .filter(|r| r.group == group && r.seq == s && r.event != Event::Start)
            .collect()
    };
    let ends: Vec<Event> = runs_of(seq).iter().map(|r| r.event).collect();
    assert_eq!(ends, [Event::Failed, Event::Ok], "{group} #{seq}");
    let (at, failing) = events
        .iter()
        .enumerate()
        .find(|(_, e)| {
            e["Records"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| group_and_seq(r) == (group.to_owned(), seq))
        })
        .expect("an event held it");
    let keys: Vec<u64> = failing["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| group_and_seq(r).1)
        .collect();
    for &before in keys.iter().filter(|&&s| s < seq) {
        assert_eq!(runs_of(before).len(), 1, "#{before} ran once: {keys:?}");
    }
    let later: BTreeSet<u64> = events[at + 1..]
        .iter()
        .flat_map(|e| e["Records"].as_array().unwrap().clone())
        .filter(|r| group_and_seq(r).0 == group)
        .map(|r| group_and_seq(&r).1)
        .collect();
    for after in keys.iter().filter(|&&s| s >= seq) {
        assert!(later.contains(after), "#{after} ran again: {later:?}");
    }
}

#[test]
fn a_lambda_app_behind_the_pass_through_route_keeps_order_and_replays_from_a_failure() {
    let url = create_queue(&unique_queue_name("l-http"), &[]);
    send(&url, &["--groups", "3", "--count", "18"]);
    let dir = temp_dir();
    let addr = free_addr();
    let _app = Served(
        Command::new(python())
            .arg(app())
            .args(["serve", &addr])
            .envs(app_env(&dir, "group-2:3,group-3:1"))
            .spawn()
            .expect("python3 runs"),
    );
    let events_url = format!("http://{addr}/events");
    let ready = format!("http://{addr}/healthz");
    let output = fifo_in(
        &dir,
        &[
            "--queue-url",
            &url,
            "run",
            "--until-empty",
            "--http",
            &events_url,
            "--http-format",
            "lambda",
            "--http-ready",
            &ready,
            "--batch",
            "4",
            "--workers",
            "3",
            "--backoff-base-ms",
            "50",
        ],
        &[("RUST_LOG", "info")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(get(&addr, "/healthz").0, 200, "the app was up all along");

    let records = records(&dir);
    assert_order(&records, &numbered_groups(3, 6));
    let events = events(&dir);
    assert_lambda_events(&events, &url);
    assert_failure_replayed(&events, &records, "group-2", 3);
    assert_failure_replayed(&events, &records, "group-3", 1);
    let log = stderr(&output);
    assert!(
        log.contains("/events listed message") && log.contains("in batchItemFailures"),
        "{log}"
    );
}

#[test]
fn a_lambda_program_reads_events_on_stdin_and_answers_on_stdout() {
    let url = create_queue(&unique_queue_name("l-exec"), &[]);
    send(&url, &["--groups", "2", "--count", "16"]);
    let dir = temp_dir();
    let (python, app) = (python(), app().display().to_string());
    let env = app_env(&dir, "group-1:4");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let output = fifo_in(
        &dir,
        &[
            "--queue-url",
            &url,
            "run",
            "--until-empty",
            "--batch",
            "5",
            "--batch-format",
            "lambda",
            "--backoff-base-ms",
            "50",
            "--",
            &python,
            &app,
            "invoke",
        ],
        &env,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    // The answer on stdout is read, not forwarded.
    assert!(!stdout(&output).contains("batchItemFailures"), "{output:?}");

    let records = records(&dir);
    assert_order(&records, &numbered_groups(2, 8));
    let events = events(&dir);
    assert_lambda_events(&events, &url);
    assert_failure_replayed(&events, &records, "group-1", 4);
    // What the program wrote to stderr is its log, forwarded.
    let log = stderr(&output);
    assert!(log.contains("[group-1] message"), "{log}");
    assert!(log.contains("group-1 #4 fails once"), "{log}");
}
