//! Calls against endpoints that misbehave: one that accepts connections and
//! never answers, one that answers late, and ones that answer with a server
//! error, throttling, a web page or half an answer. Each test runs a
//! listener of its own on 127.0.0.1; no emulator is needed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use fifo_sqs_client::{Client, ConnectOptions, Error, ReceiveOptions};

/// Far longer than any call may take with its retries: a call still running
/// by then hangs.
const HANG: Duration = Duration::from_secs(60);

/// What the listener does with each connection.
#[derive(Clone)]
enum Behaviour {
    /// Accepts and reads nothing, answers nothing, keeps it open.
    Silent,
    /// Reads each request and sends `response` after `delay`.
    Answer { delay: Duration, response: String },
}

fn answer(response: String) -> Behaviour {
    Behaviour::Answer {
        delay: Duration::ZERO,
        response,
    }
}

/// A whole HTTP/1.1 response that closes the connection.
fn http(status: &str, content_type: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{headers}connection: close\r\n\r\n{body}",
        body.len()
    )
}

fn json(status: &str, body: &str) -> String {
    http(status, "application/x-amz-json-1.0", "", body)
}

/// Starts a listener that behaves as told on every connection (for the rest
/// of the test process) and returns a client pointed at it.
async fn client_for(behaviour: Behaviour) -> (Client, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
    let address = listener.local_addr().unwrap();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            match &behaviour {
                Behaviour::Silent => held.push(stream),
                Behaviour::Answer { delay, response } => {
                    let (delay, response) = (*delay, response.clone());
                    thread::spawn(move || serve(stream, delay, &response));
                }
            }
        }
    });
    let queue_url = format!("http://{address}/000000000000/faults.fifo");
    let client = fifo_sqs_client::connect(&ConnectOptions {
        queue_url: &queue_url,
        endpoint_url: None,
        region: None,
    })
    .await
    .expect("a client for the local listener");
    (client, queue_url)
}

/// Reads one request (head and body) and sends `response`.
fn serve(stream: TcpStream, delay: Duration, response: &str) {
    let mut reader = BufReader::new(stream);
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; content_length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    thread::sleep(delay);
    let mut stream = reader.into_inner();
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
}

fn no_wait() -> ReceiveOptions {
    ReceiveOptions {
        max_messages: 10,
        wait_seconds: 0,
        ..ReceiveOptions::default()
    }
}

/// Runs `call`, failing the test if it has not returned within [`HANG`].
async fn returns<T>(call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    match tokio::time::timeout(HANG, call).await {
        Ok(result) => result,
        Err(_) => panic!("the call still hangs after {:?}", started.elapsed()),
    }
}

fn assert_timed_out(err: &Error) {
    match err {
        Error::Unreachable { detail, .. } => {
            assert!(detail.contains("timed out"), "{detail}");
            assert!(detail.contains("no answer within"), "{detail}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_receive_from_a_silent_endpoint_times_out() {
    let (client, queue_url) = client_for(Behaviour::Silent).await;
    let err = returns(client.receive(&queue_url, &no_wait()))
        .await
        .expect_err("nothing answers");
    assert_timed_out(&err);
}

#[tokio::test]
async fn listing_queues_at_a_silent_endpoint_times_out() {
    let (client, _) = client_for(Behaviour::Silent).await;
    let err = returns(client.list_queue_urls(None))
        .await
        .expect_err("nothing answers");
    assert_timed_out(&err);
    assert!(
        err.to_string()
            .starts_with("cannot reach SQS at http://127.0.0.1:"),
        "{err}"
    );
}

#[tokio::test]
async fn a_long_poll_may_take_its_wait_and_more() {
    // Longer than a call other than a receive may wait for one attempt (5 s):
    // the receive's own deadline must apply.
    let behaviour = Behaviour::Answer {
        delay: Duration::from_secs(7),
        response: json("200 OK", "{}"),
    };
    let (client, queue_url) = client_for(behaviour).await;
    let options = ReceiveOptions {
        wait_seconds: 7,
        ..no_wait()
    };
    let output = returns(client.receive(&queue_url, &options))
        .await
        .expect("an empty receive");
    assert!(output.messages.is_empty() && output.malformed.is_empty());
}

#[tokio::test]
async fn an_internal_error_is_a_transient_server_error() {
    let body = r#"{"__type":"com.amazonaws.sqs#InternalError","message":"We encountered an internal error. Please try again."}"#;
    let (client, queue_url) = client_for(answer(json("500 Internal Server Error", body))).await;
    let err = returns(client.receive(&queue_url, &no_wait()))
        .await
        .expect_err("a server error");
    assert!(
        matches!(&err, Error::ServiceUnavailable { message } if message.contains("HTTP 500 InternalError")),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn any_5xx_is_a_server_error() {
    let body = r#"{"__type":"com.amazonaws.sqs#SomethingNew","message":"down for maintenance"}"#;
    let (client, _) = client_for(answer(json("503 Service Unavailable", body))).await;
    let err = returns(client.list_queue_urls(None))
        .await
        .expect_err("a server error");
    assert!(matches!(err, Error::ServiceUnavailable { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_throttling_exception_is_throttled() {
    let body = r#"{"__type":"com.amazonaws.sqs#ThrottlingException","message":"Rate exceeded"}"#;
    let (client, queue_url) = client_for(answer(json("400 Bad Request", body))).await;
    let err = returns(client.receive(&queue_url, &no_wait()))
        .await
        .expect_err("throttled");
    assert!(
        matches!(&err, Error::Throttled { message } if message == "Rate exceeded"),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn the_query_compatible_code_names_a_missing_queue() {
    let body = r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}"#;
    let headers = "x-amzn-query-error: AWS.SimpleQueueService.NonExistentQueue;Sender\r\n";
    let response = http(
        "400 Bad Request",
        "application/x-amz-json-1.0",
        headers,
        body,
    );
    let (client, queue_url) = client_for(answer(response)).await;
    let err = returns(client.receive(&queue_url, &no_wait()))
        .await
        .expect_err("no such queue");
    assert!(matches!(err, Error::QueueDoesNotExist { .. }), "{err:?}");
    assert!(!err.is_transient());
}

const PAGE: &str = "<!DOCTYPE html>\n<html>\n  <head><title>Welcome</title></head>\n  <body>\n    <p>Please sign in to use this network. This text goes on for a while, well past the part an error message should show.</p>\n  </body>\n</html>\n";

#[tokio::test]
async fn a_web_page_instead_of_an_answer_is_readable() {
    let (client, queue_url) = client_for(answer(http("200 OK", "text/html", "", PAGE))).await;
    let err = returns(client.receive(&queue_url, &no_wait()))
        .await
        .expect_err("a web page is no answer");
    let Error::Unreachable { detail, .. } = &err else {
        panic!("expected Unreachable, got {err:?}");
    };
    assert!(
        detail.contains(r#"HTTP 200, an HTML page titled "Welcome""#),
        "{detail}"
    );
    assert!(!detail.contains("well past"), "{detail}");
    assert!(err.to_string().len() < 250, "{err}");
}

#[tokio::test]
async fn a_bad_gateway_page_is_a_readable_server_error() {
    let page = "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>";
    let response = http("502 Bad Gateway", "text/html", "", page);
    let (client, _) = client_for(answer(response)).await;
    let err = returns(client.list_queue_urls(None))
        .await
        .expect_err("a bad gateway");
    let Error::ServiceUnavailable { message } = &err else {
        panic!("expected ServiceUnavailable, got {err:?}");
    };
    assert!(
        message.starts_with(r#"HTTP 502, an HTML page titled "502 Bad Gateway""#),
        "{message}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn an_answer_cut_off_mid_body_is_unreachable() {
    // Promises 200 bytes, sends a few, closes.
    let response = "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: 200\r\nconnection: close\r\n\r\n{\"Messages\":[{\"Bo".to_owned();
    let (client, queue_url) = client_for(answer(response)).await;
    let err = returns(client.receive(&queue_url, &no_wait()))
        .await
        .expect_err("half an answer");
    let Error::Unreachable { detail, .. } = &err else {
        panic!("expected Unreachable, got {err:?}");
    };
    assert!(!detail.is_empty());
    assert!(err.to_string().len() < 250, "{err}");
    assert!(err.is_transient());
}
