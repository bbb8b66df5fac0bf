//! Handler programs never outlive the process that started them, however it
//! ends (SIGKILL included): a program still running a group's message while
//! another fifo runs that group's next message would break the group's order.
//!
//! Two layers. On Linux each program gets SIGTERM as its parent-death
//! signal, set in the child before it execs ([`end_with_parent`]). That
//! reaches the program alone, not the children it started, so a guard, one
//! small `/bin/sh` process per fifo process ([`Guard`]), is told each
//! program's process group as it starts and ends; when fifo is gone its end
//! of the pipe closes, and the guard sends SIGTERM to every group still
//! listed and, half a second later, SIGKILL: a program may record that it
//! was stopped, but none runs on. The guard leads a process group of its own (a Ctrl-C in the
//! terminal does not reach it) and ignores the signals a supervisor sends
//! to a whole group, so that it outlives fifo by the moment it needs.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use rustix::process::Pid;

/// The guard: reads `+ GROUP` and `- GROUP` lines and, at the end of its
/// input, sends SIGTERM to each process group still listed, then SIGKILL
/// half a second later (at once where `sleep` takes whole seconds only).
const GUARD_SCRIPT: &str = r#"trap '' INT TERM HUP QUIT PIPE
groups=' '
while read -r change group; do
  case $change in
    +) groups="$groups$group " ;;
    -) case $groups in *" $group "*) groups="${groups%% $group *} ${groups#* $group }" ;; esac ;;
  esac
done
[ "$groups" = ' ' ] && exit 0
for group in $groups; do kill -s TERM -- "-$group" 2>/dev/null; done
sleep 0.5 2>/dev/null
for group in $groups; do kill -s KILL -- "-$group" 2>/dev/null; done
"#;

/// The guard of this process, started with the first program.
pub(crate) struct Guard {
    /// `None` once the guard could not be started or was found gone: said
    /// once, and programs still end with fifo through their parent-death
    /// signal (on Linux), though their children may not.
    input: Mutex<Option<ChildStdin>>,
}

impl Guard {
    /// The one guard of this process.
    pub(crate) fn get() -> &'static Guard {
        static GUARD: OnceLock<Guard> = OnceLock::new();
        GUARD.get_or_init(|| Guard {
            input: Mutex::new(start()),
        })
    }

    /// `group` runs a handler program: end it if fifo dies.
    pub(crate) fn watch(&self, group: Pid) {
        self.tell('+', group);
    }

    /// `group` is gone or no longer holds a message.
    pub(crate) fn forget(&self, group: Pid) {
        self.tell('-', group);
    }

    fn tell(&self, change: char, group: Pid) {
        let mut input = self.input.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pipe) = input.as_mut() else {
            return;
        };
        // A line is far below the pipe's buffer and the guard reads all the
        // time: this does not block.
        if let Err(e) = writeln!(pipe, "{change} {}", group.as_raw_pid()) {
            tracing::warn!(
                "the guard that ends handler programs if fifo is killed is gone ({e}); a program's children may now outlive a fifo killed with SIGKILL"
            );
            *input = None;
        }
    }
}

fn start() -> Option<ChildStdin> {
    let started = Command::new("/bin/sh")
        .args(["-c", GUARD_SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    match started {
        // Not waited for: it ends after fifo, when its input closes.
        Ok(mut guard) => guard.stdin.take(),
        Err(e) => {
            tracing::warn!(
                "cannot start /bin/sh to end handler programs if fifo is killed ({e}); a program's children may outlive a fifo killed with SIGKILL"
            );
            None
        }
    }
}

/// Makes the program `command` starts get SIGTERM when the thread that
/// started it ends (Linux's parent-death signal), and not start at all if
/// fifo died before the signal was set. Elsewhere the guard alone ends it.
///
/// The signal follows the starting *thread*: a program started from a
/// thread that ends while it runs (a `spawn_blocking` thread, a worker
/// given up by `block_in_place`) is killed then. Tokio's runtime threads
/// live as long as the runtime, which is where handlers run.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn end_with_parent(command: &mut tokio::process::Command) {
    use rustix::process::{Signal, getpid, getppid, set_parent_process_death_signal};
    let parent = getpid();
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: it makes two system calls
    // (prctl and getppid) and allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            set_parent_process_death_signal(Some(Signal::TERM))?;
            // fifo died between the fork and the prctl: no signal will come.
            if getppid() != Some(parent) {
                return Err(std::io::Error::from(std::io::ErrorKind::Interrupted));
            }
            Ok(())
        });
    }
}

/// Elsewhere the guard alone ends programs with fifo.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn end_with_parent(_command: &mut tokio::process::Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guard's script, fed by hand: the groups left listed at the end
    /// get SIGTERM, then SIGKILL if they ignore it; the ones forgotten are
    /// left alone.
    #[test]
    fn the_guard_ends_the_groups_still_listed_when_its_input_ends() {
        let spawn_group = |script: &str| {
            let mut command = Command::new("sh");
            command.args(["-c", script]).process_group(0);
            command.spawn().expect("sh starts")
        };
        let mut listed = spawn_group("exec sleep 30");
        let mut stubborn = spawn_group("trap '' TERM; while :; do sleep 0.1; done");
        let mut forgotten = spawn_group("exec sleep 30");
        let pid = |child: &std::process::Child| child.id();
        let mut guard = Command::new("/bin/sh")
            .args(["-c", GUARD_SCRIPT])
            .stdin(Stdio::piped())
            .spawn()
            .expect("the guard starts");
        let mut input = guard.stdin.take().expect("piped");
        writeln!(
            input,
            "+ {}\n+ {}\n+ {}\n- {}",
            pid(&listed),
            pid(&stubborn),
            pid(&forgotten),
            pid(&forgotten)
        )
        .expect("written");
        drop(input);
        assert!(guard.wait().expect("the guard ends").success());
        let signal = |child: &mut std::process::Child| {
            let status = child.wait().expect("reaped");
            std::os::unix::process::ExitStatusExt::signal(&status)
        };
        assert_eq!(signal(&mut listed), Some(15), "SIGTERM first");
        assert_eq!(signal(&mut stubborn), Some(9), "then SIGKILL");
        assert!(
            forgotten.try_wait().expect("looked at").is_none(),
            "the forgotten group still runs"
        );
        forgotten.kill().expect("killed");
        forgotten.wait().expect("reaped");
    }
}
