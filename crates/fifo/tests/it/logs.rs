//! `fifo run --log-format json` against the real LocalStack: stderr is one
//! JSON object per line, with an event per step of each message's life.

use fifo_test_support::binary::*;
use fifo_test_support::localstack::*;
use fifo_test_support::temp_dir;

/// Seq 2 is rejected (exit 65); seq 3 fails its first attempt (exit 1).
const HANDLER: &str = r#"body=$(cat)
case "$body" in
  *'"seq":2'*) exit 65 ;;
  *'"seq":3'*) [ "$FIFO_ATTEMPT" = 1 ] && echo "db busy" >&2 && exit 1 ;;
esac
exit 0"#;

#[test]
fn json_logs_give_each_message_its_events() {
    let name = unique_queue_name("l-json");
    let url = create_queue(&name, &["--dlq"]);
    send(&url, &["--group", "g", "--count", "3"]);
    let dir = temp_dir();
    let run = fifo_in(
        &dir,
        &[
            "--log-format",
            "json",
            "--queue-url",
            &url,
            "run",
            "--until-empty",
            "--backoff-base-ms",
            "10",
            "--",
            "sh",
            "-c",
            HANDLER,
        ],
        &[],
    );
    assert_eq!(run.status.code(), Some(1), "a reject fails --until-empty");
    let lines: Vec<serde_json::Value> = stderr(&run)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let events: Vec<(String, u64, String)> = lines
        .iter()
        .filter(|l| l["target"] == "fifo::message")
        .map(|l| {
            assert_eq!(l["group"], "g");
            assert!(
                l["message_id"].is_string() && l["sequence"].is_string(),
                "{l}"
            );
            (
                l["event"].as_str().unwrap().to_owned(),
                l["attempt"].as_u64().unwrap(),
                l["error"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(e, ..)| e.as_str()).collect();
    assert_eq!(
        names.iter().filter(|e| **e == "received").count(),
        3,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|e| **e == "succeeded").count(),
        2,
        "{names:?}"
    );
    assert!(
        events.iter().any(|(e, attempt, error)| e == "rejected"
            && *attempt == 1
            && error.contains("exit status: 65")),
        "{events:?}"
    );
    assert!(names.contains(&"dead-lettered"), "{names:?}");
    let failed: Vec<&(String, u64, String)> =
        events.iter().filter(|(e, ..)| e == "failed").collect();
    assert_eq!(failed.len(), 2, "seq 2 once, seq 3 once: {events:?}");
    assert!(
        failed
            .iter()
            .any(|(_, attempt, error)| *attempt == 1 && error.contains("exit status: 1"))
    );
    assert!(names.contains(&"retried"), "{names:?}");
    assert!(
        events
            .iter()
            .any(|(e, attempt, _)| e == "succeeded" && *attempt == 2),
        "seq 3 succeeded on its second attempt: {events:?}"
    );
    assert!(
        lines
            .iter()
            .filter(|l| l["event"] == "succeeded")
            .all(|l| l["duration_ms"].as_f64().is_some()),
        "durations"
    );
    assert!(
        failed
            .iter()
            .any(|(_, attempt, error)| *attempt == 1 && error.ends_with("exit status: 1 (db busy)")),
        "the program's last stderr line: {failed:?}"
    );
    assert!(
        lines.iter().any(|l| l["target"] == "fifo::handler"
            && l["group"] == "g"
            && l["message"] == "db busy"),
        "the program's stderr as JSON"
    );
    let last = lines.last().unwrap();
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .starts_with("processed 2 messages"),
        "{last}"
    );
}
