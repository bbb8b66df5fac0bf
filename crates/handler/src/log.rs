use std::io::Write;
use std::time::{Duration, Instant};

use crate::{Handler, Message, Outcome};

/// Prints each message's group, sequence number and body to stdout when it
/// starts, waits `work` to simulate processing, and with work prints `done`
/// when it ends. Lines carry the time since the handler was made, so the
/// output reads as a timeline:
///
/// ```text
/// [+0.004s] start group=same seq=18889… receive=1 body={"group":"same","seq":1,…}
/// [+0.506s] done  group=same seq=18889…
/// ```
#[derive(Debug, Clone)]
pub struct LogHandler {
    work: Duration,
    quiet: bool,
    epoch: Instant,
}

impl LogHandler {
    /// `quiet` prints nothing (for benchmarks).
    pub fn new(work: Duration, quiet: bool) -> LogHandler {
        LogHandler {
            work,
            quiet,
            epoch: Instant::now(),
        }
    }

    fn print(&self, line: std::fmt::Arguments<'_>) -> std::io::Result<()> {
        if self.quiet {
            return Ok(());
        }
        let elapsed = self.epoch.elapsed().as_secs_f64();
        writeln!(std::io::stdout().lock(), "[+{elapsed:.3}s] {line}")
    }
}

impl Handler for LogHandler {
    async fn handle(&self, message: &Message) -> Outcome {
        self.print(format_args!(
            "start group={} seq={} receive={} body={}",
            message.group_id, message.sequence_number, message.receive_count, message.body
        ))?;
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
            self.print(format_args!(
                "done  group={} seq={}",
                message.group_id, message.sequence_number
            ))?;
        }
        Ok(())
    }
}
