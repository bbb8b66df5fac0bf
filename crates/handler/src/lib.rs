//! The contract between the engine and the code that handles messages:
//! the `Handler` trait that user code implements, the `Message` it gets,
//! and what it returns (`Outcome`, `BatchOutcome`, and the failures that
//! say more than "retry": `Reject`, `RetryLater`, `CannotStart`). It needs
//! nothing but std; the `fifo` command's own handlers live in
//! `fifo-builtin-handlers`.
//!
//! A handler is called for one message at a time per group (or one batch of
//! a group's consecutive messages), in the group's order; it may be called
//! again for the same message (at-least-once delivery), so it should be
//! idempotent. Returning `Err` (or panicking)
//! means the message is retried and, failing that, redelivered by SQS. The
//! engine drops a handler's future to give up on it (a timeout), so a handler
//! cleans up on drop.
//!
//! The engine runs on one thread, so handlers never block it.
#![warn(missing_docs)]

mod outcome;

use std::collections::BTreeMap;
use std::future::Future;

pub use outcome::{CannotStart, Reject, RetryLater, StatusError, Verdict, status_of};

/// One message as a handler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// SQS's message ID: the same on every delivery of the message.
    pub id: String,
    /// SQS's message group ID: the group's messages are handled in order.
    pub group_id: String,
    /// The body as sent.
    pub body: String,
    /// How many times SQS has delivered it, this delivery included.
    pub receive_count: u32,
    /// SQS's sequence number: increases with send order within a group.
    pub sequence_number: String,
    /// When SQS accepted it from its sender (`SentTimestamp`), in
    /// milliseconds since the Unix epoch.
    pub sent_timestamp_ms: u64,
    /// When SQS first delivered it (`ApproximateFirstReceiveTimestamp`), in
    /// milliseconds since the Unix epoch; 0 when unknown.
    pub first_received_ms: u64,
    /// Its `MessageDeduplicationId`, when SQS gave it.
    pub deduplication_id: Option<String>,
    /// The sender's trace context from SQS's `AWSTraceHeader` system
    /// attribute, if any.
    pub trace_header: Option<String>,
    /// Who sent it (SQS's `SenderId`: an account or IAM principal id), when
    /// SQS gave it.
    pub sender_id: Option<String>,
    /// Which attempt of this delivery it is: 1, then 2 on the retry after
    /// a failure, and so on; a [`RetryLater`] does not count. A
    /// redelivery by SQS starts again at 1 (see `receive_count`).
    pub attempt: u32,
    /// Message attributes with string values (`String` and `Number`
    /// types, and their custom subtypes); binary ones are left out.
    pub attributes: BTreeMap<String, String>,
    /// The `DataType` of each attribute in `attributes` (`String`,
    /// `Number`, or a custom type such as `Number.float`).
    pub attribute_types: BTreeMap<String, String>,
    /// What deleting this delivery of the message or changing its
    /// visibility takes. The engine deletes it after success itself; it is
    /// here for handlers that pass it on (Lambda's `receiptHandle`).
    pub receipt_handle: String,
}

/// Why a handler failed; any error type converts into it with `?`.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// What a handler returns: `Ok` deletes the message; `Err` retries it,
/// unless the error is a [`Reject`] (dead-letter it now), a [`RetryLater`]
/// (run it again later without counting a failure) or a [`CannotStart`]
/// (fifo's own trouble: the same, said once per trouble). See [`Verdict`].
pub type Outcome = Result<(), HandlerError>;

/// What a handler of a batch reports: how many messages, from the first,
/// succeeded, and why the next one failed. Messages after that one were
/// not handled: they run again after it, with its retries.
#[derive(Debug)]
pub struct BatchOutcome {
    /// How many of the batch's messages, counted from the first, succeeded.
    pub succeeded: usize,
    /// Why message `succeeded` failed; `None` when all succeeded.
    pub error: Option<HandlerError>,
}

impl BatchOutcome {
    /// Every message of the batch succeeded.
    pub fn all(count: usize) -> BatchOutcome {
        BatchOutcome {
            succeeded: count,
            error: None,
        }
    }

    /// The first `succeeded` messages succeeded; the next one failed.
    pub fn failed_at(succeeded: usize, error: impl Into<HandlerError>) -> BatchOutcome {
        BatchOutcome {
            succeeded,
            error: Some(error.into()),
        }
    }
}

/// Handles one message, or a few consecutive ones of one group at once.
pub trait Handler: Send + Sync + 'static {
    /// Handles one message: `Ok` deletes it, `Err` (or a panic) retries it.
    /// It may be called again for a message already handled.
    fn handle(&self, message: &Message) -> impl Future<Output = Outcome> + Send;

    /// Handles consecutive messages of one group, in order, at once (when
    /// the engine is asked for batches): for example one database
    /// transaction for one entity's changes. By default one by one with
    /// [`Handler::handle`], stopping at the first failure.
    fn handle_batch(&self, messages: &[&Message]) -> impl Future<Output = BatchOutcome> + Send {
        async move {
            for (succeeded, message) in messages.iter().enumerate() {
                if let Err(error) = self.handle(message).await {
                    return BatchOutcome::failed_at(succeeded, error);
                }
            }
            BatchOutcome::all(messages.len())
        }
    }
}
