//! Every setting, declared once: its field and type in [`Settings`], its key
//! in `fifo.toml`, its environment variables, its flag, its default and its
//! range. The layers, the flags' help and the checks all read this table;
//! the engine's ranges come from `fifo_worker_pool::limits`, not written
//! again. [`Origin`] is where a value came from, which [`Settings`] keeps
//! for the checks that follow the layers.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use fifo_worker_pool::limits;
use serde::Deserialize;

pub(crate) const DEFAULT_QUEUE_URL: &str =
    "http://localhost:4566/000000000000/test-fifo-queue.fifo";
pub(crate) const DEFAULT_CONFIG_FILE: &str = "fifo.toml";

/// One setting: its key in `fifo.toml`, the environment variables that set
/// it (first found wins), the flag, the default and what values it takes.
#[derive(Debug)]
pub(crate) struct Key {
    pub(crate) name: &'static str,
    pub(crate) env: &'static [&'static str],
    pub(crate) flag: &'static str,
    pub(super) default: Option<&'static str>,
    pub(super) kind: Kind,
}

/// What values a setting takes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// Text, not empty.
    Text,
    /// An SQS queue URL.
    QueueUrl,
    /// An http:// or https:// URL.
    HttpUrl,
    /// An IP address and port to listen on.
    ListenAddress,
    /// A whole number from `low` to `high`.
    Whole { low: u64, high: u64 },
    /// A number of seconds above 0 and at most `high`, fractions allowed.
    Seconds { high: f64 },
    /// Handler starts per second, from `low` to `high`, fractions allowed.
    Rate { low: f64, high: f64 },
    /// One of these words.
    Choice(&'static [&'static str]),
}

impl Kind {
    /// A whole number within one of the engine's ranges.
    const fn within(range: RangeInclusive<u32>) -> Kind {
        Kind::Whole {
            low: *range.start() as u64,
            high: *range.end() as u64,
        }
    }
}

/// Declares the settings: for each, the constant naming its [`Key`], its
/// field of [`Settings`] with its type, and the rest of its row. The field's
/// name is the key in `fifo.toml`.
macro_rules! settings {
    ($($constant:ident $field:ident: $type:ty = { $($row:tt)* })*) => {
        $(pub(crate) const $constant: Key = Key { name: stringify!($field), $($row)* };)*

        /// Every setting, in the order `--config`'s help lists them.
        pub(crate) const KEYS: &[&Key] = &[$(&$constant),*];

        /// What the program runs on, after layering and checks.
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct Settings {
            $(pub(crate) $field: $type,)*
            /// Where each setting given (not defaulted) came from, by key,
            /// for the checks of `fifo run` that follow the layers.
            #[serde(skip)]
            pub(super) origins: BTreeMap<&'static str, Origin>,
        }
    };
}

settings! {
    QUEUE_URL queue_url: String = {
        env: &["SQS_QUEUE_URL"],
        flag: "--queue-url",
        default: Some(DEFAULT_QUEUE_URL),
        kind: Kind::QueueUrl,
    }
    ENDPOINT_URL endpoint_url: Option<String> = {
        env: &["ENDPOINT_URL"],
        flag: "--endpoint-url",
        default: None,
        kind: Kind::Text,
    }
    REGION region: Option<String> = {
        env: &["AWS_REGION", "AWS_DEFAULT_REGION"],
        flag: "--region",
        default: None,
        kind: Kind::Text,
    }
    MAX_WORKERS max_workers: u32 = {
        env: &["MAX_WORKERS"],
        flag: "--workers",
        default: Some("5"),
        kind: Kind::Whole { low: 1, high: 10_000 },
    }
    // A queue's own default may be 0 (`create-queue`); `fifo run` holds it
    // to the engine's range when it makes its plan.
    VISIBILITY_TIMEOUT visibility_timeout: u32 = {
        env: &["VISIBILITY_TIMEOUT"],
        flag: "--visibility-timeout",
        default: Some("30"),
        kind: Kind::Whole { low: 0, high: *limits::VISIBILITY_TIMEOUT.end() as u64 },
    }
    WAIT_TIME_SECONDS wait_time_seconds: u32 = {
        env: &["WAIT_TIME_SECONDS"],
        flag: "--wait-time",
        default: Some("20"),
        kind: Kind::within(limits::WAIT_TIME_SECONDS),
    }
    MAX_MESSAGES max_messages: u32 = {
        env: &["MAX_MESSAGES"],
        flag: "--max-messages",
        default: Some("10"),
        kind: Kind::within(limits::MAX_MESSAGES),
    }
    POLLERS pollers: Option<u32> = {
        env: &["FIFO_POLLERS"],
        flag: "--pollers",
        default: None,
        kind: Kind::Whole { low: 1, high: limits::MAX_POLLERS as u64 },
    }
    MAX_IN_FLIGHT max_in_flight: Option<u32> = {
        env: &["FIFO_MAX_IN_FLIGHT"],
        flag: "--max-in-flight",
        default: None,
        kind: Kind::Whole { low: 10, high: 120_000 },
    }
    RETRIES retries: u32 = {
        env: &["FIFO_RETRIES"],
        flag: "--retries",
        default: Some("3"),
        kind: Kind::Whole { low: 0, high: 100 },
    }
    BACKOFF_BASE_MS backoff_base_ms: u64 = {
        env: &["FIFO_BACKOFF_BASE_MS"],
        flag: "--backoff-base-ms",
        default: Some("100"),
        kind: Kind::Whole { low: 1, high: 3_600_000 },
    }
    // It also caps how long a message handed back stays hidden, which SQS
    // allows as long as a visibility timeout.
    BACKOFF_MAX_MS backoff_max_ms: u64 = {
        env: &["FIFO_BACKOFF_MAX_MS"],
        flag: "--backoff-max-ms",
        default: Some("20000"),
        kind: Kind::Whole { low: 1, high: *limits::VISIBILITY_TIMEOUT.end() as u64 * 1000 },
    }
    HANDLER_TIMEOUT handler_timeout: Option<f64> = {
        env: &["FIFO_HANDLER_TIMEOUT"],
        flag: "--handler-timeout",
        default: None,
        kind: Kind::Seconds { high: 86_400.0 },
    }
    SHUTDOWN_TIMEOUT shutdown_timeout: f64 = {
        env: &["FIFO_SHUTDOWN_TIMEOUT"],
        flag: "--shutdown-timeout",
        default: Some("30"),
        kind: Kind::Seconds { high: 86_400.0 },
    }
    BATCH batch: u32 = {
        env: &["FIFO_BATCH"],
        flag: "--batch",
        default: Some("1"),
        kind: Kind::Whole { low: 1, high: 100 },
    }
    BATCH_FORMAT batch_format: String = {
        env: &["FIFO_BATCH_FORMAT"],
        flag: "--batch-format",
        default: Some("fifo"),
        kind: Kind::Choice(&["fifo", "lambda"]),
    }
    HTTP_URL http_url: Option<String> = {
        env: &["FIFO_HTTP_URL"],
        flag: "--http",
        default: None,
        kind: Kind::HttpUrl,
    }
    HTTP_READY http_ready: Option<String> = {
        env: &["FIFO_HTTP_READY"],
        flag: "--http-ready",
        default: None,
        kind: Kind::HttpUrl,
    }
    HTTP_CONTENT_TYPE http_content_type: String = {
        env: &["FIFO_HTTP_CONTENT_TYPE"],
        flag: "--http-content-type",
        default: Some("application/json"),
        kind: Kind::Text,
    }
    HTTP_FORMAT http_format: String = {
        env: &["FIFO_HTTP_FORMAT"],
        flag: "--http-format",
        default: Some("sqsd"),
        kind: Kind::Choice(&["sqsd", "lambda"]),
    }
    HTTP_REJECT_STATUS http_reject_status: u16 = {
        env: &["FIFO_HTTP_REJECT_STATUS"],
        flag: "--http-reject-status",
        default: Some("422"),
        kind: Kind::Whole { low: 400, high: 599 },
    }
    METRICS_ADDR metrics_addr: Option<String> = {
        env: &["FIFO_METRICS_ADDR"],
        flag: "--metrics-addr",
        default: None,
        kind: Kind::ListenAddress,
    }
    ADMIN_TOKEN_FILE admin_token_file: Option<String> = {
        env: &["FIFO_ADMIN_TOKEN_FILE"],
        flag: "--admin-token-file",
        default: None,
        kind: Kind::Text,
    }
    EXHAUSTED exhausted: String = {
        env: &["FIFO_EXHAUSTED"],
        flag: "--exhausted",
        default: Some("dead-letter"),
        kind: Kind::Choice(&["dead-letter", "block"]),
    }
    BLOCKED_RETRY_MAX blocked_retry_max: u64 = {
        env: &["FIFO_BLOCKED_RETRY_MAX"],
        flag: "--blocked-retry-max",
        default: Some("300"),
        kind: Kind::Whole { low: 1, high: 3600 },
    }
    MAX_RATE max_rate: Option<f64> = {
        env: &["FIFO_MAX_RATE"],
        flag: "--max-rate",
        default: None,
        kind: Kind::Rate { low: *limits::RATE.start(), high: *limits::RATE.end() },
    }
    GROUP_RATE group_rate: Option<f64> = {
        env: &["FIFO_GROUP_RATE"],
        flag: "--group-rate",
        default: None,
        kind: Kind::Rate { low: *limits::RATE.start(), high: *limits::RATE.end() },
    }
}

impl Key {
    /// For a flag's help: `[range: …] [env: A, B] [default: D]`, the
    /// default only where it is a value.
    pub(crate) fn help_suffix(&self) -> String {
        let mut suffix = match (self.kind, self.kind.range()) {
            (Kind::Choice(words), _) => format!("[possible values: {}] ", words.join(", ")),
            (_, Some(range)) => format!("[range: {range}] "),
            (_, None) => String::new(),
        };
        suffix += &format!("[env: {}]", self.env.join(", "));
        if let Some(default) = self.default {
            suffix += &format!(" [default: {default}]");
        }
        suffix
    }
}

/// The setting a flag sets, if any.
pub(crate) fn key_for_flag(flag: &str) -> Option<&'static Key> {
    KEYS.iter().copied().find(|key| key.flag == flag)
}

impl Kind {
    /// A number's range: `1 to 10`, `above 0, at most 86400`.
    pub(super) fn range(self) -> Option<String> {
        match self {
            Kind::Text | Kind::QueueUrl | Kind::HttpUrl | Kind::ListenAddress => None,
            Kind::Whole { low, high } => Some(format!("{low} to {high}")),
            Kind::Seconds { high } => Some(format!("above 0, at most {high}")),
            Kind::Rate { low, high } => Some(format!("{low} to {high}")),
            Kind::Choice(words) => Some(words.join(", ")),
        }
    }
}

/// Where a setting's value came from, to name it in an error and to say
/// where to fix it.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) enum Origin {
    Flag(String),
    Env(&'static str, String),
    File(PathBuf),
    #[default]
    Default,
}

impl Origin {
    /// `--workers abc`, `MAX_WORKERS=abc`, `` `max_workers` in fifo.toml ``.
    pub(super) fn describe(&self, key: &Key) -> String {
        match self {
            Origin::Flag(value) if value.is_empty() => format!("{} \"\"", key.flag),
            Origin::Flag(value) => format!("{} {value}", key.flag),
            Origin::Env(name, value) => format!("{name}={value}"),
            Origin::File(path) => format!("`{}` in {}", key.name, path.display()),
            Origin::Default => format!("the default {}", key.name),
        }
    }

    /// Where to put a value `wanted`: only where the user gave one.
    pub(super) fn fix(&self, key: &Key, wanted: &str) -> String {
        match self {
            Origin::Flag(_) => format!("give {} {wanted}", key.flag),
            Origin::Env(name, _) => format!("set {name} to {wanted}, or unset it for the default"),
            Origin::File(path) => format!(
                "write `{} = …` in {} with {wanted}",
                key.name,
                path.display()
            ),
            Origin::Default => format!("set {} to {wanted}", key.flag),
        }
    }
}
