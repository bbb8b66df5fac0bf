//! Fixtures for tests against LocalStack on its default port: a check that
//! it answers (failing loudly with the command that starts it), uniquely
//! named queues, a client, and a way to empty a queue.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use fifo_sqs_client::{Client, ConnectOptions, ReceiveOptions, ReceivedMessage};

/// LocalStack's default endpoint.
pub const ENDPOINT: &str = "http://localhost:4566";

/// LocalStack's address, for a proxy in front of it.
pub fn localstack_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4566))
}

/// Panics with the start command unless LocalStack's port answers.
pub fn require_localstack() {
    if TcpStream::connect_timeout(&localstack_addr(), Duration::from_secs(2)).is_err() {
        panic!(
            "LocalStack is not reachable at {ENDPOINT}: start it with `cargo xtask localstack-up` \
             (or run every test with `cargo xtask test`, which starts it)"
        );
    }
}

/// A queue name no other test (or earlier run) uses.
pub fn unique_queue_name(test: &str) -> String {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    format!(
        "t-{test}-{}-{}.fifo",
        std::process::id(),
        stamp % 1_000_000_000
    )
}

/// The URL LocalStack gives queue `name` (its account 000000000000).
pub fn queue_url(name: &str) -> String {
    format!("{ENDPOINT}/000000000000/{name}")
}

/// A client for LocalStack; panics unless LocalStack answers.
pub async fn client() -> Client {
    require_localstack();
    fifo_sqs_client::connect(&ConnectOptions {
        queue_url: &queue_url("any.fifo"),
        endpoint_url: None,
        region: None,
    })
    .await
    .expect("a client for LocalStack")
}

/// Receives and deletes every message, in the order SQS hands them out.
pub async fn drain(client: &Client, queue_url: &str) -> Vec<ReceivedMessage> {
    let mut all = Vec::new();
    loop {
        let options = ReceiveOptions {
            max_messages: 10,
            wait_seconds: 1,
            visibility_timeout: Some(30),
            attempt_id: None,
        };
        let batch = client
            .receive(queue_url, &options)
            .await
            .expect("receive")
            .messages;
        if batch.is_empty() {
            return all;
        }
        let handles: Vec<&str> = batch.iter().map(|m| m.receipt_handle.as_str()).collect();
        let failed = client
            .delete_batch(queue_url, &handles)
            .await
            .expect("delete");
        assert!(failed.is_empty(), "delete failed: {failed:?}");
        all.extend(batch);
    }
}
