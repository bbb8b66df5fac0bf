//! `fifo run`'s plan: the settings and the run's own flags resolved, before
//! any I/O, into the engine's `PoolConfig` and the handler to run, with every
//! check across settings made here (a visibility timeout the engine can keep,
//! the workers `--max-in-flight` leaves idle, HTTP options only with the
//! HTTP handler, one handler at a time).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use fifo_builtin_handlers::HttpOptions;
use fifo_sqs_client::QueueUrl;
use fifo_worker_pool::{ConfigError, Exhausted, PoolConfig, limits};

use super::error::SettingsError;
use super::keys::{
    ADMIN_TOKEN_FILE, BATCH, BATCH_FORMAT, HTTP_CONTENT_TYPE, HTTP_FORMAT, HTTP_READY,
    HTTP_REJECT_STATUS, Key, MAX_IN_FLIGHT, MAX_WORKERS, Origin, Settings, VISIBILITY_TIMEOUT,
};

/// What `fifo run` was asked on its command line beyond the settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunRequest<'a> {
    /// `--until-empty`.
    pub(crate) until_empty: bool,
    /// `--limit`.
    pub(crate) limit: Option<u64>,
    /// `--work-ms`, for the log handler.
    pub(crate) work_ms: u64,
    /// `--quiet`, for the log handler.
    pub(crate) quiet: bool,
    /// The program and its arguments after `--`, if any.
    pub(crate) command: &'a [OsString],
}

/// Everything `fifo run` does, decided: the queue opened and the plan run
/// is all that is left.
#[derive(Debug)]
pub(crate) struct RunPlan {
    pub(crate) queue_url: String,
    pub(crate) pool: PoolConfig,
    pub(crate) handler: HandlerPlan,
    pub(crate) metrics_addr: Option<String>,
    /// Where the admin token is read from, before the queue is opened.
    pub(crate) admin_token_file: Option<PathBuf>,
}

/// The handler chosen, with its options.
#[derive(Debug)]
pub(crate) enum HandlerPlan {
    /// Each message is logged, after `work` of simulated work.
    Log { work: Duration, quiet: bool },
    /// `program` runs per message (or per batch) with `args`; given
    /// Lambda's SQS event when `lambda`.
    Exec {
        program: PathBuf,
        args: Vec<OsString>,
        lambda: bool,
    },
    /// Each message is POSTed to `url`, once `ready` (if given) answers;
    /// each message or batch as Lambda's SQS event when `lambda`.
    Http {
        url: String,
        ready: Option<String>,
        options: HttpOptions,
        lambda: bool,
    },
}

/// The handler timeout of the HTTP handler unless one is set: a request
/// never answered must not hold its group for ever.
const HTTP_HANDLER_TIMEOUT: f64 = 30.0;

/// How long a program gets between SIGTERM and SIGKILL when fifo ends it
/// (at most a twelfth of the visibility timeout, see `PoolConfig::kill_grace`).
const KILL_GRACE: Duration = Duration::from_secs(5);

impl RunPlan {
    /// The plan for `request` on `settings`, or the first setting or flag
    /// that does not fit with the others. Warns of settings that work but
    /// waste something.
    pub(crate) fn new(
        settings: &Settings,
        request: RunRequest<'_>,
    ) -> Result<RunPlan, SettingsError> {
        let pool = settings.pool_config(request.until_empty, request.limit)?;
        settings.check_http_only()?;
        settings.check_batch_format(request.command)?;
        settings.check_admin()?;
        let handler = match (&settings.http_url, request.command) {
            (None, []) => HandlerPlan::Log {
                work: Duration::from_millis(request.work_ms),
                quiet: request.quiet,
            },
            (None, [program, args @ ..]) => HandlerPlan::Exec {
                program: PathBuf::from(program),
                args: args.to_vec(),
                lambda: settings.batch_format == "lambda",
            },
            (Some(url), command) => {
                check_http_handler(settings, url, request, command)?;
                HandlerPlan::Http {
                    lambda: settings.http_format == "lambda",
                    url: url.clone(),
                    ready: settings.http_ready.clone(),
                    options: HttpOptions {
                        queue_name: QueueUrl::parse(&settings.queue_url)
                            .map(|parsed| parsed.name)
                            .unwrap_or_default(),
                        content_type: settings.http_content_type.clone(),
                        reject_status: settings.http_reject_status,
                        connections: pool.workers,
                    },
                }
            }
        };
        Ok(RunPlan {
            queue_url: settings.queue_url.clone(),
            pool,
            handler,
            metrics_addr: settings.metrics_addr.clone(),
            admin_token_file: settings.admin_token_file.as_ref().map(PathBuf::from),
        })
    }
}

/// The HTTP handler is chosen: flags of the log handler, a batch and a
/// command would do nothing or contradict it.
fn check_http_handler(
    settings: &Settings,
    url: &str,
    request: RunRequest<'_>,
    command: &[OsString],
) -> Result<(), SettingsError> {
    // clap refuses them beside a command; the URL may come from elsewhere.
    if request.work_ms > 0 || request.quiet {
        let flag = if request.work_ms > 0 {
            "--work-ms"
        } else {
            "--quiet"
        };
        return Err(SettingsError::new(
            format!(
                "{flag} is for the log handler, and the HTTP handler is chosen (--http or FIFO_HTTP_URL)"
            ),
            Some(format!(
                "drop {flag}: the HTTP handler does the work, and says nothing per message"
            )),
        ));
    }
    if settings.batch > 1 && settings.http_format != "lambda" {
        let batch = settings.origin(&BATCH).describe(&BATCH);
        return Err(SettingsError::new(
            format!("{batch} does not apply to the HTTP handler: it sends one request per message"),
            Some(
                "drop it or set it to 1; or give --http-format lambda (FIFO_HTTP_FORMAT), whose events hold batches"
                    .to_owned(),
            ),
        ));
    }
    if !command.is_empty() {
        return Err(SettingsError::new(
            format!("both a command to run and an HTTP URL ({url}) are given"),
            Some(
                "give one handler: a command after --, or --http (FIFO_HTTP_URL), not both"
                    .to_owned(),
            ),
        ));
    }
    Ok(())
}

impl Settings {
    /// Where `key` came from.
    fn origin(&self, key: &Key) -> &Origin {
        static DEFAULT: Origin = Origin::Default;
        self.origins.get(key.name).unwrap_or(&DEFAULT)
    }

    /// Settings of the HTTP handler given without `--http`, which would do
    /// nothing: an error naming the first.
    pub(super) fn check_http_only(&self) -> Result<(), SettingsError> {
        if self.http_url.is_some() {
            return Ok(());
        }
        let given = [
            (&HTTP_READY, self.http_ready.clone().unwrap_or_default()),
            (&HTTP_CONTENT_TYPE, self.http_content_type.clone()),
            (&HTTP_FORMAT, self.http_format.clone()),
            (&HTTP_REJECT_STATUS, self.http_reject_status.to_string()),
        ];
        for (key, value) in given {
            // Only values given are listed: a default is no choice, even
            // given (a shared environment or file may pin it).
            if Some(value.as_str()) == key.default {
                continue;
            }
            if let Some(origin) = self.origins.get(key.name) {
                let env = key.env.first().copied().unwrap_or_default();
                return Err(SettingsError::new(
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

    /// `--batch-format` is how a command gets its messages: without one,
    /// it would do nothing.
    pub(super) fn check_batch_format(&self, command: &[OsString]) -> Result<(), SettingsError> {
        // The default, even given, changes nothing: a shared environment
        // or file may pin it.
        let Some(origin) = self.origins.get(BATCH_FORMAT.name) else {
            return Ok(());
        };
        if Some(self.batch_format.as_str()) == BATCH_FORMAT.default {
            return Ok(());
        }
        let given = origin.describe(&BATCH_FORMAT);
        let (error, hint) = if self.http_url.is_some() {
            (
                format!("{given} is for a command run per message, and the HTTP handler is chosen"),
                "give --http-format lambda (FIFO_HTTP_FORMAT) for the HTTP handler instead",
            )
        } else if command.is_empty() {
            (
                format!("{given} is given without a command to run"),
                "give the command after --, or drop --batch-format (FIFO_BATCH_FORMAT)",
            )
        } else {
            return Ok(());
        };
        Err(SettingsError::new(error, Some(hint.to_owned())))
    }

    /// The admin token is for the routes served on `--metrics-addr`:
    /// without it, it would do nothing.
    pub(super) fn check_admin(&self) -> Result<(), SettingsError> {
        match (&self.admin_token_file, &self.metrics_addr) {
            (Some(_), None) => Err(SettingsError::new(
                format!(
                    "{} is given without --metrics-addr, where the admin routes are served",
                    self.origin(&ADMIN_TOKEN_FILE).describe(&ADMIN_TOKEN_FILE)
                ),
                Some(
                    "give --metrics-addr ADDR (FIFO_METRICS_ADDR) too, such as 127.0.0.1:9464"
                        .to_owned(),
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The engine's configuration for `fifo run`, held to the engine's own
    /// check: the table keeps every value within the engine's ranges but the
    /// visibility timeout, which a queue may default to 0.
    pub(super) fn pool_config(
        &self,
        until_empty: bool,
        limit: Option<u64>,
    ) -> Result<PoolConfig, SettingsError> {
        let workers = self.max_workers as usize;
        let max_in_flight = self
            .max_in_flight
            .map_or((workers * 20).max(1000), |n| n as usize)
            .max(self.max_messages as usize);
        let config = PoolConfig {
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
            exhausted: match self.exhausted.as_str() {
                "block" => Exhausted::Block,
                _ => Exhausted::DeadLetter,
            },
            blocked_retry_max: Duration::from_secs(self.blocked_retry_max),
            max_rate: self.max_rate,
            group_rate: self.group_rate,
        };
        match config.check() {
            Ok(()) => {}
            Err(ConfigError::VisibilityTimeout) => return Err(self.visibility_timeout_error()),
            Err(other) => {
                return Err(SettingsError::new(
                    format!("fifo run cannot run on these settings: {other}"),
                    None,
                ));
            }
        }
        if let Some(warning) = self.idle_workers(workers, max_in_flight) {
            tracing::warn!("{warning}");
        }
        Ok(config)
    }

    /// The engine refused the visibility timeout: which one, and the range
    /// to give instead.
    fn visibility_timeout_error(&self) -> SettingsError {
        let origin = self.origin(&VISIBILITY_TIMEOUT);
        let (low, high) = (
            limits::VISIBILITY_TIMEOUT.start(),
            limits::VISIBILITY_TIMEOUT.end(),
        );
        SettingsError::new(
            format!(
                "{}: fifo run needs a visibility timeout of at least {low} s",
                origin.describe(&VISIBILITY_TIMEOUT)
            ),
            Some(origin.fix(
                &VISIBILITY_TIMEOUT,
                &format!("a whole number from {low} to {high}"),
            )),
        )
    }

    /// Workers beyond `max_in_flight` never work (each runs a held
    /// message): the warning that says so, if any.
    pub(super) fn idle_workers(&self, workers: usize, max_in_flight: usize) -> Option<String> {
        (workers > max_in_flight).then(|| {
            format!(
                "{} is more than {}: at most {max_in_flight} messages are held at once, so {} workers never get one; give fewer workers or a higher --max-in-flight",
                self.origin(&MAX_WORKERS).describe(&MAX_WORKERS),
                self.origin(&MAX_IN_FLIGHT).describe(&MAX_IN_FLIGHT),
                workers - max_in_flight
            )
        })
    }
}
