//! `fifo send`: builds the messages (generated, `--body`, or lines of a
//! file), checks them all before sending any, then sends in batches of ten
//! with several batches in flight. Each group belongs to one sending stream,
//! so a group's messages reach the queue in the order given.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use color_eyre::eyre::{Result, WrapErr, eyre};
use fifo_sqs_client::{
    Client, MAX_BATCH_ENTRIES, OutgoingMessage, batches, check_group_id, check_message_body,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::SendArgs;
use crate::error::UserError;
use crate::settings::Settings;

const DEFAULT_GROUP: &str = "default";

/// A message and where it came from, to name it in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Planned {
    origin: String,
    message: OutgoingMessage,
}

pub(crate) async fn run(
    client: &Client,
    settings: &Settings,
    args: &SendArgs,
    progress: bool,
) -> Result<ExitCode> {
    let lines = match &args.file {
        Some(path) => Some(read_lines(path)?),
        None => None,
    };
    let invocation = format!("{:08x}", fastrand::u32(..));
    let mut planned = plan(args, lines.as_deref(), &invocation)?;
    for p in &planned {
        check_group_id(&p.message.group_id).map_err(|e| {
            UserError::new(
                format!("{}: {e}", p.origin),
                Some("use 1 to 128 ASCII letters, digits or punctuation, e.g. order-42".to_owned()),
            )
        })?;
    }

    let queue_url = &settings.queue_url;
    let queue = client
        .fifo_queue(queue_url)
        .await
        .wrap_err_with(|| format!("sending to {queue_url}"))?;
    for p in &planned {
        check_message_body(&p.message.body, queue.max_message_bytes).map_err(|e| {
            UserError::new(
                format!("{}: {e}", p.origin),
                Some(format!(
                    "the queue takes bodies of 1 to {} bytes of text; store larger payloads elsewhere and send a reference",
                    queue.max_message_bytes
                )),
            )
        })?;
    }
    if !queue.content_based_deduplication {
        for (n, p) in planned.iter_mut().enumerate() {
            p.message
                .dedup_id
                .get_or_insert_with(|| format!("{invocation}-{}", n + 1));
        }
    }

    let total = planned.len() as u64;
    let bar = progress_bar(total, progress);
    let started = Instant::now();
    let outcome = send_all(
        client,
        queue_url,
        planned,
        queue.max_message_bytes,
        args.concurrency,
        &bar,
    )
    .await;
    bar.finish_and_clear();
    let elapsed = started.elapsed().max(Duration::from_micros(1));
    crate::error::stderr_line(format_args!(
        "sent {} of {total} messages to {queue_url} in {:.2} s ({:.0} msgs/s)",
        outcome.sent,
        elapsed.as_secs_f64(),
        outcome.sent as f64 / elapsed.as_secs_f64()
    ));
    for (origin, reason) in outcome.failures.iter().take(20) {
        crate::error::stderr_line(format_args!("not sent: {origin}: {reason}"));
    }
    if outcome.failures.len() > 20 {
        crate::error::stderr_line(format_args!(
            "not sent: … and {} more",
            outcome.failures.len() - 20
        ));
    }
    if let Some(err) = outcome.fatal {
        return Err(err).wrap_err_with(|| {
            format!(
                "sending to {queue_url} stopped after {} of {total} messages",
                outcome.sent
            )
        });
    }
    if !outcome.failures.is_empty() {
        return Err(eyre!(
            "{} of {total} messages were not sent",
            outcome.failures.len()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn read_lines(path: &Path) -> Result<Vec<String>, UserError> {
    let mut text = String::new();
    let result = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(drop)
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    result.map_err(|e| {
        UserError::new(
            format!("cannot read {}: {e}", path.display()),
            Some("give --file a readable text file, or - for stdin".to_owned()),
        )
    })?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// Builds the messages in send order: their bodies, groups and explicit
/// de-duplication ids. Pure, so the rules are unit-tested.
fn plan(
    args: &SendArgs,
    lines: Option<&[String]>,
    invocation: &str,
) -> Result<Vec<Planned>, UserError> {
    #[derive(Clone)]
    struct Source {
        origin: String,
        body: Option<String>,
        group: Option<String>,
        dedup_id: Option<String>,
    }
    let default_count = args.groups.map_or(1, u64::from);
    let count = args.count.unwrap_or(default_count);
    let mut sources = Vec::new();
    match lines {
        Some(lines) => {
            let file = args
                .file
                .as_deref()
                .unwrap_or(Path::new("-"))
                .display()
                .to_string();
            let parsed: Vec<_> = lines
                .iter()
                .enumerate()
                .filter(|(_, line)| !line.trim().is_empty())
                .map(|(n, line)| {
                    let origin = format!("line {} of {file}", n + 1);
                    let (body, group, dedup_id) = parse_line(line).map_err(|e| {
                        UserError::new(
                            format!("{origin}: {e}"),
                            Some(r#"write plain text, or {"body": "...", "group": "...", "dedup_id": "..."}"#.to_owned()),
                        )
                    })?;
                    Ok(Source { origin, body: Some(body), group, dedup_id })
                })
                .collect::<Result<_, UserError>>()?;
            if parsed.is_empty() {
                return Err(UserError::new(
                    format!("{file} holds no messages"),
                    Some("write one message per line".to_owned()),
                ));
            }
            let times = args.count.unwrap_or(1);
            for _ in 0..times {
                sources.extend(parsed.iter().cloned());
            }
        }
        None => sources.extend((1..=count).map(|n| Source {
            origin: format!("message {n}"),
            body: args.body.clone(),
            group: None,
            dedup_id: None,
        })),
    }

    let total = sources.len();
    let mut next_sequence: HashMap<String, u64> = HashMap::new();
    Ok(sources
        .into_iter()
        .enumerate()
        .map(|(i, source)| {
            let group_id = source
                .group
                .or_else(|| args.group.clone())
                .or_else(|| {
                    args.groups
                        .map(|n| format!("group-{}", i as u64 % u64::from(n) + 1))
                })
                .unwrap_or_else(|| DEFAULT_GROUP.to_owned());
            let sequence = next_sequence.entry(group_id.clone()).or_insert(0);
            *sequence += 1;
            let body = source.body.unwrap_or_else(|| {
                serde_json::json!({"group": group_id, "seq": *sequence, "send_id": invocation})
                    .to_string()
            });
            let dedup_id = source.dedup_id.or_else(|| {
                args.dedup_id.as_ref().map(|id| {
                    if total == 1 {
                        id.clone()
                    } else {
                        format!("{id}-{}", i + 1)
                    }
                })
            });
            Planned {
                origin: source.origin,
                message: OutgoingMessage {
                    body,
                    group_id,
                    dedup_id,
                    ..OutgoingMessage::default()
                },
            }
        })
        .collect())
}

/// A line is a structured message when it is a JSON object with a `body`;
/// anything else is the body itself.
fn parse_line(line: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let object = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(object)) if object.contains_key("body") => object,
        _ => return Ok((line.to_owned(), None, None)),
    };
    let body = match &object["body"] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = |key: &str| match object.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("`{key}` must be a string, not {other}")),
    };
    Ok((body, text("group")?, text("dedup_id")?))
}

#[derive(Debug, Default)]
struct Outcome {
    sent: u64,
    /// Messages not sent, by origin, with the reason.
    failures: Vec<(String, String)>,
    /// An error that stopped a stream (endpoint gone, queue deleted…).
    fatal: Option<fifo_sqs_client::Error>,
}

/// Sends on up to `concurrency` streams at once. Groups are dealt to streams
/// in order of first appearance, so no two in-flight batches share a group.
async fn send_all(
    client: &Client,
    queue_url: &str,
    planned: Vec<Planned>,
    max_bytes: usize,
    concurrency: u32,
    bar: &ProgressBar,
) -> Outcome {
    let mut stream_of_group: HashMap<String, usize> = HashMap::new();
    let mut streams: Vec<Vec<Planned>> = (0..concurrency).map(|_| Vec::new()).collect();
    for p in planned {
        let next = stream_of_group.len() % streams.len();
        let stream = *stream_of_group
            .entry(p.message.group_id.clone())
            .or_insert(next);
        streams[stream].push(p);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for stream in streams.into_iter().filter(|s| !s.is_empty()) {
        let client = client.clone();
        let queue_url = queue_url.to_owned();
        let bar = bar.clone();
        tasks.spawn(async move { send_stream(&client, &queue_url, stream, max_bytes, &bar).await });
    }
    let mut total = Outcome::default();
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.expect("a send stream never panics");
        total.sent += outcome.sent;
        total.failures.extend(outcome.failures);
        total.fatal = total.fatal.or(outcome.fatal);
    }
    total
}

/// Sends one stream's messages batch after batch. When SQS refuses a
/// message, the later messages of its group are not sent, so that the group
/// never reaches the queue with a hole in its order.
async fn send_stream(
    client: &Client,
    queue_url: &str,
    mut rest: Vec<Planned>,
    max_bytes: usize,
    bar: &ProgressBar,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut failed_groups = HashSet::new();
    rest.reverse(); // pop from the end in send order
    while !rest.is_empty() {
        let window: Vec<OutgoingMessage> = rest
            .iter()
            .rev()
            .take(MAX_BATCH_ENTRIES)
            .map(|p| p.message.clone())
            .collect();
        let batch_len = batches(&window, max_bytes)[0].len();
        let batch: Vec<Planned> = (0..batch_len).filter_map(|_| rest.pop()).collect();
        match client.send_batch(queue_url, &window[..batch_len]).await {
            Ok(failures) => {
                outcome.sent += (batch.len() - failures.len()) as u64;
                for failure in failures {
                    let p = &batch[failure.index.min(batch.len() - 1)];
                    failed_groups.insert(p.message.group_id.clone());
                    outcome.failures.push((
                        p.origin.clone(),
                        format!("{}: {}", failure.code, failure.message),
                    ));
                }
            }
            Err(err) => {
                let reason = format!("not attempted after: {err}");
                outcome.failures.extend(
                    batch
                        .iter()
                        .chain(rest.iter().rev())
                        .map(|p| (p.origin.clone(), reason.clone())),
                );
                outcome.fatal = Some(err);
                return outcome;
            }
        }
        bar.inc(batch.len() as u64);
        if !failed_groups.is_empty() {
            rest.retain(|p| {
                let keep = !failed_groups.contains(&p.message.group_id);
                if !keep {
                    outcome.failures.push((
                        p.origin.clone(),
                        format!(
                            "held back: an earlier message of group {} failed",
                            p.message.group_id
                        ),
                    ));
                }
                keep
            });
        }
    }
    outcome
}

fn progress_bar(total: u64, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} messages, {per_sec}, eta {eta}")
            .expect("valid template"),
    );
    bar
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn send_args(args: &[&str]) -> SendArgs {
        let cli = Cli::parse_from(["fifo", "send"].iter().chain(args));
        match cli.command {
            Command::Send(args) => args,
            _ => unreachable!(),
        }
    }

    fn groups_and_bodies(planned: &[Planned]) -> Vec<(String, String)> {
        planned
            .iter()
            .map(|p| (p.message.group_id.clone(), p.message.body.clone()))
            .collect()
    }

    #[test]
    fn one_group_gets_sequence_numbers_one_to_n() {
        let planned = plan(
            &send_args(&["--group", "same", "--count", "5"]),
            None,
            "inv",
        )
        .unwrap();
        let expected: Vec<_> = (1..=5)
            .map(|n| {
                (
                    "same".to_owned(),
                    format!(r#"{{"group":"same","send_id":"inv","seq":{n}}}"#),
                )
            })
            .collect();
        assert_eq!(groups_and_bodies(&planned), expected);
        assert!(planned.iter().all(|p| p.message.dedup_id.is_none()));
    }

    #[test]
    fn groups_are_filled_round_robin() {
        let planned = plan(&send_args(&["--groups", "3", "--count", "7"]), None, "inv").unwrap();
        let groups: Vec<_> = planned
            .iter()
            .map(|p| p.message.group_id.as_str())
            .collect();
        assert_eq!(
            groups,
            [
                "group-1", "group-2", "group-3", "group-1", "group-2", "group-3", "group-1"
            ]
        );
        assert!(planned[6].message.body.contains(r#""seq":3"#));
        assert_eq!(
            plan(&send_args(&["--groups", "5"]), None, "inv")
                .unwrap()
                .len(),
            5
        );
    }

    #[test]
    fn explicit_bodies_and_dedup_ids() {
        let planned = plan(
            &send_args(&["--body", "hi", "--count", "2", "--dedup-id", "d"]),
            None,
            "inv",
        )
        .unwrap();
        let dedup: Vec<_> = planned
            .iter()
            .map(|p| p.message.dedup_id.clone().unwrap())
            .collect();
        assert_eq!(dedup, ["d-1", "d-2"]);
        assert!(
            planned
                .iter()
                .all(|p| p.message.body == "hi" && p.message.group_id == DEFAULT_GROUP)
        );
    }

    #[test]
    fn file_lines_may_be_plain_or_json() {
        let lines: Vec<String> = [
            "plain text",
            "",
            r#"{"body": "b", "group": "g7", "dedup_id": "x"}"#,
            r#"{"order": 1}"#,
            r#"{"body": {"n": 1}}"#,
        ]
        .map(String::from)
        .to_vec();
        let planned = plan(
            &send_args(&["--file", "f.txt", "--group", "g"]),
            Some(&lines),
            "inv",
        )
        .unwrap();
        let got: Vec<_> = planned
            .iter()
            .map(|p| (p.origin.as_str(), p.message.clone()))
            .collect();
        let message = |body: &str, group: &str, dedup: Option<&str>| OutgoingMessage {
            body: body.to_owned(),
            group_id: group.to_owned(),
            dedup_id: dedup.map(str::to_owned),
            ..OutgoingMessage::default()
        };
        assert_eq!(
            got,
            [
                ("line 1 of f.txt", message("plain text", "g", None)),
                ("line 3 of f.txt", message("b", "g7", Some("x"))),
                ("line 4 of f.txt", message(r#"{"order": 1}"#, "g", None)),
                ("line 5 of f.txt", message(r#"{"n":1}"#, "g", None)),
            ]
        );
        let bad = vec![r#"{"body": "b", "group": 7}"#.to_owned()];
        let err = plan(&send_args(&["--file", "f.txt"]), Some(&bad), "inv").unwrap_err();
        assert!(
            err.message
                .starts_with("line 1 of f.txt: `group` must be a string"),
            "{err}"
        );
    }
}
