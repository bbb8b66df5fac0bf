//! The one settings type every subcommand runs on, merged from four layers,
//! low to high: defaults < `fifo.toml` (or `--config FILE`) < environment <
//! flags. Every setting is one row of [`KEYS`]: its file key, environment
//! variables, flag, default and range. Each value is checked here, against
//! its row, and an error names the layer it came from; nothing falls back to
//! a default silently. The checked values are then read into [`Settings`]
//! by serde, which refuses any key the struct lacks: a row without a field
//! fails every load (and so every test), and a field without a row has no
//! value to read (a required one fails the same way).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, File, FileFormat, Source};
use fifo_sqs_client::QueueUrl;
use fifo_worker_pool::PoolConfig;
use serde::Deserialize;

use crate::error::UserError;

pub(crate) const DEFAULT_QUEUE_URL: &str =
    "http://localhost:4566/000000000000/test-fifo-queue.fifo";
pub(crate) const DEFAULT_CONFIG_FILE: &str = "fifo.toml";

/// What the program runs on, after layering and checks. Field names are
/// the keys of [`KEYS`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    pub(crate) queue_url: String,
    pub(crate) endpoint_url: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) max_workers: u32,
    pub(crate) visibility_timeout: u32,
    pub(crate) wait_time_seconds: u32,
    pub(crate) max_messages: u32,
    pub(crate) pollers: Option<u32>,
    pub(crate) max_in_flight: Option<u32>,
    pub(crate) retries: u32,
    pub(crate) backoff_base_ms: u64,
    pub(crate) backoff_max_ms: u64,
    pub(crate) handler_timeout: Option<f64>,
    pub(crate) shutdown_timeout: f64,
    pub(crate) batch: u32,
    pub(crate) http_url: Option<String>,
    pub(crate) http_ready: Option<String>,
    pub(crate) http_content_type: String,
    pub(crate) http_reject_status: u16,
    pub(crate) metrics_addr: Option<String>,
    /// Where each setting given (not defaulted) came from, by key, for the
    /// checks of `fifo run` that follow the layers.
    #[serde(skip)]
    origins: BTreeMap<&'static str, Origin>,
}

/// One setting: its key in `fifo.toml`, the environment variables that set
/// it (first found wins), the flag, the default and what values it takes.
/// Environment variable names and ranges live here and nowhere else.
pub(crate) struct Key {
    pub(crate) name: &'static str,
    pub(crate) env: &'static [&'static str],
    pub(crate) flag: &'static str,
    default: Option<&'static str>,
    kind: Kind,
}

/// What values a setting takes.
#[derive(Clone, Copy)]
enum Kind {
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
}

pub(crate) const QUEUE_URL: Key = Key {
    name: "queue_url",
    env: &["SQS_QUEUE_URL"],
    flag: "--queue-url",
    default: Some(DEFAULT_QUEUE_URL),
    kind: Kind::QueueUrl,
};
pub(crate) const ENDPOINT_URL: Key = Key {
    name: "endpoint_url",
    env: &["ENDPOINT_URL"],
    flag: "--endpoint-url",
    default: None,
    kind: Kind::Text,
};
pub(crate) const REGION: Key = Key {
    name: "region",
    env: &["AWS_REGION", "AWS_DEFAULT_REGION"],
    flag: "--region",
    default: None,
    kind: Kind::Text,
};
pub(crate) const MAX_WORKERS: Key = Key {
    name: "max_workers",
    env: &["MAX_WORKERS"],
    flag: "--workers",
    default: Some("5"),
    kind: Kind::Whole {
        low: 1,
        high: 10_000,
    },
};
pub(crate) const VISIBILITY_TIMEOUT: Key = Key {
    name: "visibility_timeout",
    env: &["VISIBILITY_TIMEOUT"],
    flag: "--visibility-timeout",
    default: Some("30"),
    kind: Kind::Whole {
        low: 0,
        high: 43_200,
    },
};
pub(crate) const WAIT_TIME_SECONDS: Key = Key {
    name: "wait_time_seconds",
    env: &["WAIT_TIME_SECONDS"],
    flag: "--wait-time",
    default: Some("20"),
    kind: Kind::Whole { low: 0, high: 20 },
};
pub(crate) const MAX_MESSAGES: Key = Key {
    name: "max_messages",
    env: &["MAX_MESSAGES"],
    flag: "--max-messages",
    default: Some("10"),
    kind: Kind::Whole { low: 1, high: 10 },
};
pub(crate) const POLLERS: Key = Key {
    name: "pollers",
    env: &["FIFO_POLLERS"],
    flag: "--pollers",
    default: None,
    kind: Kind::Whole {
        low: 1,
        high: fifo_worker_pool::MAX_POLLERS as u64,
    },
};
pub(crate) const MAX_IN_FLIGHT: Key = Key {
    name: "max_in_flight",
    env: &["FIFO_MAX_IN_FLIGHT"],
    flag: "--max-in-flight",
    default: None,
    kind: Kind::Whole {
        low: 10,
        high: 120_000,
    },
};
pub(crate) const RETRIES: Key = Key {
    name: "retries",
    env: &["FIFO_RETRIES"],
    flag: "--retries",
    default: Some("3"),
    kind: Kind::Whole { low: 0, high: 100 },
};
pub(crate) const BACKOFF_BASE_MS: Key = Key {
    name: "backoff_base_ms",
    env: &["FIFO_BACKOFF_BASE_MS"],
    flag: "--backoff-base-ms",
    default: Some("100"),
    kind: Kind::Whole {
        low: 1,
        high: 3_600_000,
    },
};
pub(crate) const BACKOFF_MAX_MS: Key = Key {
    name: "backoff_max_ms",
    env: &["FIFO_BACKOFF_MAX_MS"],
    flag: "--backoff-max-ms",
    default: Some("20000"),
    kind: Kind::Whole {
        low: 1,
        high: 43_200_000,
    },
};
pub(crate) const HANDLER_TIMEOUT: Key = Key {
    name: "handler_timeout",
    env: &["FIFO_HANDLER_TIMEOUT"],
    flag: "--handler-timeout",
    default: None,
    kind: Kind::Seconds { high: 86_400.0 },
};
pub(crate) const SHUTDOWN_TIMEOUT: Key = Key {
    name: "shutdown_timeout",
    env: &["FIFO_SHUTDOWN_TIMEOUT"],
    flag: "--shutdown-timeout",
    default: Some("30"),
    kind: Kind::Seconds { high: 86_400.0 },
};
pub(crate) const BATCH: Key = Key {
    name: "batch",
    env: &["FIFO_BATCH"],
    flag: "--batch",
    default: Some("1"),
    kind: Kind::Whole { low: 1, high: 100 },
};

pub(crate) const HTTP_URL: Key = Key {
    name: "http_url",
    env: &["FIFO_HTTP_URL"],
    flag: "--http",
    default: None,
    kind: Kind::HttpUrl,
};
pub(crate) const HTTP_READY: Key = Key {
    name: "http_ready",
    env: &["FIFO_HTTP_READY"],
    flag: "--http-ready",
    default: None,
    kind: Kind::HttpUrl,
};
pub(crate) const HTTP_CONTENT_TYPE: Key = Key {
    name: "http_content_type",
    env: &["FIFO_HTTP_CONTENT_TYPE"],
    flag: "--http-content-type",
    default: Some("application/json"),
    kind: Kind::Text,
};
pub(crate) const HTTP_REJECT_STATUS: Key = Key {
    name: "http_reject_status",
    env: &["FIFO_HTTP_REJECT_STATUS"],
    flag: "--http-reject-status",
    default: Some("422"),
    kind: Kind::Whole {
        low: 400,
        high: 599,
    },
};
pub(crate) const METRICS_ADDR: Key = Key {
    name: "metrics_addr",
    env: &["FIFO_METRICS_ADDR"],
    flag: "--metrics-addr",
    default: None,
    kind: Kind::ListenAddress,
};

pub(crate) const KEYS: &[&Key] = &[
    &QUEUE_URL,
    &ENDPOINT_URL,
    &REGION,
    &MAX_WORKERS,
    &VISIBILITY_TIMEOUT,
    &WAIT_TIME_SECONDS,
    &MAX_MESSAGES,
    &POLLERS,
    &MAX_IN_FLIGHT,
    &RETRIES,
    &BACKOFF_BASE_MS,
    &BACKOFF_MAX_MS,
    &HANDLER_TIMEOUT,
    &SHUTDOWN_TIMEOUT,
    &BATCH,
    &HTTP_URL,
    &HTTP_READY,
    &HTTP_CONTENT_TYPE,
    &HTTP_REJECT_STATUS,
    &METRICS_ADDR,
];

impl Key {
    /// For a flag's help: `[range: …] [env: A, B] [default: D]`, the
    /// default only where it is a value.
    pub(crate) fn help_suffix(&self) -> String {
        let mut suffix = match self.kind.range() {
            Some(range) => format!("[range: {range}] "),
            None => String::new(),
        };
        suffix += &format!("[env: {}]", self.env.join(", "));
        if let Some(default) = self.default {
            suffix += &format!(" [default: {default}]");
        }
        suffix
    }
}

impl Kind {
    /// A number's range: `1 to 10`, `above 0, at most 86400`.
    fn range(self) -> Option<String> {
        match self {
            Kind::Text | Kind::QueueUrl | Kind::HttpUrl | Kind::ListenAddress => None,
            Kind::Whole { low, high } => Some(format!("{low} to {high}")),
            Kind::Seconds { high } => Some(format!("above 0, at most {high}")),
        }
    }
}

/// The setting a flag sets, if any.
pub(crate) fn key_for_flag(flag: &str) -> Option<&'static Key> {
    KEYS.iter().copied().find(|key| key.flag == flag)
}

/// Values given as flags, by setting.
pub(crate) type Flags = Vec<(&'static Key, String)>;

/// Merges the layers. `config_file` is `--config FILE` (which must exist);
/// without it `fifo.toml` in the working directory is read when present.
/// `env` looks up an environment variable (a parameter so tests need not
/// touch the process environment).
pub(crate) fn load(
    config_file: Option<&Path>,
    flags: &Flags,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Settings, UserError> {
    let file = match config_file {
        Some(path) => Some(read_file(path, true)?),
        None => {
            let path = PathBuf::from(DEFAULT_CONFIG_FILE);
            path.exists().then(|| read_file(&path, false)).transpose()?
        }
    };
    let layers = Layers {
        flags,
        env: &env,
        file: file.as_ref(),
    };
    let mut checked = Config::builder();
    let mut origins = BTreeMap::new();
    for key in KEYS {
        if let Some(Given { value, origin }) = layers.checked(key)? {
            checked = checked
                .set_override(key.name, value)
                .expect("a settings key is a plain name");
            if origin != Origin::Default {
                origins.insert(key.name, origin);
            }
        }
    }
    let mut settings: Settings = checked
        .build()
        .and_then(Config::try_deserialize)
        .expect("every row of KEYS is a field of Settings, with a value of its kind");
    settings.origins = origins;
    Ok(settings)
}

impl Settings {
    /// Where `key` came from.
    fn origin(&self, key: &Key) -> &Origin {
        static DEFAULT: Origin = Origin::Default;
        self.origins.get(key.name).unwrap_or(&DEFAULT)
    }

    /// Settings of the HTTP handler given without `--http`, which would do
    /// nothing: an error naming the first.
    pub(crate) fn check_http_only(&self) -> Result<(), UserError> {
        if self.http_url.is_some() {
            return Ok(());
        }
        for key in [&HTTP_READY, &HTTP_CONTENT_TYPE, &HTTP_REJECT_STATUS] {
            // Only values given are listed: a default is no choice.
            if let Some(origin) = self.origins.get(key.name) {
                let env = key.env.first().copied().unwrap_or_default();
                return Err(UserError::new(
                    format!("{} is given without --http", origin.describe(key)),
                    Some(format!(
                        "give --http URL (FIFO_HTTP_URL) too, or drop {} ({env})",
                        key.flag
                    )),
                ));
            }
        }
        Ok(())
    }

    /// The engine's configuration for `fifo run`, which also needs a
    /// visibility timeout of at least 1 s (a queue may default to 0).
    pub(crate) fn pool_config(
        &self,
        until_empty: bool,
        limit: Option<u64>,
    ) -> Result<PoolConfig, UserError> {
        if self.visibility_timeout == 0 {
            let origin = self.origin(&VISIBILITY_TIMEOUT);
            let Kind::Whole { high, .. } = VISIBILITY_TIMEOUT.kind else {
                unreachable!("the visibility timeout is a whole number")
            };
            return Err(UserError::new(
                format!(
                    "{}: fifo run needs a visibility timeout of at least 1 s",
                    origin.describe(&VISIBILITY_TIMEOUT)
                ),
                Some(origin.fix(
                    &VISIBILITY_TIMEOUT,
                    &format!("a whole number from 1 to {high}"),
                )),
            ));
        }
        let workers = self.max_workers as usize;
        let max_in_flight = self
            .max_in_flight
            .map_or((workers * 20).max(1000), |n| n as usize)
            .max(self.max_messages as usize);
        if workers > max_in_flight {
            // Each worker runs a held message: the ones beyond never work.
            tracing::warn!(
                "{} is more than {}: at most {max_in_flight} messages are held at once, so {} workers never get one; give fewer workers or a higher --max-in-flight",
                self.origin(&MAX_WORKERS).describe(&MAX_WORKERS),
                self.origin(&MAX_IN_FLIGHT).describe(&MAX_IN_FLIGHT),
                workers - max_in_flight
            );
        }
        Ok(PoolConfig {
            workers,
            batch: self.batch as usize,
            pollers: self.pollers.map(|n| n as usize),
            max_in_flight,
            max_messages: self.max_messages,
            wait_time_seconds: self.wait_time_seconds,
            visibility_timeout: self.visibility_timeout,
            retries: self.retries,
            backoff_base: Duration::from_millis(self.backoff_base_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms.max(self.backoff_base_ms)),
            handler_timeout: self
                .handler_timeout
                .or(self.http_url.as_ref().map(|_| HTTP_HANDLER_TIMEOUT))
                .map(Duration::from_secs_f64),
            shutdown_timeout: Duration::from_secs_f64(self.shutdown_timeout),
            cancel_grace: KILL_GRACE,
            until_empty,
            limit,
        })
    }
}

/// The handler timeout of the HTTP handler unless one is set: a request
/// never answered must not hold its group for ever.
const HTTP_HANDLER_TIMEOUT: f64 = 30.0;

/// How long a program gets between SIGTERM and SIGKILL when fifo ends it
/// (at most a twelfth of the visibility timeout, see `PoolConfig::kill_grace`).
const KILL_GRACE: Duration = Duration::from_secs(5);

/// The layers above the defaults, highest first: flags, environment, file.
struct Layers<'a, E> {
    flags: &'a Flags,
    env: &'a E,
    file: Option<&'a (PathBuf, Config)>,
}

/// Where a setting's value came from, to name it in an error and to say
/// where to fix it.
#[derive(Debug, Clone, PartialEq, Default)]
enum Origin {
    Flag(String),
    Env(&'static str, String),
    File(PathBuf),
    #[default]
    Default,
}

impl Origin {
    /// `--workers abc`, `MAX_WORKERS=abc`, `` `max_workers` in fifo.toml ``.
    fn describe(&self, key: &Key) -> String {
        match self {
            Origin::Flag(value) if value.is_empty() => format!("{} \"\"", key.flag),
            Origin::Flag(value) => format!("{} {value}", key.flag),
            Origin::Env(name, value) => format!("{name}={value}"),
            Origin::File(path) => format!("`{}` in {}", key.name, path.display()),
            Origin::Default => format!("the default {}", key.name),
        }
    }

    /// `MAX_WORKERS=0 is out of range: max_workers must be …`, with where
    /// to put a good value as the hint.
    fn error(&self, key: &Key, problem: &str, wanted: &str) -> UserError {
        UserError::new(
            format!(
                "{} {problem}: {} must be {wanted}",
                self.describe(key),
                key.name
            ),
            Some(self.fix(key, wanted)),
        )
    }

    /// Where to put a value `wanted`: only where the user gave one.
    fn fix(&self, key: &Key, wanted: &str) -> String {
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

/// A setting's value and where it came from.
struct Given<V> {
    value: V,
    origin: Origin,
}

impl<V> Given<V> {
    /// The same origin with the value turned into another.
    fn map<W>(self, f: impl FnOnce(V) -> W) -> Given<W> {
        Given {
            value: f(self.value),
            origin: self.origin,
        }
    }
}

impl<E: Fn(&str) -> Option<String>> Layers<'_, E> {
    /// The highest layer's value as it was written: text from a flag or the
    /// environment, a typed TOML value from the file.
    fn raw(&self, key: &Key) -> Result<Option<Given<config::Value>>, UserError> {
        let text = |value: &str, origin| {
            Some(Given {
                value: config::Value::new(None, value),
                origin,
            })
        };
        if let Some((_, value)) = self.flags.iter().rev().find(|(k, _)| k.name == key.name) {
            return Ok(text(value, Origin::Flag(value.clone())));
        }
        for name in key.env {
            match (self.env)(name) {
                // The AWS tools read an empty AWS_* variable as unset.
                Some(value) if value.is_empty() && name.starts_with("AWS_") => {}
                Some(value) => return Ok(text(&value.clone(), Origin::Env(name, value))),
                None => {}
            }
        }
        if let Some((path, file)) = self.file {
            match file.get::<config::Value>(key.name) {
                Ok(value) => {
                    return Ok(Some(Given {
                        value,
                        origin: Origin::File(path.clone()),
                    }));
                }
                Err(config::ConfigError::NotFound(_)) => {}
                Err(e) => {
                    return Err(UserError::new(
                        format!("`{}` in {}: {e}", key.name, path.display()),
                        None,
                    ));
                }
            }
        }
        Ok(key
            .default
            .and_then(|default| text(default, Origin::Default)))
    }

    /// A text setting: a string, not empty.
    fn text(&self, key: &Key) -> Result<Option<Given<String>>, UserError> {
        let Some(Given { value, origin }) = self.raw(key)? else {
            return Ok(None);
        };
        let text = match value.kind {
            config::ValueKind::String(text) => text,
            config::ValueKind::Nil => return Ok(None),
            _ => {
                return Err(UserError::new(
                    format!(
                        "{} must be text in quotes, not {value}",
                        origin.describe(key)
                    ),
                    Some(origin.fix(key, "a quoted string")),
                ));
            }
        };
        if text.trim().is_empty() {
            return Err(UserError::new(
                format!("{} is empty", origin.describe(key)),
                Some(origin.fix(key, "a value")),
            ));
        }
        Ok(Some(Given {
            value: text,
            origin,
        }))
    }

    /// The highest layer's value, checked against the key's kind, as a
    /// value serde reads into [`Settings`], with where it came from.
    fn checked(&self, key: &Key) -> Result<Option<Given<config::Value>>, UserError> {
        let given = match key.kind {
            Kind::Text => self.text(key)?.map(|given| given.map(Into::into)),
            Kind::QueueUrl => self.text_that(key, |given| {
                QueueUrl::parse(&given.value).map(drop).map_err(|e| {
                    UserError::new(
                        format!("{}: {e}", given.origin.describe(key)),
                        crate::error::sqs_hint(&e),
                    )
                })
            })?,
            Kind::HttpUrl => self.text_that(key, |given| {
                fifo_builtin_handlers::http_url(&given.value)
                    .map(drop)
                    .map_err(|e| {
                        UserError::new(
                            format!("{}: {e}", given.origin.describe(key)),
                            Some(
                                given
                                    .origin
                                    .fix(key, "a URL such as http://localhost:8080/work"),
                            ),
                        )
                    })
            })?,
            Kind::ListenAddress => self.text_that(key, |given| {
                given
                    .value
                    .parse::<std::net::SocketAddr>()
                    .map(drop)
                    .map_err(|_| {
                        UserError::new(
                            format!(
                                "{}: not an address and port to listen on",
                                given.origin.describe(key)
                            ),
                            Some(given.origin.fix(
                                key,
                                "an address and port such as 127.0.0.1:9464 or 0.0.0.0:9464",
                            )),
                        )
                    })
            })?,
            Kind::Whole { low, high } => self
                .number(key, low, high)?
                .map(|given| given.map(|n| i64::try_from(n).expect("ranges fit in i64").into())),
            Kind::Seconds { high } => self.seconds(key, high)?.map(|given| given.map(Into::into)),
        };
        Ok(given)
    }

    /// A text setting's value, once `check` accepted it (it says what is
    /// wrong otherwise).
    fn text_that(
        &self,
        key: &Key,
        check: impl FnOnce(&Given<String>) -> Result<(), UserError>,
    ) -> Result<Option<Given<config::Value>>, UserError> {
        let Some(given) = self.text(key)? else {
            return Ok(None);
        };
        check(&given)?;
        Ok(Some(given.map(Into::into)))
    }

    /// A numeric setting's value as written, or the error that it is not a
    /// number at all: text in quotes in the file, empty, or another kind of
    /// TOML value. `wanted` says what it must be.
    fn numeral(&self, key: &Key, wanted: &str) -> Result<Option<Given<Numeral>>, UserError> {
        let Some(Given { value, origin }) = self.raw(key)? else {
            return Ok(None);
        };
        let error = |problem: String| origin.error(key, &problem, wanted);
        let numeral = match value.kind {
            config::ValueKind::String(text) if matches!(origin, Origin::File(_)) => {
                return Err(error(format!(
                    "is text in quotes (\"{text}\"), not a number; write it without quotes"
                )));
            }
            config::ValueKind::String(text) if text.trim().is_empty() => {
                return Err(error("is empty".to_owned()));
            }
            config::ValueKind::String(text) => Numeral::Text(text.trim().to_owned()),
            config::ValueKind::I64(n) => Numeral::Whole(i128::from(n)),
            config::ValueKind::U64(n) => Numeral::Whole(i128::from(n)),
            config::ValueKind::I128(n) => Numeral::Whole(n),
            config::ValueKind::U128(n) => Numeral::Whole(i128::try_from(n).unwrap_or(i128::MAX)),
            config::ValueKind::Float(n) => Numeral::Fraction(n),
            config::ValueKind::Nil => return Ok(None),
            _ => return Err(error(format!("is {value}, not a number"))),
        };
        Ok(Some(Given {
            value: numeral,
            origin,
        }))
    }

    /// A whole number from `low` to `high`: a number in the file, digits
    /// in a flag or variable.
    fn number(&self, key: &Key, low: u64, high: u64) -> Result<Option<Given<u64>>, UserError> {
        let wanted = format!("a whole number from {low} to {high}");
        let Some(Given { value, origin }) = self.numeral(key, &wanted)? else {
            return Ok(None);
        };
        let error = |problem: &str| origin.error(key, problem, &wanted);
        let number = match value {
            Numeral::Text(text) => match text.parse::<i128>() {
                Ok(n) => n,
                Err(_) if is_digits(&text) => return Err(error("is out of range")),
                Err(_) if text.parse::<f64>().is_ok() => {
                    return Err(error("is not a whole number"));
                }
                Err(_) => return Err(error("is not a number")),
            },
            Numeral::Whole(n) => n,
            Numeral::Fraction(_) => return Err(error("is not a whole number")),
        };
        match u64::try_from(number) {
            Ok(n) if (low..=high).contains(&n) => Ok(Some(Given { value: n, origin })),
            _ => Err(error("is out of range")),
        }
    }

    /// A number of seconds above 0 and at most `high`: a number in the
    /// file (whole or not), digits in a flag or variable.
    fn seconds(&self, key: &Key, high: f64) -> Result<Option<Given<f64>>, UserError> {
        let wanted = format!("a number of seconds above 0 and at most {high}");
        let Some(Given { value, origin }) = self.numeral(key, &wanted)? else {
            return Ok(None);
        };
        let error = |problem: &str| origin.error(key, problem, &wanted);
        let seconds = match value {
            Numeral::Text(text) => text.parse::<f64>().map_err(|_| error("is not a number"))?,
            Numeral::Whole(n) => n as f64,
            Numeral::Fraction(n) => n,
        };
        if seconds.is_finite() && seconds > 0.0 && seconds <= high {
            Ok(Some(Given {
                value: seconds,
                origin,
            }))
        } else {
            Err(error("is out of range"))
        }
    }
}

/// A numeric setting as written, before its kind reads it.
enum Numeral {
    /// From a flag or variable, trimmed and not empty.
    Text(String),
    /// A whole TOML number.
    Whole(i128),
    /// A TOML number with a fraction.
    Fraction(f64),
}

/// Whole-number digits, perhaps with a sign: too many for `i128` is out of
/// range, not "not a whole number".
fn is_digits(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A TOML error on one line: its position and its explanation, without
/// the drawing of the line it points at.
fn one_line(error: &str) -> String {
    let mut lines = error
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('|') && !line.contains(" | "));
    let first = lines.next().unwrap_or_default().to_owned();
    let rest: Vec<&str> = lines.collect();
    if rest.is_empty() {
        first
    } else {
        format!("{first}: {}", rest.join(", "))
    }
}

/// The largest settings file read: a real one is a few hundred bytes.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads and parses a settings file, refusing keys fifo does not know (a
/// typo would otherwise be ignored silently). Only a regular file is read:
/// a named pipe or a device could block or never end.
fn read_file(path: &Path, given: bool) -> Result<(PathBuf, Config), UserError> {
    let fix = if given {
        "check the path given to --config".to_owned()
    } else {
        format!(
            "fix or remove {}: it is read because it is in the working directory",
            path.display()
        )
    };
    let cannot = |why: String| {
        UserError::new(
            format!("cannot read config file {}: {why}", path.display()),
            Some(fix.clone()),
        )
    };
    let metadata = std::fs::metadata(path).map_err(|e| cannot(e.to_string()))?;
    if !metadata.is_file() {
        return Err(cannot("it is not a regular file".to_owned()));
    }
    if metadata.len() > MAX_CONFIG_BYTES {
        return Err(cannot(format!(
            "it is {} bytes, more than a settings file holds",
            metadata.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| cannot(e.to_string()))?;
    let config = Config::builder()
        .add_source(File::from_str(&text, FileFormat::Toml))
        .build()
        .map_err(|e| {
            UserError::new(
                format!(
                    "malformed config file {}: {}",
                    path.display(),
                    one_line(&e.to_string())
                ),
                Some("fix the TOML syntax, e.g. `max_workers = 8`".to_owned()),
            )
        })?;
    let table = config.collect().unwrap_or_default();
    if let Some(unknown) = table.keys().find(|k| KEYS.iter().all(|key| key.name != *k)) {
        let known: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        return Err(UserError::new(
            format!("unknown key `{unknown}` in config file {}", path.display()),
            Some(format!("known keys: {}", known.join(", "))),
        ));
    }
    Ok((path.to_owned(), config))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn write_config(text: &str) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("fifo.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    /// A directory removed on drop, so tests leave nothing behind.
    mod tempdir {
        pub(super) struct Dir(pub(super) std::path::PathBuf);
        impl Dir {
            pub(super) fn new() -> Dir {
                let path = std::env::temp_dir().join(format!(
                    "fifo-settings-{}-{}",
                    std::process::id(),
                    fastrand::u64(..)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn defaults_match_the_seed() {
        let (_dir, path) = write_config("");
        let settings = load(Some(&path), &vec![], env_of(&[])).unwrap();
        assert_eq!(
            settings,
            Settings {
                queue_url: DEFAULT_QUEUE_URL.to_owned(),
                endpoint_url: None,
                region: None,
                max_workers: 5,
                visibility_timeout: 30,
                wait_time_seconds: 20,
                max_messages: 10,
                pollers: None,
                max_in_flight: None,
                retries: 3,
                backoff_base_ms: 100,
                backoff_max_ms: 20_000,
                handler_timeout: None,
                shutdown_timeout: 30.0,
                batch: 1,
                http_url: None,
                http_ready: None,
                http_content_type: "application/json".to_owned(),
                http_reject_status: 422,
                metrics_addr: None,
                origins: BTreeMap::new(),
            }
        );
    }

    #[test]
    fn run_settings_come_from_every_layer_too() {
        let (_dir, path) =
            write_config("retries = 7\nshutdown_timeout = 2\nhandler_timeout = 0.5\npollers = 4\n");
        let env = env_of(&[("FIFO_RETRIES", "8"), ("FIFO_BATCH", "10")]);
        let flags: Flags = vec![(&MAX_IN_FLIGHT, "50".to_owned())];
        let settings = load(Some(&path), &flags, env).unwrap();
        assert_eq!(settings.retries, 8, "env beats file");
        assert_eq!(settings.batch, 10);
        assert_eq!(settings.shutdown_timeout, 2.0, "a whole number of seconds");
        assert_eq!(settings.handler_timeout, Some(0.5));
        assert_eq!(settings.pollers, Some(4));
        assert_eq!(settings.max_in_flight, Some(50));

        let config = settings.pool_config(true, Some(9)).unwrap();
        assert_eq!(config.retries, 8);
        assert_eq!(config.batch, 10);
        assert_eq!(config.max_in_flight, 50);
        assert_eq!(config.handler_timeout, Some(Duration::from_millis(500)));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(2));
        assert!(config.until_empty);
        assert_eq!(config.limit, Some(9));
    }

    #[test]
    fn seconds_are_above_zero_and_finite() {
        let (_empty_dir, empty) = write_config("");
        for bad in ["0", "-1", "inf", "NaN", "86401"] {
            let flags: Flags = vec![(&SHUTDOWN_TIMEOUT, bad.to_owned())];
            let err = load(Some(&empty), &flags, env_of(&[])).unwrap_err();
            assert!(
                err.message
                    .starts_with(&format!("--shutdown-timeout {bad} is out of range")),
                "{err}"
            );
            assert!(err.message.contains("above 0 and at most 86400"), "{err}");
        }
        let err = load(
            Some(&empty),
            &vec![],
            env_of(&[("FIFO_HANDLER_TIMEOUT", "soon")]),
        )
        .unwrap_err();
        assert!(
            err.message
                .starts_with("FIFO_HANDLER_TIMEOUT=soon is not a number"),
            "{err}"
        );
    }

    #[test]
    fn run_needs_a_visibility_timeout() {
        let (_empty_dir, empty) = write_config("");
        let settings = load(
            Some(&empty),
            &vec![],
            env_of(&[("VISIBILITY_TIMEOUT", "0")]),
        )
        .unwrap();
        let err = settings.pool_config(false, None).unwrap_err();
        assert_eq!(
            err.message,
            "VISIBILITY_TIMEOUT=0: fifo run needs a visibility timeout of at least 1 s"
        );
        assert_eq!(
            err.hint.as_deref(),
            Some(
                "set VISIBILITY_TIMEOUT to a whole number from 1 to 43200, or unset it for the default"
            )
        );
        let (_dir, path) = write_config("visibility_timeout = 0\n");
        let settings = load(Some(&path), &vec![], env_of(&[])).unwrap();
        let err = settings.pool_config(false, None).unwrap_err();
        assert!(err.message.starts_with("`visibility_timeout` in "), "{err}");
        assert!(err.hint.unwrap().contains("fifo.toml"));
    }

    #[test]
    fn too_many_digits_are_out_of_range_not_a_fraction() {
        let flags: Flags = vec![(&RETRIES, "9".repeat(50))];
        let err = load(None, &flags, env_of(&[])).unwrap_err();
        assert!(err.message.contains("is out of range"), "{err}");
    }

    #[test]
    fn the_readme_lists_every_setting_as_the_table_has_it() {
        let readme = include_str!("../../../README.md");
        for key in KEYS {
            let env: Vec<String> = key.env.iter().map(|name| format!("`{name}`")).collect();
            let start = format!("| `{}` | {} | `{}` |", key.name, env.join(", "), key.flag);
            let row = readme
                .lines()
                .find(|line| line.starts_with(&start))
                .unwrap_or_else(|| panic!("README.md lacks the row {start}"));
            let columns: Vec<&str> = row
                .split(" | ")
                .map(|c| c.trim_matches('|').trim())
                .collect();
            if let Some(default) = key.default.filter(|_| key.kind.range().is_some()) {
                assert_eq!(columns[3], default, "the default in {row}");
            }
            let range = match key.kind {
                Kind::Whole { low, high } => format!("{low}–{high}"),
                Kind::Seconds { high } => format!("seconds, above 0, ≤ {high}"),
                Kind::Text | Kind::QueueUrl | Kind::HttpUrl | Kind::ListenAddress => continue,
            };
            assert_eq!(columns[4], range, "the range in {row}");
        }
    }

    #[test]
    fn every_setting_has_one_row_one_env_name_and_one_flag() {
        let mut names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        let mut envs: Vec<&str> = KEYS.iter().flat_map(|k| k.env.iter().copied()).collect();
        let mut flags: Vec<&str> = KEYS.iter().map(|k| k.flag).collect();
        for list in [&mut names, &mut envs, &mut flags] {
            let count = list.len();
            list.sort_unstable();
            list.dedup();
            assert_eq!(list.len(), count, "a name is used twice: {list:?}");
        }
    }

    #[test]
    fn layers_apply_file_then_env_then_flags() {
        let (_dir, path) =
            write_config("max_workers = 7\nwait_time_seconds = 3\nmax_messages = 4\n");
        let env = env_of(&[("MAX_WORKERS", "9"), ("WAIT_TIME_SECONDS", "5")]);
        let flags: Flags = vec![(&MAX_WORKERS, "11".to_owned())];
        let settings = load(Some(&path), &flags, env).unwrap();
        assert_eq!(settings.max_workers, 11, "flag beats env");
        assert_eq!(settings.wait_time_seconds, 5, "env beats file");
        assert_eq!(settings.max_messages, 4, "file beats default");
        assert_eq!(settings.visibility_timeout, 30, "default");
    }

    #[test]
    fn region_falls_back_to_aws_default_region_and_empty_env_is_unset() {
        let (_dir, path) = write_config("");
        let env = env_of(&[("AWS_REGION", ""), ("AWS_DEFAULT_REGION", "eu-west-1")]);
        let settings = load(Some(&path), &vec![], env).unwrap();
        assert_eq!(settings.region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn out_of_range_values_name_their_origin() {
        let (_empty_dir, empty) = write_config("");
        let err = load(
            Some(&empty),
            &vec![],
            env_of(&[("WAIT_TIME_SECONDS", "25")]),
        )
        .unwrap_err();
        assert!(
            err.message
                .starts_with("WAIT_TIME_SECONDS=25 is out of range"),
            "{err}"
        );
        assert!(err.message.contains("0 to 20"), "{err}");

        let (_dir, path) = write_config("visibility_timeout = 50000\n");
        let err = load(Some(&path), &vec![], env_of(&[])).unwrap_err();
        assert!(err.message.contains("`visibility_timeout` in"), "{err}");

        let flags: Flags = vec![(&MAX_MESSAGES, "11".to_owned())];
        let err = load(Some(&empty), &flags, env_of(&[])).unwrap_err();
        assert!(
            err.message.starts_with("--max-messages 11 is out of range"),
            "{err}"
        );

        let err = load(None, &vec![], env_of(&[("MAX_WORKERS", "abc")])).unwrap_err();
        assert!(err.message.starts_with("MAX_WORKERS=abc"), "{err}");
    }

    #[test]
    fn malformed_files_and_unknown_keys_are_errors() {
        let (_dir, path) = write_config("max_workers = = 3\n");
        let err = load(Some(&path), &vec![], env_of(&[])).unwrap_err();
        assert!(err.message.starts_with("malformed config file"), "{err}");

        let (_dir, path) = write_config("max_wrokers = 3\n");
        let err = load(Some(&path), &vec![], env_of(&[])).unwrap_err();
        assert!(err.message.contains("unknown key `max_wrokers`"), "{err}");

        let err = load(
            Some(Path::new("/nonexistent/fifo.toml")),
            &vec![],
            env_of(&[]),
        )
        .unwrap_err();
        assert!(err.message.starts_with("cannot read config file"), "{err}");
    }

    #[test]
    fn malformed_queue_urls_are_errors() {
        let err = load(
            None,
            &vec![],
            env_of(&[("SQS_QUEUE_URL", "localhost/queue")]),
        )
        .unwrap_err();
        assert!(
            err.message
                .starts_with("SQS_QUEUE_URL=localhost/queue: malformed queue URL"),
            "{err}"
        );
    }

    #[test]
    fn values_that_are_not_numbers_say_so_and_name_only_their_origin() {
        let (_empty_dir, empty) = write_config("");
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: [Case; 3] = [
            (
                &[("WAIT_TIME_SECONDS", "abc")],
                "WAIT_TIME_SECONDS=abc is not a number",
                "set WAIT_TIME_SECONDS to a whole number from 0 to 20",
            ),
            (
                &[("WAIT_TIME_SECONDS", "")],
                "WAIT_TIME_SECONDS= is empty",
                "set WAIT_TIME_SECONDS to",
            ),
            (
                &[("MAX_WORKERS", "2.5")],
                "MAX_WORKERS=2.5 is not a whole number",
                "set MAX_WORKERS to",
            ),
        ];
        for (env, error, hint) in cases {
            let err = load(Some(&empty), &vec![], env_of(env)).unwrap_err();
            assert!(err.message.starts_with(error), "{err}");
            let given_hint = err.hint.unwrap();
            assert!(given_hint.starts_with(hint), "{given_hint}");
            assert!(!given_hint.contains("fifo.toml"), "{given_hint}");
        }
        let flags: Flags = vec![(&MAX_WORKERS, String::new())];
        let err = load(Some(&empty), &flags, env_of(&[])).unwrap_err();
        assert!(err.message.starts_with(r#"--workers "" is empty"#), "{err}");
        let err = load(Some(&empty), &vec![], env_of(&[("SQS_QUEUE_URL", " ")])).unwrap_err();
        assert!(err.message.starts_with("SQS_QUEUE_URL=  is empty"), "{err}");
    }

    #[test]
    fn a_file_must_give_numbers_as_numbers_and_text_as_text() {
        let (_dir, path) = write_config("max_workers = \"5\"\n");
        let err = load(Some(&path), &vec![], env_of(&[])).unwrap_err();
        assert!(
            err.message.contains(r#"`max_workers` in"#)
                && err
                    .message
                    .contains(r#"is text in quotes ("5"), not a number"#),
            "{err}"
        );
        let (_dir, path) = write_config("queue_url = 5\n");
        let err = load(Some(&path), &vec![], env_of(&[])).unwrap_err();
        assert!(
            err.message.contains("must be text in quotes, not 5"),
            "{err}"
        );
        let (_dir, path) = write_config("visibility_timeout = -1\n");
        let err = load(Some(&path), &vec![], env_of(&[])).unwrap_err();
        assert!(err.message.contains("is out of range"), "{err}");
    }

    #[test]
    fn only_a_regular_file_is_read_and_the_hint_names_flags_given() {
        let dir = tempdir::Dir::new();
        let link = dir.0.join("fifo.toml");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let err = load(Some(&link), &vec![], env_of(&[])).unwrap_err();
        assert!(err.message.ends_with("it is not a regular file"), "{err}");
        assert_eq!(
            err.hint.as_deref(),
            Some("check the path given to --config")
        );
        let err = read_file(&link, false).unwrap_err();
        assert!(!err.hint.unwrap().contains("path given to --config"));
        let err = load(Some(&dir.0), &vec![], env_of(&[])).unwrap_err();
        assert!(err.message.ends_with("it is not a regular file"), "{err}");
    }

    /// TOML values of every kind, well and badly formed, under known and
    /// unknown keys.
    fn any_config() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop_oneof![
            proptest::sample::select(KEYS.iter().map(|k| k.name).collect::<Vec<_>>()),
            Just("max_wrokers"),
            Just("[table]"),
        ];
        let value = prop_oneof![
            (-5i64..50_000).prop_map(|n| n.to_string()),
            "[0-9a-z:/. -]{0,12}".prop_map(|s| format!("\"{s}\"")),
            Just("true".to_owned()),
            Just("1.5".to_owned()),
            Just("[1, 2]".to_owned()),
            Just("{ a = 1 }".to_owned()),
            "[ -~]{0,6}",
        ];
        prop::collection::vec((key, value), 0..6).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect()
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Any file: no panic; either settings within their ranges, or one
        /// error line with a hint.
        #[test]
        fn any_config_file_loads_or_fails_on_one_clear_line(text in any_config()) {
            let (_dir, path) = write_config(&text);
            match load(Some(&path), &vec![], env_of(&[])) {
                Ok(settings) => {
                    proptest::prop_assert!((1..=10_000).contains(&settings.max_workers));
                    proptest::prop_assert!(settings.wait_time_seconds <= 20);
                    proptest::prop_assert!((1..=10).contains(&settings.max_messages));
                    proptest::prop_assert!(settings.visibility_timeout <= 43_200);
                    proptest::prop_assert!(settings.retries <= 100);
                    proptest::prop_assert!((1..=100).contains(&settings.batch));
                    proptest::prop_assert!(settings.shutdown_timeout > 0.0 && settings.shutdown_timeout <= 86_400.0);
                    proptest::prop_assert!(settings.pollers.is_none_or(|n| (1..=16).contains(&n)));
                }
                Err(err) => {
                    proptest::prop_assert!(!err.message.is_empty() && !err.message.contains('\n'), "{}", err.message);
                    proptest::prop_assert!(err.hint.is_some(), "no hint for {}", err.message);
                }
            }
        }
    }
}
