//! What `fifo send` sends, one message at a time: generated from the flags,
//! or read from a file line by line, each checked against SQS's rules before
//! it is sent. Reading is the only I/O here, so the rules are unit- and
//! property-tested.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io::{BufRead, Read};

use fifo_sqs_client::{
    Field, InvalidMessage, OutgoingMessage, check_dedup_id, check_group_id, check_message_body,
};
use serde::Deserialize;

use crate::cli::Format;

pub(crate) const DEFAULT_GROUP: &str = "default";

/// A message to send, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    /// `line 3 of orders.txt` or `message 3`, to name it to the user.
    pub(crate) origin: String,
    /// Its line number, or its number among generated messages.
    pub(crate) number: u64,
    pub(crate) message: OutgoingMessage,
}

/// A message that cannot be sent, with the group it would have gone to
/// (when that can be known) and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) origin: String,
    pub(crate) group: Option<String>,
    pub(crate) reason: String,
    pub(crate) hint: String,
}

pub(crate) type Item = Result<Planned, Refused>;

/// How messages get the group and de-duplication id they do not carry.
#[derive(Debug, Clone, Default)]
pub(crate) struct Naming {
    /// `--group`.
    pub(crate) group: Option<String>,
    /// `--groups N`: message n goes to `group-((n - 1) % N + 1)`.
    pub(crate) groups: Option<u32>,
    /// `--dedup-id ID`: message n gets `ID-n`, or `ID` when it is the only one.
    pub(crate) dedup_id: Option<String>,
    pub(crate) only_one: bool,
    /// When set, a message without a de-duplication id gets `PREFIX-n`, an
    /// id of its own (the queue does not de-duplicate by content, or the
    /// generated bodies repeat).
    pub(crate) unique_prefix: Option<String>,
}

impl Naming {
    fn group(&self, n: u64) -> String {
        match (&self.group, self.groups) {
            (Some(group), _) => group.clone(),
            (None, Some(groups)) => format!("group-{}", (n - 1) % u64::from(groups) + 1),
            (None, None) => DEFAULT_GROUP.to_owned(),
        }
    }

    pub(crate) fn dedup_id(&self, n: u64) -> Option<String> {
        match (&self.dedup_id, &self.unique_prefix) {
            (Some(id), _) if self.only_one => Some(id.clone()),
            (Some(id), _) | (None, Some(id)) => Some(format!("{id}-{n}")),
            (None, None) => None,
        }
    }
}

/// The hint for a message SQS would refuse.
pub(crate) fn hint_for(err: &InvalidMessage) -> String {
    match err {
        InvalidMessage::Empty { field: Field::Body } => {
            "SQS refuses empty bodies: give the message some text".to_owned()
        }
        InvalidMessage::Empty {
            field: Field::GroupId,
        }
        | InvalidMessage::IdTooLong {
            field: Field::GroupId,
            ..
        }
        | InvalidMessage::IdCharacter {
            field: Field::GroupId,
            ..
        } => "a group id is 1 to 128 ASCII letters, digits or punctuation, e.g. order-42".to_owned(),
        InvalidMessage::Empty { .. }
        | InvalidMessage::IdTooLong { .. }
        | InvalidMessage::IdCharacter { .. } => {
            "a de-duplication id is 1 to 128 ASCII letters, digits or punctuation; leave it out to let fifo or the queue choose".to_owned()
        }
        InvalidMessage::BodyTooLarge { max, .. } => format!(
            "the queue takes bodies of up to {max} bytes: store larger payloads elsewhere and send a reference"
        ),
        InvalidMessage::BodyCharacter { .. } => {
            "SQS takes only XML text (no control characters but tab, CR and LF): encode binary data, e.g. as base64".to_owned()
        }
    }
}

/// Checks a message against SQS's rules.
pub(crate) fn check(planned: Planned, max_body_bytes: usize) -> Item {
    let message = &planned.message;
    let result = check_group_id(&message.group_id)
        .and_then(|()| message.dedup_id.as_deref().map_or(Ok(()), check_dedup_id))
        .and_then(|()| check_message_body(&message.body, max_body_bytes));
    match result {
        Ok(()) => Ok(planned),
        Err(err) => Err(Refused {
            hint: hint_for(&err),
            reason: err.to_string(),
            group: Some(planned.message.group_id),
            origin: planned.origin,
        }),
    }
}

/// Messages made from the flags: `--count` of them, numbered from 1.
#[derive(Debug, Clone)]
pub(crate) struct Generated {
    pub(crate) count: u64,
    /// `--body`; otherwise a JSON body naming the group, the message's
    /// sequence number in its group and the invocation.
    pub(crate) body: Option<String>,
    pub(crate) naming: Naming,
    pub(crate) invocation: String,
}

impl Generated {
    pub(crate) fn message(&self, n: u64) -> Planned {
        let group_id = self.naming.group(n);
        let sequence = match (&self.naming.group, self.naming.groups) {
            (None, Some(groups)) => (n - 1) / u64::from(groups) + 1,
            _ => n,
        };
        let body = self.body.clone().unwrap_or_else(|| {
            serde_json::json!({"group": group_id, "seq": sequence, "send_id": self.invocation})
                .to_string()
        });
        Planned {
            origin: format!("message {n}"),
            number: n,
            message: OutgoingMessage {
                body,
                group_id,
                dedup_id: self.naming.dedup_id(n),
                ..OutgoingMessage::default()
            },
        }
    }
}

/// The lines of a file (or stdin) as messages, read as they are needed.
/// Blank lines are skipped and counted. A line that cannot be read or
/// parsed is refused; when its group cannot be known, it is the last item.
pub(crate) struct Lines<R> {
    reader: R,
    /// The file's name, for origins.
    name: String,
    format: Format,
    /// For `--format auto`: the format the first line chose, and that line.
    chosen: Option<(Format, u64)>,
    naming: Naming,
    /// The longest line read, in bytes (SQS's largest body, JSON-escaped).
    max_line_bytes: u64,
    line: u64,
    messages: u64,
    blank: u64,
    ended: bool,
    /// Whether a line whose group cannot be known ends the input (when
    /// sending) or not (when checking a whole file).
    stop_at_unknown_group: bool,
}

/// The fields of a JSON line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLine {
    body: String,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    dedup_id: Option<String>,
}

/// The fix for a `--file` that cannot be read.
pub(crate) const READ_HINT: &str = "give --file a readable file, or - for stdin";

/// UTF-8's byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

const JSON_HINT: &str = r#"write each line as {"body": "…", "group": "…", "dedup_id": "…"} (group and dedup_id may be left out), or give --format text to send lines as they are"#;

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(
        reader: R,
        name: &str,
        format: Format,
        naming: Naming,
        max_body_bytes: usize,
    ) -> Lines<R> {
        Lines {
            reader,
            name: name.to_owned(),
            format,
            chosen: None,
            naming,
            max_line_bytes: max_body_bytes as u64 * 6 + 1024,
            line: 0,
            messages: 0,
            blank: 0,
            ended: false,
            stop_at_unknown_group: true,
        }
    }

    /// Reads on past lines whose group cannot be known, to find every bad
    /// line of a file before anything is sent.
    pub(crate) fn reading_past_bad_lines(mut self) -> Lines<R> {
        self.stop_at_unknown_group = false;
        self
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Blank lines skipped so far.
    pub(crate) fn blank_lines(&self) -> u64 {
        self.blank
    }

    fn origin(&self) -> String {
        format!("line {} of {}", self.line, self.name)
    }

    /// Reads the next line, without its line ending; None at the end.
    fn read_line(&mut self) -> Option<Result<Vec<u8>, Refused>> {
        let mut bytes = Vec::new();
        let read = (&mut self.reader)
            .take(self.max_line_bytes + 1)
            .read_until(b'\n', &mut bytes);
        self.line += 1;
        let stop = |reason: String, hint: &str| {
            Some(Err(Refused {
                origin: self.origin(),
                group: None,
                reason,
                hint: hint.to_owned(),
            }))
        };
        match read {
            Ok(0) => None,
            Err(e) => stop(format!("cannot read it: {e}"), READ_HINT),
            Ok(n) if n as u64 > self.max_line_bytes => stop(
                format!("the line is longer than {} bytes", self.max_line_bytes),
                "the queue's largest body would fit: is this the right file?",
            ),
            Ok(_) => {
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                }
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
                // A byte-order mark (Windows editors write one) is not
                // part of the first line.
                if self.line == 1 && bytes.starts_with(BOM) {
                    bytes.drain(..BOM.len());
                }
                Some(Ok(bytes))
            }
        }
    }

    /// The message a line holds, before SQS's rules are checked.
    fn parse(&mut self, bytes: Vec<u8>) -> Item {
        let number = self.messages;
        let origin = self.origin();
        let refuse = |group: Option<String>, reason: String, hint: &str| Refused {
            origin: origin.clone(),
            group,
            reason,
            hint: hint.to_owned(),
        };
        let default_group = self.naming.group(number);
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                return Err(refuse(
                    // Without knowing the format, the group is unknown.
                    (self.format == Format::Text).then_some(default_group),
                    format!(
                        "not UTF-8 text (byte {:#04x} at column {})",
                        e.as_bytes()[at],
                        at + 1
                    ),
                    "SQS bodies are text: encode binary data, e.g. as base64",
                ));
            }
        };
        let looks_like_json = matches!(text.trim_start().chars().next(), Some('{' | '['));
        let format = match (self.format, self.chosen) {
            (Format::Auto, None) => {
                let format = if looks_like_json {
                    Format::Jsonl
                } else {
                    Format::Text
                };
                self.chosen = Some((format, self.line));
                format
            }
            (Format::Auto, Some((chosen, first))) => {
                let agrees = looks_like_json == (chosen == Format::Jsonl);
                if !agrees {
                    let (this, that) = match chosen {
                        Format::Jsonl => ("is plain text", "JSON"),
                        _ => ("looks like JSON", "plain text"),
                    };
                    return Err(refuse(
                        None,
                        format!("the line {this} but line {first} is {that}"),
                        "say how to read the file: --format text sends every line as it is, --format jsonl reads every line as a JSON object",
                    ));
                }
                chosen
            }
            (format, _) => format,
        };
        let (body, group, dedup_id) = if format == Format::Jsonl {
            match parse_json_line(&text) {
                Ok(line) => (line.body, line.group, line.dedup_id),
                Err(reason) => return Err(refuse(None, reason, JSON_HINT)),
            }
        } else {
            (text, None, None)
        };
        Ok(Planned {
            origin,
            number: self.line,
            message: OutgoingMessage {
                body,
                group_id: group.unwrap_or(default_group),
                dedup_id: dedup_id.or_else(|| self.naming.dedup_id(number)),
                ..OutgoingMessage::default()
            },
        })
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        while !self.ended {
            let bytes = match self.read_line()? {
                Ok(bytes) => bytes,
                Err(refused) => {
                    self.ended = true;
                    return Some(Err(refused));
                }
            };
            if bytes.iter().all(u8::is_ascii_whitespace) {
                self.blank += 1;
                continue;
            }
            self.messages += 1;
            let item = self.parse(bytes);
            if self.stop_at_unknown_group && matches!(&item, Err(Refused { group: None, .. })) {
                self.ended = true;
            }
            return Some(item);
        }
        None
    }
}

/// A JSON line's fields, or why it is not a message.
fn parse_json_line(text: &str) -> Result<JsonLine, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        let what = without_position(&e);
        if what.contains("hex escape") || what.contains("surrogate") {
            // serde_json's words for `\ud800` without its pair.
            format!(
                "not valid JSON: the \\u escape before column {} is half of a character (an unpaired surrogate)",
                e.column()
            )
        } else {
            format!("not valid JSON: {what} at column {}", e.column())
        }
    })?;
    let Some(object) = value.as_object() else {
        return Err(format!(
            "a JSON line must be an object with a \"body\", not {}",
            kind_of(&value)
        ));
    };
    if let Some((key, _)) = object.iter().find(|(_, v)| v.is_null()) {
        return Err(format!(
            "not a message: `{}` is null; leave the key out or give it a string",
            fifo_sqs_client::shown(key)
        ));
    }
    // From the text again, not the value: a key given twice is an error
    // there, while the value kept only its last occurrence.
    serde_json::from_str(text).map_err(|e| format!("not a message: {}", without_position(&e)))
}

/// serde_json's message without its trailing "at line 1 column 5".
fn without_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Finds messages that SQS would accept and then drop as repeats of an
/// earlier one of this send: the same explicit de-duplication id, or the
/// same body on a queue that de-duplicates by content. Keeps a 64-bit hash
/// per message, not the message.
pub(crate) struct Repeats {
    by_content: bool,
    per_group: bool,
    hasher: RandomState,
    /// Hash of the de-duplication key → the number of its first message.
    first: HashMap<u64, u64>,
}

impl Repeats {
    pub(crate) fn new(by_content: bool, per_group: bool) -> Repeats {
        Repeats {
            by_content,
            per_group,
            hasher: RandomState::new(),
            first: HashMap::new(),
        }
    }

    /// The warning for a message that repeats an earlier one, if it does.
    pub(crate) fn warning(&mut self, planned: &Planned) -> Option<String> {
        let message = &planned.message;
        let (what, key) = match &message.dedup_id {
            Some(id) => ("de-duplication id", id.as_str()),
            None if self.by_content => ("body", message.body.as_str()),
            None => return None,
        };
        let group = if self.per_group {
            message.group_id.as_str()
        } else {
            ""
        };
        let hash = self.hasher.hash_one((what, group, key));
        let first = *self.first.entry(hash).or_insert(planned.number);
        (first != planned.number).then(|| {
            let scope = if self.per_group {
                format!("in group {}", message.group_id)
            } else {
                "in this queue (de-duplication spans groups)".to_owned()
            };
            format!(
                "{}: same {what} as {} {first} {scope}: SQS will accept it and drop it as a duplicate",
                planned.origin,
                if planned.origin.starts_with("line") { "line" } else { "message" },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::send::streams::{Gate, Note};

    const MAX: usize = 1024;

    fn naming() -> Naming {
        Naming::default()
    }

    fn read(text: &[u8], format: Format, naming: Naming) -> Vec<Item> {
        Lines::new(text, "f", format, naming, MAX)
            .map(|item| item.and_then(|p| check(p, MAX)))
            .collect()
    }

    /// A message's group, body and de-duplication id, or a refusal's reason.
    type Seen = Result<(String, String, Option<String>), String>;

    fn summary(items: &[Item]) -> Vec<Seen> {
        items
            .iter()
            .map(|item| match item {
                Ok(p) => Ok((
                    p.message.group_id.clone(),
                    p.message.body.clone(),
                    p.message.dedup_id.clone(),
                )),
                Err(r) => Err(format!("{}: {}", r.origin, r.reason)),
            })
            .collect()
    }

    fn message(group: &str, body: &str) -> Seen {
        Ok((group.to_owned(), body.to_owned(), None))
    }

    #[test]
    fn generated_messages_fill_groups_round_robin_with_sequences() {
        let generated = Generated {
            count: 7,
            body: None,
            naming: Naming {
                groups: Some(3),
                unique_prefix: Some("inv".to_owned()),
                ..naming()
            },
            invocation: "inv".to_owned(),
        };
        let seventh = generated.message(7);
        assert_eq!(seventh.message.group_id, "group-1");
        assert_eq!(
            seventh.message.body,
            r#"{"group":"group-1","send_id":"inv","seq":3}"#
        );
        assert_eq!(seventh.message.dedup_id.as_deref(), Some("inv-7"));
        assert_eq!(generated.message(5).message.group_id, "group-2");
    }

    #[test]
    fn a_dedup_id_flag_is_numbered_unless_one_message_is_sent() {
        let mut naming = Naming {
            dedup_id: Some("d".to_owned()),
            only_one: true,
            ..naming()
        };
        assert_eq!(naming.dedup_id(1).as_deref(), Some("d"));
        naming.only_one = false;
        assert_eq!(naming.dedup_id(2).as_deref(), Some("d-2"));
        assert_eq!(Naming::default().dedup_id(2), None);
    }

    #[test]
    fn auto_reads_text_or_json_lines_and_skips_blank_ones() {
        let text = read(b"plain\r\n  \n\nnot json {\n", Format::Auto, naming());
        assert_eq!(
            summary(&text),
            [
                message("default", "plain"),
                message("default", "not json {")
            ]
        );
        let json = read(
            b"{\"body\": \"b\", \"group\": \"g7\", \"dedup_id\": \"x\"}\n\n{\"body\": \"{}\"}",
            Format::Auto,
            Naming {
                group: Some("g".to_owned()),
                ..naming()
            },
        );
        assert_eq!(
            summary(&json),
            [
                Ok(("g7".to_owned(), "b".to_owned(), Some("x".to_owned()))),
                message("g", "{}"),
            ]
        );
    }

    #[test]
    fn auto_refuses_a_file_whose_lines_disagree_and_stops_there() {
        let items = read(
            b"{\"body\": \"a\"}\nplain\n{\"body\": \"c\"}\n",
            Format::Auto,
            naming(),
        );
        assert_eq!(
            summary(&items),
            [
                message("default", "a"),
                Err("line 2 of f: the line is plain text but line 1 is JSON".to_owned()),
            ]
        );
        assert_eq!(items[1].as_ref().unwrap_err().group, None);
        let items = read(b"plain\n{\"body\": \"b\"}\n", Format::Auto, naming());
        assert_eq!(
            summary(&items)[1],
            Err("line 2 of f: the line looks like JSON but line 1 is plain text".to_owned())
        );
    }

    #[test]
    fn a_byte_order_mark_and_line_endings_are_not_part_of_messages() {
        let items = read(
            b"\xEF\xBB\xBF{\"body\": \"x\", \"group\": \"g1\"}\r\n{\"body\": \"y\"}\r",
            Format::Auto,
            naming(),
        );
        assert_eq!(
            summary(&items),
            [message("g1", "x"), message("default", "y")]
        );
    }

    #[test]
    fn keys_given_twice_or_null_are_refused() {
        for (line, reason) in [
            (
                r#"{"body":"a","group":"alpha","group":"beta"}"#,
                "not a message: duplicate field `group`",
            ),
            (
                r#"{"body":"a","group":null}"#,
                "not a message: `group` is null; leave the key out or give it a string",
            ),
        ] {
            let items = read(line.as_bytes(), Format::Jsonl, naming());
            assert_eq!(
                summary(&items),
                [Err(format!("line 1 of f: {reason}"))],
                "{line}"
            );
        }
    }

    #[test]
    fn text_sends_json_looking_lines_as_they_are() {
        let items = read(b"{\"body\": \"a\"}\n[1,2]\n", Format::Text, naming());
        assert_eq!(
            summary(&items),
            [
                message("default", "{\"body\": \"a\"}"),
                message("default", "[1,2]")
            ]
        );
    }

    #[test]
    fn json_lines_that_are_not_messages_are_refused_with_their_reason() {
        for (line, reason) in [
            (
                r#"{"body":"x","group":"g""#,
                "not valid JSON: EOF while parsing an object at column 23",
            ),
            (r#"{"group":"g"}"#, "not a message: missing field `body`"),
            (
                r#"{"body":"\ud800","group":"g"}"#,
                "not valid JSON: the \\u escape before column 16 is half of a character (an unpaired surrogate)",
            ),
            (
                "[1,2]",
                "a JSON line must be an object with a \"body\", not an array",
            ),
            (
                r#"{"body":"x","grp":"g"}"#,
                "not a message: unknown field `grp`, expected one of `body`, `group`, `dedup_id`",
            ),
            (
                r#"{"body":5}"#,
                "not a message: invalid type: integer `5`, expected a string",
            ),
            (
                r#"{"body":"x","group":7}"#,
                "not a message: invalid type: integer `7`, expected a string",
            ),
        ] {
            let items = read(line.as_bytes(), Format::Jsonl, naming());
            assert_eq!(
                summary(&items),
                [Err(format!("line 1 of f: {reason}"))],
                "{line}"
            );
            assert_eq!(items[0].as_ref().unwrap_err().group, None, "{line}");
        }
    }

    #[test]
    fn bad_text_lines_are_refused_in_their_group() {
        let items = read(b"ok\n\xff\xfe\nbell\x07\n", Format::Text, naming());
        assert_eq!(
            summary(&items),
            [
                message("default", "ok"),
                Err("line 2 of f: not UTF-8 text (byte 0xff at column 1)".to_owned()),
                Err("line 3 of f: the message body contains '\\u{7}' at byte 4, a character SQS refuses".to_owned()),
            ]
        );
        assert_eq!(
            items[1].as_ref().unwrap_err().group.as_deref(),
            Some("default")
        );
        let long = vec![b'x'; MAX * 6 + 2000];
        let items = read(&long, Format::Text, naming());
        assert!(
            matches!(&items[..], [Err(Refused { group: None, .. })]),
            "{:?}",
            summary(&items)
        );
    }

    #[test]
    fn bad_ids_in_json_lines_are_refused() {
        let items = read(
            br#"{"body":"a","dedup_id":"bad id"}
{"body":"b","group":""}
{"body":"c","dedup_id":"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"}"#,
            Format::Jsonl,
            naming(),
        );
        let reasons: Vec<String> = items
            .iter()
            .map(|i| i.as_ref().unwrap_err().reason.clone())
            .collect();
        assert_eq!(
            reasons,
            [
                "the de-duplication id `bad id` contains ' '; SQS allows only ASCII letters, digits and punctuation",
                "the group id is empty",
                "the de-duplication id is 130 characters long; SQS allows at most 128",
            ]
        );
    }

    #[test]
    fn repeats_are_found_by_content_or_id_across_groups_or_within_one() {
        let planned = |number: u64, group: &str, body: &str, dedup: Option<&str>| Planned {
            origin: format!("line {number} of f"),
            number,
            message: OutgoingMessage {
                body: body.to_owned(),
                group_id: group.to_owned(),
                dedup_id: dedup.map(str::to_owned),
                ..OutgoingMessage::default()
            },
        };
        let mut queue_wide = Repeats::new(true, false);
        assert_eq!(queue_wide.warning(&planned(1, "a", "same", None)), None);
        let warning = queue_wide.warning(&planned(2, "b", "same", None)).unwrap();
        assert!(
            warning.starts_with("line 2 of f: same body as line 1 in this queue"),
            "{warning}"
        );
        assert_eq!(
            queue_wide.warning(&planned(3, "a", "same", Some("x"))),
            None
        );
        assert!(
            queue_wide
                .warning(&planned(4, "a", "other", Some("x")))
                .is_some()
        );

        let mut per_group = Repeats::new(true, true);
        assert_eq!(per_group.warning(&planned(1, "a", "same", None)), None);
        assert_eq!(per_group.warning(&planned(2, "b", "same", None)), None);
        assert!(per_group.warning(&planned(3, "b", "same", None)).is_some());

        let mut by_id_only = Repeats::new(false, false);
        assert_eq!(by_id_only.warning(&planned(1, "a", "same", None)), None);
        assert_eq!(by_id_only.warning(&planned(2, "a", "same", None)), None);
    }

    /// Lines mixing text, JSON, bad JSON, bad ids, control characters,
    /// invalid UTF-8 and blank lines.
    fn any_line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "[a-z ]{0,8}".prop_map(String::into_bytes),
            ("[a-c]", "[a-z]{1,5}")
                .prop_map(|(g, b)| format!(r#"{{"body":"{b}","group":"{g}"}}"#).into_bytes()),
            ("[a-c ]{0,2}", "[a-z]{0,3}").prop_map(|(g, d)| format!(
                r#"{{"body":"x","group":"{g}","dedup_id":"{d}"}}"#
            )
            .into_bytes()),
            "\\{[a-z\":,\\[\\] ]{0,12}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..10),
            Just(b"bell\x07".to_vec()),
            Just(b"   ".to_vec()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Whatever the lines: no panic; every line becomes one message or
        /// one refusal with a reason and a hint; a refusal without a group
        /// ends the input; and after a group's first message that is not
        /// sent, none of that group is.
        #[test]
        fn no_group_is_sent_past_its_first_bad_message(
            lines in prop::collection::vec(any_line(), 0..30),
            format in prop_oneof![Just(Format::Auto), Just(Format::Text), Just(Format::Jsonl)],
            groups in prop::option::of(1u32..4),
        ) {
            let input = lines.join(&b'\n');
            let naming = Naming { groups, ..Naming::default() };
            let mut lines_read = Lines::new(&input[..], "f", format, naming, MAX);
            let items: Vec<Item> = lines_read.by_ref().map(|item| item.and_then(|p| check(p, MAX))).collect();
            let non_blank = input.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)).count();
            let stopped = matches!(items.last(), Some(Err(Refused { group: None, .. })));
            if stopped {
                prop_assert!(items.len() <= non_blank);
            } else {
                prop_assert_eq!(items.len(), non_blank, "every line is accounted for");
            }
            for (i, item) in items.iter().enumerate() {
                if let Err(refused) = item {
                    prop_assert!(!refused.reason.is_empty() && !refused.hint.is_empty());
                    prop_assert!(!refused.reason.contains('\n'));
                    if refused.group.is_none() {
                        prop_assert_eq!(i, items.len() - 1, "a refusal without a group ends the input");
                    }
                }
            }
            let mut gate = Gate::default();
            let mut not_sent: Vec<String> = Vec::new();
            for item in items {
                match gate.admit(item) {
                    Ok(p) => prop_assert!(!not_sent.contains(&p.message.group_id), "{} sent after an earlier message of its group was not", p.origin),
                    Err(Note::Refused(Refused { group: Some(g), .. }) | Note::HeldBack { group: g, .. }) => not_sent.push(g),
                    Err(_) => {}
                }
            }
        }
    }
}
