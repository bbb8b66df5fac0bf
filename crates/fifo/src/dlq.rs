//! `fifo dlq peek`: a queue's dead letters with the reasons fifo recorded,
//! left in place; and `fifo purge`.

use std::io::Write;
use std::process::ExitCode;

use color_eyre::eyre::{Result, WrapErr};
use fifo_sqs_client::{AttributeValue, Client, ReceiveOptions, ReceivedMessage};
use fifo_worker_pool::SqsQueue;

use crate::cli::{PeekArgs, PurgeArgs};
use crate::error::{UserError, stderr_line};
use crate::settings::Settings;

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
        return Err(UserError::new(
            format!("{source} has no dead-letter queue (no redrive policy)"),
            Some(
                "give the queue whose dead letters you want (the source, not the dead-letter queue itself); create one with a dead-letter queue by `fifo create-queue NAME --dlq`"
                    .to_owned(),
            ),
        )
        .into());
    };
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
            "{} dead letters shown from {dead_letters}; nothing was deleted",
            peeked.len()
        ));
    }
    Ok(ExitCode::SUCCESS)
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

fn attribute_text(message: &ReceivedMessage, name: &str) -> Option<String> {
    match &message.attributes.get(name)?.value {
        AttributeValue::Text(text) => Some(text.clone()),
        AttributeValue::Binary(bytes) => Some(format!("({} bytes)", bytes.len())),
    }
}

/// One dead letter as text: where it stands, why it died, its body.
fn text(message: &ReceivedMessage) -> String {
    let get = |name| attribute_text(message, name);
    let mut head = format!(
        "group {}  sequence {}  id {}",
        message.group_id, message.sequence_number, message.message_id
    );
    if let Some(at) = get("fifo.failed-at") {
        head += &format!("  failed at {at}");
    }
    let mut lines = vec![head];
    let mut how = Vec::new();
    if let Some(count) = get("fifo.receive-count") {
        how.push(format!("receive {count}"));
    }
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
        get("fifo.reason").unwrap_or_else(|| {
            "none recorded (moved by SQS's redrive, not by fifo)".to_owned()
        })
    ));
    let others: Vec<String> = message
        .attributes
        .keys()
        .filter(|name| !name.starts_with("fifo."))
        .map(|name| format!("{name}={}", get(name).unwrap_or_default()))
        .collect();
    if !others.is_empty() {
        lines.push(format!("  attributes: {}", others.join(", ")));
    }
    lines.push(format!("  body: {}", one_line(&message.body)));
    lines.join("\n") + "\n\n"
}

/// `text` on one line: control characters escaped, the rest as it is.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
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
                "id": m.message_id,
                "group_id": m.group_id,
                "sequence_number": m.sequence_number,
                "receive_count": m.receive_count,
                "body": m.body,
                "attributes": attributes,
            })
        })
        .collect();
    serde_json::to_string_pretty(&array).expect("JSON values serialize") + "\n"
}
