//! The log handler: prints a line when each message starts (and, with
//! simulated work, when it is done), for demos and benchmarks.

use std::time::{Duration, SystemTime};

use fifo_handler::{Handler, Message, Outcome};

use crate::{Output, log_line};

/// Prints each message's group, sequence number and body to stdout when it
/// starts, waits `work` to simulate processing, and with work prints `done`
/// when it ends, in the format of [`log_line`]: lines begin with the UTC
/// time of day, so the output of several processes reads as one timeline.
/// Printing never fails a message: once stdout is closed the lines are
/// dropped.
#[derive(Debug, Clone)]
pub struct LogHandler {
    work: Duration,
    quiet: bool,
    output: Output,
}

impl LogHandler {
    /// `quiet` prints nothing (for benchmarks).
    pub fn new(work: Duration, quiet: bool, output: Output) -> LogHandler {
        LogHandler {
            work,
            quiet,
            output,
        }
    }

    async fn print(&self, mut line: String) {
        if self.quiet {
            return;
        }
        line.push('\n');
        self.output.stdout(line.into_bytes()).await;
    }
}

impl Handler for LogHandler {
    async fn handle(&self, message: &Message) -> Outcome {
        self.print(log_line::start_line(
            SystemTime::now(),
            &message.group_id,
            &message.sequence_number,
            message.receive_count,
            &message.body,
        ))
        .await;
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
            self.print(log_line::done_line(
                SystemTime::now(),
                &message.group_id,
                &message.sequence_number,
            ))
            .await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::mpsc;

    use super::*;
    use crate::testing::{Capture, Gated, broken_pipe};

    fn message(seq: u32, body: &str) -> Message {
        Message {
            id: format!("m-{seq}"),
            group_id: "g".to_owned(),
            body: body.to_owned(),
            receive_count: 1,
            sequence_number: seq.to_string(),
            attempt: 1,
            ..Message::default()
        }
    }

    #[tokio::test]
    async fn prints_start_and_done_lines() {
        let out = Capture::default();
        let output = Output::new(out.clone(), io::sink());
        let handler = LogHandler::new(Duration::from_millis(1), false, output.clone());
        handler
            .handle(&message(7, r#"{"group":"g","seq":1}"#))
            .await
            .unwrap();
        output.finish().await;
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        // `hh:mm:ss.mmm ` comes first.
        assert_eq!(lines[0].as_bytes()[12], b' ', "{text}");
        assert_eq!(
            &lines[0][13..],
            r#"start group=g seq=7 receive=1 body={"group":"g","seq":1}"#
        );
        assert_eq!(&lines[1][13..], "done  group=g seq=7");
    }

    #[tokio::test]
    async fn a_newline_in_a_body_cannot_forge_a_line() {
        let out = Capture::default();
        let output = Output::new(out.clone(), io::sink());
        let body = "a\nb\r\u{1b}[2J C:\\dir \"q\" é";
        LogHandler::new(Duration::ZERO, false, output.clone())
            .handle(&message(1, body))
            .await
            .unwrap();
        output.finish().await;
        let text = out.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.ends_with(concat!(r#" body=a\nb\r\u{1b}[2J C:\dir "q" é"#, "\n")),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_closed_stdout_fails_no_message() {
        let output = Output::new(broken_pipe(), io::sink());
        let handler = LogHandler::new(Duration::from_millis(1), false, output.clone());
        for seq in 0..3 {
            handler.handle(&message(seq, "x")).await.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), output.closed())
            .await
            .expect("closed() resolves");
        handler.handle(&message(3, "x")).await.unwrap();
    }

    /// A current-thread runtime, as in the binary, runs a handler whose
    /// stdout is stuck; another task must keep running meanwhile. Run on a
    /// thread of its own so that a blocked runtime fails the test instead
    /// of hanging it.
    #[test]
    fn a_stalled_stdout_makes_the_handler_wait_not_the_thread() {
        let (done, result) = mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            done.send(runtime.block_on(stalled_stdout())).unwrap();
        });
        let written = match result.recv_timeout(Duration::from_secs(30)) {
            Ok(written) => written,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("the runtime thread was blocked"),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the runtime thread panicked"),
        };
        let seqs: Vec<&str> = written
            .lines()
            .map(|line| log_line::parse(line).unwrap().sequence_number)
            .collect();
        let expected: Vec<String> = (0..20).map(|seq| seq.to_string()).collect();
        assert_eq!(seqs, expected, "{written}");
    }

    async fn stalled_stdout() -> String {
        let gated = Gated::default();
        // Room for about two lines.
        let output = Output::with_budget(gated.clone(), io::sink(), 160);
        let handler = LogHandler::new(Duration::ZERO, false, output.clone());
        let handling = tokio::spawn(async move {
            for seq in 0..20 {
                handler.handle(&message(seq, "some body")).await.unwrap();
            }
        });
        // This task runs while the writer thread is stuck...
        gated.blocked().await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        // ...and the handler waits for room rather than queueing everything.
        assert!(!handling.is_finished(), "the handler did not wait for room");
        gated.open();
        handling.await.unwrap();
        output.finish().await;
        String::from_utf8(gated.bytes()).unwrap()
    }
}
