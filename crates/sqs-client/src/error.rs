//! The one error type of the crate: what went wrong talking to SQS, and
//! whether it is worth retrying.

/// What went wrong talking to SQS, told apart so that callers can say how to
/// fix it and know what is worth retrying (see [`Error::is_transient`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQS knows no queue by that URL or name.
    #[error("queue {queue} does not exist")]
    QueueDoesNotExist {
        /// The queue URL or name the call was about.
        queue: String,
    },
    /// The queue is not a FIFO queue: its name lacks `.fifo`, or its
    /// `FifoQueue` attribute is not true.
    #[error("queue {queue} is not a FIFO queue ({reason})")]
    NotFifo {
        /// The queue URL.
        queue: String,
        /// Which of the two shows it.
        reason: String,
    },
    /// A queue URL is not `http(s)://HOST[:PORT]/ACCOUNT/NAME`.
    #[error("malformed queue URL `{url}`: {reason}")]
    BadQueueUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The endpoint URL is not `http(s)://HOST[:PORT]`.
    #[error("malformed endpoint URL `{url}`: {reason}")]
    BadEndpointUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither the options, the queue URL nor the AWS configuration name a
    /// region, and the endpoint is AWS's.
    #[error("no AWS region is configured")]
    MissingRegion,
    /// `CreateQueue` refused because a queue of that name exists with other
    /// attributes.
    #[error("queue {queue} already exists with other settings: {message}")]
    QueueExistsWithOtherSettings {
        /// The queue name.
        queue: String,
        /// SQS's explanation.
        message: String,
    },
    /// No answer, no answer in time, or an answer that is not from SQS
    /// (cut off, or a page from something else at that address).
    #[error("cannot reach SQS at {endpoint}: {detail}")]
    Unreachable {
        /// The endpoint URL, or `the AWS endpoint of QUEUE_URL`.
        endpoint: String,
        /// What happened, e.g. `Connection refused` or which timeout ran out.
        detail: String,
    },
    /// SQS, or something in front of it, asked to slow down: a throttling
    /// error code or HTTP 429.
    #[error("SQS throttled the request: {message}")]
    Throttled {
        /// SQS's message, or the error code or an excerpt of the answer.
        message: String,
    },
    /// SQS answered with a server error (HTTP 5xx, `InternalError`,
    /// `ServiceUnavailable`…): the request may well succeed later.
    #[error("SQS failed to serve the request: {message}")]
    ServiceUnavailable {
        /// The HTTP status, error code and SQS's message, or an excerpt of
        /// an answer without a code.
        message: String,
    },
    /// SQS refused a parameter (a bad value, a batch too long, a queue name
    /// in use), or a batch call got no entries or more than ten.
    #[error("SQS rejected a parameter: {message}")]
    InvalidParameter {
        /// SQS's explanation, or ours for a batch of the wrong size.
        message: String,
    },
    /// The SDK found no credentials, or SQS refused the ones it sent or
    /// denied access (`InvalidClientTokenId`, `AccessDenied`…).
    #[error("AWS credentials are missing or invalid: {message}")]
    Credentials {
        /// What SQS or the credential chain said.
        message: String,
    },
    /// Anything else: an error code not told apart above, a request that
    /// could not be built, or a response without a field it must have.
    #[error("{operation} failed: {message}")]
    Other {
        /// The SQS operation, e.g. `SendMessageBatch`.
        operation: &'static str,
        /// What went wrong, starting with SQS's error code when it gave one.
        message: String,
    },
}

impl Error {
    /// True for errors worth retrying as they are: throttling, the network,
    /// and SQS's own server errors.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Throttled { .. } | Error::Unreachable { .. } | Error::ServiceUnavailable { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_throttling_the_network_and_server_errors_are_transient() {
        let transient = [
            Error::Throttled {
                message: String::new(),
            },
            Error::ServiceUnavailable {
                message: String::new(),
            },
            Error::Unreachable {
                endpoint: String::new(),
                detail: String::new(),
            },
        ];
        assert!(transient.iter().all(Error::is_transient));
        let lasting = [
            Error::MissingRegion,
            Error::InvalidParameter {
                message: String::new(),
            },
            Error::Credentials {
                message: String::new(),
            },
            Error::Other {
                operation: "x",
                message: String::new(),
            },
        ];
        assert!(!lasting.iter().any(Error::is_transient));
    }
}
