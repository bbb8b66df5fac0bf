//! Fixtures for tests against the real emulator: a check that LocalStack
//! answers (failing loudly with the command that starts it), uniquely named
//! queues, and a way to run the `fifo` binary in a clean environment.
#![allow(dead_code, unreachable_pub)]

pub mod records;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use fifo_sqs_client::{Client, ConnectOptions, ReceiveOptions, ReceivedMessage};

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

pub fn queue_url(name: &str) -> String {
    format!("{ENDPOINT}/000000000000/{name}")
}

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

/// A working directory of its own, so no `fifo.toml` of ours is read.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "fifo-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `fifo ARGS` with none of fifo's settings in the environment, in `dir`.
pub fn fifo_in(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Output {
    fifo_command(dir, args, env)
        .output()
        .expect("the fifo binary runs")
}

/// The command `fifo ARGS` in `dir`, with only `env` of fifo's settings.
pub fn fifo_command(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fifo"));
    for name in [
        "SQS_QUEUE_URL",
        "ENDPOINT_URL",
        "MAX_WORKERS",
        "VISIBILITY_TIMEOUT",
        "WAIT_TIME_SECONDS",
        "MAX_MESSAGES",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "RUST_LOG",
    ] {
        command.env_remove(name);
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .current_dir(&dir.0);
    command
}

pub fn fifo(args: &[&str]) -> Output {
    fifo_in(&TempDir::new(), args, &[])
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "fifo failed ({}):\n{}",
        output.status,
        stderr(&output)
    );
    stdout(&output)
}

/// Creates a queue with `fifo create-queue` and returns its URL.
pub fn create_queue(name: &str, extra: &[&str]) -> String {
    require_localstack();
    let mut args = vec!["create-queue", name];
    args.extend_from_slice(extra);
    ok(fifo(&args)).trim().to_owned()
}

/// `fifo send ARGS` to the queue at `url`, asserting it succeeded.
pub fn send(url: &str, args: &[&str]) {
    let mut all = vec!["--queue-url", url, "send"];
    all.extend_from_slice(args);
    ok(fifo(&all));
}

/// Messages in a queue, as `fifo list-queues` counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

/// The counts of every queue whose name starts with `prefix`, by name.
pub fn queue_counts(prefix: &str) -> BTreeMap<String, Counts> {
    let text = ok(fifo(&["list-queues", "--json", "--prefix", prefix]));
    let queues: Vec<serde_json::Value> =
        serde_json::from_str(&text).expect("JSON from list-queues");
    queues
        .iter()
        .map(|q| {
            let count = |key: &str| q[key].as_u64().expect("a count");
            let counts = Counts {
                visible: count("visible"),
                in_flight: count("in_flight"),
                delayed: count("delayed"),
            };
            (q["name"].as_str().expect("a name").to_owned(), counts)
        })
        .collect()
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
        for chunk in batch.chunks(10) {
            let handles: Vec<&str> = chunk.iter().map(|m| m.receipt_handle.as_str()).collect();
            let failed = client
                .delete_batch(queue_url, &handles)
                .await
                .expect("delete");
            assert!(failed.is_empty(), "delete failed: {failed:?}");
        }
        all.extend(batch);
    }
}

/// The `seq` field of a generated body.
pub fn seq(message: &ReceivedMessage) -> u64 {
    let body: serde_json::Value = serde_json::from_str(&message.body).expect("a JSON body");
    body["seq"].as_u64().expect("a seq field")
}
