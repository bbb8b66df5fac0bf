//! What became of every message of `fifo send`, tallied from the streams'
//! notes, and the summary, the examples and the exit that tell it.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr};

use super::EXAMPLES;
use super::examples::Examples;
use super::source::Produced;
use super::streams::Note;
use crate::error::UserError;
use crate::stderr::stderr_line;

/// The message ids SQS gave to the lines of a file.
struct SeenIds {
    /// The file's name.
    name: String,
    hasher: RandomState,
    /// By hash of the message id: the first line it was given for, and
    /// that line's group (by hash).
    first: HashMap<u64, (u64, u64)>,
}

/// What became of every message of a send.
pub(crate) struct Tally {
    sent: u64,
    deduplicated: Examples,
    refused: Examples,
    /// The first refusal's fix.
    refusal_hint: Option<String>,
    held_back: Examples,
    unknown: Examples,
    not_attempted: Examples,
    after_a_hole: Examples,
    /// For lines, to recognise de-duplication.
    seen: Option<SeenIds>,
    stopped: Option<fifo_sqs_client::Error>,
    /// Set on Ctrl-C or SIGTERM.
    pub(crate) interrupted: Arc<AtomicBool>,
    /// None when the reading side did not end (interrupted mid-read).
    pub(crate) produced: Option<Produced>,
}

impl Tally {
    pub(crate) fn new(lines_of: Option<String>) -> Tally {
        Tally {
            sent: 0,
            deduplicated: Examples::default(),
            refused: Examples::default(),
            refusal_hint: None,
            held_back: Examples::default(),
            unknown: Examples::default(),
            not_attempted: Examples::default(),
            after_a_hole: Examples::default(),
            seen: lines_of.map(|name| SeenIds {
                name,
                hasher: RandomState::new(),
                first: HashMap::new(),
            }),
            stopped: None,
            interrupted: Arc::default(),
            produced: None,
        }
    }

    pub(crate) fn add(&mut self, note: Note) {
        match note {
            Note::Accepted {
                number,
                group,
                message_id,
            } => {
                let Some(SeenIds {
                    name,
                    hasher,
                    first: seen,
                }) = self.seen.as_mut()
                else {
                    self.sent += 1;
                    return;
                };
                let group_hash = hasher.hash_one(&group);
                let (first, first_group) = *seen
                    .entry(hasher.hash_one(&message_id))
                    .or_insert((number, group_hash));
                if first == number {
                    self.sent += 1;
                    return;
                }
                let (earlier, later) = (first.min(number), first.max(number));
                seen.insert(hasher.hash_one(&message_id), (earlier, group_hash));
                // One group's messages reach SQS in order, so the earlier one
                // was kept. Two groups' messages race on two streams.
                self.deduplicated.add(if first_group == group_hash {
                    format!("line {later} of {name}: SQS dropped it as a duplicate of line {earlier}")
                } else {
                    format!(
                        "lines {earlier} and {later} of {name}: SQS kept the one that reached it first and dropped the other as a duplicate"
                    )
                });
            }
            Note::Refused(refused) => {
                if self.refusal_hint.is_none() && !refused.hint.is_empty() {
                    self.refusal_hint = Some(refused.hint);
                }
                self.refused.add(format!("{}: {}", refused.origin, refused.reason));
            }
            Note::HeldBack { origin, group } => self.held_back.add(format!(
                "{origin}: an earlier message of group {} was not sent",
                fifo_sqs_client::shown(&group)
            )),
            Note::Unknown { origin } => self.unknown.add(format!(
                "{origin}: the answer to its batch was lost: it may or may not be in the queue"
            )),
            Note::NotAttempted { origin } => self.not_attempted.add(origin),
            Note::AfterAHole { origin, group } => self.after_a_hole.add(format!(
                "{origin}: stored although an earlier message of group {group} in its batch was refused"
            )),
            Note::Stopped(err) => {
                self.stopped.get_or_insert(err);
            }
        }
    }

    /// Prints the summary; the exit status, or the error that says what
    /// was not sent.
    pub(crate) fn report(
        mut self,
        queue_url: &str,
        total: Option<u64>,
        elapsed: Duration,
    ) -> Result<ExitCode> {
        let produced = self.produced.take().unwrap_or(Produced {
            taken: 0,
            blank_lines: 0,
            stopped_at: None,
            warnings: Examples::default(),
        });
        // Messages the reading side never took, because the send stopped.
        let untaken = total.map_or(0, |t| t.saturating_sub(produced.taken));
        self.not_attempted.count += untaken;
        if produced.stopped_at.is_some() {
            self.refused.count += 1;
        }
        let interrupted = self.interrupted.load(Ordering::Relaxed);
        let known_total = total.is_some();
        let counted = self.sent
            + self.deduplicated.count
            + self.refused.count
            + self.held_back.count
            + self.unknown.count
            + self.not_attempted.count;
        let total = total.unwrap_or(counted).max(counted);
        let elapsed = elapsed.max(Duration::from_micros(1));
        let mut summary = format!(
            "sent {} of {total} messages to {queue_url} in {:.2} s ({:.0} msgs/s)",
            self.sent,
            elapsed.as_secs_f64(),
            self.sent as f64 / elapsed.as_secs_f64()
        );
        for (count, what) in [
            (self.deduplicated.count, "de-duplicated by SQS"),
            (self.refused.count, "refused"),
            (self.held_back.count, "held back"),
            (self.unknown.count, "unknown"),
            (self.not_attempted.count, "not attempted"),
            (produced.blank_lines, "blank lines skipped"),
        ] {
            if count > 0 {
                summary.push_str(&format!(", {count} {what}"));
            }
        }
        if !known_total && (interrupted || produced.stopped_at.is_some() || self.stopped.is_some())
        {
            summary.push_str("; the rest of the input was not read");
        }
        stderr_line(format_args!("{summary}"));
        if produced.warnings.count > EXAMPLES as u64 {
            stderr_line(format_args!(
                "warning: … and {} more messages SQS will drop as duplicates",
                produced.warnings.count - EXAMPLES as u64
            ));
        }
        self.deduplicated.print("de-duplicated");
        self.refused.print("refused");
        self.held_back.print("held back");
        self.unknown.print("unknown");
        self.after_a_hole.print("out of order");
        if !self.not_attempted.lines.is_empty() {
            stderr_line(format_args!(
                "not attempted: {}{}",
                self.not_attempted.lines.join(", "),
                if self.not_attempted.count > self.not_attempted.lines.len() as u64 {
                    " and the rest"
                } else {
                    ""
                }
            ));
        }

        if let Some(err) = self.stopped {
            return Err(err).wrap_err_with(|| {
                format!(
                    "sending to {queue_url} stopped after {} of {total} messages",
                    self.sent
                )
            });
        }
        if interrupted {
            return Err(UserError::new(
                format!(
                    "interrupted: {} of {total} messages sent; each group is in the queue up to its last sent message, the rest was not sent",
                    self.sent
                ),
                Some("send the rest again: the lines above name the first messages not sent".to_owned()),
            )
            .into());
        }
        if let Some(line) = produced.stopped_at {
            return Err(UserError::new(
                format!(
                    "{}: {}; nothing after it was read or sent",
                    line.origin, line.reason
                ),
                Some(line.hint),
            )
            .into());
        }
        if self.after_a_hole.count > 0 {
            return Err(UserError::new(
                format!(
                    "SQS refused messages in the middle of a batch and stored later ones of their groups: {} messages are out of order",
                    self.after_a_hole.count
                ),
                Some("send the refused messages again, and check the order the consumers of these groups rely on".to_owned()),
            )
            .into());
        }
        if counted == 0 {
            return Err(UserError::new(
                "the input holds no messages".to_owned(),
                Some("write one message per line".to_owned()),
            )
            .into());
        }
        let not_sent = total - self.sent - self.deduplicated.count;
        if not_sent > 0 {
            return Err(UserError::new(
                format!(
                    "{not_sent} of {total} messages were not sent; the later messages of their groups were held back, so no group has a gap"
                ),
                self.refusal_hint,
            )
            .into());
        }
        Ok(ExitCode::SUCCESS)
    }
}
