use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use fifo_handler::{
    BatchOutcome, CannotStart, Handler, HandlerError, Message, Outcome, Reject, RetryLater,
    StatusError,
};

use crate::{Output, trace};

/// The exit status that rejects the message (sysexits' `EX_DATAERR`):
/// it can never succeed and goes to the dead-letter queue now.
pub const EXIT_REJECT: i32 = 65;

/// The exit status that asks to run the message again later without
/// counting a failure (sysexits' `EX_TEMPFAIL`).
pub const EXIT_RETRY_LATER: i32 = 75;

/// How long output is still forwarded after the program exited: enough for
/// what it wrote just before, while a background child that inherited the
/// pipes cannot hold the message.
const DRAIN: Duration = Duration::from_millis(50);

/// A longer line is forwarded in pieces of this size, each prefixed and
/// ended by a newline, so memory stays bounded whatever the program writes.
const MAX_LINE: usize = 64 * 1024;

/// How often a process group that is being ended is looked at.
const POLL: Duration = Duration::from_millis(20);

/// Runs a program once per message, directly (never through a shell): the
/// body on stdin, the metadata in `FIFO_MESSAGE_ID`, `FIFO_GROUP_ID`,
/// `FIFO_RECEIVE_COUNT`, `FIFO_SEQUENCE_NUMBER` and `FIFO_ATTEMPT` (and the
/// sender's trace context in `TRACEPARENT`, when it sent one). Exit status 0 is success,
/// [`EXIT_REJECT`] (65) rejects the message, [`EXIT_RETRY_LATER`] (75)
/// asks to run it again later; any other is a failure to retry.
/// With batches, once per batch instead: see [`ExecHandler::handle_batch`].
///
/// The program runs in a process group of its own. Its output lines (any
/// bytes) are forwarded through [`Output`] prefixed with `[GROUP] `; when it
/// exits the outcome is decided, what it wrote is forwarded, and background
/// children it left are left alone. Dropping the handler's future before the
/// program exited (a timeout) sends SIGTERM to its whole group and, after
/// the grace period, SIGKILL to whatever is left of it.
#[derive(Debug, Clone)]
pub struct ExecHandler {
    program: PathBuf,
    args: Vec<OsString>,
    kill_grace: Duration,
    output: Output,
    /// How many process groups this handler and its clones are ending that
    /// have not yet gone nor been sent SIGKILL.
    ending: Arc<watch::Sender<usize>>,
    /// The process groups of programs running or being ended, for
    /// [`ExecHandler::kill_all`].
    groups: Arc<Mutex<HashSet<Pid>>>,
}

impl ExecHandler {
    /// Finds `program` now (a path if it contains a slash, otherwise a name
    /// looked up in `PATH`), so that a typo or a missing execute permission
    /// fails at start-up rather than on every message. `kill_grace` is how
    /// long a program that is ended early has between SIGTERM and SIGKILL.
    pub fn new(
        program: &Path,
        args: Vec<OsString>,
        kill_grace: Duration,
        output: Output,
    ) -> Result<ExecHandler, ProgramError> {
        Ok(ExecHandler {
            program: find_program(program)?,
            args,
            kill_grace,
            output,
            ending: Arc::new(watch::Sender::new(0)),
            groups: Arc::default(),
        })
    }

    /// Sends SIGKILL at once to the process group of every program still
    /// running or being ended: for a process about to exit without waiting
    /// for its handlers (a second Ctrl-C), so that none outlives it.
    /// Returns how many process groups it signalled.
    pub fn kill_all(&self) -> usize {
        let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        for group in groups.iter() {
            let _ = rustix::process::kill_process_group(*group, Signal::KILL);
        }
        groups.len()
    }

    /// Waits until every program that was ended early is gone, or was sent
    /// SIGKILL after its grace period. Call it before exiting, so that no
    /// program outlives fifo by more than the grace period.
    pub async fn wait_for_kills(&self) {
        let _ = self.ending.subscribe().wait_for(|&n| n == 0).await;
    }
}

/// Why [`ExecHandler::new`] cannot run a program.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    /// The program was given as an empty string.
    #[error("the program name is empty")]
    EmptyName,
    /// A program given as a path (its name contains a slash) that cannot run.
    #[error("program `{}` {why}", program.display())]
    Refused {
        /// The path as given.
        program: PathBuf,
        /// Why it cannot run.
        why: Refusal,
    },
    /// A name found in `PATH` only as files that cannot run; the first one
    /// found is reported.
    #[error("program `{}` found in PATH as {} {why}", program.display(), found.display())]
    RefusedInPath {
        /// The name as given.
        program: PathBuf,
        /// The first match: a directory of `PATH` joined with the name.
        found: PathBuf,
        /// Why `found` cannot run.
        why: Refusal,
    },
    /// No directory of `PATH` holds anything of that name.
    #[error("program `{}` not found in PATH", program.display())]
    NotInPath {
        /// The name as given.
        program: PathBuf,
    },
}

/// Why a file cannot be run.
#[derive(Debug)]
pub enum Refusal {
    /// Nothing exists at the path, or a part of it is not a directory.
    Missing,
    /// The path is a directory.
    Directory,
    /// Neither a regular file nor a directory: a device, a socket or a FIFO.
    NotAFile,
    /// The kernel refuses this user execute access to it (for root: no execute bit is set).
    NotExecutable,
    /// Its metadata cannot be read, for a reason other than it being missing.
    Unreadable(io::Error),
    /// A script whose `#!` line names an interpreter that cannot run.
    Interpreter(String, Box<Refusal>),
    /// A script whose `#!` line ends in a carriage return.
    WindowsLineEnding(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Missing => f.write_str("not found"),
            Refusal::Directory => f.write_str("is a directory"),
            Refusal::NotAFile => f.write_str("is not a regular file"),
            Refusal::NotExecutable => f.write_str("is not executable (no execute permission)"),
            Refusal::Unreadable(e) => write!(f, "cannot be examined: {e}"),
            Refusal::Interpreter(interpreter, why) => {
                write!(
                    f,
                    "names an interpreter that cannot run: `{interpreter}` {why}"
                )
            }
            Refusal::WindowsLineEnding(interpreter) => write!(
                f,
                "has a Windows line ending in its first line: the system would look for the interpreter `{}\\r`",
                interpreter
            ),
        }
    }
}

/// Finds the program the way `execvp` would.
fn find_program(program: &Path) -> Result<PathBuf, ProgramError> {
    if program.as_os_str().is_empty() {
        return Err(ProgramError::EmptyName);
    }
    if program.as_os_str().as_bytes().contains(&b'/') {
        return match runnable(program) {
            Ok(()) => Ok(program.to_owned()),
            Err(why) => Err(ProgramError::Refused {
                program: program.to_owned(),
                why,
            }),
        };
    }
    // Like a shell, skip a match that cannot run and look further; name it
    // if nothing better turns up.
    let mut refused = None;
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        match runnable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(Refusal::Missing) => {}
            Err(why) => {
                refused.get_or_insert((candidate, why));
            }
        }
    }
    Err(match refused {
        Some((found, why)) => ProgramError::RefusedInPath {
            program: program.to_owned(),
            found,
            why,
        },
        None => ProgramError::NotInPath {
            program: program.to_owned(),
        },
    })
}

/// A file the kernel can run: the program itself and, for a script, its
/// interpreter.
fn runnable(path: &Path) -> Result<(), Refusal> {
    runnable_file(path)?;
    check_interpreter(path)
}

fn runnable_file(path: &Path) -> Result<(), Refusal> {
    let metadata = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Refusal::Missing,
        _ => Refusal::Unreadable(e),
    })?;
    if metadata.is_dir() {
        return Err(Refusal::Directory);
    }
    if !metadata.is_file() {
        return Err(Refusal::NotAFile);
    }
    // The kernel's own answer for this user (root included), rather than
    // reading the mode bits.
    rustix::fs::access(path, rustix::fs::Access::EXEC_OK).map_err(|_| Refusal::NotExecutable)
}

/// A script starting with `#!` runs only if the interpreter it names does:
/// otherwise every message would fail with a bare "No such file or
/// directory".
fn check_interpreter(path: &Path) -> Result<(), Refusal> {
    use std::io::Read;
    // What the kernel reads of a `#!` line.
    let mut head = [0u8; 256];
    let Ok(read) = std::fs::File::open(path).and_then(|mut file| file.read(&mut head)) else {
        // Executable but not readable: a binary, not a script.
        return Ok(());
    };
    let Some(line) = head[..read].strip_prefix(b"#!") else {
        return Ok(());
    };
    let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let line = line.trim_start_matches([' ', '\t']);
    let interpreter = line.split([' ', '\t']).next().unwrap_or_default();
    if let Some(stripped) = interpreter.strip_suffix('\r') {
        return Err(Refusal::WindowsLineEnding(stripped.to_owned()));
    }
    // A relative interpreter is looked up from wherever the program runs.
    if !interpreter.starts_with('/') {
        return Ok(());
    }
    match runnable_file(Path::new(interpreter)) {
        Ok(()) => Ok(()),
        Err(why) => Err(Refusal::Interpreter(interpreter.to_owned(), Box::new(why))),
    }
}

impl Handler for ExecHandler {
    async fn handle(&self, message: &Message) -> Outcome {
        let mut env = vec![
            ("FIFO_MESSAGE_ID", message.id.clone()),
            ("FIFO_GROUP_ID", message.group_id.clone()),
            ("FIFO_RECEIVE_COUNT", message.receive_count.to_string()),
            ("FIFO_SEQUENCE_NUMBER", message.sequence_number.clone()),
            ("FIFO_ATTEMPT", message.attempt.to_string()),
        ];
        if let Some(parent) = trace::traceparent(message) {
            env.push(("TRACEPARENT", parent));
        }
        let (status, last_line) = self
            .run(&env, message.body.as_bytes(), &message.group_id)
            .await?;
        if status.success() {
            Ok(())
        } else {
            Err(self.failure(status, self.exited(status, &last_line)))
        }
    }

    /// The batch as a JSON array on stdin (see `batch_json`). Exit status
    /// 0: all succeeded. Otherwise the program may have written to the file
    /// named by `FIFO_BATCH_DONE` how many messages, from the first,
    /// succeeded; nothing there means none.
    async fn handle_batch(&self, messages: &[&Message]) -> BatchOutcome {
        let Some(first) = messages.first() else {
            return BatchOutcome::all(0);
        };
        let done = match tempfile::NamedTempFile::with_prefix("fifo-batch-") {
            Ok(done) => done,
            Err(e) => {
                return BatchOutcome::failed_at(
                    0,
                    CannotStart::because(format!("cannot create the batch result file: {e}")),
                );
            }
        };
        let mut env = vec![
            ("FIFO_GROUP_ID", first.group_id.clone()),
            ("FIFO_BATCH_SIZE", messages.len().to_string()),
            ("FIFO_BATCH_DONE", done.path().display().to_string()),
        ];
        if let Some(parent) = trace::traceparent(first) {
            env.push(("TRACEPARENT", parent));
        }
        let (status, last_line) = match self.run(&env, &batch_json(messages), &first.group_id).await
        {
            Ok(ran) => ran,
            Err(e) => return BatchOutcome::failed_at(0, e),
        };
        if status.success() {
            return BatchOutcome::all(messages.len());
        }
        let written = std::fs::read_to_string(done.path()).unwrap_or_default();
        let failed = self.exited(status, &last_line);
        let size = messages.len();
        let (succeeded, note) = match written.trim() {
            "" => (0, String::new()),
            text => match text.parse::<usize>() {
                Ok(count) if count < size => (count, String::new()),
                // More than the batch, all of it though the exit says one
                // failed, or not a count: the program contradicts itself, so
                // nothing counts as done and the whole batch runs again.
                _ => {
                    let shown: String = text.chars().take(40).collect();
                    let ellipsis = if shown.len() < text.len() { "…" } else { "" };
                    let note = format!(
                        " but wrote {shown:?}{ellipsis} to $FIFO_BATCH_DONE, which is not a count below the batch's {size}"
                    );
                    tracing::warn!(
                        "{failed}{note}: a contradiction, so none of the batch counts as done and all of it runs again"
                    );
                    (0, note)
                }
            },
        };
        let error = format!("{failed}{note}; {succeeded} of the batch's {size} messages succeeded");
        BatchOutcome::failed_at(succeeded, self.failure(status, error))
    }
}

/// A batch as the JSON array an exec handler reads: one object per
/// message, in order, with `id`, `group_id`, `body`, `receive_count`,
/// `sequence_number`, `sent_timestamp_ms` and `attributes`.
fn batch_json(messages: &[&Message]) -> Vec<u8> {
    let array: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id,
                "group_id": m.group_id,
                "body": m.body,
                "receive_count": m.receive_count,
                "sequence_number": m.sequence_number,
                "sent_timestamp_ms": m.sent_timestamp_ms,
                "attributes": m.attributes,
            })
        })
        .collect();
    serde_json::to_vec(&array).expect("JSON values serialize")
}

impl ExecHandler {
    /// How the program ended, with the last line it wrote to stderr (what
    /// a program usually says when it fails).
    fn exited(&self, status: ExitStatus, last_line: &str) -> String {
        let mut text = format!("{} exited with {status}", self.program.display());
        if !last_line.is_empty() {
            text += &format!(" ({last_line})");
        }
        text
    }

    /// The failure an exit status means: [`EXIT_REJECT`] rejects the
    /// message, [`EXIT_RETRY_LATER`] asks to run it again later, any other
    /// is a failure to retry.
    fn failure(&self, status: ExitStatus, error: String) -> HandlerError {
        let error = StatusError::new(status.to_string(), error);
        match status.code() {
            Some(EXIT_REJECT) => Reject::because(error).into(),
            Some(EXIT_RETRY_LATER) => RetryLater::because(error).into(),
            _ => error.into(),
        }
    }

    /// Runs the program once with `env`, `input` on stdin, and its output
    /// forwarded prefixed with `[group] `; returns how it exited and the
    /// last line it wrote to stderr.
    async fn run(
        &self,
        env: &[(&str, String)],
        input: &[u8],
        group: &str,
    ) -> Result<(ExitStatus, String), HandlerError> {
        let mut command = Command::new(&self.program);
        crate::orphans::end_with_parent(&mut command);
        let mut child = command
            .args(&self.args)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C in the terminal reaches fifo,
            // which lets running handlers finish, not the handler itself;
            // and ending the program early reaches its children too.
            .process_group(0)
            .spawn()
            // The system refused (no descriptor, memory or process left, the
            // program gone): nothing the message did.
            .map_err(|e| {
                CannotStart::because(format!("cannot run {}: {e}", self.program.display()))
            })?;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        // Second handles on the program's output pipes: if the program is
        // ended early, they keep the pipes open through its grace period, so
        // that a line it writes while cleaning up does not kill it with
        // SIGPIPE.
        let pipes = [
            stdout
                .as_ref()
                .and_then(|pipe| pipe.as_fd().try_clone_to_owned().ok()),
            stderr
                .as_ref()
                .and_then(|pipe| pipe.as_fd().try_clone_to_owned().ok()),
        ];
        let registered = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw)
            .map(|group| Registered::new(&self.groups, group));
        let mut running = Running {
            child: Some(child),
            grace: self.kill_grace,
            ending: self.ending.clone(),
            pipes,
            registered,
        };

        let (exited, exit_seen) = watch::channel(false);
        let run = async {
            let feed = async {
                if let Some(mut stdin) = stdin {
                    // A program that does not read its input is fine.
                    let _ = stdin.write_all(input).await;
                }
            };
            tokio::pin!(feed);
            let mut fed = false;
            // The exit decides, even while the body is still being written
            // (a background child may hold stdin open without reading it).
            let status = loop {
                tokio::select! {
                    () = &mut feed, if !fed => fed = true,
                    status = running.wait() => break status,
                }
            };
            exited.send_replace(true);
            status
        };
        let prefix = format!("[{group}] ");
        let (status, _, last_line) = tokio::join!(
            run,
            forward(stdout, &prefix, &self.output, To::Stdout, exit_seen.clone()),
            forward(stderr, &prefix, &self.output, To::Stderr, exit_seen),
        );
        let status =
            status.map_err(|e| format!("cannot wait for {}: {e}", self.program.display()))?;
        Ok((status, last_line))
    }
}

/// The program while it runs. Dropped before the program exited (the
/// handler's future was dropped: a timeout, a lost lease, the shutdown
/// deadline), it ends the program's whole process group.
struct Running {
    /// `None` once the program has exited and been reaped.
    child: Option<Child>,
    grace: Duration,
    ending: Arc<watch::Sender<usize>>,
    /// Held open until the group is gone (see `handle`).
    pipes: [Option<OwnedFd>; 2],
    /// Listed for `kill_all` until it exited or its group was ended.
    registered: Option<Registered>,
}

/// A process group listed in `ExecHandler::groups`, unlisted when dropped.
struct Registered {
    groups: Arc<Mutex<HashSet<Pid>>>,
    group: Pid,
}

impl Registered {
    fn new(groups: &Arc<Mutex<HashSet<Pid>>>, group: Pid) -> Registered {
        groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(group);
        crate::orphans::Guard::get().watch(group);
        Registered {
            groups: groups.clone(),
            group,
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.group);
        crate::orphans::Guard::get().forget(self.group);
    }
}

impl Running {
    /// Waits for the program to exit; cancel-safe.
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        let Some(child) = &mut self.child else {
            return Err(io::Error::other("the program was waited for already"));
        };
        let status = child.wait().await?;
        self.child = None;
        // Reaped: its id may be given to another process.
        self.registered = None;
        Ok(status)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        // The program leads its group, so its pid names the group; it is not
        // reaped yet, so the id cannot have been given to anyone else.
        let Some(group) = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw)
        else {
            return;
        };
        // Every process of the group at once: a shell's children get the
        // signal even when the shell would not pass it on.
        let _ = rustix::process::kill_process_group(group, Signal::TERM);
        // Counted before the thread starts, so `wait_for_kills` cannot miss
        // it; the guard uncounts it however the thread ends.
        self.ending.send_modify(|n| *n += 1);
        let counted = Counted(self.ending.clone());
        let grace = self.grace;
        let pipes = std::mem::take(&mut self.pipes);
        let registered = self.registered.take();
        // Drop cannot wait: the grace period passes on a thread of its own.
        let started = std::thread::Builder::new()
            .name("fifo-end-group".to_owned())
            .spawn(move || {
                let _counted = counted;
                end_group(child, group, grace);
                drop(pipes);
                drop(registered);
            });
        if started.is_err() {
            // No thread to wait on: no grace period then.
            let _ = rustix::process::kill_process_group(group, Signal::KILL);
        }
    }
}

/// A process group being ended, uncounted when dropped.
struct Counted(Arc<watch::Sender<usize>>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// After SIGTERM: waits up to `grace` for the group to be gone, then sends
/// SIGKILL to what is left of it.
fn end_group(mut leader: Child, group: Pid, grace: Duration) {
    let deadline = std::time::Instant::now() + grace;
    loop {
        // Reaped, the program leaves no zombie and no longer counts.
        let _ = leader.try_wait();
        if !group_alive(group) {
            return;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(POLL.min(left));
    }
    let _ = rustix::process::kill_process_group(group, Signal::KILL);
    // SIGKILL takes effect almost at once, but a process stuck in the
    // kernel may take longer: wait a second at most. Reaping the program
    // here leaves tokio no orphan; if it is not dead by then, dropping the
    // child hands it to tokio, which reaps it in the background.
    for _ in 0..50 {
        let _ = leader.try_wait();
        if !group_alive(group) {
            return;
        }
        std::thread::sleep(POLL);
    }
}

/// Whether a process of `group` is still running. Zombies do not count: a
/// child orphaned by the program's exit belongs to init, which (in a
/// container, say) may never reap it.
fn group_alive(group: Pid) -> bool {
    rustix::process::test_kill_process_group(group).is_ok() && running_member(group).unwrap_or(true)
}

/// Whether /proc lists a running (not zombie) process of `group`; `None`
/// where /proc is missing or belongs to another pid namespace.
fn running_member(group: Pid) -> Option<bool> {
    let ours = std::fs::read_link("/proc/self").ok()?;
    if ours.as_os_str().as_bytes() != std::process::id().to_string().as_bytes() {
        return None;
    }
    let group = group.as_raw_pid().to_string();
    let processes = std::fs::read_dir("/proc").ok()?;
    Some(processes.flatten().any(|entry| {
        let name = entry.file_name();
        if !name.as_bytes().iter().all(u8::is_ascii_digit) {
            return false;
        }
        // A process may end while we look.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // `pid (command) state ppid pgrp …`; the command may hold anything,
        // so the fields are counted from its last `)`.
        let Some((_, fields)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = fields.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1);
        pgrp == Some(group.as_str()) && !matches!(state, Some("Z" | "X") | None)
    }))
}

/// Which of our streams a pipe of the program is forwarded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    Stdout,
    Stderr,
}

/// Forwards the program's output, line by line with the group's prefix,
/// until the pipe ends or, once the program has exited, until what it wrote
/// is drained. Reads on whatever the bytes are, so the program never gets
/// SIGPIPE from us while it runs.
async fn forward(
    pipe: Option<impl AsyncRead + Unpin>,
    prefix: &str,
    output: &Output,
    to: To,
    mut exited: watch::Receiver<bool>,
) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let last_line = std::sync::Mutex::new(String::new());
    let write = |bytes: Vec<u8>| {
        // Only stderr's last line is part of a failure's text.
        if to == To::Stderr {
            remember_last_line(
                &bytes,
                prefix.len(),
                &mut last_line.lock().expect("not poisoned"),
            );
        }
        async move {
            match to {
                To::Stdout => output.stdout(bytes).await,
                To::Stderr if output.json_stderr() => {
                    output.stderr(json_lines(&bytes, prefix)).await;
                }
                To::Stderr => output.stderr(bytes).await,
            }
        }
    };
    let mut lines = Lines::new(prefix.as_bytes());
    let mut buf = vec![0; 16 * 1024];
    let program_exited = loop {
        let read = tokio::select! {
            // First: a program that writes without pause must not keep us
            // reading after it exited.
            biased;
            _ = exited.changed() => break true,
            read = pipe.read(&mut buf) => read,
        };
        match read {
            Ok(0) | Err(_) => break false,
            Ok(n) => write(lines.push(&buf[..n])).await,
        }
    };
    if program_exited {
        // The program exited; a background child may still hold the pipe
        // open, so take what is there and stop.
        let deadline = tokio::time::Instant::now() + DRAIN;
        while let Ok(Ok(n @ 1..)) = tokio::time::timeout_at(deadline, pipe.read(&mut buf)).await {
            write(lines.push(&buf[..n])).await;
        }
    }
    write(lines.finish()).await;
    last_line.into_inner().unwrap_or_default()
}

/// Prefixed lines (`[group] text`, as forwarded) as JSON objects, one per
/// line: for JSON logs.
fn json_lines(bytes: &[u8], prefix: &str) -> Vec<u8> {
    let group = prefix
        .strip_prefix('[')
        .and_then(|p| p.strip_suffix("] "))
        .unwrap_or(prefix);
    let timestamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut out = Vec::new();
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let text = line.strip_prefix(prefix.as_bytes()).unwrap_or(line);
        let object = serde_json::json!({
            "timestamp": timestamp,
            "level": "INFO",
            "target": "fifo::handler",
            "group": group,
            "message": String::from_utf8_lossy(text),
        });
        out.extend_from_slice(object.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// The longest last line of stderr kept for the error.
const LAST_LINE: usize = 300;

/// Keeps in `last` the last non-empty line of `bytes` (prefixed lines, as
/// forwarded), without its prefix, cut to [`LAST_LINE`] bytes.
fn remember_last_line(bytes: &[u8], prefix: usize, last: &mut String) {
    let found = bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| line.get(prefix..))
        .rfind(|line| !line.iter().all(u8::is_ascii_whitespace));
    if let Some(line) = found {
        let line = String::from_utf8_lossy(line);
        let mut end = line.trim_end().len().min(LAST_LINE);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        *last = line[..end].to_owned();
    }
}

/// Cuts a program's output into prefixed lines.
struct Lines<'a> {
    prefix: &'a [u8],
    /// The start of a line whose end has not been read yet.
    partial: Vec<u8>,
}

impl<'a> Lines<'a> {
    fn new(prefix: &'a [u8]) -> Lines<'a> {
        Lines {
            prefix,
            partial: Vec::new(),
        }
    }

    /// Takes the next bytes read; returns the lines they complete, ready to
    /// write in one piece (so other groups' lines cannot cut into them).
    fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut ready = Vec::new();
        for mut piece in bytes.split_inclusive(|&b| b == b'\n') {
            // Cut what does not fit in a line of MAX_LINE bytes (newline
            // not counted).
            loop {
                let room = MAX_LINE - self.partial.len();
                let content = piece.len() - usize::from(piece.ends_with(b"\n"));
                if content <= room {
                    break;
                }
                let (head, tail) = piece.split_at(room);
                self.partial.extend_from_slice(head);
                self.end_line(&mut ready);
                piece = tail;
            }
            self.partial.extend_from_slice(piece);
            if self.partial.ends_with(b"\n") {
                self.end_line(&mut ready);
            }
        }
        ready
    }

    /// The last line when it has no newline, with one added.
    fn finish(&mut self) -> Vec<u8> {
        let mut ready = Vec::new();
        if !self.partial.is_empty() {
            self.end_line(&mut ready);
        }
        ready
    }

    fn end_line(&mut self, ready: &mut Vec<u8>) {
        ready.extend_from_slice(self.prefix);
        ready.append(&mut self.partial);
        if !ready.ends_with(b"\n") {
            ready.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::testing::Capture;
    use fifo_handler::Verdict;

    fn message() -> Message {
        Message {
            id: "m-1".to_owned(),
            group_id: "g".to_owned(),
            body: "hello".to_owned(),
            receive_count: 2,
            sequence_number: "42".to_owned(),
            attempt: 1,
            ..Message::default()
        }
    }

    /// A handler running `sh -c script`, and what it writes to stdout and
    /// stderr.
    fn sh_with(script: &str, kill_grace: Duration) -> (ExecHandler, Capture, Capture) {
        let (out, err) = (Capture::default(), Capture::default());
        let handler = ExecHandler::new(
            Path::new("sh"),
            vec!["-c".into(), script.into()],
            kill_grace,
            Output::new(out.clone(), err.clone()),
        )
        .unwrap();
        (handler, out, err)
    }

    fn sh(script: &str) -> ExecHandler {
        sh_with(script, Duration::from_secs(5)).0
    }

    /// Whether `pid` runs: exists and is not a zombie.
    fn running(pid: i32) -> bool {
        let pid = Pid::from_raw(pid).unwrap();
        if rustix::process::test_kill_process(pid).is_err() {
            return false;
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_pid()));
        // Without /proc, an existing process counts as running.
        let Ok(stat) = stat else { return true };
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        !state.is_some_and(|state| state.starts_with('Z'))
    }

    /// Runs `script`, which must print `pids LEADER CHILD` and then wait;
    /// drops the handler's future once the line is out, as a timeout does,
    /// and returns the two pids and how long the group took to end.
    async fn end_early(script: &str, kill_grace: Duration) -> (i32, i32, Duration) {
        let (handler, out, _) = sh_with(script, kill_grace);
        let message = message();
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::select! {
                outcome = handler.handle(&message) => Some(outcome),
                () = out.wait_for("\n") => None,
            }
        });
        assert!(
            matches!(outcome.await, Ok(None)),
            "the program ended by itself"
        );
        let text = out.text();
        let pids: Vec<i32> = text
            .trim_end()
            .strip_prefix("[g] pids ")
            .unwrap_or_else(|| panic!("unexpected output {text:?}"))
            .split(' ')
            .map(|pid| pid.parse().unwrap())
            .collect();
        let ended = Instant::now();
        tokio::time::timeout(Duration::from_secs(30), handler.wait_for_kills())
            .await
            .expect("the group was ended");
        (pids[0], pids[1], ended.elapsed())
    }

    #[tokio::test]
    async fn passes_body_and_metadata_and_reads_the_exit_status() {
        let check = r#"test "$(cat)" = hello && test "$FIFO_MESSAGE_ID" = m-1 && test "$FIFO_GROUP_ID" = g \
            && test "$FIFO_RECEIVE_COUNT" = 2 && test "$FIFO_SEQUENCE_NUMBER" = 42 \
            && test "$FIFO_ATTEMPT" = 1 && test -z "${TRACEPARENT+set}""#;
        assert!(sh(check).handle(&message()).await.is_ok());
        let mut traced = message();
        traced
            .attributes
            .insert("traceparent".to_owned(), "00-ab-cd-01".to_owned());
        let check = r#"test "$TRACEPARENT" = 00-ab-cd-01"#;
        assert!(sh(check).handle(&traced).await.is_ok());
        let err = sh("exit 3").handle(&message()).await.unwrap_err();
        assert!(err.to_string().contains("exit status: 3"), "{err}");
        assert_eq!(Verdict::of(&err), Verdict::Retry);
    }

    #[tokio::test]
    async fn exit_65_rejects_and_75_asks_to_retry_later_alone_or_in_a_batch() {
        let rejected = sh("echo working; echo 'no customer 42' >&2; exit 65")
            .handle(&message())
            .await
            .unwrap_err();
        assert_eq!(Verdict::of(&rejected), Verdict::Reject);
        assert!(
            rejected
                .to_string()
                .ends_with("exited with exit status: 65 (no customer 42)"),
            "{rejected}"
        );
        let later = sh("exit 75").handle(&message()).await.unwrap_err();
        assert_eq!(Verdict::of(&later), Verdict::RetryLater(None));

        let (first, second) = (message(), message());
        let batch = [&first, &second];
        let outcome = sh(r#"echo 1 > "$FIFO_BATCH_DONE"; exit 65"#)
            .handle_batch(&batch)
            .await;
        assert_eq!(outcome.succeeded, 1);
        assert_eq!(Verdict::of(&outcome.error.unwrap()), Verdict::Reject);
    }

    #[tokio::test]
    async fn a_batch_is_a_json_array_on_stdin_and_all_succeed_on_exit_0() {
        let second = Message {
            id: "m-2".to_owned(),
            body: "world \"quoted\"\n".to_owned(),
            ..message()
        };
        let (handler, out, _) = sh_with(
            r#"test "$FIFO_GROUP_ID" = g && test "$FIFO_BATCH_SIZE" = 2 && cat"#,
            Duration::ZERO,
        );
        let outcome = handler.handle_batch(&[&message(), &second]).await;
        assert_eq!(outcome.succeeded, 2, "{:?}", outcome.error);
        assert!(outcome.error.is_none());
        handler.output.clone().finish().await;
        let printed = out.text();
        let json: serde_json::Value =
            serde_json::from_str(printed.strip_prefix("[g] ").unwrap()).unwrap();
        assert_eq!(json[0]["id"], "m-1");
        assert_eq!(json[0]["body"], "hello");
        assert_eq!(json[0]["receive_count"], 2);
        assert_eq!(json[1]["body"], "world \"quoted\"\n");
        assert_eq!(json[1]["sequence_number"], "42");
    }

    #[tokio::test]
    async fn a_failed_batch_reports_what_the_program_wrote_to_fifo_batch_done() {
        let messages = [&message(), &message(), &message()];
        let partial = sh(r#"echo 2 > "$FIFO_BATCH_DONE"; exit 1"#);
        let outcome = partial.handle_batch(&messages).await;
        assert_eq!(outcome.succeeded, 2);
        let error = outcome.error.unwrap().to_string();
        assert!(error.contains("2 of the batch's 3"), "{error}");

        let silent = sh("exit 1").handle_batch(&messages).await;
        assert_eq!(silent.succeeded, 0, "nothing written: none succeeded");
        assert!(silent.error.is_some());

        // A count the exit contradicts, or no count at all: none done.
        for written in ["9", "3", "100", "two", "-1", "1.5"] {
            let program = format!(r#"echo {written} > "$FIFO_BATCH_DONE"; exit 1"#);
            let outcome = sh(&program).handle_batch(&messages).await;
            assert_eq!(outcome.succeeded, 0, "{written}: none counts as done");
            let error = outcome.error.unwrap().to_string();
            assert!(
                error.contains(&format!("wrote \"{written}\" to $FIFO_BATCH_DONE")),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn forwards_both_streams_prefixed_with_the_group() {
        let (handler, out, err) = sh_with("echo one; echo two >&2; printf three", Duration::ZERO);
        handler.handle(&message()).await.unwrap();
        handler.output.clone().finish().await;
        assert_eq!(out.text(), "[g] one\n[g] three\n");
        assert_eq!(err.text(), "[g] two\n");
    }

    #[tokio::test]
    async fn non_utf8_output_is_forwarded_and_the_program_runs_on() {
        // Output after the invalid byte would meet a closed pipe, and the
        // program SIGPIPE, if forwarding stopped there.
        let script =
            r"printf 'a\377b\n'; i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done";
        let (handler, out, _) = sh_with(script, Duration::ZERO);
        handler.handle(&message()).await.unwrap();
        handler.output.clone().finish().await;
        let bytes = out.bytes();
        assert!(bytes.starts_with(b"[g] a\xffb\n[g] line 0\n"), "{bytes:?}");
        assert!(bytes.ends_with(b"[g] line 1999\n"));
    }

    #[test]
    fn long_lines_are_cut_and_a_last_line_gets_a_newline() {
        let mut lines = Lines::new(b"[g] ");
        assert_eq!(lines.push(b"a\nb"), b"[g] a\n");
        assert_eq!(lines.push(b"c\n\nd"), b"[g] bc\n[g] \n");
        assert_eq!(lines.finish(), b"[g] d\n");
        let long = lines.push(&vec![b'x'; 2 * MAX_LINE + 1]);
        assert_eq!(long.len(), 2 * (4 + MAX_LINE + 1));
        assert_eq!(lines.finish(), b"[g] x\n");
        let mut just_fits = vec![b'y'; MAX_LINE];
        just_fits.push(b'\n');
        assert_eq!(lines.push(&just_fits).len(), 4 + MAX_LINE + 1);
        assert_eq!(lines.finish(), b"");
    }

    #[tokio::test]
    async fn a_background_child_holding_the_pipes_does_not_hold_the_message() {
        let (handler, out, _) = sh_with("sleep 100 & echo started $!", Duration::from_secs(5));
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), handler.handle(&message()))
            .await
            .expect("done when the program exits")
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        handler.output.clone().finish().await;
        let text = out.text();
        let pid: i32 = text
            .trim_end()
            .strip_prefix("[g] started ")
            .unwrap_or_else(|| panic!("unexpected output {text:?}"))
            .parse()
            .unwrap();
        // After a normal exit, background children are left alone.
        assert!(running(pid), "the background child was killed");
        let _ = rustix::process::kill_process(Pid::from_raw(pid).unwrap(), Signal::KILL);
    }

    #[tokio::test]
    async fn ending_early_terminates_the_whole_group() {
        // The grace period is long: only SIGTERM to every process of the
        // group ends this in time.
        let (leader, child, took) =
            end_early("sleep 100 & echo pids $$ $!; wait", Duration::from_secs(60)).await;
        assert!(took < Duration::from_secs(10), "took {took:?}");
        assert!(!running(child), "the background child survived");
        // Reaped, not even a zombie.
        let leader = Pid::from_raw(leader).unwrap();
        assert!(rustix::process::test_kill_process(leader).is_err());
    }

    #[tokio::test]
    async fn a_group_ignoring_sigterm_is_killed_after_the_grace_period() {
        let grace = Duration::from_millis(300);
        let (leader, child, took) =
            end_early("trap '' TERM; sleep 100 & echo pids $$ $!; wait", grace).await;
        assert!(took >= grace, "took {took:?}");
        assert!(!running(child), "the background child survived");
        let leader = Pid::from_raw(leader).unwrap();
        assert!(rustix::process::test_kill_process(leader).is_err());
    }

    #[tokio::test]
    async fn a_program_ended_early_may_write_while_it_cleans_up() {
        let dir = std::env::temp_dir().join(format!("fifo-cleanup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let done = dir.join("cleaned");
        // On SIGTERM the program writes to its stderr, then records that
        // its cleanup ran: a closed pipe would kill it at the first write.
        let script = format!(
            "trap 'echo cleaning up >&2; echo done > {}; exit 143' TERM; echo go; sleep 100 & wait",
            done.display()
        );
        let (handler, out, _) = sh_with(&script, Duration::from_secs(10));
        let message = message();
        tokio::select! {
            _ = handler.handle(&message) => panic!("the program ended by itself"),
            () = out.wait_for("go\n") => {}
        }
        tokio::time::timeout(Duration::from_secs(20), handler.wait_for_kills())
            .await
            .expect("the program ended");
        let cleaned = std::fs::read_to_string(&done).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(cleaned, "done\n", "the cleanup did not run to its end");
    }

    #[tokio::test]
    async fn a_group_ended_early_is_waited_for_by_every_clone() {
        let (handler, out, _) = sh_with("echo go; exec sleep 100", Duration::from_secs(60));
        let clone = handler.clone();
        // Nothing to wait for yet.
        tokio::time::timeout(Duration::from_secs(1), clone.wait_for_kills())
            .await
            .unwrap();
        let message = message();
        tokio::select! {
            _ = handler.handle(&message) => panic!("the program ended by itself"),
            () = out.wait_for("go\n") => {}
        }
        tokio::time::timeout(Duration::from_secs(10), clone.wait_for_kills())
            .await
            .expect("the program was terminated");
    }

    #[test]
    fn a_missing_program_is_found_out_at_once() {
        let output = Output::new(io::sink(), io::sink());
        let err = ExecHandler::new(
            Path::new("no-such-program-here"),
            vec![],
            Duration::ZERO,
            output.clone(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not found"), "{err}");
        let err = ExecHandler::new(Path::new("./no/such/file"), vec![], Duration::ZERO, output)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found"), "{err}");
    }

    #[test]
    fn a_directory_or_a_file_without_execute_permission_is_refused() {
        use std::os::unix::fs::PermissionsExt;

        let dir = std::env::temp_dir().join(format!("fifo-handler-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("script.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let output = Output::new(io::sink(), io::sink());
        let new = |program: &Path| {
            ExecHandler::new(program, vec![], Duration::ZERO, output.clone()).map(|_| ())
        };

        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        let not_executable = new(&script);
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let executable = new(&script);
        let directory = new(&dir);
        std::fs::remove_dir_all(&dir).unwrap();

        let err = not_executable.unwrap_err().to_string();
        assert!(err.contains("is not executable"), "{err}");
        executable.unwrap();
        let err = directory.unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
    }

    #[test]
    fn a_script_whose_interpreter_cannot_run_is_refused() {
        use std::os::unix::fs::PermissionsExt;

        let dir = std::env::temp_dir().join(format!("fifo-shebang-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let output = Output::new(io::sink(), io::sink());
        let script = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            ExecHandler::new(&path, vec![], Duration::ZERO, output.clone()).map(|_| ())
        };
        let missing = script("missing.sh", "#!/bin/nonexistent-shell\necho hi\n");
        let windows = script("windows.sh", "#!/bin/sh\r\necho hi\r\n");
        let with_args = script("args.sh", "#! /bin/sh -e\necho hi\n");
        let env = script("env.sh", "#!/usr/bin/env sh\necho hi\n");
        let plain = script("plain.sh", "echo hi\n");
        std::fs::remove_dir_all(&dir).unwrap();

        let err = missing.unwrap_err().to_string();
        assert!(
            err.ends_with(
                "names an interpreter that cannot run: `/bin/nonexistent-shell` not found"
            ),
            "{err}"
        );
        let err = windows.unwrap_err().to_string();
        assert!(err.contains("has a Windows line ending"), "{err}");
        with_args.unwrap();
        env.unwrap();
        plain.unwrap();
    }
}
