//! Reading the layers, low to high: defaults < `fifo.toml` (or `--config
//! FILE`) < environment < flags. Each value is checked against its row of
//! the table, whatever layer it came from, and an error names that layer;
//! nothing falls back to a default silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config::{Config, File, FileFormat, Source};
use fifo_sqs_client::QueueUrl;

use super::error::{SettingsError, queue_url_hint};
use super::keys::{DEFAULT_CONFIG_FILE, KEYS, Key, Kind, Origin, Settings};

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
) -> Result<Settings, SettingsError> {
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

/// The layers above the defaults, highest first: flags, environment, file.
struct Layers<'a, E> {
    flags: &'a Flags,
    env: &'a E,
    file: Option<&'a (PathBuf, Config)>,
}

/// `MAX_WORKERS=0 is out of range: max_workers must be …`, with where to
/// put a good value as the hint.
fn refused(origin: &Origin, key: &Key, problem: &str, wanted: &str) -> SettingsError {
    SettingsError::new(
        format!(
            "{} {problem}: {} must be {wanted}",
            origin.describe(key),
            key.name
        ),
        Some(origin.fix(key, wanted)),
    )
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
    fn raw(&self, key: &Key) -> Result<Option<Given<config::Value>>, SettingsError> {
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
                    return Err(SettingsError::new(
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
    fn text(&self, key: &Key) -> Result<Option<Given<String>>, SettingsError> {
        let Some(Given { value, origin }) = self.raw(key)? else {
            return Ok(None);
        };
        let text = match value.kind {
            config::ValueKind::String(text) => text,
            config::ValueKind::Nil => return Ok(None),
            _ => {
                return Err(SettingsError::new(
                    format!(
                        "{} must be text in quotes, not {value}",
                        origin.describe(key)
                    ),
                    Some(origin.fix(key, "a quoted string")),
                ));
            }
        };
        if text.trim().is_empty() {
            return Err(SettingsError::new(
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
    fn checked(&self, key: &Key) -> Result<Option<Given<config::Value>>, SettingsError> {
        let given = match key.kind {
            Kind::Text => self.text(key)?.map(|given| given.map(Into::into)),
            Kind::QueueUrl => self.text_that(key, |given| {
                QueueUrl::parse(&given.value).map(drop).map_err(|e| {
                    SettingsError::new(
                        format!("{}: {e}", given.origin.describe(key)),
                        queue_url_hint(&e),
                    )
                })
            })?,
            Kind::HttpUrl => self.text_that(key, |given| {
                fifo_builtin_handlers::http_url(&given.value)
                    .map(drop)
                    .map_err(|e| {
                        SettingsError::new(
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
                        SettingsError::new(
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
            Kind::Seconds { high } => self
                .fraction(
                    key,
                    &format!("a number of seconds above 0 and at most {high}"),
                    |n| n > 0.0 && n <= high,
                )?
                .map(|given| given.map(Into::into)),
            Kind::Rate { low, high } => self
                .fraction(
                    key,
                    &format!("a number of handler starts per second from {low} to {high}"),
                    |n| (low..=high).contains(&n),
                )?
                .map(|given| given.map(Into::into)),
            Kind::Choice(words) => self.text_that(key, |given| {
                if words.contains(&given.value.as_str()) {
                    Ok(())
                } else {
                    Err(SettingsError::new(
                        format!(
                            "{} is not one of {}",
                            given.origin.describe(key),
                            words.join(", ")
                        ),
                        Some(given.origin.fix(key, &words.join(" or "))),
                    ))
                }
            })?,
        };
        Ok(given)
    }

    /// A text setting's value, once `check` accepted it (it says what is
    /// wrong otherwise).
    fn text_that(
        &self,
        key: &Key,
        check: impl FnOnce(&Given<String>) -> Result<(), SettingsError>,
    ) -> Result<Option<Given<config::Value>>, SettingsError> {
        let Some(given) = self.text(key)? else {
            return Ok(None);
        };
        check(&given)?;
        Ok(Some(given.map(Into::into)))
    }

    /// A numeric setting's value as written, or the error that it is not a
    /// number at all: text in quotes in the file, empty, or another kind of
    /// TOML value. `wanted` says what it must be.
    fn numeral(&self, key: &Key, wanted: &str) -> Result<Option<Given<Numeral>>, SettingsError> {
        let Some(Given { value, origin }) = self.raw(key)? else {
            return Ok(None);
        };
        let error = |problem: String| refused(&origin, key, &problem, wanted);
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
    fn number(&self, key: &Key, low: u64, high: u64) -> Result<Option<Given<u64>>, SettingsError> {
        let wanted = format!("a whole number from {low} to {high}");
        let Some(Given { value, origin }) = self.numeral(key, &wanted)? else {
            return Ok(None);
        };
        let error = |problem: &str| refused(&origin, key, problem, &wanted);
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

    /// A number, whole or not, that `within` accepts (`wanted` says which):
    /// a number in the file, digits in a flag or variable.
    fn fraction(
        &self,
        key: &Key,
        wanted: &str,
        within: impl Fn(f64) -> bool,
    ) -> Result<Option<Given<f64>>, SettingsError> {
        let Some(Given { value, origin }) = self.numeral(key, wanted)? else {
            return Ok(None);
        };
        let error = |problem: &str| refused(&origin, key, problem, wanted);
        let number = match value {
            Numeral::Text(text) => text.parse::<f64>().map_err(|_| error("is not a number"))?,
            Numeral::Whole(n) => n as f64,
            Numeral::Fraction(n) => n,
        };
        if number.is_finite() && within(number) {
            Ok(Some(Given {
                value: number,
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
pub(super) fn read_file(path: &Path, given: bool) -> Result<(PathBuf, Config), SettingsError> {
    let fix = if given {
        "check the path given to --config".to_owned()
    } else {
        format!(
            "fix or remove {}: it is read because it is in the working directory",
            path.display()
        )
    };
    let cannot = |why: String| {
        SettingsError::new(
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
            SettingsError::new(
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
        return Err(SettingsError::new(
            format!("unknown key `{unknown}` in config file {}", path.display()),
            Some(format!("known keys: {}", known.join(", "))),
        ));
    }
    Ok((path.to_owned(), config))
}
