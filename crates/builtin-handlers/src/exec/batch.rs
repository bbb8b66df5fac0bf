//! A batch for the program: the messages as a JSON array on stdin, and
//! how many of them succeeded, read back from the file named by
//! `FIFO_BATCH_DONE` and checked against the exit status; or, for a
//! program written for Lambda, Lambda's SQS event on stdin and its answer
//! on stdout.

use fifo_handler::{BatchOutcome, CannotStart, Message};

use super::ExecHandler;
use super::forward::prefixed;
use crate::lambda::{self, EventSource};
use crate::trace;

impl ExecHandler {
    /// Runs the program once for `messages` with Lambda's SQS event on
    /// stdin (as `sam local invoke` gives it), and reads what it prints on
    /// stdout as the function's answer (`batchItemFailures`): all of it, or
    /// its last line when lines of log come before. Its log is forwarded. Exit status 0: the answer decides; any other
    /// fails the whole batch, as a function error does under Lambda (65
    /// rejects the first message, 75 runs it again later).
    pub(super) async fn run_lambda(
        &self,
        messages: &[&Message],
        source: &EventSource,
    ) -> BatchOutcome {
        let Some(first) = messages.first() else {
            return BatchOutcome::all(0);
        };
        let mut env = vec![
            ("FIFO_GROUP_ID", first.group_id.clone()),
            ("FIFO_BATCH_SIZE", messages.len().to_string()),
        ];
        if let Some(parent) = trace::traceparent(first) {
            env.push(("TRACEPARENT", parent));
        }
        let event = lambda::event(messages, source);
        let ran = self.run(&env, &event, &first.group_id, Some(lambda::MAX_ANSWER));
        let ran = match ran.await {
            Ok(ran) => ran,
            Err(e) => return BatchOutcome::failed_at(0, e),
        };
        let prefix = format!("[{}] ", first.group_id);
        if !ran.status.success() {
            // No answer: what it printed is its log, which says why.
            self.output.stdout(prefixed(&prefix, &ran.stdout)).await;
            let error = format!(
                "{}{}",
                self.exited(ran.status, &ran.last_line),
                lambda::whole_batch(messages.len())
            );
            return BatchOutcome::failed_at(0, self.failure(ran.status, error));
        }
        let who = self.program.display().to_string();
        if ran.more_stdout {
            return lambda::too_long(&who);
        }
        let (log, answer) = lambda::split_answer(&ran.stdout);
        self.output.stdout(prefixed(&prefix, log)).await;
        lambda::outcome(answer, messages, &who)
    }

    /// What [`ExecHandler`]'s `handle_batch` does.
    pub(super) async fn run_batch(&self, messages: &[&Message]) -> BatchOutcome {
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
        let input = batch_json(messages);
        let (status, last_line) = match self.run(&env, &input, &first.group_id, None).await {
            Ok(ran) => (ran.status, ran.last_line),
            Err(e) => return BatchOutcome::failed_at(0, e),
        };
        if status.success() {
            return BatchOutcome::all(messages.len());
        }
        let written = std::fs::read_to_string(done.path()).unwrap_or_default();
        let failed = self.exited(status, &last_line);
        let size = messages.len();
        let (succeeded, note) = done_count(&written, size, &failed);
        let error = format!("{failed}{note}; {succeeded} of the batch's {size} messages succeeded");
        BatchOutcome::failed_at(succeeded, self.failure(status, error))
    }
}

/// How many messages, from the first, the program said succeeded in
/// `written` (what it wrote to `FIFO_BATCH_DONE`) when it exited as
/// `failed` says, and a note for the error when it contradicts itself.
fn done_count(written: &str, size: usize, failed: &str) -> (usize, String) {
    match written.trim() {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fifo_handler::Handler;

    use super::*;
    use crate::exec::fixtures::{message, sh, sh_with};

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

    fn lambda(
        script: &str,
    ) -> (
        ExecHandler,
        crate::testing::Capture,
        crate::testing::Capture,
    ) {
        let (handler, out, err) = sh_with(script, Duration::ZERO);
        let source = EventSource {
            queue_arn: "arn:aws:sqs:us-east-1:000000000000:q.fifo".to_owned(),
            region: "us-east-1".to_owned(),
        };
        (handler.lambda_events(source), out, err)
    }

    #[tokio::test]
    async fn a_lambda_program_reads_the_event_and_answers_on_stdout() {
        let second = Message {
            id: "m-2".to_owned(),
            ..message()
        };
        let third = Message {
            id: "m-3".to_owned(),
            ..message()
        };
        let batch = [&message(), &second, &third];
        // The event reaches stdin; the answer on stdout is read, not
        // forwarded; stderr is the program's log.
        let (handler, out, err) = lambda(
            r#"grep -q '"eventSourceARN":"arn:aws:sqs:us-east-1:000000000000:q.fifo"' || exit 3
               echo 'handling' >&2
               echo 'printed as a log'
               echo '{"batchItemFailures":[{"itemIdentifier":"m-3"},{"itemIdentifier":"m-2"}]}'"#,
        );
        let outcome = handler.handle_batch(&batch).await;
        assert_eq!(outcome.succeeded, 1, "{:?}", outcome.error);
        let error = outcome.error.unwrap().to_string();
        assert!(
            error.ends_with("sh listed message m-2 in batchItemFailures"),
            "{error}"
        );
        handler.output.clone().finish().await;
        // The answer is read; what was printed before it is the log.
        assert_eq!(out.text(), "[g] printed as a log\n");
        assert_eq!(err.text(), "[g] handling\n");

        let (all, _, _) = lambda("cat > /dev/null");
        let outcome = all.handle_batch(&batch).await;
        assert_eq!(outcome.succeeded, 3, "no answer: all succeeded");
        assert!(
            all.handle(&message()).await.is_ok(),
            "one message, one record"
        );

        let (failed, out, _) = lambda(r#"echo 'about to fail'; exit 3"#);
        let outcome = failed.handle_batch(&batch).await;
        assert_eq!(outcome.succeeded, 0, "an exit status fails the whole batch");
        let error = outcome.error.unwrap().to_string();
        assert!(error.ends_with("; the whole batch of 3 failed"), "{error}");
        failed.output.clone().finish().await;
        assert_eq!(
            out.text(),
            "[g] about to fail\n",
            "no answer: all of it is log"
        );
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
}
