//! `fifo run --metrics-addr` against the real LocalStack: `/metrics`,
//! `/healthz` and `/readyz` scraped over HTTP during a run, and the figures
//! checked against what the handlers recorded.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use fifo_test_support::binary::*;
use fifo_test_support::http::{free_addr, get};
use fifo_test_support::localstack::*;
use fifo_test_support::records::{
    Script, assert_order, numbered_groups, records, runs, signal, spawn_run, wait_for,
};
use fifo_test_support::temp_dir;

/// The samples of a scrape, by their full name with labels.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(text.ends_with("# EOF\n"), "{text}");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("NAME VALUE");
            (name.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn a_scrape_during_a_run_matches_the_run() {
    let url = create_queue(&unique_queue_name("m-scrape"), &[]);
    send(&url, &["--groups", "3", "--count", "30"]);
    let dir = temp_dir();
    let addr = free_addr();
    let mut run = spawn_run(
        &dir,
        &url,
        "metrics",
        &Script::sleeping("0.1"),
        &["--workers", "2", "--metrics-addr", &addr],
    );
    wait_for(&dir, "five handlers to finish", |r| {
        runs(r).iter().filter(|r| r.succeeded()).count() >= 5
    });

    // Mid-run: alive, receiving, and the gauges within what the run allows.
    assert_eq!(get(&addr, "/healthz").0, 200);
    assert_eq!(get(&addr, "/readyz").0, 200);
    let mid = scrape(&addr);
    assert!(mid["fifo_handlers_running"] <= 2.0, "{mid:?}");
    assert!(mid["fifo_groups_busy"] <= 2.0, "{mid:?}");
    assert!(
        mid["fifo_groups_busy"] + mid["fifo_groups_backlogged"] <= 3.0,
        "{mid:?}"
    );
    assert!(mid["fifo_messages_in_flight"] >= 1.0, "{mid:?}");
    assert!(
        mid["messaging_client_consumed_messages_total"] >= 5.0,
        "{mid:?}"
    );

    // Once every message is deleted, the counters equal the records.
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let now = scrape(&addr);
        if now["fifo_messages_deleted_total"] >= 30.0 {
            break now;
        }
        assert!(Instant::now() < deadline, "not all deleted: {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let all = records(&dir);
    let succeeded = runs(&all).iter().filter(|r| r.succeeded()).count() as f64;
    assert_eq!(succeeded, 30.0);
    assert_eq!(done["fifo_messages_succeeded_total"], succeeded);
    assert_eq!(done["messaging_client_consumed_messages_total"], 30.0);
    assert_eq!(done["messaging_process_duration_seconds_count"], succeeded);
    assert!(
        done["messaging_process_duration_seconds_sum"] >= 30.0 * 0.1,
        "each handler slept 0.1 s: {done:?}"
    );
    let receives = r#"messaging_client_operation_duration_seconds_count{messaging_system="aws_sqs",messaging_operation_name="ReceiveMessage",error_type=""}"#;
    assert!(done[receives] >= 1.0, "{done:?}");
    assert_eq!(done["fifo_messages_failed_total"], 0.0);
    assert_eq!(done["fifo_messages_in_flight"], 0.0);
    assert_eq!(done["fifo_handlers_running"], 0.0);
    assert!(
        !done.keys().any(|k| k.contains("group-")),
        "no group id as a label"
    );
    assert_order(&all, &numbered_groups(3, 10));

    signal(run.id(), "-TERM", false);
    let exit = run.wait(Duration::from_secs(30));
    assert_eq!(exit.status.code(), Some(0), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("processed 30 messages"),
        "{}",
        exit.stderr
    );
}

#[test]
fn a_port_in_use_fails_the_start_with_a_hint() {
    let url = create_queue(&unique_queue_name("m-busy"), &[]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = fifo(&[
        "--queue-url",
        &url,
        "run",
        "--until-empty",
        "--metrics-addr",
        &addr,
    ]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains(&format!("cannot listen on {addr}")), "{text}");
    assert!(text.contains("hint: "), "{text}");
    let bad = fifo(&["--queue-url", &url, "run", "--metrics-addr", "localhost"]);
    assert!(
        stderr(&bad).contains("--metrics-addr localhost"),
        "{}",
        stderr(&bad)
    );
}

/// The status of `GET path`, or `None` while nothing listens yet.
fn status(addr: &str, path: &str) -> Option<u16> {
    TcpStream::connect(addr).ok()?;
    Some(get(addr, path).0)
}

/// Waits until `/readyz` answers `wanted`; how long that took.
fn readiness_becomes(addr: &str, wanted: u16, limit: Duration) -> Duration {
    let since = Instant::now();
    while status(addr, "/readyz") != Some(wanted) {
        assert!(
            since.elapsed() < limit,
            "/readyz did not answer {wanted} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    since.elapsed()
}

#[test]
fn readiness_returns_with_the_first_answer_after_a_silence_on_an_idle_queue() {
    let url = create_queue(&unique_queue_name("m-ready"), &[]);
    let proxy = fifo_fault_proxy::Proxy::start(localstack_addr()).expect("the fault proxy starts");
    let dir = temp_dir();
    let addr = free_addr();
    let endpoint = proxy.url();
    // Long polls of 20 s on a queue with nothing to receive: before the
    // trouble ended only with an answer to a long poll.
    let args = [
        "--queue-url",
        &url,
        "--endpoint-url",
        &endpoint,
        "run",
        "--wait-time",
        "20",
        "--metrics-addr",
        &addr,
    ];
    let mut command = fifo_command(&dir, &args, &[]);
    command.stdout(std::process::Stdio::null());
    let run = fifo_test_support::records::Process::spawn(&dir, "ready", command);
    readiness_becomes(&addr, 200, Duration::from_secs(30));

    proxy.set_fault(fifo_fault_proxy::Fault::Silent);
    // A receive unanswered past its long poll and an attempt's deadline.
    readiness_becomes(&addr, 503, Duration::from_secs(40));
    proxy.set_fault(fifo_fault_proxy::Fault::None);
    let back = readiness_becomes(&addr, 200, Duration::from_secs(40));
    assert!(
        back < Duration::from_secs(15),
        "ready again {back:?} after SQS answered again, not at its first answer"
    );

    let mut run = run;
    signal(run.id(), "-TERM", false);
    let exit = run.wait(Duration::from_secs(30));
    assert_eq!(exit.status.code(), Some(0), "{}", exit.stderr);
    let (starts, ends) = (
        exit.stderr.find("SQS calls are failing"),
        exit.stderr.find("SQS answers again"),
    );
    assert!(
        matches!((starts, ends), (Some(s), Some(e)) if s < e),
        "the silence is reported when it starts and when it ends:\n{}",
        exit.stderr
    );
}
