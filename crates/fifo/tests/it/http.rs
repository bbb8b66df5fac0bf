//! `fifo run --http` against the real LocalStack, with a real HTTP server
//! in the test standing for the worker app. The server keeps its own
//! records of every request (start and end, as the exec handler's script
//! does), and every assertion comes from them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use fifo_sqs_client::{AttributeValue, MessageAttribute, OutgoingMessage, ReceivedMessage};
use fifo_test_support::binary::*;
use fifo_test_support::localstack::*;
use fifo_test_support::records::{Event, Record, assert_order, numbered_groups, runs};
use fifo_test_support::temp_dir;

/// What the worker app answers to one request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Ok,
    Status(u16),
    /// 429 with `Retry-After: SECS`.
    TooMany(u64),
    /// 200 after this long.
    Slow(Duration),
    /// 302 to a page that would answer 200.
    Redirect,
    /// 200 whose body breaks off mid-way (the app crashed while answering).
    CutOff,
}

/// One request as the worker app saw it.
#[derive(Debug, Clone)]
struct Seen {
    group: String,
    seq: u64,
    headers: HeaderMap,
    at: SystemTime,
    answered: u16,
}

/// Decides the answer from the group, the seq and how many requests for
/// that message came before this one.
type Script = fn(&str, u64, usize) -> Answer;

#[derive(Clone)]
struct App {
    script: Script,
    records: Arc<Mutex<Vec<Record>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    counts: Arc<Mutex<HashMap<(String, u64), usize>>>,
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

impl App {
    fn record(&self, event: Event, group: &str, seq: u64, headers: &HeaderMap) {
        let receive_count = header(headers, "x-aws-sqsd-receive-count")
            .parse()
            .unwrap_or(0);
        self.records.lock().unwrap().push(Record {
            event,
            runner: "app".to_owned(),
            group: group.to_owned(),
            nanos: nanos(),
            receive_count,
            seq,
        });
    }

    async fn handle(self, headers: HeaderMap, body: String) -> Response {
        let group = header(&headers, "x-fifo-group-id");
        let body_json: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
        let seq = body_json["seq"].as_u64().expect("a seq");
        let before = {
            let mut counts = self.counts.lock().unwrap();
            let count = counts.entry((group.clone(), seq)).or_default();
            *count += 1;
            *count - 1
        };
        self.record(Event::Start, &group, seq, &headers);
        let at = SystemTime::now();
        let answer = (self.script)(&group, seq, before);
        if let Answer::Slow(delay) = answer {
            tokio::time::sleep(delay).await;
        }
        let (status, response) = match answer {
            Answer::Ok | Answer::Slow(_) => (200, StatusCode::OK.into_response()),
            Answer::Status(code) => {
                let status = StatusCode::from_u16(code).unwrap();
                // With a newline and an escape sequence, as an error page
                // may have.
                (
                    code,
                    (status, "the app says no\nat all\u{1b}[0m").into_response(),
                )
            }
            Answer::Redirect => (
                302,
                (StatusCode::FOUND, [("location", "/ready")], "").into_response(),
            ),
            Answer::CutOff => {
                // The status and a first chunk go out; a moment later the
                // body breaks off.
                let chunks = futures_util::stream::unfold(0, |step| async move {
                    let chunk: Result<axum::body::Bytes, std::io::Error> = match step {
                        0 => Ok("half an answ".into()),
                        1 => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Err(std::io::Error::other("the app crashed"))
                        }
                        _ => return None,
                    };
                    Some((chunk, step + 1))
                });
                let body = axum::body::Body::from_stream(chunks);
                (200, (StatusCode::OK, body).into_response())
            }
            Answer::TooMany(seconds) => (
                429,
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", seconds.to_string())],
                    "slow down",
                )
                    .into_response(),
            ),
        };
        let event = if status == 200 && !matches!(answer, Answer::CutOff) {
            Event::Ok
        } else {
            Event::Failed
        };
        self.record(event, &group, seq, &headers);
        self.seen.lock().unwrap().push(Seen {
            group,
            seq,
            headers,
            at,
            answered: status,
        });
        response
    }
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Starts the worker app on a free port of this machine.
async fn serve(script: Script) -> (App, SocketAddr) {
    let app = App {
        script,
        records: Arc::default(),
        seen: Arc::default(),
        counts: Arc::default(),
    };
    let state = app.clone();
    let router = axum::Router::new()
        .route(
            "/work",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                state.clone().handle(headers, body)
            }),
        )
        .route("/ready", axum::routing::get(|| async { "ready" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (app, addr)
}

/// `fifo run --http` until the queue is empty, off the runtime's threads.
async fn run_http(url: &str, addr: SocketAddr, extra: &[&str]) -> std::process::Output {
    let dir = temp_dir();
    let target = format!("http://{addr}/work");
    let ready = format!("http://{addr}/ready");
    let mut args = vec![
        "--queue-url",
        url,
        "run",
        "--until-empty",
        "--http",
        &target,
        "--http-ready",
        &ready,
    ];
    args.extend_from_slice(extra);
    let mut command = fifo_command(&dir, &args, &[("RUST_LOG", "info")]);
    tokio::task::spawn_blocking(move || command.output().expect("fifo runs"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_keep_their_order_across_failures_and_retry_after_is_honoured() {
    let url = create_queue(&unique_queue_name("h-order"), &[]);
    send(&url, &["--groups", "3", "--count", "15"]);
    // group-1's 2nd message fails twice (500), group-2's 3rd is told to
    // come back in 2 s (429), twice.
    let (app, addr) = serve(|group, seq, before| match (group, seq) {
        ("group-1", 2) if before < 2 => Answer::Status(500),
        ("group-2", 3) if before < 2 => Answer::TooMany(2),
        ("group-3", 4) if before < 1 => Answer::Redirect,
        ("group-3", 2) if before < 1 => Answer::CutOff,
        _ => Answer::Ok,
    })
    .await;
    let output = run_http(
        &url,
        addr,
        &[
            "--workers",
            "3",
            "--retries",
            "2",
            "--backoff-base-ms",
            "50",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));

    let records = app.records.lock().unwrap().clone();
    assert_order(&records, &numbered_groups(3, 5));
    let seen = app.seen.lock().unwrap().clone();
    let of = |group: &str, seq: u64| -> Vec<Seen> {
        seen.iter()
            .filter(|s| s.group == group && s.seq == seq)
            .cloned()
            .collect()
    };

    // The 500s were failures under the retry policy: attempts 1, 2, 3.
    let failing = of("group-1", 2);
    let attempts: Vec<String> = failing
        .iter()
        .map(|s| header(&s.headers, "x-fifo-attempt"))
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert_eq!(
        failing.iter().map(|s| s.answered).collect::<Vec<_>>(),
        [500, 500, 200]
    );

    // The 429s asked for 2 s each and counted no failure: attempt 1 each time.
    let waiting = of("group-2", 3);
    assert_eq!(waiting.len(), 3, "{waiting:?}");
    for pair in waiting.windows(2) {
        let waited = pair[1].at.duration_since(pair[0].at).unwrap();
        assert!(
            waited >= Duration::from_secs(2),
            "Retry-After: 2 honoured, but the retry came after {waited:?}"
        );
    }
    assert!(
        waiting
            .iter()
            .all(|s| header(&s.headers, "x-fifo-attempt") == "1"),
        "{waiting:?}"
    );

    // The app's error page is one line of the log, its newline escaped.
    let log = stderr(&output);
    assert!(log.contains(r"the app says no\nat all"), "{log}");
    assert!(!log.lines().any(|l| l.starts_with("at all")), "{log}");

    // A 2xx whose body broke off is a failure: it ran again.
    let cut_off = of("group-3", 2);
    assert_eq!(
        cut_off
            .iter()
            .map(|s| header(&s.headers, "x-fifo-attempt"))
            .collect::<Vec<_>>(),
        ["1", "2"],
        "{cut_off:?}"
    );
    assert!(log.contains("body was cut off"), "{log}");

    // A redirect is a failure, not followed.
    let redirected = of("group-3", 4);
    assert_eq!(
        redirected.iter().map(|s| s.answered).collect::<Vec<_>>(),
        [302, 200]
    );

    // sqsd's headers, and ours.
    let first = &of("group-3", 1)[0];
    let queue_name = url.rsplit('/').next().unwrap();
    assert_eq!(header(&first.headers, "x-aws-sqsd-queue"), queue_name);
    assert!(!header(&first.headers, "x-aws-sqsd-msgid").is_empty());
    assert_eq!(header(&first.headers, "x-aws-sqsd-receive-count"), "1");
    assert_eq!(header(&first.headers, "x-fifo-group-id"), "group-3");
    assert!(!header(&first.headers, "x-fifo-sequence-number").is_empty());
    assert!(!header(&first.headers, "x-fifo-deduplication-id").is_empty());
    let received_at = header(&first.headers, "x-aws-sqsd-first-received-at");
    assert!(
        received_at.len() == 20 && received_at.ends_with('Z'),
        "ISO 8601: {received_at:?}"
    );
    assert_eq!(header(&first.headers, "content-type"), "application/json");
    assert!(
        header(&first.headers, "user-agent").starts_with("aws-sqsd/"),
        "{first:?}"
    );
    let sent_at = header(&first.headers, "x-aws-sqsd-sent-at");
    assert!(
        sent_at.len() == 20 && sent_at.ends_with('Z') && sent_at <= received_at,
        "ISO 8601, no later than the first receive: {sent_at:?}"
    );
    assert!(
        !header(&first.headers, "x-aws-sqsd-sender-id").is_empty(),
        "{first:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_slower_than_the_visibility_timeout_is_processed_once() {
    let url = create_queue(&unique_queue_name("h-slow"), &[]);
    send(&url, &["--groups", "2", "--count", "4"]);
    let (app, addr) = serve(|_, seq, _| match seq {
        1 => Answer::Slow(Duration::from_secs(5)),
        _ => Answer::Ok,
    })
    .await;
    let output = run_http(&url, addr, &["--visibility-timeout", "2"]).await;
    assert!(output.status.success(), "{}", stderr(&output));

    let records = app.records.lock().unwrap().clone();
    assert_order(&records, &numbered_groups(2, 2));
    let all = runs(&records);
    assert_eq!(all.len(), 4, "each message once: {all:?}");
    assert!(all.iter().all(|r| r.receive_count == 1), "{all:?}");
}

/// A String attribute.
fn attribute(value: &str) -> MessageAttribute {
    MessageAttribute {
        data_type: "String".to_owned(),
        value: AttributeValue::Text(value.to_owned()),
    }
}

fn text_of(message: &ReceivedMessage, name: &str) -> String {
    match &message.attributes.get(name).map(|a| &a.value) {
        Some(AttributeValue::Text(text)) => text.clone(),
        other => panic!("no text attribute {name}: {other:?} in {message:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_is_dead_lettered_at_once_with_why_and_its_group_goes_on() {
    let name = unique_queue_name("h-reject");
    let url = create_queue(&name, &["--dlq", "--max-receive-count", "5"]);
    // group-1: seq 1, 2 (with attributes and a trace context), 3.
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let messages: Vec<OutgoingMessage> = (1..=3)
        .map(|seq| OutgoingMessage {
            body: format!(r#"{{"group":"group-1","seq":{seq}}}"#),
            group_id: "group-1".to_owned(),
            dedup_id: Some(format!("{name}-{seq}")),
            attributes: if seq == 2 {
                [
                    ("tenant".to_owned(), attribute("acme")),
                    ("traceparent".to_owned(), attribute(trace)),
                ]
                .into()
            } else {
                Default::default()
            },
        })
        .collect();
    let sent = client().await.send_batch(&url, &messages).await.unwrap();
    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    let (app, addr) = serve(|group, seq, _| match (group, seq) {
        ("group-1", 2) => Answer::Status(422),
        _ => Answer::Ok,
    })
    .await;
    let output = run_http(&url, addr, &[]).await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "a reject fails --until-empty"
    );
    assert!(
        stderr(&output).contains("1 rejected"),
        "{}",
        stderr(&output)
    );

    let seen = app.seen.lock().unwrap().clone();
    let rejected: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.group == "group-1" && s.seq == 2)
        .collect();
    assert_eq!(rejected.len(), 1, "a reject is not retried");
    assert_eq!(
        header(&rejected[0].headers, "x-aws-sqsd-attr-tenant"),
        "acme"
    );
    assert_eq!(header(&rejected[0].headers, "traceparent"), trace);
    let group_1: Vec<u64> = seen
        .iter()
        .filter(|s| s.group == "group-1" && s.answered == 200)
        .map(|s| s.seq)
        .collect();
    assert_eq!(group_1, [1, 3], "its group went on, in order");

    let base = name.strip_suffix(".fifo").unwrap();
    let dead = drain(&client().await, &queue_url(&format!("{base}-dlq.fifo"))).await;
    assert_eq!(dead.len(), 1);
    let dead = &dead[0];
    assert_eq!(dead.group_id, "group-1");
    assert_eq!(seq(dead), 2);
    // The original's attributes, and why, read back from the queue.
    assert_eq!(text_of(dead, "tenant"), "acme");
    assert_eq!(text_of(dead, "traceparent"), trace);
    let reason = text_of(dead, "fifo.reason");
    assert!(
        reason.starts_with("rejected: POST http://")
            && reason.contains("422")
            && reason.contains("the app says no"),
        "{reason}"
    );
    assert!(reason.contains(r"\u{1b}[0m"), "escaped for SQS: {reason}");
    assert_eq!(text_of(dead, "fifo.status"), "HTTP 422");
    assert_eq!(text_of(dead, "fifo.attempts"), "1");
    assert_eq!(text_of(dead, "fifo.receive-count"), "1");
    assert_eq!(text_of(dead, "fifo.source-queue"), url);
    assert!(text_of(dead, "fifo.failed-at").ends_with('Z'));
}
