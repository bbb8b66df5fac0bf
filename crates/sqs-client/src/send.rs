//! Sending: messages split into batches as SQS takes them, and one
//! `SendMessageBatch` call with an outcome per entry.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};

use crate::batch::{EntryFailure, check_batch_len, entry_failures};
use crate::classify::classify;
use crate::{AttributeValue, Client, Error, MAX_BATCH_ENTRIES, MessageAttribute};

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutgoingMessage {
    /// The message body: UTF-8, at most the queue's `max_message_bytes`.
    pub body: String,
    /// The `MessageGroupId`: SQS stores and delivers the messages of one
    /// group in the order they were sent.
    pub group_id: String,
    /// None on a queue with content-based de-duplication lets the queue
    /// derive it from the body.
    pub dedup_id: Option<String>,
    /// Message attributes, sent as they are (at most 10).
    pub attributes: BTreeMap<String, MessageAttribute>,
}

/// Splits `messages`, in order, into batches of at most ten entries whose
/// sizes (body and message attributes, as SQS counts them) add up to at most
/// `max_bytes`.
pub fn batches(messages: &[OutgoingMessage], max_bytes: usize) -> Vec<&[OutgoingMessage]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, message) in messages.iter().enumerate() {
        let size = payload_bytes(message);
        let full = i - start == MAX_BATCH_ENTRIES || bytes + size > max_bytes;
        if full && i > start {
            out.push(&messages[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < messages.len() {
        out.push(&messages[start..]);
    }
    out
}

/// A message's share of the batch payload: SQS counts the body and each
/// attribute's name, data type and value.
pub fn payload_bytes(message: &OutgoingMessage) -> usize {
    let attributes: usize = message
        .attributes
        .iter()
        .map(|(name, attribute)| {
            let value = match &attribute.value {
                AttributeValue::Text(text) => text.len(),
                AttributeValue::Binary(bytes) => bytes.len(),
            };
            name.len() + attribute.data_type.len() + value
        })
        .sum();
    message.body.len() + attributes
}

impl Client {
    /// Sends one batch (at most ten entries, see [`batches`]) with their
    /// message attributes; entries are stored in slice order within each
    /// group. Returns one outcome per entry, in slice order: the message id
    /// SQS gave it, or why it was refused or not accounted for. A message
    /// SQS de-duplicated gets the id of the message it duplicates.
    pub async fn send_batch(
        &self,
        queue_url: &str,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<Result<String, EntryFailure>>, Error> {
        check_batch_len(messages.len())?;
        let entries = messages.iter().enumerate().map(send_entry).collect();
        let output = self
            .sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify(e, &self.call("SendMessageBatch", queue_url)))?;
        let mut message_ids: HashMap<String, String> = output
            .successful
            .into_iter()
            .map(|entry| (entry.id, entry.message_id))
            .collect();
        let mut failures =
            entry_failures(messages.len(), message_ids.keys().cloned(), output.failed)
                .into_iter()
                .peekable();
        Ok((0..messages.len())
            .map(|index| match failures.next_if(|f| f.index == index) {
                Some(failure) => Err(failure),
                None => Ok(message_ids
                    .remove(&index.to_string())
                    .expect("an entry that did not fail succeeded")),
            })
            .collect())
    }
}

/// The request entry for `message`, the `index`-th of its batch: its id is
/// the index, so that the response's entries can be matched back.
fn send_entry((index, message): (usize, &OutgoingMessage)) -> SendMessageBatchRequestEntry {
    let attributes: HashMap<String, MessageAttributeValue> = message
        .attributes
        .iter()
        .map(|(name, attribute)| (name.clone(), attribute_value(attribute)))
        .collect();
    SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(&message.body)
        .message_group_id(&message.group_id)
        .set_message_deduplication_id(message.dedup_id.clone())
        .set_message_attributes((!attributes.is_empty()).then_some(attributes))
        .build()
        .expect("id and body are set")
}

/// String and Number attributes travel as text, Binary ones as bytes; the
/// data type goes as given.
fn attribute_value(attribute: &MessageAttribute) -> MessageAttributeValue {
    let value = MessageAttributeValue::builder().data_type(&attribute.data_type);
    let value = match &attribute.value {
        AttributeValue::Text(text) => value.string_value(text),
        AttributeValue::Binary(bytes) => value.binary_value(Blob::new(bytes.clone())),
    };
    value.build().expect("the data type is set")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize) -> OutgoingMessage {
        OutgoingMessage {
            body: "x".repeat(len),
            group_id: "g".to_owned(),
            dedup_id: None,
            ..OutgoingMessage::default()
        }
    }

    #[test]
    fn batches_hold_at_most_ten_entries_in_order() {
        let messages: Vec<_> = (1..=25).map(message).collect();
        let sizes: Vec<_> = batches(&messages, usize::MAX)
            .iter()
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, [10, 10, 5]);
        assert_eq!(batches(&messages, usize::MAX)[2][0].body.len(), 21);
    }

    #[test]
    fn batches_respect_the_byte_limit() {
        let messages = vec![message(60), message(50), message(40), message(100)];
        let sizes: Vec<_> = batches(&messages, 100).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [1, 2, 1]);
        assert!(batches(&[], 100).is_empty());
    }

    fn with_attributes(mut message: OutgoingMessage) -> OutgoingMessage {
        let text = |data_type: &str, text: &str| MessageAttribute {
            data_type: data_type.to_owned(),
            value: AttributeValue::Text(text.to_owned()),
        };
        message.attributes = BTreeMap::from([
            ("reason".to_owned(), text("String", "handler failed")),
            ("attempts".to_owned(), text("Number.int", "3")),
            (
                "raw".to_owned(),
                MessageAttribute {
                    data_type: "Binary".to_owned(),
                    value: AttributeValue::Binary(vec![0, 159, 255]),
                },
            ),
        ]);
        message
    }

    #[test]
    fn attributes_count_towards_the_byte_limit() {
        let attributes = "reason".len()
            + "String".len()
            + "handler failed".len()
            + "attempts".len()
            + "Number.int".len()
            + 1
            + "raw".len()
            + "Binary".len()
            + 3;
        let with = with_attributes(message(10));
        assert_eq!(payload_bytes(&with), 10 + attributes);
        let messages = vec![with, message(10)];
        let sizes: Vec<_> = batches(&messages, 20 + attributes - 1)
            .iter()
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, [1, 1]);
        assert_eq!(batches(&messages, 20 + attributes).len(), 1);
    }

    #[test]
    fn a_send_entry_carries_every_attribute_with_its_type() {
        let entry = send_entry((3, &with_attributes(message(5))));
        assert_eq!(entry.id, "3");
        assert_eq!(entry.message_group_id.as_deref(), Some("g"));
        let attributes = entry.message_attributes.expect("attributes are sent");
        assert_eq!(attributes.len(), 3);
        let reason = &attributes["reason"];
        assert_eq!(reason.data_type, "String");
        assert_eq!(reason.string_value.as_deref(), Some("handler failed"));
        assert_eq!(reason.binary_value, None);
        let attempts = &attributes["attempts"];
        assert_eq!(attempts.data_type, "Number.int");
        assert_eq!(attempts.string_value.as_deref(), Some("3"));
        let raw = &attributes["raw"];
        assert_eq!(raw.data_type, "Binary");
        assert_eq!(raw.string_value, None);
        assert_eq!(
            raw.binary_value.as_ref().map(Blob::as_ref),
            Some(&[0, 159, 255][..])
        );

        let plain = send_entry((0, &message(5)));
        assert_eq!(plain.message_attributes, None);
    }
}
