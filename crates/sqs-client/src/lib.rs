//! A typed wrapper over `aws-sdk-sqs` for FIFO queues: connect following the
//! endpoint rule, create and look up queues, send, receive, delete, change
//! visibility and read attributes. Every call has a deadline, every entry of
//! a batch an outcome, and one error type says what went wrong and whether
//! it is worth retrying. Only this crate names `aws_sdk_sqs` types.
//!
//! Layout: `connect` builds the [`Client`] every call goes through;
//! `queues` creates, lists, reads and purges queues; `send` and `receive`
//! move messages (receive also deletes them and changes their visibility);
//! `move_tasks` is about dead-letter queues and redrives; `batch` accounts
//! for the entries of a batch call; `attribute` holds message attributes;
//! `queue_url` parses and checks queue URLs and names, `message_rules` what
//! SQS accepts in a message, `deadline` how long a call may take; `error`
//! is the error type and `classify` turns SDK errors into it by their kind,
//! HTTP status and error code.
#![warn(missing_docs)]

mod attribute;
mod batch;
mod classify;
mod connect;
mod deadline;
mod error;
mod message_rules;
mod move_tasks;
mod queue_url;
mod queues;
mod receive;
mod send;

pub use attribute::{AttributeValue, MessageAttribute};
pub use batch::{EntryFailure, EntryFailureKind, MALFORMED_RESPONSE};
pub use connect::{Client, ConnectOptions, connect};
pub use error::Error;
pub use message_rules::{
    Field, InvalidMessage, accepts_char, check_dedup_id, check_group_id, check_message_body,
    one_line, shown,
};
pub use move_tasks::{MoveTask, MoveTaskStatus};
pub use queue_url::{BadQueueName, QueueUrl, check_queue_name, is_aws_host};
pub use queues::{QueueAttributes, QueueSpec};
pub use receive::{MalformedMessage, ReceiveOptions, ReceiveOutput, ReceivedMessage};
pub use send::{OutgoingMessage, batches, payload_bytes};

/// SQS takes at most this many entries in one batch call.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// The default (and, until changed, the largest) message and batch payload.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 262_144;
