//! `fifo list-queues`: a table (or JSON) of queues and their message
//! counts; `--watch` redraws it in place until Ctrl-C.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr};
use fifo_sqs_client::{Client, Error as SqsError, QueueAttributes};

use crate::cli::ListQueuesArgs;
use crate::error::UserError;

pub(crate) async fn run(client: &Client, args: &ListQueuesArgs) -> Result<ExitCode> {
    let mut stdout = std::io::stdout();
    let Some(seconds) = args.watch else {
        let queues = fetch(client, args.prefix.as_deref()).await?;
        let text = if args.json {
            json(&queues)
        } else {
            table(&queues)
        };
        stdout.write_all(text.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    };
    if !(0.1..=3600.0).contains(&seconds) {
        return Err(UserError::new(
            format!("--watch {seconds} is out of range"),
            Some("give a refresh interval from 0.1 to 3600 seconds".to_owned()),
        )
        .into());
    }
    let redraw = stdout.is_terminal();
    loop {
        let queues = fetch(client, args.prefix.as_deref()).await?;
        let clear = if redraw { "\x1b[H\x1b[2J" } else { "\n" };
        writeln!(
            stdout,
            "{clear}{}(every {seconds} s; Ctrl-C to stop)",
            table(&queues)
        )?;
        stdout.flush()?;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(seconds)) => {}
            () = crate::signals::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Every queue with its attributes, by name; a queue deleted between the
/// listing and its attributes is left out.
async fn fetch(
    client: &Client,
    prefix: Option<&str>,
) -> Result<Vec<(String, String, QueueAttributes)>> {
    let urls = client
        .list_queue_urls(prefix)
        .await
        .wrap_err("listing queues")?;
    let mut tasks = tokio::task::JoinSet::new();
    for url in urls {
        let client = client.clone();
        tasks.spawn(async move {
            let attributes = client.queue_attributes(&url).await;
            (url, attributes)
        });
    }
    let mut queues = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (url, attributes) = joined.expect("attribute lookups never panic");
        match attributes {
            Ok(attributes) => {
                let name = url.rsplit('/').next().unwrap_or(&url).to_owned();
                queues.push((name, url, attributes));
            }
            Err(SqsError::QueueDoesNotExist { .. }) => {}
            Err(err) => return Err(err).wrap_err_with(|| format!("reading attributes of {url}")),
        }
    }
    queues.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(queues)
}

fn table(queues: &[(String, String, QueueAttributes)]) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "VISIBLE".to_owned(),
        "IN FLIGHT".to_owned(),
        "DELAYED".to_owned(),
        "DEAD LETTERS TO".to_owned(),
    ]];
    for (name, _, a) in queues {
        let dead_letter = match &a.dead_letter {
            Some((dlq, count)) => format!("{dlq} (after {count} receives)"),
            None => "-".to_owned(),
        };
        rows.push([
            name.clone(),
            a.visible.to_string(),
            a.in_flight.to_string(),
            a.delayed.to_string(),
            dead_letter,
        ]);
    }
    let width = |column: usize| rows.iter().map(|r| r[column].len()).max().unwrap_or(0);
    let widths = [width(0), width(1), width(2), width(3)];
    let mut out = String::new();
    for row in &rows {
        out += &format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {}\n",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    }
    if queues.is_empty() {
        out += "(no queues; create one with `fifo create-queue`)\n";
    }
    out
}

fn json(queues: &[(String, String, QueueAttributes)]) -> String {
    let values: Vec<_> = queues
        .iter()
        .map(|(name, url, a)| {
            serde_json::json!({
                "name": name,
                "url": url,
                "fifo": a.fifo,
                "visible": a.visible,
                "in_flight": a.in_flight,
                "delayed": a.delayed,
                "dead_letter_queue": a.dead_letter.as_ref().map(|(dlq, _)| dlq),
                "max_receive_count": a.dead_letter.as_ref().map(|(_, count)| count),
            })
        })
        .collect();
    serde_json::to_string_pretty(&values).expect("plain JSON") + "\n"
}
