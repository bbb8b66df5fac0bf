//! `fifo create-queue`: a FIFO queue with content-based de-duplication,
//! optionally with a FIFO dead-letter queue. Idempotent.

use std::io::Write;
use std::process::ExitCode;

use color_eyre::eyre::{Result, WrapErr};
use fifo_sqs_client::{Client, QueueSpec, QueueUrl, check_queue_name};

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
    if let Some(dlq) = &args.dlq {
        let dlq_name = match dlq {
            Some(dlq_name) => dlq_name.clone(),
            None => format!("{}-dlq.fifo", name.trim_end_matches(".fifo")),
        };
        check_name(&dlq_name)?;
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
        crate::error::stderr_line(format_args!(
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

fn check_name(name: &str) -> Result<(), UserError> {
    check_queue_name(name).map_err(|message| {
        UserError::new(
            message,
            Some("FIFO queue names end in .fifo, e.g. orders.fifo".to_owned()),
        )
    })
}
