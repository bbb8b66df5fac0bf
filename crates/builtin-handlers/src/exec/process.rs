//! The program's process: started in a process group of its own, fed its
//! input and waited for; dropped before it exited, its whole group is ended
//! (SIGTERM, then SIGKILL after the grace period).

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fifo_handler::{CannotStart, HandlerError};
use rustix::process::{Pid, Signal};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::ExecHandler;
use super::forward::{To, forward, keep};

/// How often a process group that is being ended is looked at.
const POLL: Duration = Duration::from_millis(20);

impl ExecHandler {
    /// Runs the program once with `env`, `input` on stdin, and its output
    /// forwarded prefixed with `[group] ` (its stdout kept instead, up to
    /// `keep_stdout` bytes, when that is given); returns how it exited.
    pub(super) async fn run(
        &self,
        env: &[(&str, String)],
        input: &[u8],
        group: &str,
        keep_stdout: Option<usize>,
    ) -> Result<Ran, HandlerError> {
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
        let stdout_seen = exit_seen.clone();
        let stdout = async {
            match keep_stdout {
                Some(limit) => keep(stdout, limit, stdout_seen).await,
                None => {
                    forward(stdout, &prefix, &self.output, To::Stdout, stdout_seen).await;
                    (Vec::new(), false)
                }
            }
        };
        let (status, (stdout, more_stdout), last_line) = tokio::join!(
            run,
            stdout,
            forward(stderr, &prefix, &self.output, To::Stderr, exit_seen),
        );
        let status =
            status.map_err(|e| format!("cannot wait for {}: {e}", self.program.display()))?;
        Ok(Ran {
            status,
            last_line,
            stdout,
            more_stdout,
        })
    }
}

/// How a program run ended.
pub(super) struct Ran {
    pub(super) status: ExitStatus,
    /// The last line it wrote to stderr (what a program usually says when
    /// it fails).
    pub(super) last_line: String,
    /// What it wrote to stdout, when that was kept rather than forwarded.
    pub(super) stdout: Vec<u8>,
    /// Whether it wrote more to stdout than was kept.
    pub(super) more_stdout: bool,
}

/// The program while it runs. Dropped before the program exited (the
/// handler's future was dropped: a timeout, a lost lease, the shutdown
/// deadline), it ends the program's whole process group.
struct Running {
    /// `None` once the program has exited and been reaped.
    child: Option<Child>,
    grace: Duration,
    ending: Arc<watch::Sender<usize>>,
    /// Held open until the group is gone (see `run`).
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use fifo_handler::Handler;

    use super::*;
    use crate::exec::fixtures::{message, sh_with};

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
}
