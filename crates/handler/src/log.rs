use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Handler, Message, Outcome};

/// Prints each message's group, sequence number and body to stdout when it
/// starts, waits `work` to simulate processing, and with work prints `done`
/// when it ends. Lines begin with the UTC time of day, so the output of
/// several processes reads as one timeline:
///
/// ```text
/// 12:34:56.004 start group=same seq=18889… receive=1 body={"group":"same","seq":1,…}
/// 12:34:56.506 done  group=same seq=18889…
/// ```
#[derive(Debug, Clone)]
pub struct LogHandler {
    work: Duration,
    quiet: bool,
}

impl LogHandler {
    /// `quiet` prints nothing (for benchmarks).
    pub fn new(work: Duration, quiet: bool) -> LogHandler {
        LogHandler { work, quiet }
    }

    fn print(&self, line: std::fmt::Arguments<'_>) -> std::io::Result<()> {
        if self.quiet {
            return Ok(());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let (secs, millis) = (now.as_secs() % 86_400, now.subsec_millis());
        writeln!(
            std::io::stdout().lock(),
            "{:02}:{:02}:{:02}.{millis:03} {line}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
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
