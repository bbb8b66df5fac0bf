//! Dead-letter queues: which queues send theirs to one, and SQS's message
//! move tasks (a redrive) started, watched and cancelled.

use crate::classify::classify;
use crate::{Client, Error};

/// A message move task (a redrive), as `ListMessageMoveTasks` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveTask {
    /// Its handle, while it runs (what cancelling it takes).
    pub handle: Option<String>,
    /// Where it stands.
    pub status: MoveTaskStatus,
    /// About how many messages it moved so far.
    pub moved: u64,
    /// About how many it had to move when it started.
    pub to_move: Option<u64>,
    /// Why it failed, when it did.
    pub failure: Option<String>,
}

/// Where a message move task stands, by SQS's `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveTaskStatus {
    /// `RUNNING`: moving messages.
    Running,
    /// `COMPLETED`: every message it had to move was moved.
    Completed,
    /// `CANCELLING`: asked to stop, not stopped yet.
    Cancelling,
    /// `CANCELLED`: stopped before the end; what it moved stays moved.
    Cancelled,
    /// `FAILED`: stopped by an error (see [`MoveTask::failure`]).
    Failed,
    /// A status this crate does not know, as SQS gave it (empty when it
    /// gave none).
    Unknown(String),
}

impl MoveTaskStatus {
    /// The status SQS names `text`.
    pub fn parse(text: &str) -> MoveTaskStatus {
        match text {
            "RUNNING" => MoveTaskStatus::Running,
            "COMPLETED" => MoveTaskStatus::Completed,
            "CANCELLING" => MoveTaskStatus::Cancelling,
            "CANCELLED" => MoveTaskStatus::Cancelled,
            "FAILED" => MoveTaskStatus::Failed,
            other => MoveTaskStatus::Unknown(other.to_owned()),
        }
    }

    /// The status as SQS writes it.
    pub fn as_str(&self) -> &str {
        match self {
            MoveTaskStatus::Running => "RUNNING",
            MoveTaskStatus::Completed => "COMPLETED",
            MoveTaskStatus::Cancelling => "CANCELLING",
            MoveTaskStatus::Cancelled => "CANCELLED",
            MoveTaskStatus::Failed => "FAILED",
            MoveTaskStatus::Unknown(text) => text,
        }
    }

    /// The task has not ended yet: it is running or being cancelled.
    pub fn is_under_way(&self) -> bool {
        matches!(self, MoveTaskStatus::Running | MoveTaskStatus::Cancelling)
    }
}

impl std::fmt::Display for MoveTaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Client {
    /// Starts an SQS message move task from the dead-letter queue
    /// `source_arn` to `destination_arn` (SQS's redrive), at most `rate`
    /// messages per second when given; returns the task's handle.
    pub async fn start_move_task(
        &self,
        source_arn: &str,
        destination_arn: &str,
        rate: Option<u32>,
    ) -> Result<String, Error> {
        let output = self
            .sqs
            .start_message_move_task()
            .source_arn(source_arn)
            .destination_arn(destination_arn)
            .set_max_number_of_messages_per_second(rate.map(|r| r as i32))
            .send()
            .await
            .map_err(|e| classify(e, &self.call("StartMessageMoveTask", source_arn)))?;
        Ok(output.task_handle.unwrap_or_default())
    }

    /// The URLs of the queues whose redrive policy names `dead_letter_url`.
    pub async fn dead_letter_sources(&self, dead_letter_url: &str) -> Result<Vec<String>, Error> {
        let mut urls = Vec::new();
        let mut pages = self
            .sqs
            .list_dead_letter_source_queues()
            .queue_url(dead_letter_url)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                classify(e, &self.call("ListDeadLetterSourceQueues", dead_letter_url))
            })?;
            urls.extend(page.queue_urls);
        }
        Ok(urls)
    }

    /// The newest message move task from `source_arn`, if any.
    pub async fn latest_move_task(&self, source_arn: &str) -> Result<Option<MoveTask>, Error> {
        let output = self
            .sqs
            .list_message_move_tasks()
            .source_arn(source_arn)
            .max_results(1)
            .send()
            .await
            .map_err(|e| classify(e, &self.call("ListMessageMoveTasks", source_arn)))?;
        Ok(output
            .results
            .unwrap_or_default()
            .first()
            .map(|task| MoveTask {
                handle: task.task_handle().map(str::to_owned),
                status: MoveTaskStatus::parse(task.status().unwrap_or_default()),
                moved: u64::try_from(task.approximate_number_of_messages_moved()).unwrap_or(0),
                to_move: task
                    .approximate_number_of_messages_to_move()
                    .and_then(|n| u64::try_from(n).ok()),
                failure: task.failure_reason().map(str::to_owned),
            }))
    }

    /// Cancels a running message move task; what it moved stays moved.
    pub async fn cancel_move_task(&self, handle: &str) -> Result<(), Error> {
        self.sqs
            .cancel_message_move_task()
            .task_handle(handle)
            .send()
            .await
            .map_err(|e| classify(e, &self.call("CancelMessageMoveTask", handle)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_reads_back_as_sqs_wrote_it() {
        for text in [
            "RUNNING",
            "COMPLETED",
            "CANCELLING",
            "CANCELLED",
            "FAILED",
            "PAUSED",
            "",
        ] {
            assert_eq!(MoveTaskStatus::parse(text).to_string(), text);
        }
        assert_eq!(MoveTaskStatus::parse("FAILED"), MoveTaskStatus::Failed);
        assert!(MoveTaskStatus::parse("CANCELLING").is_under_way());
        assert!(!MoveTaskStatus::parse("PAUSED").is_under_way());
    }
}
