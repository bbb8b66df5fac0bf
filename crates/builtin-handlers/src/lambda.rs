//! Lambda's SQS event, so that an app written for AWS Lambda runs under
//! fifo unchanged: a batch of one group's messages handed over as the event
//! Lambda would have passed, and the app's `batchItemFailures` answer read
//! back with Lambda's rule for FIFO queues.

use fifo_handler::{BatchOutcome, HandlerError, Message, Outcome, StatusError};
use md5::{Digest, Md5};
use serde_json::{Map, Value, json};

/// Where the messages come from, as Lambda's records name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSource {
    /// The queue's ARN (each record's `eventSourceARN`).
    pub queue_arn: String,
    /// The queue's region (each record's `awsRegion`).
    pub region: String,
}

/// The most an answer may hold: Lambda's own limit on a synchronous
/// invocation's response (6 MB).
pub(crate) const MAX_ANSWER: usize = 6 * 1024 * 1024;

/// Lambda's SQS event for `messages` (one group's, in order):
/// `{"Records": [...]}`, one record per message.
pub(crate) fn event(messages: &[&Message], source: &EventSource) -> Vec<u8> {
    let records: Vec<Value> = messages.iter().map(|m| record(m, source)).collect();
    serde_json::to_vec(&json!({ "Records": records })).expect("JSON values serialize")
}

fn record(message: &Message, source: &EventSource) -> Value {
    let mut attributes = Map::new();
    let mut put = |name: &str, value: String| {
        attributes.insert(name.to_owned(), Value::String(value));
    };
    put("ApproximateReceiveCount", message.receive_count.to_string());
    put("SentTimestamp", message.sent_timestamp_ms.to_string());
    if let Some(sender) = &message.sender_id {
        put("SenderId", sender.clone());
    }
    if message.first_received_ms > 0 {
        put(
            "ApproximateFirstReceiveTimestamp",
            message.first_received_ms.to_string(),
        );
    }
    put("SequenceNumber", message.sequence_number.clone());
    put("MessageGroupId", message.group_id.clone());
    if let Some(id) = &message.deduplication_id {
        put("MessageDeduplicationId", id.clone());
    }
    if let Some(header) = &message.trace_header {
        put("AWSTraceHeader", header.clone());
    }
    let message_attributes: Map<String, Value> = message
        .attributes
        .iter()
        .map(|(name, value)| {
            let data_type = message
                .attribute_types
                .get(name)
                .map_or("String", String::as_str);
            let attribute = json!({
                "stringValue": value,
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": data_type,
            });
            (name.clone(), attribute)
        })
        .collect();
    json!({
        "messageId": message.id,
        "receiptHandle": message.receipt_handle,
        "body": message.body,
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": format!("{:x}", Md5::digest(message.body.as_bytes())),
        "eventSource": "aws:sqs",
        "eventSourceARN": source.queue_arn,
        "awsRegion": source.region,
    })
}

/// What the app's answer to an event means for its batch, by Lambda's rule
/// for FIFO queues: the messages before the first one listed in
/// `batchItemFailures` succeeded, that one failed, and the ones after it
/// run again after it. Nothing listed (an empty answer, `null`, `{}`, an
/// empty or null list) is success of all. An answer Lambda could not read
/// either (not JSON, not an object, an entry without a known
/// `itemIdentifier`) fails the whole batch; `who` names the app in errors.
pub(crate) fn outcome(answer: &[u8], messages: &[&Message], who: &str) -> BatchOutcome {
    match first_failure(answer, messages) {
        Ok(None) => BatchOutcome::all(messages.len()),
        Ok(Some(index)) => BatchOutcome::failed_at(
            index,
            StatusError::new(
                "batchItemFailures",
                format!(
                    "{who} listed message {} in batchItemFailures",
                    messages[index].id
                ),
            ),
        ),
        Err(why) => BatchOutcome::failed_at(0, unreadable(who, &why)),
    }
}

/// A program's stdout split into what it logged and its answer: all of it
/// when it is JSON as a whole (or empty); otherwise, when its last line is
/// JSON, that line, and the lines before it are the log (a function that
/// logs with `print()` writes its log to stdout, as under Lambda, before
/// the answer).
pub(crate) fn split_answer(stdout: &[u8]) -> (&[u8], &[u8]) {
    let is_json = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).is_ok();
    if stdout.trim_ascii().is_empty() || is_json(stdout) {
        return (&[], stdout);
    }
    let text = stdout.trim_ascii_end();
    let start = text
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    if start > 0 && is_json(&text[start..]) {
        (&stdout[..start], &text[start..])
    } else {
        (&[], stdout)
    }
}

/// What ends the text of a failure of a whole batch of `size`: said when
/// there is more than the message it is blamed on.
pub(crate) fn whole_batch(size: usize) -> String {
    match size {
        0 | 1 => String::new(),
        n => format!("; the whole batch of {n} failed"),
    }
}

/// The failure of a whole batch whose answer was over [`MAX_ANSWER`].
pub(crate) fn too_long(who: &str) -> BatchOutcome {
    BatchOutcome::failed_at(0, unreadable(who, "more than 6 MB"))
}

/// One message's outcome, from the outcome of its batch of one.
pub(crate) fn single(outcome: BatchOutcome) -> Outcome {
    match outcome.error {
        None => Ok(()),
        Some(error) => Err(error),
    }
}

/// The failure of a whole batch whose answer cannot be read.
fn unreadable(who: &str, why: &str) -> HandlerError {
    StatusError::new(
        "unreadable answer",
        format!("{who} answered {why}, so the whole batch failed (as under Lambda)"),
    )
    .into()
}

/// The index of the first message of the batch that `answer` lists as
/// failed, `None` when it lists none, or why the answer cannot be read.
fn first_failure(answer: &[u8], messages: &[&Message]) -> Result<Option<usize>, String> {
    if answer.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let answer: Value = serde_json::from_slice(answer).map_err(|e| {
        let start: String = String::from_utf8_lossy(answer).chars().take(60).collect();
        format!("{start:?}, which is not JSON ({e})")
    })?;
    let failures = match &answer {
        Value::Null => return Ok(None),
        Value::Object(object) => object.get("batchItemFailures").unwrap_or(&Value::Null),
        other => {
            return Err(format!(
                "{}, which is not an object with batchItemFailures",
                shown(other)
            ));
        }
    };
    let failures = match failures {
        Value::Null => return Ok(None),
        Value::Array(failures) => failures,
        other => return Err(format!("batchItemFailures {}, not a list", shown(other))),
    };
    let mut first: Option<usize> = None;
    for failure in failures {
        let id = match failure.get("itemIdentifier") {
            Some(Value::String(id)) if !id.is_empty() => id,
            Some(other) => {
                return Err(format!(
                    "an itemIdentifier {}, which is not a message id",
                    shown(other)
                ));
            }
            None => {
                return Err(format!(
                    "a batchItemFailures entry {} without an itemIdentifier",
                    shown(failure)
                ));
            }
        };
        let index = messages
            .iter()
            .position(|m| m.id == *id)
            .ok_or_else(|| format!("itemIdentifier {id:?}, which is no message of the batch"))?;
        first = Some(first.map_or(index, |first| first.min(index)));
    }
    Ok(first)
}

/// A JSON value for an error, cut short.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn message(id: &str) -> Message {
        Message {
            id: id.to_owned(),
            group_id: "acct-1".to_owned(),
            body: "hello".to_owned(),
            receive_count: 2,
            sequence_number: "18849496460467696128".to_owned(),
            sent_timestamp_ms: 1_573_251_510_774,
            first_received_ms: 1_573_251_510_775,
            deduplication_id: Some("d-1".to_owned()),
            sender_id: Some("AIDAIO23YVJENQZJOL4VO".to_owned()),
            receipt_handle: "AQEB-handle".to_owned(),
            attributes: BTreeMap::from([("amount".to_owned(), "12.5".to_owned())]),
            attribute_types: BTreeMap::from([("amount".to_owned(), "Number".to_owned())]),
            attempt: 1,
            ..Message::default()
        }
    }

    fn source() -> EventSource {
        EventSource {
            queue_arn: "arn:aws:sqs:eu-west-1:123456789012:orders.fifo".to_owned(),
            region: "eu-west-1".to_owned(),
        }
    }

    #[test]
    fn the_event_has_lambdas_fields_in_order() {
        let (first, second) = (message("m-1"), message("m-2"));
        let event: Value = serde_json::from_slice(&event(&[&first, &second], &source())).unwrap();
        let records = event["Records"].as_array().unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1]["messageId"], "m-2");
        let record = &records[0];
        assert_eq!(record["messageId"], "m-1");
        assert_eq!(record["receiptHandle"], "AQEB-handle");
        assert_eq!(record["body"], "hello");
        // MD5 of "hello".
        assert_eq!(record["md5OfBody"], "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(record["eventSource"], "aws:sqs");
        assert_eq!(
            record["eventSourceARN"],
            "arn:aws:sqs:eu-west-1:123456789012:orders.fifo"
        );
        assert_eq!(record["awsRegion"], "eu-west-1");
        let attributes = &record["attributes"];
        assert_eq!(attributes["MessageGroupId"], "acct-1");
        assert_eq!(attributes["SequenceNumber"], "18849496460467696128");
        assert_eq!(attributes["MessageDeduplicationId"], "d-1");
        assert_eq!(attributes["ApproximateReceiveCount"], "2");
        assert_eq!(attributes["SentTimestamp"], "1573251510774");
        assert_eq!(
            attributes["ApproximateFirstReceiveTimestamp"],
            "1573251510775"
        );
        assert_eq!(attributes["SenderId"], "AIDAIO23YVJENQZJOL4VO");
        assert_eq!(
            record["messageAttributes"]["amount"],
            json!({"stringValue": "12.5", "stringListValues": [], "binaryListValues": [], "dataType": "Number"})
        );
    }

    #[test]
    fn the_first_listed_failure_decides_and_nothing_listed_is_success() {
        let (a, b, c) = (message("a"), message("b"), message("c"));
        let batch = [&a, &b, &c];
        let first = |answer: &str| first_failure(answer.as_bytes(), &batch);
        for success in [
            "",
            " \n",
            "null",
            "{}",
            r#"{"batchItemFailures":[]}"#,
            r#"{"batchItemFailures":null}"#,
        ] {
            assert_eq!(first(success), Ok(None), "{success:?}");
        }
        let failed = r#"{"batchItemFailures":[{"itemIdentifier":"c"},{"itemIdentifier":"b"}]}"#;
        assert_eq!(first(failed), Ok(Some(1)), "the earliest in the batch");

        let outcome = outcome(failed.as_bytes(), &batch, "the app");
        assert_eq!(outcome.succeeded, 1);
        assert_eq!(
            outcome.error.unwrap().to_string(),
            "the app listed message b in batchItemFailures"
        );
    }

    #[test]
    fn a_programs_log_before_its_answer_is_told_apart() {
        let split = |stdout: &str| {
            let (log, answer) = split_answer(stdout.as_bytes());
            (
                String::from_utf8_lossy(log).into_owned(),
                String::from_utf8_lossy(answer).into_owned(),
            )
        };
        let answer = r#"{"batchItemFailures":[]}"#;
        assert_eq!(split(answer), (String::new(), answer.to_owned()));
        assert_eq!(split(""), (String::new(), String::new()));
        let pretty = "{\n  \"batchItemFailures\": []\n}\n";
        assert_eq!(split(pretty), (String::new(), pretty.to_owned()));
        assert_eq!(
            split(&format!("processing\nstill\n{answer}\n")),
            ("processing\nstill\n".to_owned(), answer.to_owned())
        );
        let junk = "processing\nnot an answer\n";
        assert_eq!(split(junk), (String::new(), junk.to_owned()));
    }

    #[test]
    fn an_answer_lambda_could_not_read_fails_the_whole_batch() {
        let (a, b) = (message("a"), message("b"));
        let batch = [&a, &b];
        for (answer, why) in [
            ("OK", "which is not JSON"),
            ("[1]", "not an object with batchItemFailures"),
            (r#"{"batchItemFailures":"b"}"#, "not a list"),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
                "which is not a message id",
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":5}]}"#,
                "itemIdentifier 5, which is not a message id",
            ),
            (
                r#"{"batchItemFailures":[{"id":"b"}]}"#,
                "without an itemIdentifier",
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":"z"}]}"#,
                "no message of the batch",
            ),
        ] {
            let outcome = outcome(answer.as_bytes(), &batch, "the app");
            assert_eq!(outcome.succeeded, 0, "{answer}");
            let error = outcome.error.unwrap().to_string();
            assert!(error.contains(why), "{answer}: {error}");
            assert!(
                error.ends_with("so the whole batch failed (as under Lambda)"),
                "{error}"
            );
        }
    }
}
