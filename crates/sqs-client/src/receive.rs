//! Receiving and what follows for a received message: one
//! `ReceiveMessage` call, then deletes and visibility changes by receipt
//! handle, in batches.

use std::collections::BTreeMap;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName,
};

use crate::batch::{EntryFailure, check_batch_len, entry_failures};
use crate::classify::{Call, classify};
use crate::deadline::Deadline;
use crate::{AttributeValue, Client, Error, MessageAttribute};

/// What one [`Client::receive`] asks SQS for.
#[derive(Debug, Clone, Default)]
pub struct ReceiveOptions {
    /// 1..=10.
    pub max_messages: u32,
    /// Long poll, 0..=20 seconds.
    pub wait_seconds: u32,
    /// Overrides the queue's visibility timeout for these messages.
    pub visibility_timeout: Option<u32>,
    /// Same id after a network error (SQS then returns the same messages),
    /// a new one after success or throttling.
    pub attempt_id: Option<String>,
}

/// A received message with the system attributes fifo relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The id SQS gave the message when it was sent.
    pub message_id: String,
    /// What deleting the message or changing its visibility takes; each
    /// receive of a message gets a new one.
    pub receipt_handle: String,
    /// The message body, as sent.
    pub body: String,
    /// The `MessageGroupId` it was sent with.
    pub group_id: String,
    /// SQS's `SequenceNumber` as a decimal string: large, not consecutive,
    /// and increasing within a group.
    pub sequence_number: String,
    /// `ApproximateReceiveCount`: how many times the message has been
    /// received, this time included.
    pub receive_count: u32,
    /// When SQS accepted the message, in milliseconds since the Unix epoch
    /// (`SentTimestamp`).
    pub sent_timestamp_ms: u64,
    /// When SQS first handed the message to a receiver, in milliseconds
    /// since the Unix epoch (`ApproximateFirstReceiveTimestamp`); 0 when
    /// the response lacks it.
    pub first_received_ms: u64,
    /// The `MessageDeduplicationId` it was sent with, or SQS computed.
    pub deduplication_id: Option<String>,
    /// The `AWSTraceHeader` system attribute (X-Ray trace context), if the
    /// sender set one.
    pub trace_header: Option<String>,
    /// `SenderId`: the AWS account or IAM principal that sent it.
    pub sender_id: Option<String>,
    /// Every message attribute, as sent.
    pub attributes: BTreeMap<String, MessageAttribute>,
}

/// What one receive returned: the messages fifo can use, and those whose
/// response lacked something fifo relies on (they are left alone and come
/// back after their visibility timeout).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiveOutput {
    /// The usable messages, in the order SQS returned them.
    pub messages: Vec<ReceivedMessage>,
    /// The messages left alone, each with the reason.
    pub malformed: Vec<MalformedMessage>,
}

/// A received message that cannot be handled as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedMessage {
    /// As much as the response said about it.
    pub message_id: Option<String>,
    /// Its `MessageGroupId`, when the response gave one.
    pub group_id: Option<String>,
    /// What was missing or did not parse, e.g. `the response has no Body`.
    pub reason: String,
}

impl Client {
    /// The client for receives that long-poll `wait_seconds`: the same
    /// HTTP client (see `https_client`), credentials and endpoint, with
    /// `deadline`.
    fn receiver(&self, wait_seconds: u32, deadline: Deadline) -> aws_sdk_sqs::Client {
        let mut receivers = self
            .receivers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        receivers
            .entry(wait_seconds)
            .or_insert_with(|| {
                let config = self
                    .sqs
                    .config()
                    .to_builder()
                    .timeout_config(deadline.timeout_config())
                    .build();
                aws_sdk_sqs::Client::from_conf(config)
            })
            .clone()
    }

    /// One `ReceiveMessage` call with every system attribute, bounded by its
    /// long poll plus a margin.
    pub async fn receive(
        &self,
        queue_url: &str,
        options: &ReceiveOptions,
    ) -> Result<ReceiveOutput, Error> {
        let call = Call {
            deadline: Deadline::receive(options.wait_seconds),
            ..self.call("ReceiveMessage", queue_url)
        };
        let output = self
            .receiver(options.wait_seconds, call.deadline)
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(options.max_messages as i32)
            .wait_time_seconds(options.wait_seconds as i32)
            .set_visibility_timeout(options.visibility_timeout.map(|v| v as i32))
            .set_receive_request_attempt_id(options.attempt_id.clone())
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| classify(e, &call))?;
        let mut received = ReceiveOutput::default();
        for message in output.messages.unwrap_or_default() {
            match received_message(message) {
                Ok(message) => received.messages.push(message),
                Err(malformed) => received.malformed.push(malformed),
            }
        }
        Ok(received)
    }

    /// Deletes up to ten messages by receipt handle; returns the entries
    /// that failed or that SQS did not account for.
    pub async fn delete_batch(
        &self,
        queue_url: &str,
        receipt_handles: &[&str],
    ) -> Result<Vec<EntryFailure>, Error> {
        check_batch_len(receipt_handles.len())?;
        let entries = receipt_handles
            .iter()
            .enumerate()
            .map(|(i, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*handle)
                    .build()
                    .expect("id and handle are set")
            })
            .collect();
        let output = self
            .sqs
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify(e, &self.call("DeleteMessageBatch", queue_url)))?;
        let successful = output.successful.into_iter().map(|entry| entry.id);
        Ok(entry_failures(
            receipt_handles.len(),
            successful,
            output.failed,
        ))
    }

    /// Sets the visibility timeout of up to ten messages (0 releases them at
    /// once); returns the entries that failed or that SQS did not account
    /// for.
    pub async fn change_visibility_batch(
        &self,
        queue_url: &str,
        entries: &[(&str, u32)],
    ) -> Result<Vec<EntryFailure>, Error> {
        check_batch_len(entries.len())?;
        let sent = entries.len();
        let entries = entries
            .iter()
            .enumerate()
            .map(|(i, (handle, seconds))| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*handle)
                    .visibility_timeout(*seconds as i32)
                    .build()
                    .expect("id and handle are set")
            })
            .collect();
        let output = self
            .sqs
            .change_message_visibility_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify(e, &self.call("ChangeMessageVisibilityBatch", queue_url)))?;
        let successful = output.successful.into_iter().map(|entry| entry.id);
        Ok(entry_failures(sent, successful, output.failed))
    }
}

/// Our view of a received message. Everything fifo relies on must be there:
/// a missing id, receipt handle, body, group or a count that does not parse
/// makes the message malformed rather than filled in with a default.
fn received_message(
    message: aws_sdk_sqs::types::Message,
) -> Result<ReceivedMessage, MalformedMessage> {
    let system = message.attributes.unwrap_or_default();
    let group_id = system
        .get(&MessageSystemAttributeName::MessageGroupId)
        .cloned();
    let malformed = |reason: String| MalformedMessage {
        message_id: message.message_id.clone(),
        group_id: group_id.clone(),
        reason,
    };
    let required = |value: Option<String>, what: &str| {
        value.ok_or_else(|| malformed(format!("the response has no {what}")))
    };
    let system_number = |name: MessageSystemAttributeName| -> Result<u64, MalformedMessage> {
        let value = system
            .get(&name)
            .ok_or_else(|| malformed(format!("the response has no {name}")))?;
        value
            .parse()
            .map_err(|_| malformed(format!("{name} `{value}` is not a number")))
    };
    let receive_count = system_number(MessageSystemAttributeName::ApproximateReceiveCount)?;
    let sent_timestamp_ms = system_number(MessageSystemAttributeName::SentTimestamp)?;
    let mut attributes = BTreeMap::new();
    for (name, attribute) in message.message_attributes.clone().unwrap_or_default() {
        let value = match (attribute.string_value, attribute.binary_value) {
            (Some(text), _) => AttributeValue::Text(text),
            (None, Some(bytes)) => AttributeValue::Binary(bytes.into_inner()),
            (None, None) => {
                return Err(malformed(format!("message attribute {name} has no value")));
            }
        };
        let data_type = attribute.data_type;
        attributes.insert(name, MessageAttribute { data_type, value });
    }
    Ok(ReceivedMessage {
        message_id: required(message.message_id.clone(), "MessageId")?,
        receipt_handle: required(message.receipt_handle.clone(), "ReceiptHandle")?,
        body: required(message.body.clone(), "Body")?,
        group_id: required(group_id.clone(), "MessageGroupId")?,
        sequence_number: required(
            system
                .get(&MessageSystemAttributeName::SequenceNumber)
                .cloned(),
            "SequenceNumber",
        )?,
        receive_count: u32::try_from(receive_count).map_err(|_| {
            malformed(format!(
                "ApproximateReceiveCount {receive_count} is too large"
            ))
        })?,
        sent_timestamp_ms,
        first_received_ms: system
            .get(&MessageSystemAttributeName::ApproximateFirstReceiveTimestamp)
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0),
        deduplication_id: system
            .get(&MessageSystemAttributeName::MessageDeduplicationId)
            .cloned(),
        trace_header: system
            .get(&MessageSystemAttributeName::AwsTraceHeader)
            .cloned(),
        sender_id: system.get(&MessageSystemAttributeName::SenderId).cloned(),
        attributes,
    })
}
