//! How errors reach the user: one `error:` line with the chain of causes,
//! and a `hint:` line with the fix where we know it, read back from the
//! typed errors in the chain (a [`UserError`] carries its own, an SQS error
//! gets one by its kind).

use fifo_sqs_client::Error as SqsError;

use crate::stderr::{json_line, json_lines, stderr_line, write_line};

/// A mistake in what the user gave us, with the fix.
#[derive(Debug)]
pub(crate) struct UserError {
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

impl UserError {
    pub(crate) fn new(message: impl Into<String>, hint: Option<String>) -> UserError {
        UserError {
            message: message.into(),
            hint,
        }
    }
}

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

/// Prints `error: a: b: c` and, where known, `hint: …` to stderr.
pub(crate) fn report(report: &color_eyre::Report) {
    let chain: Vec<String> = report.chain().map(ToString::to_string).collect();
    // One line, whatever the causes' texts hold.
    let line = chain.join(": ").replace('\n', "\\n").replace('\r', "\\r");
    let hint = report.chain().find_map(hint_for);
    if json_lines() {
        let mut object = json_line("ERROR", &line);
        if let Some(hint) = hint {
            object["hint"] = hint.into();
        }
        write_line(&object.to_string());
        return;
    }
    stderr_line(format_args!("error: {line}"));
    if let Some(hint) = hint {
        stderr_line(format_args!("hint: {hint}"));
    }
}

fn hint_for(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(user) = err.downcast_ref::<UserError>() {
        return user.hint.clone();
    }
    if let Some(settings) = err.downcast_ref::<crate::settings::SettingsError>() {
        return settings.hint.clone();
    }
    if let Some(queue) = err.downcast_ref::<fifo_worker_pool::QueueError>() {
        return sqs_hint(queue.cause().downcast_ref::<SqsError>()?);
    }
    sqs_hint(err.downcast_ref::<SqsError>()?)
}

/// The fix for an SQS error, where there is one the user can apply.
pub(crate) fn sqs_hint(err: &SqsError) -> Option<String> {
    let hint = match err {
        SqsError::Unreachable { endpoint, .. } => format!(
            "is SQS running at {endpoint}? For LocalStack: cargo xtask localstack-up; otherwise check --endpoint-url / ENDPOINT_URL"
        ),
        SqsError::QueueDoesNotExist { queue } => {
            let name = queue.rsplit('/').next().unwrap_or(queue);
            format!("create it with `fifo create-queue {name}`, or point --queue-url / SQS_QUEUE_URL at an existing queue")
        }
        SqsError::NotFifo { .. } | SqsError::BadQueueUrl { .. } => {
            return crate::settings::queue_url_hint(err);
        }
        SqsError::BadEndpointUrl { .. } => "use http(s)://HOST[:PORT], e.g. http://localhost:4566".to_owned(),
        SqsError::MissingRegion => {
            "set AWS_REGION or --region, or use a queue URL like https://sqs.REGION.amazonaws.com/ACCOUNT/NAME.fifo".to_owned()
        }
        SqsError::Credentials { .. } => {
            "configure AWS credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE".to_owned()
        }
        SqsError::Throttled { .. } => {
            "send more slowly, or create the queue with --high-throughput".to_owned()
        }
        SqsError::QueueExistsWithOtherSettings { .. } => {
            "re-run with the queue's current settings (see `fifo list-queues`), or delete the queue first".to_owned()
        }
        SqsError::ServiceUnavailable { .. } => {
            "try again later; if the endpoint is not SQS, check --endpoint-url / ENDPOINT_URL and the queue URL".to_owned()
        }
        SqsError::InvalidParameter { .. } | SqsError::Other { .. } => return None,
    };
    Some(hint)
}
