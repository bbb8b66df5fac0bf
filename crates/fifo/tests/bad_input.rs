//! Every bad input gets `error: …` and `hint: …`, a non-zero exit, nothing
//! on stdout, no panic, and no message sent.

mod common;

use std::process::Output;

use common::*;

/// Asserts a clean failure whose error and hint lines contain the given text.
fn assert_fails(output: &Output, error: &str, hint: &str) {
    let err = stderr(output);
    assert!(
        !output.status.success(),
        "expected a failure, got success:\n{err}"
    );
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(stdout(output).is_empty(), "stdout: {}", stdout(output));
    assert!(!err.contains("panicked"), "{err}");
    let error_line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{err}"));
    assert!(error_line.contains(error), "`{error}` not in: {error_line}");
    let hint_line = err
        .lines()
        .find(|l| l.starts_with("hint: "))
        .unwrap_or_else(|| panic!("no hint line in:\n{err}"));
    assert!(hint_line.contains(hint), "`{hint}` not in: {hint_line}");
}

async fn assert_empty(url: &str) {
    let attributes = client().await.queue_attributes(url).await.unwrap();
    assert_eq!(
        (attributes.visible, attributes.in_flight),
        (0, 0),
        "nothing may have been sent"
    );
}

#[test]
fn an_unreachable_endpoint_says_how_to_start_localstack() {
    let output = fifo(&[
        "--queue-url",
        "http://127.0.0.1:1/000000000000/q.fifo",
        "send",
    ]);
    assert_fails(
        &output,
        "cannot reach SQS at http://127.0.0.1:1",
        "cargo xtask localstack-up",
    );
}

#[test]
fn a_missing_queue_says_how_to_create_it() {
    require_localstack();
    let url = queue_url(&unique_queue_name("missing"));
    assert_fails(
        &fifo(&["--queue-url", &url, "send"]),
        "does not exist",
        "fifo create-queue",
    );
}

#[test]
fn a_queue_that_is_not_fifo_is_refused() {
    require_localstack();
    let output = fifo(&["--queue-url", &queue_url("standard-queue"), "send"]);
    assert_fails(&output, "is not a FIFO queue", "FIFO queues only");
    assert_fails(
        &fifo(&["create-queue", "orders"]),
        "must end in .fifo",
        ".fifo",
    );
}

#[test]
fn a_malformed_queue_url_is_refused() {
    for url in [
        "localhost:4566/queue.fifo",
        "http://localhost:4566/queue.fifo",
    ] {
        assert_fails(
            &fifo(&["--queue-url", url, "send"]),
            "malformed queue URL",
            "http(s)://HOST/ACCOUNT/QUEUE.fifo",
        );
    }
    let dir = TempDir::new();
    let output = fifo_in(&dir, &["list-queues"], &[("SQS_QUEUE_URL", "not a url")]);
    assert_fails(
        &output,
        "SQS_QUEUE_URL=not a url: malformed queue URL",
        "http(s)://",
    );
}

#[tokio::test]
async fn invalid_group_ids_are_refused_before_anything_is_sent() {
    let url = create_queue(&unique_queue_name("badgroup"), &[]);
    let too_long = "g".repeat(129);
    for (group, error) in [
        ("", "must not be empty"),
        (too_long.as_str(), "at most 128"),
        ("a b", "contains ' '"),
    ] {
        assert_fails(
            &fifo(&["--queue-url", &url, "send", "--group", group]),
            error,
            "ASCII letters",
        );
    }
    let dir = TempDir::new();
    let lines = ["one", "two", r#"{"body": "three", "group": "bad group"}"#].join("\n");
    std::fs::write(dir.0.join("m.txt"), lines).unwrap();
    let output = fifo_in(&dir, &["--queue-url", &url, "send", "--file", "m.txt"], &[]);
    assert_fails(
        &output,
        "line 3 of m.txt: group id `bad group`",
        "ASCII letters",
    );
    assert_empty(&url).await;
}

#[tokio::test]
async fn a_body_over_the_size_limit_is_refused_before_anything_is_sent() {
    let url = create_queue(&unique_queue_name("bigbody"), &[]);
    let limit = client()
        .await
        .queue_attributes(&url)
        .await
        .unwrap()
        .max_message_bytes;
    let dir = TempDir::new();
    std::fs::write(
        dir.0.join("m.txt"),
        format!("small\n{}\n", "x".repeat(limit + 1)),
    )
    .unwrap();
    let output = fifo_in(&dir, &["--queue-url", &url, "send", "--file", "m.txt"], &[]);
    assert_fails(
        &output,
        &format!("line 2 of m.txt: message body is {} bytes", limit + 1),
        "bytes",
    );
    assert_empty(&url).await;
}

#[test]
fn a_malformed_config_file_is_refused() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("fifo.toml"), "max_workers = = 3\n").unwrap();
    assert_fails(
        &fifo_in(&dir, &["list-queues"], &[]),
        "malformed config file fifo.toml",
        "TOML",
    );
    std::fs::write(dir.0.join("fifo.toml"), "max_wrokers = 3\n").unwrap();
    assert_fails(
        &fifo_in(&dir, &["list-queues"], &[]),
        "unknown key `max_wrokers`",
        "known keys",
    );
    let output = fifo_in(&dir, &["--config", "missing.toml", "list-queues"], &[]);
    assert_fails(&output, "cannot read config file missing.toml", "--config");
}

#[test]
fn out_of_range_values_name_the_variable_and_the_range() {
    let dir = TempDir::new();
    let output = fifo_in(&dir, &["list-queues"], &[("WAIT_TIME_SECONDS", "25")]);
    assert_fails(
        &output,
        "WAIT_TIME_SECONDS=25 is out of range",
        "from 0 to 20",
    );
    let output = fifo_in(&dir, &["list-queues"], &[("MAX_MESSAGES", "0")]);
    assert_fails(&output, "MAX_MESSAGES=0 is out of range", "from 1 to 10");
    let output = fifo(&[
        "create-queue",
        "--visibility-timeout",
        "43201",
        unique_queue_name("vt").as_str(),
    ]);
    assert_fails(
        &output,
        "--visibility-timeout 43201 is out of range",
        "from 0 to 43200",
    );
}

#[test]
fn a_missing_exec_program_is_refused_at_start() {
    let url = create_queue(&unique_queue_name("noprog"), &[]);
    let output = fifo(&[
        "--queue-url",
        &url,
        "run",
        "--until-empty",
        "--",
        "no-such-program-here",
    ]);
    assert_fails(&output, "program `no-such-program-here` not found", "PATH");
}
