//! Signals, for every command from this one module: the first SIGINT or
//! SIGTERM asks for a graceful stop; in `run` and `send` a second one asks
//! for exiting at once, which `main` does with [`INTERRUPTED`]. `dlq
//! redrive` cancels its move on the first and ignores the rest, and
//! `list-queues --watch` ends on Ctrl-C and leaves SIGTERM its default.

use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::Notify;

/// The exit status of a command a signal ended early: 128 + SIGINT, what a
/// shell shows after Ctrl-C.
pub(crate) const INTERRUPTED: u8 = 130;

/// A repeat of the signal that began the shutdown within this long is the
/// same request: GNU `timeout` and some supervisors signal the process and
/// then its whole group, microseconds apart.
const SAME_REQUEST: Duration = Duration::from_secs(1);

/// SIGINT and SIGTERM as they come. Once they are listened for, neither
/// ends the process by itself any more, for the rest of its life.
pub(crate) struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    pub(crate) fn listen() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next SIGINT or SIGTERM, by name.
    pub(crate) async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }

    /// The next signal that is a request of its own: `first`, received at
    /// `first_at`, again within [`SAME_REQUEST`] is the same request.
    pub(crate) async fn next_request(
        &mut self,
        first: &'static str,
        first_at: Instant,
    ) -> &'static str {
        loop {
            let again = self.next().await;
            if again != first || first_at.elapsed() >= SAME_REQUEST {
                return again;
            }
            tracing::info!(
                "{again} again within a second: the same request (a wrapper such as timeout signals the process and its group), still shutting down gracefully"
            );
        }
    }
}

/// The next Ctrl-C (SIGINT) alone, for a command that has nothing to
/// finish: SIGTERM keeps its default action and ends the process.
pub(crate) async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Set by [`exit_at_once`], awaited by `main`.
static EXIT_AT_ONCE: Notify = Notify::const_new();

/// Ends the command at once, whatever it is doing: `main` stops waiting for
/// it and exits with [`INTERRUPTED`]. The command says its last words
/// before calling this.
pub(crate) fn exit_at_once() {
    EXIT_AT_ONCE.notify_one();
}

/// Resolves once [`exit_at_once`] is called.
pub(crate) async fn exit_requested() {
    EXIT_AT_ONCE.notified().await;
}
