//! Queue URLs and names: parsed, checked, and told apart as AWS or not.

use crate::Error;

/// A checked queue URL: `http(s)://HOST[:PORT]/ACCOUNT/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrl {
    /// The URL as given.
    pub url: String,
    /// `scheme://host[:port]`, where the queue's SQS endpoint lives.
    pub endpoint: String,
    /// The host alone: it tells AWS from LocalStack and names an AWS
    /// queue's region.
    pub host: String,
    /// The queue name, the last path segment; it ends in `.fifo`.
    pub name: String,
}

impl QueueUrl {
    /// Parses `url`; a queue that is not FIFO by name is an error here,
    /// before any call to SQS.
    pub fn parse(url: &str) -> Result<QueueUrl, Error> {
        let bad = |reason: &str| Error::BadQueueUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = url::Url::parse(url)
            .map_err(|e| bad(&format!("{e}; expected http(s)://HOST/ACCOUNT/QUEUE.fifo")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("it has no host"))?
            .to_owned();
        let segments: Vec<&str> = parsed
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).collect())
            .unwrap_or_default();
        let [_account, name] = segments[..] else {
            return Err(bad("the path must be /ACCOUNT/QUEUE.fifo"));
        };
        if !name.ends_with(".fifo") {
            return Err(Error::NotFifo {
                queue: url.to_owned(),
                reason: "its name does not end in .fifo".to_owned(),
            });
        }
        let endpoint = match parsed.port() {
            Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
            None => format!("{}://{host}", parsed.scheme()),
        };
        Ok(QueueUrl {
            url: url.to_owned(),
            endpoint,
            host,
            name: name.to_owned(),
        })
    }

    /// The region written in an AWS queue URL's host (`sqs.REGION.amazonaws.com`).
    pub fn aws_region(&self) -> Option<&str> {
        if !is_aws_host(&self.host) {
            return None;
        }
        let mut labels = self.host.split('.');
        match (labels.next(), labels.next()) {
            (Some("sqs"), Some(region)) => Some(region),
            (Some(region), Some("queue")) => Some(region),
            _ => None,
        }
    }
}

/// Hosts that belong to AWS itself, where the SDK's own endpoint resolution
/// is right and LocalStack defaults must never apply.
pub fn is_aws_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host.ends_with(".amazonaws.com")
        || host.ends_with(".amazonaws.com.cn")
        || host.ends_with(".api.aws")
}

/// A name SQS would refuse for a FIFO queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadQueueName {
    /// The name does not end in `.fifo`.
    #[error("queue name `{0}` must end in .fifo (try `{0}.fifo`)")]
    NotFifo(String),
    /// The name is longer than 80 bytes, or has nothing before `.fifo`.
    #[error("queue name `{0}` must be 6 to 80 characters long")]
    Length(String),
    /// The name holds a character other than an ASCII letter, digit, `-` or
    /// `_`; the second value is the first such character.
    #[error("queue name `{0}` contains {1:?}; use letters, digits, - and _")]
    Character(String, char),
}

/// SQS's rule for a FIFO queue name: up to 80 characters of letters, digits,
/// `-` and `_`, ending in `.fifo`.
pub fn check_queue_name(name: &str) -> Result<(), BadQueueName> {
    let Some(stem) = name.strip_suffix(".fifo") else {
        return Err(BadQueueName::NotFifo(name.to_owned()));
    };
    if stem.is_empty() || name.len() > 80 {
        return Err(BadQueueName::Length(name.to_owned()));
    }
    if let Some(c) = stem
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(BadQueueName::Character(name.to_owned(), c));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_localstack_url() {
        let q = QueueUrl::parse("http://localhost:4566/000000000000/test-fifo-queue.fifo").unwrap();
        assert_eq!(q.endpoint, "http://localhost:4566");
        assert_eq!(q.name, "test-fifo-queue.fifo");
        assert_eq!(q.aws_region(), None);
    }

    #[test]
    fn finds_the_region_of_an_aws_url() {
        let q = QueueUrl::parse("https://sqs.eu-west-1.amazonaws.com/123456789012/orders.fifo")
            .unwrap();
        assert_eq!(q.aws_region(), Some("eu-west-1"));
        assert_eq!(q.endpoint, "https://sqs.eu-west-1.amazonaws.com");
    }

    #[test]
    fn rejects_malformed_urls() {
        for url in [
            "not a url",
            "ftp://h/1/q.fifo",
            "http://h/q.fifo",
            "http://h/1/2/q.fifo",
        ] {
            assert!(
                matches!(QueueUrl::parse(url), Err(Error::BadQueueUrl { .. })),
                "{url}"
            );
        }
        assert!(matches!(
            QueueUrl::parse("http://h:1/000/standard"),
            Err(Error::NotFifo { .. })
        ));
    }

    #[test]
    fn queue_names_follow_sqs_rules() {
        assert!(check_queue_name("test-fifo-queue.fifo").is_ok());
        assert!(check_queue_name("orders").is_err());
        assert!(check_queue_name(".fifo").is_err());
        assert!(check_queue_name("a b.fifo").is_err());
        assert!(check_queue_name(&format!("{}.fifo", "q".repeat(76))).is_err());
    }
}
