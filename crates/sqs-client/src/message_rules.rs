//! SQS's rules for what a message may carry, checked before sending so that
//! a bad message is refused here, with its reason, instead of by SQS in the
//! middle of a batch.

/// Why SQS would refuse a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    /// A group id, de-duplication id or body is empty.
    #[error("the {field} is empty")]
    Empty {
        /// The part that is empty.
        field: Field,
    },
    /// An id is longer than the 128 characters SQS allows.
    #[error("the {field} is {chars} characters long; SQS allows at most 128")]
    IdTooLong {
        /// Which id.
        field: Field,
        /// Its length, in characters.
        chars: usize,
    },
    /// An id holds a character other than an ASCII letter, digit or
    /// punctuation mark.
    #[error(
        "the {field} `{id}` contains {found:?}; SQS allows only ASCII letters, digits and punctuation"
    )]
    IdCharacter {
        /// Which id.
        field: Field,
        /// The id, made fit for one line by [`shown`].
        id: String,
        /// The first character SQS would refuse.
        found: char,
    },
    /// The body is larger than the queue's maximum message size.
    #[error("the message body is {bytes} bytes; the queue accepts at most {max}")]
    BodyTooLarge {
        /// The body's size, in UTF-8 bytes.
        bytes: usize,
        /// The queue's limit, in bytes.
        max: usize,
    },
    /// The body holds a character outside the XML ranges SQS accepts, such
    /// as a control character other than tab, LF and CR.
    #[error("the message body contains {found:?} at byte {offset}, a character SQS refuses")]
    BodyCharacter {
        /// The first such character.
        found: char,
        /// Where it starts, in bytes from the start of the body.
        offset: usize,
    },
}

/// The part of a message a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The `MessageGroupId`.
    GroupId,
    /// The `MessageDeduplicationId`.
    DedupId,
    /// The message body.
    Body,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Field::GroupId => "group id",
            Field::DedupId => "de-duplication id",
            Field::Body => "message body",
        })
    }
}

/// SQS's rule for `MessageGroupId`: 1 to 128 characters, each an ASCII
/// letter, digit or punctuation mark.
pub fn check_group_id(id: &str) -> Result<(), InvalidMessage> {
    check_id(Field::GroupId, id)
}

/// SQS's rule for `MessageDeduplicationId`, the same as for group ids.
pub fn check_dedup_id(id: &str) -> Result<(), InvalidMessage> {
    check_id(Field::DedupId, id)
}

fn check_id(field: Field, id: &str) -> Result<(), InvalidMessage> {
    if id.is_empty() {
        return Err(InvalidMessage::Empty { field });
    }
    let chars = id.chars().count();
    if chars > 128 {
        return Err(InvalidMessage::IdTooLong { field, chars });
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || c.is_ascii_punctuation()))
    {
        Some(found) => Err(InvalidMessage::IdCharacter {
            field,
            id: shown(id),
            found,
        }),
        None => Ok(()),
    }
}

/// Text from the user as it may be shown in one line of a message: control
/// characters escaped, and cut after 60 characters.
pub fn shown(text: &str) -> String {
    let mut chars = text.chars();
    let mut out = one_line(chars.by_ref().take(60));
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// `text` on one line: control characters escaped, the rest as it is.
pub fn one_line(text: impl IntoIterator<Item = char>) -> String {
    let mut out = String::new();
    for c in text {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether SQS takes `c` in a message body or an attribute value: the
/// characters of XML 1.0.
pub fn accepts_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// SQS's rule for a body: not empty, at most `max_bytes` UTF-8 bytes, and
/// only the XML characters SQS accepts.
pub fn check_message_body(body: &str, max_bytes: usize) -> Result<(), InvalidMessage> {
    if body.is_empty() {
        return Err(InvalidMessage::Empty { field: Field::Body });
    }
    if body.len() > max_bytes {
        return Err(InvalidMessage::BodyTooLarge {
            bytes: body.len(),
            max: max_bytes,
        });
    }
    match body.char_indices().find(|&(_, c)| !accepts_char(c)) {
        Some((offset, found)) => Err(InvalidMessage::BodyCharacter { found, offset }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_sqs_rules() {
        for check in [check_group_id, check_dedup_id] {
            assert!(check("order-42:eu/1").is_ok());
            assert!(check(&"g".repeat(128)).is_ok());
            assert!(matches!(check(""), Err(InvalidMessage::Empty { .. })));
            assert!(matches!(
                check(&"g".repeat(129)),
                Err(InvalidMessage::IdTooLong { chars: 129, .. })
            ));
            assert!(matches!(
                check("has space"),
                Err(InvalidMessage::IdCharacter { found: ' ', .. })
            ));
            assert!(check("café").is_err());
        }
        assert_eq!(
            check_dedup_id("bad id").unwrap_err().to_string(),
            "the de-duplication id `bad id` contains ' '; SQS allows only ASCII letters, digits and punctuation"
        );
    }

    #[test]
    fn ids_are_shown_on_one_line() {
        let err = check_group_id("evil\nerror: forged\u{1b}[31m").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the group id `evil\\nerror: forged\\u{1b}[31m` contains '\\n'; SQS allows only ASCII letters, digits and punctuation"
        );
        assert_eq!(shown(&"x".repeat(100)).chars().count(), 61);
    }

    #[test]
    fn bodies_follow_sqs_rules() {
        assert!(check_message_body("hello\tworld\n", 100).is_ok());
        assert!(check_message_body("", 100).is_err());
        assert!(matches!(
            check_message_body("12345", 4),
            Err(InvalidMessage::BodyTooLarge { bytes: 5, max: 4 })
        ));
        assert_eq!(
            check_message_body("bell\u{7}", 100),
            Err(InvalidMessage::BodyCharacter {
                found: '\u{7}',
                offset: 4
            })
        );
    }
}
