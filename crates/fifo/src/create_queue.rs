//! `fifo create-queue`: a FIFO queue with content-based de-duplication,
//! optionally with a FIFO dead-letter queue. Idempotent; a queue that exists
//! with other settings is an error before anything is created.

use std::io::Write;
use std::process::ExitCode;

use color_eyre::eyre::{Result, WrapErr};
use fifo_sqs_client::{Client, Error as SqsError, QueueSpec, QueueUrl, check_queue_name};

use crate::cli::CreateQueueArgs;
use crate::error::UserError;
use crate::settings::Settings;

pub(crate) async fn run(
    client: &Client,
    settings: &Settings,
    args: &CreateQueueArgs,
) -> Result<ExitCode> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => QueueUrl::parse(&settings.queue_url)?.name,
    };
    check_name(&name)?;
    let mut spec = QueueSpec {
        name: name.clone(),
        visibility_timeout: settings.visibility_timeout,
        high_throughput: args.high_throughput,
        redrive: None,
    };
    let dlq_name = args.dlq.as_ref().map(|dlq| match dlq {
        Some(dlq_name) => dlq_name.clone(),
        None => format!("{}-dlq.fifo", name.trim_end_matches(".fifo")),
    });
    if let Some(dlq_name) = &dlq_name {
        check_name(dlq_name)?;
        if *dlq_name == name {
            return Err(UserError::new(
                format!("--dlq {dlq_name} names the queue itself"),
                Some("a dead-letter queue must be another queue: leave the name out for QUEUE-dlq.fifo".to_owned()),
            )
            .into());
        }
    }
    check_existing(client, &spec, dlq_name.as_deref(), args.max_receive_count).await?;
    if let Some(dlq_name) = dlq_name {
        let dlq_url = client
            .create_fifo_queue(&QueueSpec {
                name: dlq_name.clone(),
                redrive: None,
                ..spec.clone()
            })
            .await
            .wrap_err_with(|| format!("creating dead-letter queue {dlq_name}"))?;
        let arn = client.queue_attributes(&dlq_url).await?.arn;
        tracing::info!("dead-letter queue {dlq_url}");
        crate::stderr::stderr_line(format_args!(
            "dead-letter queue: {dlq_url} (after {} receives)",
            args.max_receive_count
        ));
        spec.redrive = Some((arn, args.max_receive_count));
    }
    let url = client
        .create_fifo_queue(&spec)
        .await
        .wrap_err_with(|| format!("creating queue {name}"))?;
    writeln!(std::io::stdout(), "{url}")?;
    Ok(ExitCode::SUCCESS)
}

/// When the queue exists, its settings must be the ones asked for (SQS
/// would refuse the create anyway, but only after the dead-letter queue was
/// made).
async fn check_existing(
    client: &Client,
    spec: &QueueSpec,
    dlq_name: Option<&str>,
    max_receive_count: u32,
) -> Result<()> {
    let url = match client.queue_url_by_name(&spec.name).await {
        Ok(url) => url,
        Err(SqsError::QueueDoesNotExist { .. }) => return Ok(()),
        Err(err) => return Err(err).wrap_err_with(|| format!("creating queue {}", spec.name)),
    };
    let existing = client
        .queue_attributes(&url)
        .await
        .wrap_err_with(|| format!("creating queue {}", spec.name))?;
    let mut differences = Vec::new();
    if !existing.fifo {
        differences.push("it is not a FIFO queue".to_owned());
    }
    if existing.visibility_timeout != spec.visibility_timeout {
        differences.push(format!(
            "its visibility timeout is {} s, not {} s",
            existing.visibility_timeout, spec.visibility_timeout
        ));
    }
    if existing.high_throughput != spec.high_throughput {
        differences.push(format!(
            "it is {}in high-throughput mode",
            if existing.high_throughput { "" } else { "not " }
        ));
    }
    if !existing.content_based_deduplication {
        differences.push("it does not de-duplicate by content".to_owned());
    }
    if let Some(dlq_name) = dlq_name {
        let wanted = (dlq_name.to_owned(), max_receive_count);
        match &existing.dead_letter {
            Some(dead_letter) if *dead_letter == wanted => {}
            Some((other, count)) => differences.push(format!(
                "its dead-letter queue is {other} after {count} receives, not {dlq_name} after {max_receive_count}"
            )),
            None => differences.push("it has no dead-letter queue".to_owned()),
        }
    }
    if differences.is_empty() {
        return Ok(());
    }
    Err(UserError::new(
        format!(
            "queue {} already exists with other settings: {}; nothing was created",
            spec.name,
            differences.join(", ")
        ),
        Some(
            "re-run with the queue's current settings (see `fifo list-queues`), or delete the queue first"
                .to_owned(),
        ),
    )
    .into())
}

fn check_name(name: &str) -> Result<(), UserError> {
    check_queue_name(name).map_err(|bad| {
        UserError::new(
            bad.to_string(),
            Some("FIFO queue names end in .fifo, e.g. orders.fifo".to_owned()),
        )
    })
}
