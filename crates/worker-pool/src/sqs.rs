//! The engine's [`Queue`] on SQS, through `fifo-sqs-client` (feature `sqs`).

use std::collections::BTreeMap;

use fifo_sqs_client::{
    self as sqs, Client, MessageAttribute, OutgoingMessage, ReceiveOptions, ReceiveOutput,
};

use crate::queue::{
    Attribute, AttributeValue, DeadLetterCopy, Delivery, EntryFailure, Malformed, Queue,
    QueueError, QueueErrorKind, ReceiveRequest, Received,
};

/// One SQS FIFO queue and, if its redrive policy names one, its dead-letter
/// queue and `maxReceiveCount`.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
    arn: String,
    dead_letter: Option<DeadLetterQueue>,
}

#[derive(Debug, Clone)]
struct DeadLetterQueue {
    url: String,
    max_receive_count: u32,
}

/// Why [`SqsQueue::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Reading the queue's attributes failed (missing, not FIFO, no access, SQS
    /// unreachable).
    #[error("opening {url}")]
    Queue {
        /// The queue URL given to [`SqsQueue::open`].
        url: String,
        /// What the client reported.
        #[source]
        source: sqs::Error,
    },
    /// The redrive policy names a dead-letter queue whose URL could not be
    /// looked up (deleted since, say).
    #[error("finding dead-letter queue {name}")]
    DeadLetterQueue {
        /// The dead-letter queue's name, from the redrive policy's ARN.
        name: String,
        /// What the client reported.
        #[source]
        source: sqs::Error,
    },
}

impl SqsQueue {
    /// Opens the queue at `queue_url`: checks that it exists and is a FIFO
    /// queue, and finds its dead-letter queue and `maxReceiveCount`, so that
    /// the engine moves a message that failed on its last receive itself
    /// and its group goes on.
    pub async fn open(client: Client, queue_url: &str) -> Result<SqsQueue, OpenError> {
        let attributes = client
            .fifo_queue(queue_url)
            .await
            .map_err(|source| OpenError::Queue {
                url: queue_url.to_owned(),
                source,
            })?;
        let dead_letter = match attributes.dead_letter {
            Some((name, max_receive_count)) => {
                let url = client.queue_url_by_name(&name).await.map_err(|source| {
                    OpenError::DeadLetterQueue {
                        name: name.clone(),
                        source,
                    }
                })?;
                Some(DeadLetterQueue {
                    url,
                    max_receive_count,
                })
            }
            None => None,
        };
        Ok(SqsQueue {
            client,
            queue_url: queue_url.to_owned(),
            arn: attributes.arn,
            dead_letter,
        })
    }

    /// The client the queue was opened with, for calls the engine does not make
    /// (sending, say).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The queue URL given to [`SqsQueue::open`].
    pub fn url(&self) -> &str {
        &self.queue_url
    }

    /// The queue's ARN, as SQS gave it (`arn:aws:sqs:REGION:ACCOUNT:NAME`).
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The dead-letter queue's URL, if the queue has one.
    pub fn dead_letter_url(&self) -> Option<&str> {
        self.dead_letter.as_ref().map(|d| d.url.as_str())
    }
}

impl Queue for SqsQueue {
    async fn receive(&self, request: &ReceiveRequest) -> Result<Received, QueueError> {
        let options = ReceiveOptions {
            max_messages: request.max_messages,
            wait_seconds: request.wait_seconds,
            visibility_timeout: request.visibility_timeout,
            attempt_id: request.attempt_id.clone(),
        };
        let output = self.client.receive(&self.queue_url, &options).await;
        output.map(received).map_err(queue_error)
    }

    async fn delete(&self, receipt_handles: &[&str]) -> Result<Vec<EntryFailure>, QueueError> {
        let failures = self
            .client
            .delete_batch(&self.queue_url, receipt_handles)
            .await;
        failures.map(entry_failures).map_err(queue_error)
    }

    async fn change_visibility(
        &self,
        entries: &[(&str, u32)],
    ) -> Result<Vec<EntryFailure>, QueueError> {
        let failures = self
            .client
            .change_visibility_batch(&self.queue_url, entries)
            .await;
        failures.map(entry_failures).map_err(queue_error)
    }

    async fn dead_letter(
        &self,
        receipt_handle: &str,
        copy: &DeadLetterCopy,
    ) -> Result<(), QueueError> {
        let Some(dead_letter) = &self.dead_letter else {
            return Err(QueueError::new(
                QueueErrorKind::Refused,
                format!("{} has no dead-letter queue", self.queue_url),
            ));
        };
        // The copy, with the given attributes: `Ok(Err(..))` when SQS
        // refused that entry.
        let send = async |attributes: &BTreeMap<String, Attribute>| {
            let message = OutgoingMessage {
                body: copy.body.clone(),
                group_id: copy.group_id.clone(),
                dedup_id: Some(copy.dedup_id.clone()),
                attributes: attributes
                    .iter()
                    .map(|(name, attribute)| (name.clone(), sqs_attribute(attribute)))
                    .collect(),
            };
            let sent = self
                .client
                .send_batch(&dead_letter.url, std::slice::from_ref(&message))
                .await
                .map_err(queue_error)?;
            Ok::<_, QueueError>(match sent.into_iter().next() {
                Some(Err(refused)) => Err(refused),
                _ => Ok(()),
            })
        };
        if let Err(refused) = send(&copy.annotated_attributes(&self.queue_url)).await? {
            // fifo's explanation may be what SQS refuses (it makes the
            // message too large for the dead-letter queue, say): the
            // message itself goes, as it came.
            tracing::warn!(
                "the dead-letter queue refused message {}'s copy with fifo's explanation ({}: {}); sending it without",
                copy.dedup_id,
                refused.code,
                refused.message
            );
            if let Err(failure) = send(&copy.attributes).await? {
                return Err(refusal(&failure.code, &failure.message));
            }
        }
        match self.delete(&[receipt_handle]).await?.first() {
            Some(failure) => Err(refusal("the delete was refused", &failure.reason)),
            None => Ok(()),
        }
    }

    async fn is_empty(&self) -> Result<bool, QueueError> {
        let a = self
            .client
            .queue_attributes(&self.queue_url)
            .await
            .map_err(queue_error)?;
        Ok(a.visible == 0 && a.in_flight == 0 && a.delayed == 0)
    }

    fn max_receive_count(&self) -> Option<u32> {
        self.dead_letter.as_ref().map(|d| d.max_receive_count)
    }
}

/// The only entry of a batch, refused, as an error.
fn refusal(code: &str, message: &str) -> QueueError {
    QueueError::new(QueueErrorKind::Refused, format!("{code}: {message}"))
}

fn queue_error(err: sqs::Error) -> QueueError {
    let kind = match &err {
        sqs::Error::QueueDoesNotExist { .. }
        | sqs::Error::NotFifo { .. }
        | sqs::Error::BadQueueUrl { .. }
        | sqs::Error::BadEndpointUrl { .. }
        | sqs::Error::MissingRegion
        | sqs::Error::Credentials { .. } => QueueErrorKind::Unusable,
        sqs::Error::Unreachable { .. } => QueueErrorKind::Unreachable,
        sqs::Error::Throttled { .. } | sqs::Error::ServiceUnavailable { .. } => {
            QueueErrorKind::Busy
        }
        sqs::Error::InvalidParameter { .. } => QueueErrorKind::Refused,
        sqs::Error::QueueExistsWithOtherSettings { .. } | sqs::Error::Other { .. } => {
            QueueErrorKind::Other
        }
    };
    QueueError::new(kind, err)
}

fn entry_failures(failures: Vec<sqs::EntryFailure>) -> Vec<EntryFailure> {
    failures
        .into_iter()
        .map(|failure| EntryFailure {
            index: failure.index,
            handle_gone: failure.kind() == sqs::EntryFailureKind::ReceiptHandleGone,
            reason: failure.message,
        })
        .collect()
}

fn received(output: ReceiveOutput) -> Received {
    Received {
        deliveries: output
            .messages
            .into_iter()
            .map(|m| Delivery {
                message_id: m.message_id,
                receipt_handle: m.receipt_handle,
                body: m.body,
                group_id: m.group_id,
                sequence_number: m.sequence_number,
                receive_count: m.receive_count,
                sent_timestamp_ms: m.sent_timestamp_ms,
                first_received_ms: m.first_received_ms,
                deduplication_id: m.deduplication_id,
                trace_header: m.trace_header,
                sender_id: m.sender_id,
                attributes: m
                    .attributes
                    .into_iter()
                    .map(|(name, attribute)| (name, attribute_of(attribute)))
                    .collect(),
            })
            .collect(),
        malformed: output
            .malformed
            .into_iter()
            .map(|m| Malformed {
                message_id: m.message_id,
                group_id: m.group_id,
                reason: m.reason,
            })
            .collect(),
    }
}

fn attribute_of(attribute: MessageAttribute) -> Attribute {
    Attribute {
        data_type: attribute.data_type,
        value: match attribute.value {
            sqs::AttributeValue::Text(text) => AttributeValue::Text(text),
            sqs::AttributeValue::Binary(bytes) => AttributeValue::Binary(bytes),
        },
    }
}

/// An attribute as SQS takes it. A text value is never empty, and the
/// characters SQS refuses are escaped: a dead letter's reason may quote a
/// service's error page. (Values SQS delivered pass unchanged.)
fn sqs_attribute(attribute: &Attribute) -> MessageAttribute {
    MessageAttribute {
        data_type: attribute.data_type.clone(),
        value: match &attribute.value {
            AttributeValue::Text(text) if text.is_empty() => {
                sqs::AttributeValue::Text("(empty)".to_owned())
            }
            AttributeValue::Text(text) => sqs::AttributeValue::Text(
                text.chars()
                    .map(|c| {
                        if sqs::accepts_char(c) {
                            c.to_string()
                        } else {
                            c.escape_default().to_string()
                        }
                    })
                    .collect(),
            ),
            AttributeValue::Binary(bytes) => sqs::AttributeValue::Binary(bytes.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> sqs::AttributeValue {
        sqs_attribute(&Attribute {
            data_type: "String".to_owned(),
            value: AttributeValue::Text(value.to_owned()),
        })
        .value
    }

    #[test]
    fn a_reason_sqs_would_refuse_is_made_acceptable() {
        assert_eq!(
            text("bad \u{1b}[31mfield\u{0}"),
            sqs::AttributeValue::Text("bad \\u{1b}[31mfield\\u{0}".to_owned())
        );
        assert_eq!(text(""), sqs::AttributeValue::Text("(empty)".to_owned()));
        assert_eq!(
            text("ok é\n"),
            sqs::AttributeValue::Text("ok é\n".to_owned())
        );
    }
}
