//! The engine's boundary with a queue: the few calls it makes, in its own
//! types. SQS implements it in `sqs` (feature `sqs`), the in-memory queue
//! in `memory`; the engine knows neither.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::SystemTime;

/// The few queue operations the engine needs. Implemented for SQS by
/// `SqsQueue` (feature `sqs`) and in memory by [`crate::memory::MemoryQueue`].
pub trait Queue: Clone + Send + Sync + 'static {
    /// Receives up to `request.max_messages` messages, waiting up to
    /// `request.wait_seconds` for the first (long poll); a group's messages
    /// come in send order.
    fn receive(
        &self,
        request: &ReceiveRequest,
    ) -> impl Future<Output = Result<Received, QueueError>> + Send;

    /// Deletes up to ten messages; returns the entries that failed.
    fn delete(
        &self,
        receipt_handles: &[&str],
    ) -> impl Future<Output = Result<Vec<EntryFailure>, QueueError>> + Send;

    /// Sets the visibility of up to ten messages; returns the entries that failed.
    fn change_visibility(
        &self,
        entries: &[(&str, u32)],
    ) -> impl Future<Output = Result<Vec<EntryFailure>, QueueError>> + Send;

    /// Moves an in-flight message to the dead-letter queue: sends `copy`
    /// there (its de-duplication id is the message id, so a retry is
    /// harmless) and deletes the original.
    fn dead_letter(
        &self,
        receipt_handle: &str,
        copy: &DeadLetterCopy,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// True when no message is visible, in flight or delayed.
    fn is_empty(&self) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// After how many receives the queue moves a message to its dead-letter
    /// queue (its redrive policy), if it has one. The engine then moves a
    /// message that fails on its last receive itself, and its group goes on
    /// (left to the queue, the redrive would take the rest of the group
    /// too: they were received and released with the failing message each
    /// time, so their receive counts ran out with it).
    fn max_receive_count(&self) -> Option<u32> {
        None
    }
}

/// One receive.
#[derive(Debug, Clone, Default)]
pub struct ReceiveRequest {
    /// 1..=10.
    pub max_messages: u32,
    /// Long poll, 0..=20 seconds.
    pub wait_seconds: u32,
    /// Overrides the queue's visibility timeout for these messages.
    pub visibility_timeout: Option<u32>,
    /// Same id after a network error (the queue then returns the same
    /// messages), a new one after an answer.
    pub attempt_id: Option<String>,
}

/// What one receive returned: the messages the engine can use, and those
/// whose delivery lacked something it relies on (they are left alone and
/// come back after their visibility timeout).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    /// The messages to track and run, in the order the queue gave them.
    pub deliveries: Vec<Delivery>,
    /// Deliveries the engine leaves alone: counted, logged, and back after
    /// their visibility timeout.
    pub malformed: Vec<Malformed>,
}

/// A message as delivered, with the system attributes the engine relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The queue's id of the message, the same on every delivery; the engine
    /// recognises a redelivery by it and uses it as the dead-letter copy's
    /// de-duplication id.
    pub message_id: String,
    /// Names this delivery in deletes and visibility changes; each delivery
    /// gets a new one.
    pub receipt_handle: String,
    /// The body as sent.
    pub body: String,
    /// The message group id: the engine runs and deletes a group's messages one
    /// at a time, in order.
    pub group_id: String,
    /// SQS's sequence number, as decimal text: increases with send order within a
    /// group.
    pub sequence_number: String,
    /// Deliveries so far, this one included.
    pub receive_count: u32,
    /// When the queue accepted the message (SQS's `SentTimestamp`), in ms since
    /// the Unix epoch; 0 from the in-memory queue.
    pub sent_timestamp_ms: u64,
    /// When the queue first delivered it, in ms since the Unix epoch; 0
    /// when unknown.
    pub first_received_ms: u64,
    /// Its de-duplication id, when the queue says.
    pub deduplication_id: Option<String>,
    /// The trace context the sender attached as a system attribute
    /// (SQS's `AWSTraceHeader`), if any.
    pub trace_header: Option<String>,
    /// Who sent it (SQS's `SenderId`), when the queue says.
    pub sender_id: Option<String>,
    /// Every message attribute, as sent.
    pub attributes: BTreeMap<String, Attribute>,
}

/// A delivered message that cannot be handled as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// As much as the delivery said about it.
    pub message_id: Option<String>,
    /// The message group id, if the delivery had one.
    pub group_id: Option<String>,
    /// What was missing or unreadable, for the log.
    pub reason: String,
}

/// A message attribute: its data type (`String`, `Number`, `Binary`,
/// optionally with a custom suffix such as `Number.int`) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// `String`, `Number` or `Binary`, with any custom suffix.
    pub data_type: String,
    /// Text for String and Number types, bytes for Binary.
    pub value: AttributeValue,
}

impl Attribute {
    /// The text of a String or Number attribute.
    pub fn text(&self) -> Option<&str> {
        match &self.value {
            AttributeValue::Text(text) => Some(text),
            AttributeValue::Binary(_) => None,
        }
    }
}

/// String and Number attributes carry text; Binary ones bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// A String or Number value (a number as its decimal text); only these
    /// reach the handler's `Message`.
    Text(String),
    /// A Binary value: kept for the dead-letter copy, not given to the handler.
    Binary(Vec<u8>),
}

/// The copy of a message that goes to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterCopy {
    /// The original body.
    pub body: String,
    /// The original group id (a FIFO queue's dead-letter queue is FIFO too).
    pub group_id: String,
    /// The original message id, so a retried move adds no second copy (SQS
    /// de-duplicates within five minutes).
    pub dedup_id: String,
    /// The original message attributes, Binary ones included.
    pub attributes: BTreeMap<String, Attribute>,
    /// Why it is dead-lettered, for the attributes fifo adds
    /// ([`DeadLetterCopy::annotated_attributes`]).
    pub why: DeadLetterReason,
}

/// Why the engine moved a message to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterReason {
    /// The handler's last error, as it reads.
    pub error: String,
    /// The program's exit status or the service's HTTP status, when the
    /// handler gave one ([`fifo_handler::StatusError`]).
    pub status: Option<String>,
    /// Handler runs in its last delivery.
    pub attempts: u32,
    /// Its receive count on that delivery.
    pub receive_count: u32,
    /// When its last run failed.
    pub failed_at: SystemTime,
}

/// SQS's limit on message attributes per message.
const MAX_ATTRIBUTES: usize = 10;

/// How much of the handler's error a dead letter keeps.
const MAX_REASON: usize = 1024;

impl DeadLetterCopy {
    /// The attributes the copy goes with: the original ones, and fifo's
    /// explanation, within SQS's limit of ten:
    ///
    /// - `fifo.reason`: the handler's last error (its first 1024 bytes);
    ///   always there;
    /// - then every original attribute (when the original has all ten, the
    ///   last by name is dropped, and the reason says which);
    /// - then, as room allows, in this order: `fifo.receive-count`,
    ///   `fifo.attempts`, `fifo.status` (when the handler gave one),
    ///   `fifo.failed-at` (ISO 8601, UTC) and `fifo.source-queue`.
    ///
    /// An original attribute named like one of fifo's (a message
    /// dead-lettered again after a redrive) is replaced by the new value.
    pub fn annotated_attributes(&self, source_queue: &str) -> BTreeMap<String, Attribute> {
        let text = |value: String| Attribute {
            data_type: "String".to_owned(),
            value: AttributeValue::Text(value),
        };
        let number = |value: u32| Attribute {
            data_type: "Number".to_owned(),
            value: AttributeValue::Text(value.to_string()),
        };
        let mut ours = vec![
            ("fifo.receive-count", number(self.why.receive_count)),
            ("fifo.attempts", number(self.why.attempts)),
        ];
        if let Some(status) = &self.why.status {
            ours.push(("fifo.status", text(status.clone())));
        }
        ours.push(("fifo.failed-at", text(iso_8601(self.why.failed_at))));
        ours.push(("fifo.source-queue", text(source_queue.to_owned())));

        let mut originals: Vec<(&String, &Attribute)> = self
            .attributes
            .iter()
            .filter(|(name, _)| {
                name.as_str() != "fifo.reason" && !ours.iter().any(|(ours, _)| ours == name)
            })
            .collect();
        let mut reason = truncated(&self.why.error, MAX_REASON);
        let dropped: Vec<&String> = originals
            .split_off(originals.len().min(MAX_ATTRIBUTES - 1))
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        if !dropped.is_empty() {
            let names: Vec<&str> = dropped.iter().map(|n| n.as_str()).collect();
            reason += &format!(" (attribute {} dropped for room)", names.join(", "));
        }
        let mut attributes: BTreeMap<String, Attribute> = originals
            .into_iter()
            .map(|(name, attribute)| (name.clone(), attribute.clone()))
            .collect();
        attributes.insert("fifo.reason".to_owned(), text(reason));
        for (name, attribute) in ours {
            if attributes.len() == MAX_ATTRIBUTES {
                break;
            }
            attributes.insert(name.to_owned(), attribute);
        }
        attributes
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncated(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `2026-11-26T09:30:00.123Z`.
fn iso_8601(at: SystemTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from(at)
        .format(format)
        .unwrap_or_default()
}

/// A failed entry of a batch call; `index` is its position in the slice
/// given to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFailure {
    /// Position in the slice given to the call (`receipt_handles` or
    /// `entries`), from 0.
    pub index: usize,
    /// The queue no longer accepts the receipt handle (expired, or the
    /// message was delivered again): the message is not ours any more.
    /// Otherwise the entry is worth trying again.
    pub handle_gone: bool,
    /// The queue's explanation, for the log.
    pub reason: String,
}

/// Why a call to the queue failed, and what that means for retrying it.
#[derive(Debug)]
pub struct QueueError {
    kind: QueueErrorKind,
    cause: Box<dyn std::error::Error + Send + Sync>,
}

/// The kinds of [`QueueError`] the engine acts on differently. Every
/// failed call is reported; what follows depends on the kind and the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueErrorKind {
    /// No answer, or none in time: the call may have taken effect. Retried
    /// after a backoff; a receive with the same attempt id, so that it gets
    /// the same messages.
    Unreachable,
    /// Throttled, or the queue's service in trouble: retried after a
    /// backoff (a receive with a new attempt id).
    Busy,
    /// The request was refused as invalid (a stale receipt handle, a
    /// missing dead-letter queue): the same request fails again. A receive
    /// refused stops the run; a delete or visibility change refused gives
    /// its messages up; a dead-letter move refused hands the message back
    /// with the rest of its group.
    Refused,
    /// The queue cannot be used at all (gone, not FIFO, no access): the
    /// run stops, after handing back what it holds.
    Unusable,
    /// Anything else: receives, deletes and visibility changes are retried
    /// after a backoff; a dead-letter move is not (the message goes back
    /// with its group).
    Other,
}

impl QueueError {
    /// A failure of `kind`; `cause` is the implementation's own error, which
    /// `Display` shows.
    pub fn new(
        kind: QueueErrorKind,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> QueueError {
        QueueError {
            kind,
            cause: cause.into(),
        }
    }

    /// The kind, which decides whether the engine retries, gives messages up or
    /// stops the run.
    pub fn kind(&self) -> QueueErrorKind {
        self.kind
    }

    /// Worth retrying as it is: the network, throttling, the service's
    /// own trouble.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            QueueErrorKind::Unreachable | QueueErrorKind::Busy
        )
    }

    /// The queue implementation's own error, for callers that know it.
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.cause
    }
}

impl std::fmt::Display for QueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.cause.fmt(f)
    }
}

/// Says what its cause says, so the cause's own causes follow it.
impl std::error::Error for QueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.source()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn copy(originals: usize) -> DeadLetterCopy {
        DeadLetterCopy {
            body: "b".to_owned(),
            group_id: "g".to_owned(),
            dedup_id: "m".to_owned(),
            attributes: (0..originals)
                .map(|n| {
                    let attribute = Attribute {
                        data_type: "String".to_owned(),
                        value: AttributeValue::Text(format!("v{n}")),
                    };
                    (format!("a{n}"), attribute)
                })
                .collect(),
            why: DeadLetterReason {
                error: "rejected: not JSON".to_owned(),
                status: Some("HTTP 422".to_owned()),
                attempts: 1,
                receive_count: 2,
                failed_at: UNIX_EPOCH + Duration::from_millis(1_764_149_400_123),
            },
        }
    }

    fn text(attributes: &BTreeMap<String, Attribute>, name: &str) -> String {
        attributes[name].text().unwrap().to_owned()
    }

    #[test]
    fn a_dead_letter_says_why_with_its_attributes_kept() {
        let attributes = copy(2).annotated_attributes("https://q/orders.fifo");
        let names: Vec<&str> = attributes.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "a0",
                "a1",
                "fifo.attempts",
                "fifo.failed-at",
                "fifo.reason",
                "fifo.receive-count",
                "fifo.source-queue",
                "fifo.status"
            ]
        );
        assert_eq!(text(&attributes, "fifo.reason"), "rejected: not JSON");
        assert_eq!(text(&attributes, "fifo.status"), "HTTP 422");
        assert_eq!(text(&attributes, "fifo.receive-count"), "2");
        assert_eq!(attributes["fifo.attempts"].data_type, "Number");
        assert_eq!(
            text(&attributes, "fifo.failed-at"),
            "2025-11-26T09:30:00.123Z"
        );
        assert_eq!(text(&attributes, "a1"), "v1");
    }

    #[test]
    fn within_ten_attributes_originals_come_before_the_details() {
        let six = copy(6).annotated_attributes("q");
        assert_eq!(six.len(), 10);
        assert!(six.contains_key("fifo.reason") && six.contains_key("fifo.status"));
        assert!(!six.contains_key("fifo.failed-at"), "no room left");

        let ten = copy(10).annotated_attributes("q");
        assert_eq!(ten.len(), 10);
        assert!(!ten.contains_key("a9"));
        assert_eq!(
            text(&ten, "fifo.reason"),
            "rejected: not JSON (attribute a9 dropped for room)"
        );
    }

    #[test]
    fn a_long_reason_is_cut_and_an_old_annotation_replaced() {
        let mut long = copy(0);
        long.why.error = "é".repeat(1000);
        long.attributes.insert(
            "fifo.reason".to_owned(),
            Attribute {
                data_type: "String".to_owned(),
                value: AttributeValue::Text("the first time".to_owned()),
            },
        );
        let attributes = long.annotated_attributes("q");
        let reason = text(&attributes, "fifo.reason");
        assert!(
            reason.len() <= MAX_REASON + '…'.len_utf8(),
            "{}",
            reason.len()
        );
        assert!(reason.starts_with('é') && reason.ends_with('…'));
    }
}
