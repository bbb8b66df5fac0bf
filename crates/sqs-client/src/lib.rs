//! A typed wrapper over `aws-sdk-sqs` for FIFO queues: connect following the
//! endpoint rule, create and look up queues, send, receive, delete, change
//! visibility and read attributes, with one error type that says what went
//! wrong. Only this crate names `aws_sdk_sqs` types.
//!
//! Layout: `queue_url` parses and checks queue URLs and names, `client` holds
//! the connection and the operations, `error` classifies SDK errors.

mod client;
mod error;
mod queue_url;

pub use client::{
    AttributeValue, Client, ConnectOptions, EntryFailure, MalformedMessage, MessageAttribute,
    OutgoingMessage, QueueAttributes, QueueSpec, ReceiveOptions, ReceiveOutput, ReceivedMessage,
    batches, connect,
};
pub use error::Error;
pub use queue_url::{QueueUrl, check_group_id, check_message_body, check_queue_name, is_aws_host};

/// SQS takes at most this many entries in one batch call.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// The default (and, until changed, the largest) message and batch payload.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 262_144;
