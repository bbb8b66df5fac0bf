use std::io::Write;
use std::time::Duration;

use crate::{Handler, Message, Outcome};

/// Prints each message's group, sequence number and body to stdout, then
/// waits `work` to simulate processing.
#[derive(Debug, Clone, Default)]
pub struct LogHandler {
    pub work: Duration,
}

impl Handler for LogHandler {
    async fn handle(&self, message: &Message) -> Outcome {
        writeln!(
            std::io::stdout().lock(),
            "group={} seq={} receive={} body={}",
            message.group_id,
            message.sequence_number,
            message.receive_count,
            message.body
        )?;
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        Ok(())
    }
}
