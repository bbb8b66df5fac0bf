use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// What went wrong talking to SQS, told apart so that callers can say how to
/// fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("queue {queue} does not exist")]
    QueueDoesNotExist { queue: String },
    #[error("queue {queue} is not a FIFO queue ({reason})")]
    NotFifo { queue: String, reason: String },
    #[error("malformed queue URL `{url}`: {reason}")]
    BadQueueUrl { url: String, reason: String },
    #[error("malformed endpoint URL `{url}`: {reason}")]
    BadEndpointUrl { url: String, reason: String },
    #[error("no AWS region is configured")]
    MissingRegion,
    #[error("queue {queue} already exists with other settings: {message}")]
    QueueExistsWithOtherSettings { queue: String, message: String },
    #[error("cannot reach SQS at {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("SQS throttled the request: {message}")]
    Throttled { message: String },
    #[error("SQS rejected a parameter: {message}")]
    InvalidParameter { message: String },
    #[error("AWS credentials are missing or invalid: {message}")]
    Credentials { message: String },
    #[error("{operation} failed: {message}")]
    Other {
        operation: &'static str,
        message: String,
    },
}

/// Turns an SDK error into ours. `queue` names what the call was about, for
/// the message; `endpoint` is where we tried to connect.
pub(crate) fn classify<E, R>(
    err: SdkError<E, R>,
    operation: &'static str,
    queue: &str,
    endpoint: &str,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::ServiceError(_) => {
            let code = err.code().unwrap_or_default();
            let message = err.message().unwrap_or(code).to_owned();
            classify_code(code, message, operation, queue)
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            if detail.contains("credential") {
                Error::Credentials { message: detail }
            } else {
                Error::Unreachable {
                    endpoint: endpoint.to_owned(),
                    detail: innermost_cause(&err),
                }
            }
        }
        _ => Error::Other {
            operation,
            message: detail,
        },
    }
}

fn classify_code(code: &str, message: String, operation: &'static str, queue: &str) -> Error {
    match code {
        "QueueDoesNotExist" | "AWS.SimpleQueueService.NonExistentQueue" => {
            Error::QueueDoesNotExist {
                queue: queue.to_owned(),
            }
        }
        "RequestThrottled" | "ThrottlingException" | "Throttling" | "KMS.ThrottlingException" => {
            Error::Throttled { message }
        }
        "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "SignatureDoesNotMatch"
        | "InvalidSecurity"
        | "ExpiredToken"
        | "AccessDenied"
        | "AccessDeniedException"
        | "MissingAuthenticationToken"
        | "IncompleteSignature" => Error::Credentials { message },
        "InvalidParameterValue"
        | "MissingParameter"
        | "InvalidAttributeName"
        | "InvalidAttributeValue"
        | "InvalidParameterCombination"
        | "InvalidAddress"
        | "InvalidMessageContents"
        | "QueueAlreadyExists"
        | "QueueNameExists"
        | "ValidationError"
        | "AWS.SimpleQueueService.BatchRequestTooLong"
        | "BatchRequestTooLong" => Error::InvalidParameter { message },
        _ => Error::Other {
            operation,
            message: format!("{code}: {message}"),
        },
    }
}

/// The innermost cause is what a user can act on ("Connection refused").
fn innermost_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

impl Error {
    /// True for errors worth retrying as they are (throttling, network).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Throttled { .. } | Error::Unreachable { .. })
    }
}
