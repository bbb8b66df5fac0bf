//! Queue administration: create a FIFO queue, look one up, read its
//! attributes, list queues and purge one.

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName;

use crate::classify::classify;
use crate::{Client, DEFAULT_MAX_MESSAGE_BYTES, Error, QueueUrl};

/// What `create_fifo_queue` makes. FIFO and content-based de-duplication
/// are always on.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    /// The queue's name, ending in `.fifo`.
    pub name: String,
    /// How long a received message stays hidden from other receivers, in
    /// seconds (SQS allows 0 to 43 200).
    pub visibility_timeout: u32,
    /// `DeduplicationScope=messageGroup`, `FifoThroughputLimit=perMessageGroupId`.
    pub high_throughput: bool,
    /// ARN of a FIFO dead-letter queue and the receive count that moves a
    /// message there.
    pub redrive: Option<(String, u32)>,
}

/// The queue's attributes that fifo uses, read in one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueAttributes {
    /// The queue's ARN, as another queue's redrive policy names it; empty
    /// when the response lacks it.
    pub arn: String,
    /// `FifoQueue=true`: SQS treats it as a FIFO queue.
    pub fifo: bool,
    /// `ContentBasedDeduplication=true`: a message sent without a
    /// de-duplication id gets the SHA-256 of its body as one.
    pub content_based_deduplication: bool,
    /// `FifoThroughputLimit=perMessageGroupId`: the throughput quota applies
    /// to each group rather than to the whole queue.
    pub high_throughput: bool,
    /// `DeduplicationScope=messageGroup`: de-duplication ids and content
    /// repeat only within a group (otherwise across the whole queue).
    pub dedup_per_group: bool,
    /// The largest message, and batch payload, the queue accepts, in bytes
    /// (`MaximumMessageSize`; [`DEFAULT_MAX_MESSAGE_BYTES`] when not given).
    pub max_message_bytes: usize,
    /// The queue's default visibility timeout, in seconds.
    pub visibility_timeout: u32,
    /// About how many messages are ready to be received
    /// (`ApproximateNumberOfMessages`).
    pub visible: u64,
    /// About how many messages were received and are neither deleted nor
    /// visible again yet (`ApproximateNumberOfMessagesNotVisible`).
    pub in_flight: u64,
    /// About how many messages wait out a delivery delay before they can be
    /// received (`ApproximateNumberOfMessagesDelayed`).
    pub delayed: u64,
    /// Name of the dead-letter queue and the max receive count, from the
    /// redrive policy.
    pub dead_letter: Option<(String, u32)>,
}

impl Client {
    /// Creates a FIFO queue with content-based de-duplication, or returns
    /// the URL of the one that exists with the same settings.
    pub async fn create_fifo_queue(&self, spec: &QueueSpec) -> Result<String, Error> {
        let mut request = self
            .sqs
            .create_queue()
            .queue_name(&spec.name)
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "true")
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                spec.visibility_timeout.to_string(),
            );
        if spec.high_throughput {
            request = request
                .attributes(QueueAttributeName::DeduplicationScope, "messageGroup")
                .attributes(QueueAttributeName::FifoThroughputLimit, "perMessageGroupId");
        }
        if let Some((arn, max_receive_count)) = &spec.redrive {
            let policy = serde_json::json!({
                "deadLetterTargetArn": arn,
                "maxReceiveCount": max_receive_count.to_string(),
            });
            request = request.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
        }
        let output = request.send().await.map_err(|e| {
            match classify(e, &self.call("CreateQueue", &spec.name)) {
                Error::InvalidParameter { message } if message.contains("already exists") => {
                    Error::QueueExistsWithOtherSettings {
                        queue: spec.name.clone(),
                        message,
                    }
                }
                other => other,
            }
        })?;
        output.queue_url.ok_or_else(|| Error::Other {
            operation: "CreateQueue",
            message: "the response has no queue URL".to_owned(),
        })
    }

    /// The URL of the queue named `name`, or [`Error::QueueDoesNotExist`].
    pub async fn queue_url_by_name(&self, name: &str) -> Result<String, Error> {
        let output = self
            .sqs
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| classify(e, &self.call("GetQueueUrl", name)))?;
        output.queue_url.ok_or_else(|| Error::QueueDoesNotExist {
            queue: name.to_owned(),
        })
    }

    /// Reads the queue's attributes in one `GetQueueAttributes` call, without
    /// checking that it is a FIFO queue (see [`Client::fifo_queue`]).
    pub async fn queue_attributes(&self, queue_url: &str) -> Result<QueueAttributes, Error> {
        let output = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| classify(e, &self.call("GetQueueAttributes", queue_url)))?;
        Ok(parse_attributes(output.attributes.unwrap_or_default()))
    }

    /// Checks that `queue_url` is well formed and names an existing FIFO
    /// queue, and returns its attributes.
    pub async fn fifo_queue(&self, queue_url: &str) -> Result<QueueAttributes, Error> {
        QueueUrl::parse(queue_url)?;
        let attributes = self.queue_attributes(queue_url).await?;
        if !attributes.fifo {
            return Err(Error::NotFifo {
                queue: queue_url.to_owned(),
                reason: "its FifoQueue attribute is not true".to_owned(),
            });
        }
        Ok(attributes)
    }

    /// Deletes every message of the queue (`PurgeQueue`; SQS allows one
    /// every 60 seconds per queue).
    pub async fn purge(&self, queue_url: &str) -> Result<(), Error> {
        QueueUrl::parse(queue_url)?;
        self.sqs
            .purge_queue()
            .queue_url(queue_url)
            .send()
            .await
            .map_err(|e| classify(e, &self.call("PurgeQueue", queue_url)))?;
        Ok(())
    }

    /// All queue URLs whose name starts with `prefix`, sorted.
    pub async fn list_queue_urls(&self, prefix: Option<&str>) -> Result<Vec<String>, Error> {
        let mut urls = Vec::new();
        let mut next_token = None;
        loop {
            let output = self
                .sqs
                .list_queues()
                .set_queue_name_prefix(prefix.map(str::to_owned))
                .max_results(1000)
                .set_next_token(next_token)
                .send()
                .await
                .map_err(|e| classify(e, &self.call("ListQueues", prefix.unwrap_or("*"))))?;
            urls.extend(output.queue_urls.unwrap_or_default());
            next_token = output.next_token;
            if next_token.is_none() {
                break;
            }
        }
        urls.sort();
        Ok(urls)
    }
}

fn parse_attributes(attributes: HashMap<QueueAttributeName, String>) -> QueueAttributes {
    let get = |name: QueueAttributeName| attributes.get(&name).map(String::as_str);
    let number = |name: QueueAttributeName| get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
    let dead_letter = get(QueueAttributeName::RedrivePolicy)
        .and_then(|policy| serde_json::from_str::<serde_json::Value>(policy).ok())
        .and_then(|policy| {
            let arn = policy.get("deadLetterTargetArn")?.as_str()?;
            let name = arn.rsplit(':').next()?.to_owned();
            let count = match policy.get("maxReceiveCount")? {
                serde_json::Value::String(s) => s.parse().ok()?,
                other => other.as_u64()? as u32,
            };
            Some((name, count))
        });
    QueueAttributes {
        arn: get(QueueAttributeName::QueueArn)
            .unwrap_or_default()
            .to_owned(),
        fifo: get(QueueAttributeName::FifoQueue) == Some("true"),
        content_based_deduplication: get(QueueAttributeName::ContentBasedDeduplication)
            == Some("true"),
        high_throughput: get(QueueAttributeName::FifoThroughputLimit) == Some("perMessageGroupId"),
        dedup_per_group: get(QueueAttributeName::DeduplicationScope) == Some("messageGroup"),
        max_message_bytes: get(QueueAttributeName::MaximumMessageSize)
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
        visibility_timeout: number(QueueAttributeName::VisibilityTimeout) as u32,
        visible: number(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: number(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        delayed: number(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        dead_letter,
    }
}
