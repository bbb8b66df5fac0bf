//! A typed wrapper over `aws-sdk-sqs` for FIFO queues: connect following the
//! endpoint rule, create and look up queues, send, receive, delete, change
//! visibility and read attributes. Every call has a deadline, every entry of
//! a batch an outcome, and one error type says what went wrong and whether
//! it is worth retrying. Only this crate names `aws_sdk_sqs` types.
//!
//! Layout: `queue_url` parses and checks queue URLs and names,
//! `message_rules` what SQS accepts in a message, `client` holds
//! the connection and the operations, `deadline` how long a call may take,
//! `error` classifies SDK errors by their kind, HTTP status and error code.
#![warn(missing_docs)]

mod client;
mod deadline;
mod error;
mod message_rules;
mod queue_url;

pub use client::{
    AttributeValue, Client, ConnectOptions, EntryFailure, MALFORMED_RESPONSE, MalformedMessage,
    MessageAttribute, MoveTask, OutgoingMessage, QueueAttributes, QueueSpec, ReceiveOptions,
    ReceiveOutput, ReceivedMessage, batches, connect, payload_bytes,
};
pub use error::Error;
pub use message_rules::{
    Field, InvalidMessage, accepts_char, check_dedup_id, check_group_id, check_message_body,
    one_line, shown,
};
pub use queue_url::{BadQueueName, QueueUrl, check_queue_name, is_aws_host};

/// SQS takes at most this many entries in one batch call.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// The default (and, until changed, the largest) message and batch payload.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 262_144;
