//! Every bad input gets `error: …` and `hint: …`, a non-zero exit, nothing
//! on stdout, no panic, and no message sent.

use std::process::Output;

use fifo_test_support::binary::*;
use fifo_test_support::localstack::*;
use fifo_test_support::temp_dir;

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
    let dir = temp_dir();
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
        ("", "the group id is empty"),
        (too_long.as_str(), "at most 128"),
        ("a b", "contains ' '"),
    ] {
        assert_fails(
            &fifo(&["--queue-url", &url, "send", "--group", group]),
            error,
            "ASCII letters",
        );
    }
    let dir = temp_dir();
    let lines = [
        r#"{"body": "one"}"#,
        r#"{"body": "two"}"#,
        r#"{"body": "three", "group": "bad group"}"#,
    ]
    .join("\n");
    std::fs::write(dir.path().join("m.txt"), lines).unwrap();
    let output = fifo_in(&dir, &["--queue-url", &url, "send", "--file", "m.txt"], &[]);
    assert_fails(
        &output,
        "line 3 of m.txt: the group id `bad group`",
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
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("m.txt"),
        format!("small\n{}\n", "x".repeat(limit + 1)),
    )
    .unwrap();
    let output = fifo_in(&dir, &["--queue-url", &url, "send", "--file", "m.txt"], &[]);
    assert_fails(
        &output,
        &format!("line 2 of m.txt: the message body is {} bytes", limit + 1),
        "bytes",
    );
    assert_empty(&url).await;
}

#[test]
fn a_malformed_config_file_is_refused() {
    let dir = temp_dir();
    std::fs::write(dir.path().join("fifo.toml"), "max_workers = = 3\n").unwrap();
    assert_fails(
        &fifo_in(&dir, &["list-queues"], &[]),
        "malformed config file fifo.toml",
        "TOML",
    );
    std::fs::write(dir.path().join("fifo.toml"), "max_wrokers = 3\n").unwrap();
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
    let dir = temp_dir();
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

/// Exactly the two lines: no warnings, no debug output around them.
fn assert_two_lines(output: &Output) {
    let err = stderr(output);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() == 2 && lines[0].starts_with("error: ") && lines[1].starts_with("hint: "),
        "expected an error line and a hint line:\n{err}"
    );
    assert!(err.len() < 600, "too long to read:\n{err}");
}

#[test]
fn settings_that_are_not_numbers_or_empty_say_so_and_name_only_their_origin() {
    let dir = temp_dir();
    let output = fifo_in(&dir, &["list-queues"], &[("WAIT_TIME_SECONDS", "abc")]);
    assert_fails(
        &output,
        "WAIT_TIME_SECONDS=abc is not a number",
        "set WAIT_TIME_SECONDS to a whole number from 0 to 20",
    );
    assert!(!stderr(&output).contains("--config") && !stderr(&output).contains("fifo.toml"));
    let output = fifo_in(&dir, &["list-queues"], &[("WAIT_TIME_SECONDS", "")]);
    assert_fails(
        &output,
        "WAIT_TIME_SECONDS= is empty",
        "set WAIT_TIME_SECONDS",
    );
    let output = fifo_in(&dir, &["run", "--workers", ""], &[]);
    assert_fails(
        &output,
        r#"--workers "" is empty"#,
        "give --workers a whole number",
    );
    assert_two_lines(&output);

    std::fs::write(dir.path().join("fifo.toml"), "max_workers = \"5\"\n").unwrap();
    let output = fifo_in(&dir, &["list-queues"], &[]);
    assert_fails(
        &output,
        r#"`max_workers` in fifo.toml is text in quotes ("5"), not a number"#,
        "in fifo.toml",
    );
    assert!(!stderr(&output).contains("--config"), "{}", stderr(&output));
}

#[test]
fn a_config_file_that_is_not_a_regular_file_is_refused_at_once() {
    let dir = temp_dir();
    let status = std::process::Command::new("mkfifo")
        .arg(dir.path().join("fifo.toml"))
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
    let output = fifo_in(&dir, &["list-queues"], &[]);
    assert_fails(
        &output,
        "cannot read config file fifo.toml: it is not a regular file",
        "fix or remove fifo.toml",
    );
    assert!(!stderr(&output).contains("--config"), "{}", stderr(&output));
    std::fs::remove_file(dir.path().join("fifo.toml")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("fifo.toml")).unwrap();
    let output = fifo_in(&dir, &["list-queues"], &[]);
    assert_fails(
        &output,
        "it is not a regular file",
        "fix or remove fifo.toml",
    );
}

#[test]
fn missing_credentials_are_one_error_line_and_one_hint() {
    let home = temp_dir();
    let mut command = fifo_command(
        &home,
        &[
            "--queue-url",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/q.fifo",
            "send",
        ],
        &[
            ("HOME", home.path().to_str().unwrap()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    for name in [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ] {
        command.env_remove(name);
    }
    let output = command.output().unwrap();
    assert_fails(
        &output,
        "AWS credentials are missing or invalid: none were found",
        "AWS_ACCESS_KEY_ID",
    );
    assert_two_lines(&output);
}

#[test]
fn an_endpoint_that_is_not_sqs_is_named_as_such() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 8192];
            let _ = stream.read(&mut request);
            let page = "<html><head><title>Error response</title></head><body>Unsupported method</body></html>";
            let _ = write!(
                stream,
                "HTTP/1.1 501 Unsupported method\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    let output = fifo(&[
        "--queue-url",
        &format!("http://127.0.0.1:{port}/000000000000/q.fifo"),
        "send",
    ]);
    assert_fails(
        &output,
        &format!(
            r#"HTTP 501, an HTML page titled "Error response", without an SQS error code: is http://127.0.0.1:{port} SQS?"#
        ),
        "if the endpoint is not SQS, check --endpoint-url",
    );
    assert_two_lines(&output);
}

/// Flags after `run`, environment, the error and the hint expected.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, &'a str);

#[test]
fn options_of_another_handler_are_refused_before_the_queue_is_opened() {
    // Nothing listens there: the refusal must come before any SQS call.
    let url = "http://127.0.0.1:1/000000000000/q.fifo";
    let dir = temp_dir();
    let cases: [Case; 5] = [
        (
            &["--work-ms", "5", "--http", "http://127.0.0.1:9/"],
            &[],
            "--work-ms is for the log handler, and the HTTP handler is chosen",
            "drop --work-ms",
        ),
        (
            &["--quiet"],
            &[("FIFO_HTTP_URL", "http://127.0.0.1:9/")],
            "--quiet is for the log handler, and the HTTP handler is chosen",
            "drop --quiet",
        ),
        (
            &["--http-content-type", "text/plain"],
            &[],
            "--http-content-type text/plain is given without --http",
            "drop --http-content-type (FIFO_HTTP_CONTENT_TYPE)",
        ),
        (
            &[],
            &[("FIFO_HTTP_REJECT_STATUS", "400")],
            "FIFO_HTTP_REJECT_STATUS=400 is given without --http",
            "give --http URL",
        ),
        (
            &["--http-ready", "http://127.0.0.1:9/ready"],
            &[],
            "--http-ready http://127.0.0.1:9/ready is given without --http",
            "drop --http-ready (FIFO_HTTP_READY)",
        ),
    ];
    for (args, env, error, hint) in cases {
        let mut all = vec!["--queue-url", url, "run"];
        all.extend_from_slice(args);
        assert_fails(&fifo_in(&dir, &all, env), error, hint);
    }
}

#[test]
fn more_workers_than_messages_held_is_said() {
    let url = create_queue(&unique_queue_name("b-workers"), &[]);
    let output = fifo(&[
        "--queue-url",
        &url,
        "run",
        "--until-empty",
        "--workers",
        "30",
        "--max-in-flight",
        "10",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "--workers 30 is more than --max-in-flight 10: at most 10 messages are held at once, so 20 workers never get one"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_open_file_limit_too_low_for_one_handler_is_refused() {
    let dir = temp_dir();
    let fifo = fifo_command(
        &dir,
        &[
            "--queue-url",
            "http://127.0.0.1:1/000000000000/q.fifo",
            "run",
            "--",
            "true",
        ],
        &[],
    );
    // `ulimit -n` sets the hard limit too: fifo cannot raise it.
    let output = under_ulimit(&fifo, "-n 30").output().unwrap();
    assert_fails(
        &output,
        "the open-file limit is 30: too low for fifo and even one handler",
        "raise it to at least",
    );
}
