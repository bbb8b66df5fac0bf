//! `fifo dlq peek`: a queue's dead letters with the reasons fifo recorded,
//! left in place; `fifo dlq redrive`: SQS's message move task back to the
//! source queue; and `fifo purge`.

use std::io::Write;
use std::process::ExitCode;

use color_eyre::eyre::{Result, WrapErr};
use fifo_sqs_client::{
    AttributeValue, Client, MoveTaskStatus, ReceiveOptions, ReceivedMessage, one_line,
};
use fifo_worker_pool::SqsQueue;

use crate::cli::{PeekArgs, PurgeArgs, RedriveArgs};
use crate::error::UserError;
use crate::settings::Settings;
use crate::signals::Signals;
use crate::stderr::stderr_line;

/// How long peeked messages stay hidden at most, should fifo die before it
/// makes them visible again.
const PEEK_HOLD_SECONDS: u32 = 30;

pub(crate) async fn peek(
    client: &Client,
    settings: &Settings,
    args: &PeekArgs,
) -> Result<ExitCode> {
    let source = queue_url(client, args.queue.as_deref().unwrap_or(&settings.queue_url)).await?;
    let queue = SqsQueue::open(client.clone(), &source).await?;
    let Some(dead_letters) = queue.dead_letter_url() else {
        return Err(no_dead_letter_queue(&source).into());
    };
    // A receive counts toward the dead-letter queue's own redrive policy:
    // peeking could move its messages on.
    if let Some((next, max)) = client.queue_attributes(dead_letters).await?.dead_letter {
        return Err(UserError::new(
            format!("{dead_letters} has a redrive policy of its own (to {next} after {max} receives): peeking would count as receives and could move its messages there"),
            Some("remove that redrive policy first (any receive counts, the SQS console's included)".to_owned()),
        )
        .into());
    }
    let peeked = receive_up_to(client, dead_letters, args.limit as usize).await;
    // Visible again at once, whatever the receive found.
    let released = release(client, dead_letters, &peeked).await;
    let peeked = peeked.wrap_err_with(|| format!("receiving from {dead_letters}"))?;
    released.wrap_err_with(|| format!("making the peeked messages of {dead_letters} visible again (they are back within {PEEK_HOLD_SECONDS} s)"))?;

    let mut stdout = std::io::stdout().lock();
    if args.json {
        stdout.write_all(json(&peeked).as_bytes())?;
    } else {
        for message in &peeked {
            stdout.write_all(text(message).as_bytes())?;
        }
        stderr_line(format_args!(
            "{} shown from {dead_letters}; nothing was deleted",
            crate::counted(peeked.len() as u64, "dead letter")
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn redrive(
    client: &Client,
    settings: &Settings,
    args: &RedriveArgs,
    progress: bool,
) -> Result<ExitCode> {
    let source = queue_url(client, args.queue.as_deref().unwrap_or(&settings.queue_url)).await?;
    let queue = SqsQueue::open(client.clone(), &source).await?;
    let Some(dead_letters) = queue.dead_letter_url() else {
        return Err(no_dead_letter_queue(&source).into());
    };
    // Messages fifo moved carry no source SQS knows of: the task needs a
    // destination, and so would send another queue's dead letters here.
    let others: Vec<String> = client
        .dead_letter_sources(dead_letters)
        .await?
        .into_iter()
        .filter(|url| url.rsplit('/').next() != source.rsplit('/').next())
        .collect();
    if !others.is_empty() {
        return Err(UserError::new(
            format!(
                "{dead_letters} is the dead-letter queue of other queues too ({}): a redrive to {source} would move their messages there",
                others.join(", ")
            ),
            Some("give each queue a dead-letter queue of its own (`fifo create-queue NAME --dlq`), or move these messages by hand".to_owned()),
        )
        .into());
    }
    let waiting = client.queue_attributes(dead_letters).await?;
    if waiting.visible + waiting.delayed == 0 {
        if waiting.in_flight > 0 {
            return Err(UserError::new(
                format!("the {} messages of {dead_letters} are all in flight (received by someone, not yet visible again): nothing can be moved now", waiting.in_flight),
                Some("run it again once they are visible (after their visibility timeout)".to_owned()),
            )
            .into());
        }
        stderr_line(format_args!("{dead_letters} is empty: nothing to move"));
        return Ok(ExitCode::SUCCESS);
    }
    let source_arn = client.queue_attributes(&source).await?.arn;
    let handle = client
        .start_move_task(&waiting.arn, &source_arn, args.rate)
        .await
        .wrap_err_with(|| {
            format!("starting to move the messages of {dead_letters} back to {source}")
        })?;
    let bar = move_bar(waiting.visible, progress);
    let mut stop = stop_signal();
    let mut cancelled = false;
    let task = loop {
        tokio::select! {
            () = tokio::time::sleep(MOVE_POLL) => {}
            () = &mut stop, if !cancelled => {
                cancelled = true;
                // A task that finished meanwhile cannot be cancelled: its
                // status below says so.
                if let Err(e) = client.cancel_move_task(&handle).await {
                    tracing::warn!("cancelling the move failed ({e}); waiting for it to end");
                }
            }
        }
        let Some(task) = client.latest_move_task(&waiting.arn).await? else {
            continue;
        };
        // Until ours is listed, the newest may be an earlier task.
        if task.handle.as_deref().is_some_and(|h| h != handle) {
            continue;
        }
        if let Some(total) = task.to_move {
            bar.set_length(total);
        }
        bar.set_position(task.moved);
        if !task.status.is_under_way() {
            break task;
        }
    };
    bar.finish_and_clear();
    let moved = format!(
        "{} moved from {dead_letters} back to {source}",
        crate::counted(task.moved, "message")
    );
    match &task.status {
        MoveTaskStatus::Completed => {
            stderr_line(format_args!("{moved}"));
            Ok(ExitCode::SUCCESS)
        }
        MoveTaskStatus::Cancelled => {
            stderr_line(format_args!("cancelled: {moved}; the rest stays in the dead-letter queue"));
            Ok(ExitCode::from(crate::signals::INTERRUPTED))
        }
        other => Err(UserError::new(
            format!(
                "the move ended {other}: {moved}; {}",
                task.failure.as_deref().unwrap_or("SQS gave no reason")
            ),
            Some("check that fifo may sqs:StartMessageMoveTask, and both queues' permissions; run it again to move the rest".to_owned()),
        )
        .into()),
    }
}

/// Resolves at the first Ctrl-C or SIGTERM; later ones are ignored while
/// the cancelled move ends.
fn stop_signal() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async {
        match Signals::listen() {
            Ok(mut signals) => {
                signals.next().await;
            }
            Err(_) => crate::signals::ctrl_c().await,
        }
    })
}

/// How often a move task's progress is asked.
const MOVE_POLL: std::time::Duration = std::time::Duration::from_millis(500);

fn move_bar(total: u64, enabled: bool) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    if !enabled {
        return ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} dead letters moved back, eta {eta}")
            .expect("valid template"),
    );
    bar
}

fn no_dead_letter_queue(source: &str) -> UserError {
    UserError::new(
        format!("{source} has no dead-letter queue (no redrive policy)"),
        Some(
            "give the queue whose dead letters you want (the source, not the dead-letter queue itself); create one with a dead-letter queue by `fifo create-queue NAME --dlq`"
                .to_owned(),
        ),
    )
}

pub(crate) async fn purge(client: &Client, args: &PurgeArgs) -> Result<ExitCode> {
    let url = queue_url(client, &args.queue).await?;
    if !args.yes {
        return Err(UserError::new(
            format!("purging deletes every message of {url}, for good"),
            Some(format!("add --yes to purge {url}")),
        )
        .into());
    }
    client
        .purge(&url)
        .await
        .wrap_err_with(|| format!("purging {url}"))?;
    stderr_line(format_args!("purged {url}"));
    Ok(ExitCode::SUCCESS)
}

/// A queue's URL from its URL or its name.
async fn queue_url(client: &Client, queue: &str) -> Result<String> {
    if queue.contains("://") {
        return Ok(queue.to_owned());
    }
    client
        .queue_url_by_name(queue)
        .await
        .wrap_err_with(|| format!("finding the queue named {queue}"))
}

/// Receives until `limit` messages or an empty receive; each stays hidden
/// (so the next receive brings others) until released.
async fn receive_up_to(
    client: &Client,
    url: &str,
    limit: usize,
) -> Result<Vec<ReceivedMessage>, fifo_sqs_client::Error> {
    let mut all = Vec::new();
    while all.len() < limit {
        let options = ReceiveOptions {
            max_messages: (limit - all.len()).min(10) as u32,
            wait_seconds: 0,
            visibility_timeout: Some(PEEK_HOLD_SECONDS),
            attempt_id: None,
        };
        let batch = client.receive(url, &options).await?.messages;
        if batch.is_empty() {
            break;
        }
        all.extend(batch);
    }
    Ok(all)
}

/// Makes the peeked messages visible again.
async fn release(
    client: &Client,
    url: &str,
    peeked: &Result<Vec<ReceivedMessage>, fifo_sqs_client::Error>,
) -> Result<()> {
    let Ok(peeked) = peeked else {
        return Ok(());
    };
    for chunk in peeked.chunks(fifo_sqs_client::MAX_BATCH_ENTRIES) {
        let entries: Vec<(&str, u32)> = chunk
            .iter()
            .map(|m| (m.receipt_handle.as_str(), 0))
            .collect();
        let failed = client.change_visibility_batch(url, &entries).await?;
        if let Some(failure) = failed.first() {
            color_eyre::eyre::bail!("{} of them: {}", failed.len(), failure.message);
        }
    }
    Ok(())
}

/// The attributes fifo adds to a dead letter, shown on lines of their own.
const FIFO_ATTRIBUTES: [&str; 6] = [
    "fifo.reason",
    "fifo.receive-count",
    "fifo.attempts",
    "fifo.status",
    "fifo.failed-at",
    "fifo.source-queue",
];

/// The original message's id: a copy fifo moved has an id of its own and
/// the original's as its de-duplication id (see the engine's
/// `DeadLetterCopy`); a message SQS's redrive moved keeps its id.
fn original_id(message: &ReceivedMessage) -> &str {
    match &message.deduplication_id {
        Some(original) if message.attributes.contains_key("fifo.reason") => original,
        _ => &message.message_id,
    }
}

fn attribute_text(message: &ReceivedMessage, name: &str) -> Option<String> {
    match &message.attributes.get(name)?.value {
        AttributeValue::Text(text) => Some(text.clone()),
        AttributeValue::Binary(bytes) => Some(format!("({} bytes)", bytes.len())),
    }
}

/// One dead letter as text: where it stands, why it died, its body.
fn text(message: &ReceivedMessage) -> String {
    let get = |name| attribute_text(message, name);
    let original = original_id(message);
    let mut head = format!(
        "group {}  sequence {}  id {original}",
        message.group_id, message.sequence_number
    );
    if let Some(at) = get("fifo.failed-at") {
        head += &format!("  failed at {at}");
    }
    let mut lines = vec![head];
    let mut how = Vec::new();
    // Two counts that differ: the source queue's when it failed, and the
    // dead-letter queue's own (each peek adds one, as `--json` shows it).
    if let Some(count) = get("fifo.receive-count") {
        how.push(format!("failed on receive {count} from its queue"));
    }
    how.push(format!(
        "received {} from the dead-letter queue (peeks count)",
        crate::counted(u64::from(message.receive_count), "time")
    ));
    if let Some(attempts) = get("fifo.attempts") {
        how.push(format!("attempts {attempts}"));
    }
    if let Some(status) = get("fifo.status") {
        how.push(status);
    }
    if let Some(source) = get("fifo.source-queue") {
        how.push(format!("from {source}"));
    }
    if !how.is_empty() {
        lines.push(format!("  {}", how.join(", ")));
    }
    lines.push(format!(
        "  reason: {}",
        get("fifo.reason").map_or_else(
            || "none recorded (moved by SQS's own redrive, or SQS refused fifo's explanation)"
                .to_owned(),
            |reason| one_line(reason.chars())
        )
    ));
    let others: Vec<String> = message
        .attributes
        .keys()
        .filter(|name| !FIFO_ATTRIBUTES.contains(&name.as_str()))
        .map(|name| format!("{name}={}", get(name).unwrap_or_default()))
        .collect();
    if !others.is_empty() {
        lines.push(format!("  attributes: {}", others.join(", ")));
    }
    lines.push(format!("  body: {}", one_line(message.body.chars())));
    lines.join("\n") + "\n\n"
}

fn json(messages: &[ReceivedMessage]) -> String {
    let array: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, serde_json::Value> = m
                .attributes
                .keys()
                .filter_map(|name| Some((name.clone(), attribute_text(m, name)?.into())))
                .collect();
            serde_json::json!({
                "id": original_id(m),
                "group_id": m.group_id,
                "sequence_number": m.sequence_number,
                // The dead-letter queue's own count (each peek adds one)...
                "receive_count": m.receive_count,
                // ...and the one its queue had when it failed, when fifo
                // moved it.
                "source_receive_count": attribute_text(m, "fifo.receive-count")
                    .and_then(|count| count.parse::<u64>().ok()),
                "body": m.body,
                "attributes": attributes,
            })
        })
        .collect();
    serde_json::to_string_pretty(&array).expect("JSON values serialize") + "\n"
}
