//! The exec handler: runs a program per message (or per batch) and reads
//! its exit status as the message's outcome.

mod batch;
#[cfg(test)]
mod fixtures;
mod forward;
mod process;
mod program;

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fifo_handler::{
    BatchOutcome, Handler, HandlerError, Message, Outcome, Reject, RetryLater, StatusError,
};
use rustix::process::{Pid, Signal};
use tokio::sync::watch;

use crate::lambda::{self, EventSource};
use crate::{Output, trace};

pub use program::{ProgramError, Refusal};

/// The exit status that rejects the message (sysexits' `EX_DATAERR`):
/// it can never succeed and goes to the dead-letter queue now.
pub const EXIT_REJECT: i32 = 65;

/// The exit status that asks to run the message again later without
/// counting a failure (sysexits' `EX_TEMPFAIL`).
pub const EXIT_RETRY_LATER: i32 = 75;

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
    /// Where the messages come from, when they are handed over as Lambda's
    /// SQS event.
    lambda: Option<EventSource>,
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
            program: program::find_program(program)?,
            args,
            kill_grace,
            output,
            ending: Arc::new(watch::Sender::new(0)),
            groups: Arc::default(),
            lambda: None,
        })
    }

    /// Hands messages over as Lambda's SQS event instead, for a program
    /// written for AWS Lambda: the event on stdin (one group's messages,
    /// in order; one message without batches), the function's answer on
    /// stdout (`{"batchItemFailures": [{"itemIdentifier": ID}]}`: the
    /// messages before the first one listed succeeded, that one failed,
    /// the rest run again after it; nothing listed is success of all), its
    /// log on stderr. `source` names the queue in each record.
    pub fn lambda_events(mut self, source: EventSource) -> ExecHandler {
        self.lambda = Some(source);
        self
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

impl Handler for ExecHandler {
    async fn handle(&self, message: &Message) -> Outcome {
        if let Some(source) = &self.lambda {
            return lambda::single(self.run_lambda(&[message], source).await);
        }
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
        let ran = self
            .run(&env, message.body.as_bytes(), &message.group_id, None)
            .await?;
        if ran.status.success() {
            Ok(())
        } else {
            Err(self.failure(ran.status, self.exited(ran.status, &ran.last_line)))
        }
    }

    /// The batch as a JSON array on stdin (see `batch.rs`). Exit status
    /// 0: all succeeded. Otherwise the program may have written to the file
    /// named by `FIFO_BATCH_DONE` how many messages, from the first,
    /// succeeded; nothing there means none.
    async fn handle_batch(&self, messages: &[&Message]) -> BatchOutcome {
        match &self.lambda {
            Some(source) => self.run_lambda(messages, source).await,
            None => self.run_batch(messages).await,
        }
    }
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
}

#[cfg(test)]
mod tests {
    use fifo_handler::Verdict;

    use super::fixtures::{message, sh};
    use super::*;

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
}
