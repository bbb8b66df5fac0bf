//! The one settings type every subcommand runs on, merged from four layers,
//! low to high: defaults < `fifo.toml` (or `--config FILE`) < environment <
//! flags. Every value is checked against SQS's ranges, and an error names
//! the layer it came from; nothing falls back to a default silently.

use std::path::{Path, PathBuf};

use config::{Config, File, FileFormat, Source};
use fifo_sqs_client::QueueUrl;

use crate::error::UserError;

pub(crate) const DEFAULT_QUEUE_URL: &str =
    "http://localhost:4566/000000000000/test-fifo-queue.fifo";
pub(crate) const DEFAULT_CONFIG_FILE: &str = "fifo.toml";

/// What the program runs on, after layering and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) queue_url: String,
    pub(crate) endpoint_url: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) max_workers: u32,
    pub(crate) visibility_timeout: u32,
    pub(crate) wait_time_seconds: u32,
    pub(crate) max_messages: u32,
}

/// One setting: its key in `fifo.toml`, the environment variables that set
/// it (first found wins), the flag, the default and the allowed range.
/// Environment variable names live here and nowhere else.
pub(crate) struct Key {
    pub(crate) name: &'static str,
    pub(crate) env: &'static [&'static str],
    pub(crate) flag: &'static str,
    default: Option<&'static str>,
    range: Option<(u32, u32)>,
}

pub(crate) const QUEUE_URL: Key = Key {
    name: "queue_url",
    env: &["SQS_QUEUE_URL"],
    flag: "--queue-url",
    default: Some(DEFAULT_QUEUE_URL),
    range: None,
};
pub(crate) const ENDPOINT_URL: Key = Key {
    name: "endpoint_url",
    env: &["ENDPOINT_URL"],
    flag: "--endpoint-url",
    default: None,
    range: None,
};
pub(crate) const REGION: Key = Key {
    name: "region",
    env: &["AWS_REGION", "AWS_DEFAULT_REGION"],
    flag: "--region",
    default: None,
    range: None,
};
pub(crate) const MAX_WORKERS: Key = Key {
    name: "max_workers",
    env: &["MAX_WORKERS"],
    flag: "--workers",
    default: Some("5"),
    range: Some((1, 10_000)),
};
pub(crate) const VISIBILITY_TIMEOUT: Key = Key {
    name: "visibility_timeout",
    env: &["VISIBILITY_TIMEOUT"],
    flag: "--visibility-timeout",
    default: Some("30"),
    range: Some((0, 43_200)),
};
pub(crate) const WAIT_TIME_SECONDS: Key = Key {
    name: "wait_time_seconds",
    env: &["WAIT_TIME_SECONDS"],
    flag: "--wait-time",
    default: Some("20"),
    range: Some((0, 20)),
};
pub(crate) const MAX_MESSAGES: Key = Key {
    name: "max_messages",
    env: &["MAX_MESSAGES"],
    flag: "--max-messages",
    default: Some("10"),
    range: Some((1, 10)),
};

const KEYS: [&Key; 7] = [
    &QUEUE_URL,
    &ENDPOINT_URL,
    &REGION,
    &MAX_WORKERS,
    &VISIBILITY_TIMEOUT,
    &WAIT_TIME_SECONDS,
    &MAX_MESSAGES,
];

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
        Some(path) => Some(read_file(path)?),
        None => {
            let path = PathBuf::from(DEFAULT_CONFIG_FILE);
            path.exists().then(|| read_file(&path)).transpose()?
        }
    };

    let mut builder = Config::builder();
    for key in KEYS {
        if let Some(default) = key.default {
            builder = builder.set_default(key.name, default).expect("plain key");
        }
    }
    if let Some((_, file_config)) = &file {
        builder = builder.add_source(file_config.clone());
    }
    let env = |key: &Key| {
        key.env
            .iter()
            .find_map(|name| Some((*name, env(name).filter(|v| !v.is_empty())?)))
    };
    for key in KEYS {
        if let Some((_, value)) = env(key) {
            builder = builder.set_override(key.name, value).expect("plain key");
        }
    }
    for (key, value) in flags {
        builder = builder
            .set_override(key.name, value.as_str())
            .expect("plain key");
    }
    let merged = builder
        .build()
        .map_err(|e| UserError::new(e.to_string(), None))?;

    // Where a value came from, to name it in an error.
    let origin = |key: &Key| -> String {
        if let Some((_, value)) = flags.iter().rev().find(|(k, _)| k.name == key.name) {
            format!("{} {value}", key.flag)
        } else if let Some((name, value)) = env(key) {
            format!("{name}={value}")
        } else if let Some((path, _)) = file
            .as_ref()
            .filter(|(_, f)| f.get_string(key.name).is_ok())
        {
            format!("`{}` in {}", key.name, path.display())
        } else {
            format!("the default {}", key.name)
        }
    };
    let text = |key: &Key| -> Result<Option<String>, UserError> {
        let value = match merged.get::<config::Value>(key.name) {
            Ok(value) => value,
            Err(config::ConfigError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(UserError::new(format!("{}: {e}", origin(key)), None)),
        };
        match value.kind {
            config::ValueKind::Nil => Ok(None),
            config::ValueKind::String(s) => Ok(Some(s)),
            config::ValueKind::I64(n) => Ok(Some(n.to_string())),
            config::ValueKind::U64(n) => Ok(Some(n.to_string())),
            config::ValueKind::I128(n) => Ok(Some(n.to_string())),
            config::ValueKind::U128(n) => Ok(Some(n.to_string())),
            config::ValueKind::Float(n) => Ok(Some(n.to_string())),
            config::ValueKind::Boolean(b) => Ok(Some(b.to_string())),
            config::ValueKind::Table(_) | config::ValueKind::Array(_) => Err(UserError::new(
                format!(
                    "{} must be a single value, not a table or list",
                    origin(key)
                ),
                Some(format!("write it as `{} = ...`", key.name)),
            )),
        }
    };
    let number = |key: &Key| -> Result<u32, UserError> {
        let (low, high) = key.range.expect("numeric settings have a range");
        let value = text(key)?.expect("numeric settings have a default");
        match value.trim().parse::<u32>() {
            Ok(n) if (low..=high).contains(&n) => Ok(n),
            _ => Err(UserError::new(
                format!(
                    "{} is out of range: {} must be a whole number from {low} to {high}",
                    origin(key),
                    key.name
                ),
                Some(format!(
                    "set {} (or {} in {DEFAULT_CONFIG_FILE}) to a value from {low} to {high}, or leave it unset for the default {}",
                    key.env[0],
                    key.name,
                    key.default.unwrap_or("-")
                )),
            )),
        }
    };

    let queue_url = text(&QUEUE_URL)?.expect("queue_url has a default");
    QueueUrl::parse(&queue_url).map_err(|e| {
        UserError::new(
            format!("{}: {e}", origin(&QUEUE_URL)),
            crate::error::sqs_hint(&e),
        )
    })?;
    Ok(Settings {
        queue_url,
        endpoint_url: text(&ENDPOINT_URL)?,
        region: text(&REGION)?,
        max_workers: number(&MAX_WORKERS)?,
        visibility_timeout: number(&VISIBILITY_TIMEOUT)?,
        wait_time_seconds: number(&WAIT_TIME_SECONDS)?,
        max_messages: number(&MAX_MESSAGES)?,
    })
}

/// Reads and parses a settings file, refusing keys fifo does not know (a
/// typo would otherwise be ignored silently).
fn read_file(path: &Path) -> Result<(PathBuf, Config), UserError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UserError::new(
            format!("cannot read config file {}: {e}", path.display()),
            Some("check the path given to --config".to_owned()),
        )
    })?;
    let config = Config::builder()
        .add_source(File::from_str(&text, FileFormat::Toml))
        .build()
        .map_err(|e| {
            UserError::new(
                format!("malformed config file {}: {e}", path.display()),
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
            }
        );
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
}
