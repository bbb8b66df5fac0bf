//! Connecting to SQS following the endpoint rule: the endpoint, region and
//! credentials a [`Client`] uses, and what every call of it shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::config::Credentials;

use crate::classify::Call;
use crate::deadline::Deadline;
use crate::{Error, QueueUrl, is_aws_host};

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
    pub(crate) sqs: aws_sdk_sqs::Client,
    /// Receive clients by long poll, each with the deadlines of its wait,
    /// built on first use: a per-call override of the timeouts would have
    /// the SDK rebuild its runtime components on every receive.
    pub(crate) receivers: Arc<Mutex<HashMap<u32, aws_sdk_sqs::Client>>>,
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

impl Client {
    /// What a call of every kind but a receive is about, for its errors.
    pub(crate) fn call<'a>(&'a self, operation: &'static str, queue: &'a str) -> Call<'a> {
        Call {
            operation,
            queue,
            endpoint: &self.endpoint,
            deadline: Deadline::CALL,
        }
    }
}
