use std::future::Future;

use fifo_sqs_client::{Client, EntryFailure, Error, ReceiveOptions, ReceivedMessage};

/// The few queue operations the engine needs. Implemented for SQS by
/// [`SqsQueue`] and in memory by [`crate::memory::MemoryQueue`].
pub trait Queue: Clone + Send + Sync + 'static {
    fn receive(
        &self,
        options: &ReceiveOptions,
    ) -> impl Future<Output = Result<Vec<ReceivedMessage>, Error>> + Send;

    /// Deletes up to ten messages; returns the entries that failed.
    fn delete(
        &self,
        receipt_handles: &[&str],
    ) -> impl Future<Output = Result<Vec<EntryFailure>, Error>> + Send;

    /// Sets the visibility of up to ten messages; returns the entries that failed.
    fn change_visibility(
        &self,
        entries: &[(&str, u32)],
    ) -> impl Future<Output = Result<Vec<EntryFailure>, Error>> + Send;

    /// True when no message is visible, in flight or delayed.
    fn is_empty(&self) -> impl Future<Output = Result<bool, Error>> + Send;
}

/// One SQS queue, by URL.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    pub client: Client,
    pub queue_url: String,
}

impl Queue for SqsQueue {
    async fn receive(&self, options: &ReceiveOptions) -> Result<Vec<ReceivedMessage>, Error> {
        self.client.receive(&self.queue_url, options).await
    }

    async fn delete(&self, receipt_handles: &[&str]) -> Result<Vec<EntryFailure>, Error> {
        self.client
            .delete_batch(&self.queue_url, receipt_handles)
            .await
    }

    async fn change_visibility(&self, entries: &[(&str, u32)]) -> Result<Vec<EntryFailure>, Error> {
        self.client
            .change_visibility_batch(&self.queue_url, entries)
            .await
    }

    async fn is_empty(&self) -> Result<bool, Error> {
        let a = self.client.queue_attributes(&self.queue_url).await?;
        Ok(a.visible == 0 && a.in_flight == 0 && a.delayed == 0)
    }
}
