//! What goes wrong with settings: one line naming the value and where it
//! came from, and the fix as a hint, both as data for whoever reports them.

use fifo_sqs_client::Error as SqsError;

use super::DEFAULT_QUEUE_URL;

/// A setting, a settings file or a combination of settings that fifo
/// cannot run on.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct SettingsError {
    /// What is wrong, on one line.
    pub(crate) message: String,
    /// The fix, where there is one.
    pub(crate) hint: Option<String>,
}

impl SettingsError {
    pub(super) fn new(message: impl Into<String>, hint: Option<String>) -> SettingsError {
        SettingsError {
            message: message.into(),
            hint,
        }
    }
}

/// The fix for a queue URL that `QueueUrl::parse` refused, from a setting
/// or from SQS.
pub(crate) fn queue_url_hint(err: &SqsError) -> Option<String> {
    match err {
        SqsError::BadQueueUrl { .. } => Some(format!(
            "use http(s)://HOST/ACCOUNT/QUEUE.fifo, e.g. {DEFAULT_QUEUE_URL}"
        )),
        SqsError::NotFifo { .. } => Some(
            "fifo works on FIFO queues only: create one with `fifo create-queue NAME.fifo`"
                .to_owned(),
        ),
        _ => None,
    }
}
