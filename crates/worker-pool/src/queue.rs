use std::future::Future;

use fifo_sqs_client::{
    Client, EntryFailure, Error, OutgoingMessage, ReceiveOptions, ReceiveOutput,
};

/// The few queue operations the engine needs. Implemented for SQS by
/// [`SqsQueue`] and in memory by [`crate::memory::MemoryQueue`].
pub trait Queue: Clone + Send + Sync + 'static {
    fn receive(
        &self,
        options: &ReceiveOptions,
    ) -> impl Future<Output = Result<ReceiveOutput, Error>> + Send;

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

    /// Moves an in-flight message to the dead-letter queue: sends `copy`
    /// there (its de-duplication id is the message id, so a retry is
    /// harmless) and deletes the original.
    fn dead_letter(
        &self,
        receipt_handle: &str,
        copy: &OutgoingMessage,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// True when no message is visible, in flight or delayed.
    fn is_empty(&self) -> impl Future<Output = Result<bool, Error>> + Send;
}

/// One SQS queue, by URL, and its dead-letter queue if it has one.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    pub client: Client,
    pub queue_url: String,
    pub dead_letter_url: Option<String>,
}

impl Queue for SqsQueue {
    async fn receive(&self, options: &ReceiveOptions) -> Result<ReceiveOutput, Error> {
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

    async fn dead_letter(&self, receipt_handle: &str, copy: &OutgoingMessage) -> Result<(), Error> {
        let Some(dead_letter_url) = &self.dead_letter_url else {
            return Err(Error::InvalidParameter {
                message: format!("{} has no dead-letter queue", self.queue_url),
            });
        };
        let sent = self
            .client
            .send_batch(dead_letter_url, std::slice::from_ref(copy))
            .await?;
        if let Some(Err(failure)) = sent.into_iter().next() {
            return Err(refusal(&failure));
        }
        match self.delete(&[receipt_handle]).await?.first() {
            Some(failure) => Err(refusal(failure)),
            None => Ok(()),
        }
    }

    async fn is_empty(&self) -> Result<bool, Error> {
        let a = self.client.queue_attributes(&self.queue_url).await?;
        Ok(a.visible == 0 && a.in_flight == 0 && a.delayed == 0)
    }
}

/// The only entry of a batch, refused, as an error.
fn refusal(failure: &EntryFailure) -> Error {
    Error::InvalidParameter {
        message: format!("{}: {}", failure.code, failure.message),
    }
}
