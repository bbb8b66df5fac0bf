//! The log handler's lines, written and read in one place: `LogHandler`
//! writes them; the demo, the benchmark and the tests read them back with
//! [`parse`].
//!
//! ```text
//! 12:34:56.004 start group=same seq=18889… receive=1 body={"group":"same","seq":1,…}
//! 12:34:56.506 done  group=same seq=18889…
//! ```
//!
//! The time is UTC, to the millisecond. Control characters in the group
//! and body are escaped (a newline prints as `\n`) so that a body cannot
//! forge a line; everything else prints as it is. A group id has no spaces
//! (SQS allows none), so each field ends at the next space, and the body
//! runs to the end of the line.
//!
//! This file uses `std` only: xtask, which depends on no crate of ours,
//! includes it by path for the demo's timeline.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a line says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEvent {
    /// The handler began the message.
    Start,
    /// The handler's simulated work ended (printed only with work).
    Done,
}

/// One line, read back. Text fields borrow from the line, escaped as
/// printed.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine<'a> {
    /// Seconds since UTC midnight.
    pub at: f64,
    /// Whether it is a start or a done line.
    pub event: LogEvent,
    /// The message's group ID.
    pub group: &'a str,
    /// SQS's sequence number: per group, later messages have larger ones.
    pub sequence_number: &'a str,
    /// On start lines only.
    pub receive_count: Option<u32>,
    /// On start lines only.
    pub body: Option<&'a str>,
}

/// The start line of a message, without its newline.
pub fn start_line(
    at: SystemTime,
    group: &str,
    sequence_number: &str,
    receive_count: u32,
    body: &str,
) -> String {
    format!(
        "{} start group={} seq={sequence_number} receive={receive_count} body={}",
        time_of_day(at),
        escape_controls(group),
        escape_controls(body)
    )
}

/// The done line of a message, without its newline.
pub fn done_line(at: SystemTime, group: &str, sequence_number: &str) -> String {
    format!(
        "{} done  group={} seq={sequence_number}",
        time_of_day(at),
        escape_controls(group)
    )
}

/// Reads a line the log handler wrote; `None` for any other line.
pub fn parse(line: &str) -> Option<LogLine<'_>> {
    let (time, rest) = line.split_at_checked(12)?;
    let at = seconds_of_day(time)?;
    let (event, rest) = if let Some(rest) = rest.strip_prefix(" start group=") {
        (LogEvent::Start, rest)
    } else {
        (LogEvent::Done, rest.strip_prefix(" done  group=")?)
    };
    let (group, rest) = rest.split_once(" seq=")?;
    let (sequence_number, receive_count, body) = match event {
        LogEvent::Start => {
            let (seq, rest) = rest.split_once(" receive=")?;
            let (receive, body) = rest.split_once(" body=")?;
            (seq, Some(receive.parse().ok()?), Some(body))
        }
        LogEvent::Done => (rest, None, None),
    };
    if group.contains(' ') || sequence_number.contains(' ') {
        return None;
    }
    Some(LogLine {
        at,
        event,
        group,
        sequence_number,
        receive_count,
        body,
    })
}

/// `HH:MM:SS.mmm` in UTC.
fn time_of_day(at: SystemTime) -> String {
    let now = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = (now.as_secs() % 86_400, now.subsec_millis());
    format!(
        "{:02}:{:02}:{:02}.{millis:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `HH:MM:SS.mmm` as seconds since midnight.
fn seconds_of_day(time: &str) -> Option<f64> {
    let mut parts = time.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    let all_digits = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    };
    if !(all_digits(h, 2) && all_digits(m, 2) && all_digits(s, 6)) {
        return None;
    }
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// `text` with each control character written as an escape: `\n`, `\r`,
/// `\t`, or `\u{…}`. Backslashes stay as they are, so a JSON body prints
/// unchanged.
pub(crate) fn escape_controls(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            }
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        let at = UNIX_EPOCH + Duration::from_millis(86_400_000 * 3 + 45_296_789);
        let line = start_line(at, "g-1", "1234", 2, r#"{"seq":1} with spaces"#);
        assert_eq!(
            line,
            r#"12:34:56.789 start group=g-1 seq=1234 receive=2 body={"seq":1} with spaces"#
        );
        assert_eq!(
            parse(&line),
            Some(LogLine {
                at: 45_296.789,
                event: LogEvent::Start,
                group: "g-1",
                sequence_number: "1234",
                receive_count: Some(2),
                body: Some(r#"{"seq":1} with spaces"#),
            })
        );
        let line = done_line(at, "g-1", "1234");
        assert_eq!(line, "12:34:56.789 done  group=g-1 seq=1234");
        let done = parse(&line).unwrap();
        assert_eq!(
            (done.event, done.group, done.sequence_number, done.body),
            (LogEvent::Done, "g-1", "1234", None)
        );
    }

    #[test]
    fn other_lines_are_not_read() {
        for line in [
            "",
            "hello",
            "12:34:56.789 started group=g seq=1",
            "12:34:56.789 start group=g seq=1 body=x",
            "12:34:56.789 start group=g seq=1 receive=x body=x",
            "1a:34:56.789 done  group=g seq=1",
            "12:34:56.789 done  group=g seq=1 extra",
            "é2:34:56.789 done  group=g seq=1",
        ] {
            assert_eq!(parse(line), None, "{line}");
        }
    }

    #[test]
    fn a_newline_in_a_body_cannot_forge_a_line() {
        let line = start_line(UNIX_EPOCH, "g", "1", 1, "a\nb\r\u{1b}[2J C:\\dir \"q\" é");
        assert!(!line.contains('\n'));
        assert!(
            line.ends_with(r#" body=a\nb\r\u{1b}[2J C:\dir "q" é"#),
            "{line}"
        );
    }
}
