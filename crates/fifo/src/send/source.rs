//! The reading side of `fifo send`: where the messages come from (the
//! flags, a file checked whole before anything is sent, or a stream checked
//! as it is read), and the thread that reads, checks and deals them to the
//! streams.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use fifo_sqs_client::{QueueAttributes, check_dedup_id, check_group_id, check_message_body};
use indicatif::ProgressBar;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::EXAMPLES;
use super::examples::Examples;
use super::input::{Generated, Item, Lines, Naming, READ_HINT, Refused, Repeats, check, hint_for};
use super::streams::Dealer;
use crate::cli::SendArgs;
use crate::error::UserError;
use crate::stderr::stderr_line;

/// Where the messages come from.
pub(crate) enum Input {
    Generated(Generated),
    /// `regular`: a file that can be read twice (checked, then sent).
    File {
        path: std::path::PathBuf,
        regular: bool,
    },
    Stdin,
}

impl Input {
    /// Chooses the input and checks the flags that shape every message.
    pub(crate) fn open(
        args: &SendArgs,
        queue: &QueueAttributes,
        invocation: &str,
    ) -> Result<Input, UserError> {
        let flag_error = |flag: &str, value: &str, err: fifo_sqs_client::InvalidMessage| {
            UserError::new(
                format!("{flag} `{}`: {err}", fifo_sqs_client::shown(value)),
                Some(hint_for(&err)),
            )
        };
        if let Some(group) = &args.group {
            check_group_id(group).map_err(|e| flag_error("--group", group, e))?;
        }
        if let Some(body) = &args.body {
            check_message_body(body, queue.max_message_bytes)
                .map_err(|e| flag_error("--body", body, e))?;
        }
        let input = match &args.file {
            None => Input::Generated(generated(args, queue, invocation)),
            Some(path) if path == Path::new("-") => Input::Stdin,
            Some(path) => {
                let metadata =
                    std::fs::metadata(path).map_err(|e| cannot_read(path, &e.to_string()))?;
                if metadata.is_dir() {
                    return Err(cannot_read(path, "it is a directory"));
                }
                Input::File {
                    path: path.clone(),
                    regular: metadata.is_file(),
                }
            }
        };
        if let Some(id) = &args.dedup_id {
            check_dedup_id(id).map_err(|e| flag_error("--dedup-id", id, e))?;
            // The longest id this send makes from it.
            let (n, longest) = match &input {
                Input::Generated(g) => (g.count, g.naming.dedup_id(g.count)),
                _ => (1, Some(format!("{id}-1"))),
            };
            let longest = longest.expect("--dedup-id gives every message an id");
            if let Err(err) = check_dedup_id(&longest) {
                return Err(UserError::new(
                    format!(
                        "--dedup-id `{}`: message {n} gets `{}`, and {err}",
                        fifo_sqs_client::shown(id),
                        fifo_sqs_client::shown(&longest)
                    ),
                    Some("use a shorter --dedup-id: the message number is added to it".to_owned()),
                ));
            }
        }
        Ok(input)
    }

    /// The messages, as they are needed; from a file checked first, only
    /// the `checked` ones, should the file grow meanwhile.
    pub(crate) fn source(
        self,
        args: &SendArgs,
        queue: &QueueAttributes,
        invocation: &str,
        checked: Option<u64>,
    ) -> Result<Source, UserError> {
        let reader: Box<dyn BufRead + Send> = match self {
            Input::Generated(generated) => return Ok(Source::Generated { generated, next: 1 }),
            Input::Stdin => Box::new(BufReader::new(std::io::stdin())),
            Input::File { path, .. } => Box::new(BufReader::new(open(&path)?)),
        };
        Ok(Source::Lines {
            lines: lines(reader, args, queue, invocation),
            limit: checked,
        })
    }
}

fn generated(args: &SendArgs, queue: &QueueAttributes, invocation: &str) -> Generated {
    let count = args.count.unwrap_or(args.groups.map_or(1, u64::from));
    // `--body hi --count 5` sends five messages, also on a queue that
    // de-duplicates by content; one `--body hi` is left to the queue.
    let repeated_body = args.body.is_some() && count > 1;
    Generated {
        count,
        body: args.body.clone(),
        naming: Naming {
            group: args.group.clone(),
            groups: args.groups,
            dedup_id: args.dedup_id.clone(),
            only_one: count == 1,
            unique_prefix: (repeated_body || !queue.content_based_deduplication)
                .then(|| invocation.to_owned()),
        },
        invocation: invocation.to_owned(),
    }
}

fn lines<R: BufRead>(
    reader: R,
    args: &SendArgs,
    queue: &QueueAttributes,
    invocation: &str,
) -> Lines<R> {
    let name = args
        .file
        .as_deref()
        .unwrap_or(Path::new("-"))
        .display()
        .to_string();
    let naming = Naming {
        group: args.group.clone(),
        groups: args.groups,
        dedup_id: args.dedup_id.clone(),
        only_one: false,
        unique_prefix: (!queue.content_based_deduplication).then(|| invocation.to_owned()),
    };
    Lines::new(reader, &name, args.format, naming, queue.max_message_bytes)
}

fn open(path: &Path) -> Result<File, UserError> {
    File::open(path).map_err(|e| cannot_read(path, &e.to_string()))
}

fn cannot_read(path: &Path, why: &str) -> UserError {
    UserError::new(
        format!("cannot read {}: {why}", path.display()),
        Some(READ_HINT.to_owned()),
    )
}

/// Reads a whole file once, checking every line; returns how many messages
/// it holds, or the error naming its bad lines. Warns of messages SQS would
/// drop as duplicates.
pub(crate) fn check_file(
    path: &Path,
    args: &SendArgs,
    queue: &QueueAttributes,
    invocation: &str,
) -> Result<u64, UserError> {
    let mut lines =
        lines(BufReader::new(open(path)?), args, queue, invocation).reading_past_bad_lines();
    let mut repeats = Repeats::new(queue.content_based_deduplication, queue.dedup_per_group);
    let mut first_refused: Option<Refused> = None;
    let mut refused = Examples::default();
    let mut warnings = Examples::default();
    let mut messages = 0u64;
    for item in lines.by_ref() {
        messages += 1;
        match item.and_then(|p| check(p, queue.max_message_bytes)) {
            Ok(planned) => warnings.add_opt(repeats.warning(&planned)),
            Err(r) => {
                refused.add(format!("{}: {}", r.origin, r.reason));
                first_refused.get_or_insert(r);
            }
        }
    }
    warnings.print("warning");
    if let Some(first) = first_refused {
        if refused.count == 1 {
            return Err(UserError::new(
                format!("{}: {}; nothing was sent", first.origin, first.reason),
                Some(first.hint),
            ));
        }
        refused.print("refused");
        return Err(UserError::new(
            format!(
                "{} lines of {} cannot be sent (listed above); nothing was sent",
                refused.count,
                path.display()
            ),
            Some(format!("for {}: {}", first.origin, first.hint)),
        ));
    }
    if messages == 0 {
        return Err(UserError::new(
            format!("{} holds no messages", path.display()),
            Some("write one message per line".to_owned()),
        ));
    }
    Ok(messages)
}

/// A regular file's size and modification time, to see it change.
pub(crate) fn fingerprint(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.len(), metadata.modified().ok()?))
}

/// The messages of a send, generated or read.
pub(crate) enum Source {
    Generated {
        generated: Generated,
        next: u64,
    },
    /// At most `limit` messages, when set: those that were checked.
    Lines {
        lines: Lines<Box<dyn BufRead + Send>>,
        limit: Option<u64>,
    },
}

impl Iterator for Source {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        match self {
            Source::Generated { generated, next } => {
                let n = *next;
                (n <= generated.count).then(|| {
                    *next += 1;
                    Ok(generated.message(n))
                })
            }
            Source::Lines { lines, limit } => {
                if let Some(left) = limit {
                    if *left == 0 {
                        return None;
                    }
                    *left -= 1;
                }
                lines.next()
            }
        }
    }
}

/// What the reading side did.
pub(crate) struct Produced {
    /// Messages taken from the source.
    pub(crate) taken: u64,
    pub(crate) blank_lines: u64,
    /// A line whose group cannot be known: nothing after it was read.
    pub(crate) stopped_at: Option<Refused>,
    pub(crate) warnings: Examples,
}

/// Reads, checks and deals the messages to the streams; runs on a thread of
/// its own because reading a file or stdin blocks.
pub(crate) fn produce(
    mut source: Source,
    max_body_bytes: usize,
    mut repeats: Option<Repeats>,
    senders: Vec<mpsc::Sender<Item>>,
    stop: CancellationToken,
    bar: ProgressBar,
) -> Produced {
    let mut dealer = Dealer::new(senders.len());
    let mut produced = Produced {
        taken: 0,
        blank_lines: 0,
        stopped_at: None,
        warnings: Examples::default(),
    };
    while !stop.is_cancelled() {
        let Some(item) = source.next() else { break };
        produced.taken += 1;
        let item = item.and_then(|p| check(p, max_body_bytes));
        let group = match &item {
            Ok(planned) => {
                if let Some(warning) = repeats.as_mut().and_then(|r| r.warning(planned)) {
                    if produced.warnings.count < EXAMPLES as u64 {
                        bar.suspend(|| stderr_line(format_args!("warning: {warning}")));
                    }
                    produced.warnings.count += 1;
                }
                &planned.message.group_id
            }
            Err(Refused {
                group: Some(group), ..
            }) => group,
            Err(refused @ Refused { group: None, .. }) => {
                produced.stopped_at = Some(refused.clone());
                break;
            }
        };
        let stream = dealer.stream_of(group);
        if stop.is_cancelled() || senders[stream].blocking_send(item).is_err() {
            produced.taken -= 1;
            break;
        }
    }
    if let Source::Lines { lines, limit } = &mut source {
        produced.blank_lines = lines.blank_lines();
        if *limit == Some(0) && !stop.is_cancelled() && lines.next().is_some() {
            bar.suspend(|| {
                stderr_line(format_args!(
                    "warning: {} grew while it was being sent: only the lines checked before were sent",
                    lines.name()
                ));
            });
        }
    }
    produced
}
