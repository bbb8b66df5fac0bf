//! The `fifo` binary run in a clean environment, in a directory of its
//! own, and what tests read back from it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use fifo_sqs_client::ReceivedMessage;

use crate::TempDir;
use crate::localstack::require_localstack;

/// The `fifo` binary cargo built for the running test: cargo builds a
/// package's binaries before its integration tests, into the directory that
/// holds the test's `deps/` (`env!("CARGO_BIN_EXE_fifo")` names the same
/// file, but only inside the fifo package's own tests).
pub fn fifo_binary() -> PathBuf {
    let test = std::env::current_exe().expect("the test binary's path");
    let binary = test
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lies in target/PROFILE/deps")
        .join("fifo");
    assert!(
        binary.is_file(),
        "no fifo binary at {}: run this test as one of the fifo package's",
        binary.display()
    );
    binary
}

/// `fifo ARGS` with none of fifo's settings in the environment, in `dir`.
pub fn fifo_in(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Output {
    fifo_command(dir, args, env)
        .output()
        .expect("the fifo binary runs")
}

/// The command `fifo ARGS` in `dir`, with only `env` of fifo's settings:
/// nothing else from the environment reaches it but `PATH` (for the
/// programs an exec handler runs) and `TMPDIR` (for the files of `--batch`),
/// so a variable in the developer's shell (`MAX_WORKERS`, `FIFO_RETRIES`,
/// `AWS_PROFILE`…) changes no test.
pub fn fifo_command(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(fifo_binary());
    command.env_clear();
    for kept in ["PATH", "TMPDIR"] {
        if let Some(value) = std::env::var_os(kept) {
            command.env(kept, value);
        }
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir.path());
    command
}

pub fn fifo(args: &[&str]) -> Output {
    fifo_in(&crate::temp_dir(), args, &[])
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

/// The `seq` field of a generated body.
pub fn seq(message: &ReceivedMessage) -> u64 {
    let body: serde_json::Value = serde_json::from_str(&message.body).expect("a JSON body");
    body["seq"].as_u64().expect("a seq field")
}

/// `command` run by `sh` after `ulimit ULIMIT` (`-n 100` sets the soft and
/// the hard limit, `-Sn 256` the soft one only).
pub fn under_ulimit(command: &Command, ulimit: &str) -> Command {
    let mut limited = Command::new("sh");
    limited
        .arg("-c")
        .arg(format!("ulimit {ulimit} && exec \"$@\""))
        .arg("sh")
        .arg(command.get_program())
        .args(command.get_args())
        .env_clear()
        .stdout(std::process::Stdio::null());
    for (name, value) in command.get_envs() {
        if let Some(value) = value {
            limited.env(name, value);
        }
    }
    if let Some(dir) = command.get_current_dir() {
        limited.current_dir(dir);
    }
    limited
}
