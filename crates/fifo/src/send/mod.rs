//! `fifo send`: messages generated from the flags or read from a file,
//! checked against SQS's rules before anything is sent, then sent in
//! batches of up to ten on several streams, each group on one stream so
//! that its order holds. Nothing is built ahead: memory stays flat however
//! many messages. The summary tells apart what SQS stored, what it dropped
//! as a duplicate, and what was refused, held back, unknown or not tried.
//!
//! Layout: `input` makes and checks the messages, `streams` sends them.

mod input;
mod streams;

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use color_eyre::eyre::{Result, WrapErr};
use fifo_sqs_client::{
    Client, QueueAttributes, check_dedup_id, check_group_id, check_message_body,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(crate) use self::input::Format;
use self::input::{Generated, Item, Lines, Naming, READ_HINT, Refused, Repeats, check, hint_for};
use self::streams::{Dealer, Note, send_stream};
use crate::cli::SendArgs;
use crate::error::UserError;
use crate::settings::Settings;
use crate::signals::Signals;
use crate::stderr::stderr_line;

/// Examples of each outcome printed after the summary.
const EXAMPLES: usize = 10;

pub(crate) async fn run(
    client: &Client,
    settings: &Settings,
    args: &SendArgs,
    progress: bool,
) -> Result<ExitCode> {
    let queue_url = &settings.queue_url;
    let queue = client
        .fifo_queue(queue_url)
        .await
        .wrap_err_with(|| format!("sending to {queue_url}"))?;
    let invocation = format!("{:08x}", fastrand::u32(..));
    let input = Input::open(args, &queue, &invocation)?;

    // Everything is checked before anything is sent. A stream (stdin, a
    // pipe) cannot be read twice: its lines are checked as they come, and a
    // bad one holds back the rest of its group.
    let total = match &input {
        Input::Generated(generated) => Some(generated.count),
        Input::File {
            path,
            regular: true,
        } => {
            let checked = fingerprint(path);
            let messages = check_file(path, args, &queue, &invocation)?;
            if fingerprint(path) != checked {
                return Err(UserError::new(
                    format!(
                        "{} changed while it was being checked; nothing was sent",
                        path.display()
                    ),
                    Some(
                        "send a file nothing is writing to (copy it first), or pipe it: --file -"
                            .to_owned(),
                    ),
                )
                .into());
            }
            Some(messages)
        }
        Input::File { .. } | Input::Stdin => None,
    };
    let repeats = (total.is_none())
        .then(|| Repeats::new(queue.content_based_deduplication, queue.dedup_per_group));

    let bar = progress_bar(total, progress);
    let started = Instant::now();
    let source = input.source(args, &queue, &invocation, total)?;
    let outcome = send(
        client,
        queue_url,
        &queue,
        args.concurrency,
        source,
        repeats,
        &bar,
    )
    .await;
    bar.finish_and_clear();
    outcome.report(queue_url, total, started.elapsed())
}

/// Where the messages come from.
enum Input {
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
    fn open(
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
    fn source(
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
fn check_file(
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
fn fingerprint(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.len(), metadata.modified().ok()?))
}

/// The messages of a send, generated or read.
enum Source {
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
struct Produced {
    /// Messages taken from the source.
    taken: u64,
    blank_lines: u64,
    /// A line whose group cannot be known: nothing after it was read.
    stopped_at: Option<Refused>,
    warnings: Examples,
}

/// Reads, checks and deals the messages to the streams; runs on a thread of
/// its own because reading a file or stdin blocks.
fn produce(
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

/// Sends everything `source` gives and tallies what became of it.
async fn send(
    client: &Client,
    queue_url: &str,
    queue: &QueueAttributes,
    concurrency: u32,
    source: Source,
    repeats: Option<Repeats>,
    bar: &ProgressBar,
) -> Tally {
    // Within one send only lines can repeat: generated messages are unique.
    let lines_of = match &source {
        Source::Lines { lines, .. } => Some(lines.name().to_owned()),
        Source::Generated { .. } => None,
    };
    let mut tally = Tally::new(lines_of);
    let stop = CancellationToken::new();
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    let mut senders = Vec::new();
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (sender, items) = mpsc::channel(4 * fifo_sqs_client::MAX_BATCH_ENTRIES);
        senders.push(sender);
        streams.spawn(send_stream(
            client.clone(),
            queue_url.to_owned(),
            queue.max_message_bytes,
            items,
            notes_tx.clone(),
            stop.clone(),
        ));
    }
    drop(notes_tx);
    // A thread of its own, not tokio's blocking pool: a read of stdin that
    // never returns must not keep fifo from exiting after Ctrl-C.
    let (produced_tx, produced) = tokio::sync::oneshot::channel();
    {
        let (stop, bar) = (stop.clone(), bar.clone());
        let max_body_bytes = queue.max_message_bytes;
        std::thread::spawn(move || {
            let _ = produced_tx.send(produce(source, max_body_bytes, repeats, senders, stop, bar));
        });
    }
    tokio::spawn(interrupt_on_signal(stop.clone(), tally.interrupted.clone()));
    while let Some(note) = notes.recv().await {
        if !matches!(note, Note::Stopped(_) | Note::AfterAHole { .. }) {
            bar.inc(1);
        }
        tally.add(note);
    }
    while let Some(joined) = streams.join_next().await {
        joined.expect("a send stream does not panic");
    }
    tally.produced = if tally.interrupted.load(Ordering::Relaxed) {
        // The reader may be waiting for input that never comes.
        tokio::time::timeout(Duration::from_millis(200), produced)
            .await
            .ok()
            .and_then(Result::ok)
    } else {
        Some(produced.await.expect("the reading thread ends"))
    };
    tally
}

/// Ctrl-C or SIGTERM stops the send after the batches under way; a second
/// one exits at once.
async fn interrupt_on_signal(stop: CancellationToken, interrupted: Arc<AtomicBool>) {
    let Ok(mut signals) = Signals::listen() else {
        return;
    };
    signals.next().await;
    interrupted.store(true, Ordering::Relaxed);
    stop.cancel();
    signals.next().await;
    crate::signals::exit_at_once();
}

/// Up to [`EXAMPLES`] lines of one kind, and how many there were.
#[derive(Debug, Default)]
struct Examples {
    count: u64,
    lines: Vec<String>,
}

impl Examples {
    fn add(&mut self, line: String) {
        self.count += 1;
        if self.lines.len() < EXAMPLES {
            self.lines.push(line);
        }
    }

    fn add_opt(&mut self, line: Option<String>) {
        if let Some(line) = line {
            self.add(line);
        }
    }

    /// Prints the examples, each prefixed by `label`, then how many more.
    fn print(&self, label: &str) {
        for line in &self.lines {
            stderr_line(format_args!("{label}: {line}"));
        }
        if self.count > self.lines.len() as u64 {
            stderr_line(format_args!(
                "{label}: … and {} more",
                self.count - self.lines.len() as u64
            ));
        }
    }
}

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
struct Tally {
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
    interrupted: Arc<AtomicBool>,
    /// None when the reading side did not end (interrupted mid-read).
    produced: Option<Produced>,
}

impl Tally {
    fn new(lines_of: Option<String>) -> Tally {
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

    fn add(&mut self, note: Note) {
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
    fn report(
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

fn progress_bar(total: Option<u64>, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = match total {
        Some(_) => "{bar:40} {pos}/{len} messages, {rate}, eta {eta}",
        None => "{spinner} {pos} messages, {rate}",
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} msgs/s", state.per_sec());
                },
            ),
    );
    bar
}
