use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::config::Credentials;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};

use crate::deadline::Deadline;
use crate::error::{Call, classify};
use crate::{DEFAULT_MAX_MESSAGE_BYTES, Error, MAX_BATCH_ENTRIES, QueueUrl, is_aws_host};

/// Where to connect. The endpoint is `endpoint_url` when given, otherwise
/// the queue URL's own host unless that is an AWS host, otherwise the
/// standard AWS endpoint of the region: production traffic never goes to a
/// LocalStack default.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions<'a> {
    /// The queue to work on; an AWS queue URL also gives the region, any
    /// other its host as the endpoint.
    pub queue_url: &'a str,
    /// `http(s)://HOST[:PORT]` to send every request to instead (LocalStack,
    /// a proxy).
    pub endpoint_url: Option<&'a str>,
    /// The AWS region; without it, the one in an AWS queue URL's host,
    /// `us-east-1` for a non-AWS endpoint, or else the SDK's configured one.
    pub region: Option<&'a str>,
}

/// A connection to SQS. Cheap to clone; clones share the connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    sqs: aws_sdk_sqs::Client,
    /// Receive clients by long poll, each with the deadlines of its wait,
    /// built on first use: a per-call override of the timeouts would have
    /// the SDK rebuild its runtime components on every receive.
    receivers: Arc<Mutex<HashMap<u32, aws_sdk_sqs::Client>>>,
    /// Where requests go, for error messages.
    endpoint: String,
}

/// Builds a client following the endpoint rule. Non-AWS endpoints
/// (LocalStack) get region `us-east-1` and dummy credentials unless others
/// are configured; AWS uses the standard credential chain and region.
pub async fn connect(options: &ConnectOptions<'_>) -> Result<Client, Error> {
    let queue = QueueUrl::parse(options.queue_url)?;
    let endpoint = match options.endpoint_url {
        Some(url) => Some(checked_endpoint(url)?),
        None if !is_aws_host(&queue.host) => Some(queue.endpoint.clone()),
        None => None,
    };
    let local = endpoint
        .as_deref()
        .and_then(|e| url::Url::parse(e).ok())
        .and_then(|u| u.host_str().map(|h| !is_aws_host(h)))
        .unwrap_or(false);
    let region = options
        .region
        .map(str::to_owned)
        .or_else(|| queue.aws_region().map(str::to_owned))
        .or_else(|| local.then(|| "us-east-1".to_owned()));

    // SQS bodies are small and arrive whole: the stalled-stream monitor
    // only adds timers to every call. The deadlines bound every call instead
    // (a receive overrides them for its long poll).
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .timeout_config(Deadline::CALL.timeout_config())
        .http_client(https_client());
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    if let Some(endpoint) = &endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if local && !credentials_configured() {
        loader = loader.credentials_provider(Credentials::new("test", "test", None, None, "fifo"));
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(Error::MissingRegion);
    }
    let endpoint = endpoint.unwrap_or_else(|| format!("the AWS endpoint of {}", queue.url));
    Ok(Client {
        sqs: aws_sdk_sqs::Client::new(&config),
        receivers: Arc::default(),
        endpoint,
    })
}

/// The SDK's default HTTPS client (rustls with aws-lc, the proxy from the
/// environment), made here so that every client built from the config
/// shares it, and with it one connection pool: left unset, each client
/// would make a client of its own.
fn https_client() -> aws_sdk_sqs::config::SharedHttpClient {
    use aws_smithy_http_client::{ConnectorBuilder, proxy::ProxyConfig, tls};
    aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

fn checked_endpoint(url: &str) -> Result<String, Error> {
    let bad = |reason: &str| Error::BadEndpointUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad("expected http(s)://HOST[:PORT]"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn credentials_configured() -> bool {
    [
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

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

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutgoingMessage {
    /// The message body: UTF-8, at most the queue's `max_message_bytes`.
    pub body: String,
    /// The `MessageGroupId`: SQS stores and delivers the messages of one
    /// group in the order they were sent.
    pub group_id: String,
    /// None on a queue with content-based de-duplication lets the queue
    /// derive it from the body.
    pub dedup_id: Option<String>,
    /// Message attributes, sent as they are (at most 10).
    pub attributes: BTreeMap<String, MessageAttribute>,
}

/// A message attribute: its SQS data type (`String`, `Number`, `Binary`,
/// optionally with a custom suffix such as `Number.int`) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAttribute {
    /// The data type as SQS gives it, e.g. `String`, `Number.int`, `Binary`.
    pub data_type: String,
    /// Text for a String or Number type, bytes for a Binary one.
    pub value: AttributeValue,
}

/// String and Number attributes carry text; Binary ones bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// The value of a String or Number attribute (SQS sends numbers as
    /// text).
    Text(String),
    /// The value of a Binary attribute.
    Binary(Vec<u8>),
}

impl MessageAttribute {
    /// The text of a String or Number attribute.
    pub fn text(&self) -> Option<&str> {
        match &self.value {
            AttributeValue::Text(text) => Some(text),
            AttributeValue::Binary(_) => None,
        }
    }
}

/// A failed entry of a batch call; `index` is its position in the slice
/// given to the call. A batch call returns at most one per entry, in index
/// order. `code` is SQS's error code, or [`MALFORMED_RESPONSE`] when the
/// response does not say clearly that the entry succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFailure {
    /// Position of the entry in the slice given to the batch call.
    pub index: usize,
    /// SQS's error code for the entry (e.g. `InvalidParameterValue`), or
    /// [`MALFORMED_RESPONSE`].
    pub code: String,
    /// SQS's explanation (empty when it gave none), or what was wrong with
    /// the response.
    pub message: String,
}

/// What one [`Client::receive`] asks SQS for.
#[derive(Debug, Clone, Default)]
pub struct ReceiveOptions {
    /// 1..=10.
    pub max_messages: u32,
    /// Long poll, 0..=20 seconds.
    pub wait_seconds: u32,
    /// Overrides the queue's visibility timeout for these messages.
    pub visibility_timeout: Option<u32>,
    /// Same id after a network error (SQS then returns the same messages),
    /// a new one after success or throttling.
    pub attempt_id: Option<String>,
}

/// A received message with the system attributes fifo relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The id SQS gave the message when it was sent.
    pub message_id: String,
    /// What deleting the message or changing its visibility takes; each
    /// receive of a message gets a new one.
    pub receipt_handle: String,
    /// The message body, as sent.
    pub body: String,
    /// The `MessageGroupId` it was sent with.
    pub group_id: String,
    /// SQS's `SequenceNumber` as a decimal string: large, not consecutive,
    /// and increasing within a group.
    pub sequence_number: String,
    /// `ApproximateReceiveCount`: how many times the message has been
    /// received, this time included.
    pub receive_count: u32,
    /// When SQS accepted the message, in milliseconds since the Unix epoch
    /// (`SentTimestamp`).
    pub sent_timestamp_ms: u64,
    /// When SQS first handed the message to a receiver, in milliseconds
    /// since the Unix epoch (`ApproximateFirstReceiveTimestamp`); 0 when
    /// the response lacks it.
    pub first_received_ms: u64,
    /// The `MessageDeduplicationId` it was sent with, or SQS computed.
    pub deduplication_id: Option<String>,
    /// The `AWSTraceHeader` system attribute (X-Ray trace context), if the
    /// sender set one.
    pub trace_header: Option<String>,
    /// `SenderId`: the AWS account or IAM principal that sent it.
    pub sender_id: Option<String>,
    /// Every message attribute, as sent.
    pub attributes: BTreeMap<String, MessageAttribute>,
}

/// A message move task (a redrive), as `ListMessageMoveTasks` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveTask {
    /// Its handle, while it runs (what cancelling it takes).
    pub handle: Option<String>,
    /// `RUNNING`, `COMPLETED`, `CANCELLING`, `CANCELLED` or `FAILED`.
    pub status: String,
    /// About how many messages it moved so far.
    pub moved: u64,
    /// About how many it had to move when it started.
    pub to_move: Option<u64>,
    /// Why it failed, when it did.
    pub failure: Option<String>,
}

/// What one receive returned: the messages fifo can use, and those whose
/// response lacked something fifo relies on (they are left alone and come
/// back after their visibility timeout).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiveOutput {
    /// The usable messages, in the order SQS returned them.
    pub messages: Vec<ReceivedMessage>,
    /// The messages left alone, each with the reason.
    pub malformed: Vec<MalformedMessage>,
}

/// A received message that cannot be handled as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedMessage {
    /// As much as the response said about it.
    pub message_id: Option<String>,
    /// Its `MessageGroupId`, when the response gave one.
    pub group_id: Option<String>,
    /// What was missing or did not parse, e.g. `the response has no Body`.
    pub reason: String,
}

/// The code of an [`EntryFailure`] for an entry that the response of a
/// batch call does not account for exactly once (missing, listed as both
/// succeeded and failed): whether SQS carried it out is unknown.
pub const MALFORMED_RESPONSE: &str = "MalformedResponse";

/// Splits `messages`, in order, into batches of at most ten entries whose
/// sizes (body and message attributes, as SQS counts them) add up to at most
/// `max_bytes`.
pub fn batches(messages: &[OutgoingMessage], max_bytes: usize) -> Vec<&[OutgoingMessage]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, message) in messages.iter().enumerate() {
        let size = payload_bytes(message);
        let full = i - start == MAX_BATCH_ENTRIES || bytes + size > max_bytes;
        if full && i > start {
            out.push(&messages[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < messages.len() {
        out.push(&messages[start..]);
    }
    out
}

/// A message's share of the batch payload: SQS counts the body and each
/// attribute's name, data type and value.
pub fn payload_bytes(message: &OutgoingMessage) -> usize {
    let attributes: usize = message
        .attributes
        .iter()
        .map(|(name, attribute)| {
            let value = match &attribute.value {
                AttributeValue::Text(text) => text.len(),
                AttributeValue::Binary(bytes) => bytes.len(),
            };
            name.len() + attribute.data_type.len() + value
        })
        .sum();
    message.body.len() + attributes
}

impl Client {
    /// The client for receives that long-poll `wait_seconds`: the same
    /// HTTP client (see `https_client`), credentials and endpoint, with
    /// `deadline`.
    fn receiver(&self, wait_seconds: u32, deadline: Deadline) -> aws_sdk_sqs::Client {
        let mut receivers = self
            .receivers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        receivers
            .entry(wait_seconds)
            .or_insert_with(|| {
                let config = self
                    .sqs
                    .config()
                    .to_builder()
                    .timeout_config(deadline.timeout_config())
                    .build();
                aws_sdk_sqs::Client::from_conf(config)
            })
            .clone()
    }

    /// What a call of every kind but a receive is about, for its errors.
    fn call<'a>(&'a self, operation: &'static str, queue: &'a str) -> Call<'a> {
        Call {
            operation,
            queue,
            endpoint: &self.endpoint,
            deadline: Deadline::CALL,
        }
    }

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

    /// Starts an SQS message move task from the dead-letter queue
    /// `source_arn` to `destination_arn` (SQS's redrive), at most `rate`
    /// messages per second when given; returns the task's handle.
    pub async fn start_move_task(
        &self,
        source_arn: &str,
        destination_arn: &str,
        rate: Option<u32>,
    ) -> Result<String, Error> {
        let output = self
            .sqs
            .start_message_move_task()
            .source_arn(source_arn)
            .destination_arn(destination_arn)
            .set_max_number_of_messages_per_second(rate.map(|r| r as i32))
            .send()
            .await
            .map_err(|e| classify(e, &self.call("StartMessageMoveTask", source_arn)))?;
        Ok(output.task_handle.unwrap_or_default())
    }

    /// The URLs of the queues whose redrive policy names `dead_letter_url`.
    pub async fn dead_letter_sources(&self, dead_letter_url: &str) -> Result<Vec<String>, Error> {
        let mut urls = Vec::new();
        let mut pages = self
            .sqs
            .list_dead_letter_source_queues()
            .queue_url(dead_letter_url)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                classify(e, &self.call("ListDeadLetterSourceQueues", dead_letter_url))
            })?;
            urls.extend(page.queue_urls);
        }
        Ok(urls)
    }

    /// The newest message move task from `source_arn`, if any.
    pub async fn latest_move_task(&self, source_arn: &str) -> Result<Option<MoveTask>, Error> {
        let output = self
            .sqs
            .list_message_move_tasks()
            .source_arn(source_arn)
            .max_results(1)
            .send()
            .await
            .map_err(|e| classify(e, &self.call("ListMessageMoveTasks", source_arn)))?;
        Ok(output
            .results
            .unwrap_or_default()
            .first()
            .map(|task| MoveTask {
                handle: task.task_handle().map(str::to_owned),
                status: task.status().unwrap_or_default().to_owned(),
                moved: u64::try_from(task.approximate_number_of_messages_moved()).unwrap_or(0),
                to_move: task
                    .approximate_number_of_messages_to_move()
                    .and_then(|n| u64::try_from(n).ok()),
                failure: task.failure_reason().map(str::to_owned),
            }))
    }

    /// Cancels a running message move task; what it moved stays moved.
    pub async fn cancel_move_task(&self, handle: &str) -> Result<(), Error> {
        self.sqs
            .cancel_message_move_task()
            .task_handle(handle)
            .send()
            .await
            .map_err(|e| classify(e, &self.call("CancelMessageMoveTask", handle)))?;
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

    /// Sends one batch (at most ten entries, see [`batches`]) with their
    /// message attributes; entries are stored in slice order within each
    /// group. Returns one outcome per entry, in slice order: the message id
    /// SQS gave it, or why it was refused or not accounted for. A message
    /// SQS de-duplicated gets the id of the message it duplicates.
    pub async fn send_batch(
        &self,
        queue_url: &str,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<Result<String, EntryFailure>>, Error> {
        check_batch_len(messages.len())?;
        let entries = messages.iter().enumerate().map(send_entry).collect();
        let output = self
            .sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify(e, &self.call("SendMessageBatch", queue_url)))?;
        let mut message_ids: HashMap<String, String> = output
            .successful
            .into_iter()
            .map(|entry| (entry.id, entry.message_id))
            .collect();
        let mut failures =
            entry_failures(messages.len(), message_ids.keys().cloned(), output.failed)
                .into_iter()
                .peekable();
        Ok((0..messages.len())
            .map(|index| match failures.next_if(|f| f.index == index) {
                Some(failure) => Err(failure),
                None => Ok(message_ids
                    .remove(&index.to_string())
                    .expect("an entry that did not fail succeeded")),
            })
            .collect())
    }

    /// One `ReceiveMessage` call with every system attribute, bounded by its
    /// long poll plus a margin.
    pub async fn receive(
        &self,
        queue_url: &str,
        options: &ReceiveOptions,
    ) -> Result<ReceiveOutput, Error> {
        let call = Call {
            deadline: Deadline::receive(options.wait_seconds),
            ..self.call("ReceiveMessage", queue_url)
        };
        let output = self
            .receiver(options.wait_seconds, call.deadline)
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(options.max_messages as i32)
            .wait_time_seconds(options.wait_seconds as i32)
            .set_visibility_timeout(options.visibility_timeout.map(|v| v as i32))
            .set_receive_request_attempt_id(options.attempt_id.clone())
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| classify(e, &call))?;
        let mut received = ReceiveOutput::default();
        for message in output.messages.unwrap_or_default() {
            match received_message(message) {
                Ok(message) => received.messages.push(message),
                Err(malformed) => received.malformed.push(malformed),
            }
        }
        Ok(received)
    }

    /// Deletes up to ten messages by receipt handle; returns the entries
    /// that failed or that SQS did not account for.
    pub async fn delete_batch(
        &self,
        queue_url: &str,
        receipt_handles: &[&str],
    ) -> Result<Vec<EntryFailure>, Error> {
        check_batch_len(receipt_handles.len())?;
        let entries = receipt_handles
            .iter()
            .enumerate()
            .map(|(i, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*handle)
                    .build()
                    .expect("id and handle are set")
            })
            .collect();
        let output = self
            .sqs
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify(e, &self.call("DeleteMessageBatch", queue_url)))?;
        let successful = output.successful.into_iter().map(|entry| entry.id);
        Ok(entry_failures(
            receipt_handles.len(),
            successful,
            output.failed,
        ))
    }

    /// Sets the visibility timeout of up to ten messages (0 releases them at
    /// once); returns the entries that failed or that SQS did not account
    /// for.
    pub async fn change_visibility_batch(
        &self,
        queue_url: &str,
        entries: &[(&str, u32)],
    ) -> Result<Vec<EntryFailure>, Error> {
        check_batch_len(entries.len())?;
        let sent = entries.len();
        let entries = entries
            .iter()
            .enumerate()
            .map(|(i, (handle, seconds))| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*handle)
                    .visibility_timeout(*seconds as i32)
                    .build()
                    .expect("id and handle are set")
            })
            .collect();
        let output = self
            .sqs
            .change_message_visibility_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify(e, &self.call("ChangeMessageVisibilityBatch", queue_url)))?;
        let successful = output.successful.into_iter().map(|entry| entry.id);
        Ok(entry_failures(sent, successful, output.failed))
    }
}

fn check_batch_len(len: usize) -> Result<(), Error> {
    if (1..=MAX_BATCH_ENTRIES).contains(&len) {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            message: format!("a batch holds 1 to {MAX_BATCH_ENTRIES} entries, not {len}"),
        })
    }
}

/// The request entry for `message`, the `index`-th of its batch: its id is
/// the index, so that the response's entries can be matched back.
fn send_entry((index, message): (usize, &OutgoingMessage)) -> SendMessageBatchRequestEntry {
    let attributes: HashMap<String, MessageAttributeValue> = message
        .attributes
        .iter()
        .map(|(name, attribute)| (name.clone(), attribute_value(attribute)))
        .collect();
    SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(&message.body)
        .message_group_id(&message.group_id)
        .set_message_deduplication_id(message.dedup_id.clone())
        .set_message_attributes((!attributes.is_empty()).then_some(attributes))
        .build()
        .expect("id and body are set")
}

/// String and Number attributes travel as text, Binary ones as bytes; the
/// data type goes as given.
fn attribute_value(attribute: &MessageAttribute) -> MessageAttributeValue {
    let value = MessageAttributeValue::builder().data_type(&attribute.data_type);
    let value = match &attribute.value {
        AttributeValue::Text(text) => value.string_value(text),
        AttributeValue::Binary(bytes) => value.binary_value(Blob::new(bytes.clone())),
    };
    value.build().expect("the data type is set")
}

/// What became of each of the `sent` entries of a batch (ids `0`, `1`…),
/// from the ids the response lists as successful and its failed entries.
/// Every entry must be in exactly one of the two lists: one that is in
/// neither or in both fails with [`MALFORMED_RESPONSE`], since whether SQS
/// carried it out is unknown. Ids the request did not have are ignored.
fn entry_failures(
    sent: usize,
    successful: impl IntoIterator<Item = String>,
    failed: Vec<BatchResultErrorEntry>,
) -> Vec<EntryFailure> {
    #[derive(Default)]
    enum Reported {
        #[default]
        Nothing,
        Succeeded,
        Failed {
            code: String,
            message: String,
        },
        Both,
    }
    let index_of = |id: &str| {
        id.parse::<usize>()
            .ok()
            .filter(|&index| index < sent && index.to_string() == id)
    };
    let mut reported: Vec<Reported> = (0..sent).map(|_| Reported::default()).collect();
    let mut unknown = Vec::new();
    for id in successful {
        match index_of(&id) {
            Some(index) => {
                let slot = &mut reported[index];
                *slot = match std::mem::take(slot) {
                    Reported::Nothing | Reported::Succeeded => Reported::Succeeded,
                    Reported::Failed { .. } | Reported::Both => Reported::Both,
                }
            }
            None => unknown.push(id),
        }
    }
    for entry in failed {
        match index_of(&entry.id) {
            Some(index) => {
                let slot = &mut reported[index];
                *slot = match std::mem::take(slot) {
                    Reported::Nothing => Reported::Failed {
                        code: entry.code,
                        message: entry.message.unwrap_or_default(),
                    },
                    // The first failure reported for an entry stands.
                    failed @ Reported::Failed { .. } => failed,
                    Reported::Succeeded | Reported::Both => Reported::Both,
                }
            }
            None => unknown.push(entry.id),
        }
    }
    let unknown = if unknown.is_empty() {
        String::new()
    } else {
        tracing::warn!(
            ?unknown,
            "a batch response names entries that were not sent"
        );
        format!(
            " (it names entries that were not sent: {})",
            unknown.join(", ")
        )
    };
    let malformed = |index, message: String| EntryFailure {
        index,
        code: MALFORMED_RESPONSE.to_owned(),
        message,
    };
    reported
        .into_iter()
        .enumerate()
        .filter_map(|(index, reported)| match reported {
            Reported::Succeeded => None,
            Reported::Failed { code, message } => Some(EntryFailure {
                index,
                code,
                message,
            }),
            Reported::Nothing => Some(malformed(
                index,
                format!(
                    "the response says neither that this entry succeeded nor that it failed{unknown}"
                ),
            )),
            Reported::Both => Some(malformed(
                index,
                "the response says both that this entry succeeded and that it failed".to_owned(),
            )),
        })
        .collect()
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

/// Our view of a received message. Everything fifo relies on must be there:
/// a missing id, receipt handle, body, group or a count that does not parse
/// makes the message malformed rather than filled in with a default.
fn received_message(
    message: aws_sdk_sqs::types::Message,
) -> Result<ReceivedMessage, MalformedMessage> {
    let system = message.attributes.unwrap_or_default();
    let group_id = system
        .get(&MessageSystemAttributeName::MessageGroupId)
        .cloned();
    let malformed = |reason: String| MalformedMessage {
        message_id: message.message_id.clone(),
        group_id: group_id.clone(),
        reason,
    };
    let required = |value: Option<String>, what: &str| {
        value.ok_or_else(|| malformed(format!("the response has no {what}")))
    };
    let system_number = |name: MessageSystemAttributeName| -> Result<u64, MalformedMessage> {
        let value = system
            .get(&name)
            .ok_or_else(|| malformed(format!("the response has no {name}")))?;
        value
            .parse()
            .map_err(|_| malformed(format!("{name} `{value}` is not a number")))
    };
    let receive_count = system_number(MessageSystemAttributeName::ApproximateReceiveCount)?;
    let sent_timestamp_ms = system_number(MessageSystemAttributeName::SentTimestamp)?;
    let mut attributes = BTreeMap::new();
    for (name, attribute) in message.message_attributes.clone().unwrap_or_default() {
        let value = match (attribute.string_value, attribute.binary_value) {
            (Some(text), _) => AttributeValue::Text(text),
            (None, Some(bytes)) => AttributeValue::Binary(bytes.into_inner()),
            (None, None) => {
                return Err(malformed(format!("message attribute {name} has no value")));
            }
        };
        let data_type = attribute.data_type;
        attributes.insert(name, MessageAttribute { data_type, value });
    }
    Ok(ReceivedMessage {
        message_id: required(message.message_id.clone(), "MessageId")?,
        receipt_handle: required(message.receipt_handle.clone(), "ReceiptHandle")?,
        body: required(message.body.clone(), "Body")?,
        group_id: required(group_id.clone(), "MessageGroupId")?,
        sequence_number: required(
            system
                .get(&MessageSystemAttributeName::SequenceNumber)
                .cloned(),
            "SequenceNumber",
        )?,
        receive_count: u32::try_from(receive_count).map_err(|_| {
            malformed(format!(
                "ApproximateReceiveCount {receive_count} is too large"
            ))
        })?,
        sent_timestamp_ms,
        first_received_ms: system
            .get(&MessageSystemAttributeName::ApproximateFirstReceiveTimestamp)
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0),
        deduplication_id: system
            .get(&MessageSystemAttributeName::MessageDeduplicationId)
            .cloned(),
        trace_header: system
            .get(&MessageSystemAttributeName::AwsTraceHeader)
            .cloned(),
        sender_id: system.get(&MessageSystemAttributeName::SenderId).cloned(),
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize) -> OutgoingMessage {
        OutgoingMessage {
            body: "x".repeat(len),
            group_id: "g".to_owned(),
            dedup_id: None,
            ..OutgoingMessage::default()
        }
    }

    #[test]
    fn batches_hold_at_most_ten_entries_in_order() {
        let messages: Vec<_> = (1..=25).map(message).collect();
        let sizes: Vec<_> = batches(&messages, usize::MAX)
            .iter()
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, [10, 10, 5]);
        assert_eq!(batches(&messages, usize::MAX)[2][0].body.len(), 21);
    }

    #[test]
    fn batches_respect_the_byte_limit() {
        let messages = vec![message(60), message(50), message(40), message(100)];
        let sizes: Vec<_> = batches(&messages, 100).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [1, 2, 1]);
        assert!(batches(&[], 100).is_empty());
    }

    fn with_attributes(mut message: OutgoingMessage) -> OutgoingMessage {
        let text = |data_type: &str, text: &str| MessageAttribute {
            data_type: data_type.to_owned(),
            value: AttributeValue::Text(text.to_owned()),
        };
        message.attributes = BTreeMap::from([
            ("reason".to_owned(), text("String", "handler failed")),
            ("attempts".to_owned(), text("Number.int", "3")),
            (
                "raw".to_owned(),
                MessageAttribute {
                    data_type: "Binary".to_owned(),
                    value: AttributeValue::Binary(vec![0, 159, 255]),
                },
            ),
        ]);
        message
    }

    #[test]
    fn attributes_count_towards_the_byte_limit() {
        let attributes = "reason".len()
            + "String".len()
            + "handler failed".len()
            + "attempts".len()
            + "Number.int".len()
            + 1
            + "raw".len()
            + "Binary".len()
            + 3;
        let with = with_attributes(message(10));
        assert_eq!(payload_bytes(&with), 10 + attributes);
        let messages = vec![with, message(10)];
        let sizes: Vec<_> = batches(&messages, 20 + attributes - 1)
            .iter()
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, [1, 1]);
        assert_eq!(batches(&messages, 20 + attributes).len(), 1);
    }

    #[test]
    fn a_send_entry_carries_every_attribute_with_its_type() {
        let entry = send_entry((3, &with_attributes(message(5))));
        assert_eq!(entry.id, "3");
        assert_eq!(entry.message_group_id.as_deref(), Some("g"));
        let attributes = entry.message_attributes.expect("attributes are sent");
        assert_eq!(attributes.len(), 3);
        let reason = &attributes["reason"];
        assert_eq!(reason.data_type, "String");
        assert_eq!(reason.string_value.as_deref(), Some("handler failed"));
        assert_eq!(reason.binary_value, None);
        let attempts = &attributes["attempts"];
        assert_eq!(attempts.data_type, "Number.int");
        assert_eq!(attempts.string_value.as_deref(), Some("3"));
        let raw = &attributes["raw"];
        assert_eq!(raw.data_type, "Binary");
        assert_eq!(raw.string_value, None);
        assert_eq!(
            raw.binary_value.as_ref().map(Blob::as_ref),
            Some(&[0, 159, 255][..])
        );

        let plain = send_entry((0, &message(5)));
        assert_eq!(plain.message_attributes, None);
    }

    fn failed(id: &str, code: &str) -> BatchResultErrorEntry {
        BatchResultErrorEntry::builder()
            .id(id)
            .code(code)
            .message("refused")
            .sender_fault(true)
            .build()
            .unwrap()
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    #[test]
    fn entry_results_report_what_sqs_refused() {
        let failures = entry_failures(
            3,
            ids(&["0", "2"]),
            vec![failed("1", "InvalidParameterValue")],
        );
        assert_eq!(
            failures,
            [EntryFailure {
                index: 1,
                code: "InvalidParameterValue".to_owned(),
                message: "refused".to_owned(),
            }]
        );
        assert!(entry_failures(2, ids(&["1", "0"]), vec![]).is_empty());
    }

    #[test]
    fn an_entry_missing_from_the_response_fails() {
        let failures = entry_failures(3, ids(&["0"]), vec![failed("2", "X")]);
        let found: Vec<_> = failures
            .iter()
            .map(|f| (f.index, f.code.as_str()))
            .collect();
        assert_eq!(found, [(1, MALFORMED_RESPONSE), (2, "X")]);
        assert!(failures[0].message.contains("neither"), "{failures:?}");
        // An empty answer accounts for nothing.
        assert_eq!(entry_failures(2, ids(&[]), vec![]).len(), 2);
    }

    #[test]
    fn bad_or_unknown_ids_never_panic_and_never_count_as_success() {
        let failures = entry_failures(
            2,
            ids(&["0", "x", "+1", "01", "7"]),
            vec![
                failed("not-a-number", "X"),
                failed(&usize::MAX.to_string(), "X"),
            ],
        );
        let found: Vec<_> = failures
            .iter()
            .map(|f| (f.index, f.code.as_str()))
            .collect();
        assert_eq!(found, [(1, MALFORMED_RESPONSE)]);
        assert!(
            failures[0].message.ends_with("(it names entries that were not sent: x, +1, 01, 7, not-a-number, 18446744073709551615)"),
            "{failures:?}"
        );
    }

    #[test]
    fn an_entry_reported_both_ways_fails() {
        let failures = entry_failures(1, ids(&["0"]), vec![failed("0", "X")]);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].code, MALFORMED_RESPONSE);
        assert!(failures[0].message.contains("both"), "{failures:?}");
        // Reported twice as failed: one failure, the first.
        let failures = entry_failures(1, ids(&[]), vec![failed("0", "A"), failed("0", "B")]);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].code, "A");
    }
}
