//! `fifo send`: messages generated from the flags or read from a file,
//! checked against SQS's rules before anything is sent, then sent in
//! batches of up to ten on several streams, each group on one stream so
//! that its order holds. Nothing is built ahead: memory stays flat however
//! many messages. The summary tells apart what SQS stored, what it dropped
//! as a duplicate, and what was refused, held back, unknown or not tried.
//!
//! Layout: `input` makes and checks the messages, `source` reads them
//! and deals them out, `streams` sends them, `tally` counts what became of
//! them and tells it, with `examples` of each outcome.

mod examples;
mod input;
mod source;
mod streams;
mod tally;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use color_eyre::eyre::{Result, WrapErr};
use fifo_sqs_client::{Client, QueueAttributes};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::input::Repeats;
use self::source::{Input, Source, check_file, fingerprint, produce};
use self::streams::{Note, send_stream};
use self::tally::Tally;
use crate::cli::SendArgs;
use crate::error::UserError;
use crate::settings::Settings;
use crate::signals::Signals;

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
