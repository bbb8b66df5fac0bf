//! `fifo run`: the plan resolved from the settings, its handler built, then
//! the engine on the SQS queue, with a live status line and signals mapped
//! to a graceful shutdown.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use color_eyre::eyre::{Result, WrapErr};
use fifo_builtin_handlers::{EventSource, ExecHandler, HttpHandler, LogHandler, Output};
use fifo_sqs_client::Client;
use fifo_worker_pool::{Counters, SqsQueue, Stats};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::admin::AdminToken;
use crate::cli::RunArgs;
use crate::error::UserError;
use crate::settings::{HandlerPlan, RunPlan, RunRequest, Settings};
use crate::signals::Signals;
use crate::stderr::stderr_line;

/// How often the status line is redrawn, and how often it is logged instead
/// when stderr is not a terminal.
const REDRAW: Duration = Duration::from_millis(250);
const LOG_EVERY: Duration = Duration::from_secs(10);

/// `fifo run`'s plan, from the settings and the run's own flags: resolved
/// before anything is connected, so that a mistake touches no queue.
pub(crate) fn plan(settings: &Settings, args: &RunArgs) -> Result<RunPlan> {
    let request = RunRequest {
        until_empty: args.until_empty,
        limit: args.limit,
        work_ms: args.work_ms,
        quiet: args.quiet,
        command: &args.command,
    };
    Ok(RunPlan::new(settings, request)?)
}

/// Builds the plan's handler, so that a mistake in what was given is told
/// before the queue is opened; then opens the queue, runs the engine until
/// it stops, and prints the summary.
pub(crate) async fn run(client: Client, plan: RunPlan, progress: bool) -> Result<ExitCode> {
    let config = &plan.pool;
    let per_worker = match plan.handler {
        HandlerPlan::Log { .. } => 0,
        HandlerPlan::Exec { .. } => EXEC_DESCRIPTORS,
        HandlerPlan::Http { .. } => HTTP_DESCRIPTORS,
    };
    raise_open_file_limit(config.workers, per_worker)?;

    let shutdown = CancellationToken::new();
    // Handler output goes through writer threads: a slow or stalled reader
    // makes handlers wait, never the engine (whose heartbeats keep every
    // held message ours), and a closed stdout (`fifo run | head`) fails
    // nothing: it ends the run gracefully.
    let output = if crate::stderr::json_lines() {
        Output::stdio().with_json_stderr()
    } else {
        Output::stdio()
    };
    let handler = match &plan.handler {
        HandlerPlan::Log { work, quiet } => {
            Built::Log(LogHandler::new(*work, *quiet, output.clone()))
        }
        HandlerPlan::Exec { program, args, .. } => Built::Exec(
            ExecHandler::new(program, args.clone(), config.kill_grace(), output.clone()).map_err(
                |e| {
                    UserError::new(
                        e.to_string(),
                        Some(
                            "give the path of an executable file, or a name found in PATH"
                                .to_owned(),
                        ),
                    )
                },
            )?,
        ),
        HandlerPlan::Http {
            url,
            ready,
            options,
            ..
        } => Built::Http(
            HttpHandler::new(url, options.clone()).map_err(|e| {
                UserError::new(
                    e.to_string(),
                    Some("check --http, --http-content-type and --http-reject-status".to_owned()),
                )
            })?,
            ready.clone(),
        ),
    };
    let programs = match &handler {
        Built::Exec(programs) => Some(programs.clone()),
        Built::Log(_) | Built::Http(..) => None,
    };
    let admin_token = match &plan.admin_token_file {
        Some(path) => Some(AdminToken::read(path)?),
        None => None,
    };
    let queue_url = &plan.queue_url;
    let queue = SqsQueue::open(client, queue_url).await?;
    let handler = match plan.handler {
        HandlerPlan::Exec { lambda: true, .. } | HandlerPlan::Http { lambda: true, .. } => {
            handler.lambda_events(event_source(queue.arn()))
        }
        _ => handler,
    };
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    tokio::spawn(forward_signals(
        shutdown.clone(),
        programs,
        counters.clone(),
        started,
    ));
    tokio::spawn(stop_when_closed(output.clone(), shutdown.clone()));
    let (steering, inbox) = fifo_worker_pool::steering();
    if let Some(addr) = &plan.metrics_addr {
        let actions = if admin_token.is_some() { "on" } else { "off" };
        let admin = crate::admin::routes(steering, admin_token);
        let bound = crate::metrics::serve(addr, counters.clone(), admin).await?;
        tracing::info!(
            "serving metrics on http://{bound}/metrics, health on /healthz and /readyz, groups on /groups (admin actions {actions})"
        );
    }
    let status = show_status(counters.clone(), progress);
    tracing::info!("processing {queue_url} with {} workers", config.workers);
    let until_empty_or_limit = config.until_empty || config.limit.is_some();
    let shutdown_timeout = config.shutdown_timeout;
    let result = match handler {
        Built::Log(handler) => {
            fifo_worker_pool::run_steered(queue, handler, config, shutdown.clone(), counters, inbox)
                .await
        }
        Built::Http(handler, ready) => {
            if let Some(ready) = ready {
                let ready =
                    fifo_builtin_handlers::http_url(&ready).expect("checked with the settings");
                let waited = handler.wait_until_ready(&ready, |shown, answer| {
                    tracing::warn!(
                        "waiting for {shown} to answer 2xx before receiving anything ({answer})"
                    );
                });
                tokio::select! {
                    () = waited => {}
                    () = shutdown.cancelled() => {}
                }
            }
            fifo_worker_pool::run_steered(queue, handler, config, shutdown.clone(), counters, inbox)
                .await
        }
        Built::Exec(handler) => {
            let programs = handler.clone();
            let result = fifo_worker_pool::run_steered(
                queue,
                handler,
                config,
                shutdown.clone(),
                counters,
                inbox,
            )
            .await;
            // Programs cancelled at the end (the shutdown deadline) get their
            // SIGKILL before we exit.
            programs.wait_for_kills().await;
            result
        }
    };
    status.finish();
    // Handler output still buffered is written before we exit; after Ctrl-C
    // or SIGTERM, only while the shutdown timeout allows (a stdout nobody
    // reads would otherwise keep fifo alive for ever).
    if shutdown.is_cancelled() {
        if tokio::time::timeout(shutdown_timeout, output.finish())
            .await
            .is_err()
        {
            tracing::warn!("stdout is not being read: handler output still buffered is dropped");
        }
    } else {
        output.finish().await;
    }
    let stats = result.wrap_err_with(|| format!("processing {queue_url}"))?;
    stderr_line(format_args!("{}", summary(&stats, started.elapsed())));
    let failed = stats.failed > 0 || stats.rejected > 0 || stats.dead_lettered > 0;
    Ok(if until_empty_or_limit && failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The plan's handler, built (its program found, its HTTP client made)
/// before the queue is opened; the HTTP handler with the URL to wait for.
enum Built {
    Log(LogHandler),
    Exec(ExecHandler),
    Http(HttpHandler, Option<String>),
}

impl Built {
    /// The handler handing messages over as Lambda's SQS event from
    /// `source` (the log handler has no such form).
    fn lambda_events(self, source: EventSource) -> Built {
        match self {
            Built::Exec(handler) => Built::Exec(handler.lambda_events(source)),
            Built::Http(handler, ready) => Built::Http(handler.lambda_events(source), ready),
            Built::Log(handler) => Built::Log(handler),
        }
    }
}

/// Lambda's event source for the queue `arn` (`arn:aws:sqs:REGION:…`):
/// the region is the queue's, as Lambda's `awsRegion` is.
fn event_source(arn: &str) -> EventSource {
    EventSource {
        queue_arn: arn.to_owned(),
        region: arn.split(':').nth(3).unwrap_or_default().to_owned(),
    }
}

/// Open files a running exec handler costs fifo (its three pipes, two of
/// them held twice while it ends, and a little more; measured about 4.7),
/// one HTTP handler (a kept-alive connection, and one being opened), and
/// fifo itself (the runtime, SQS connections, output threads, logs).
const EXEC_DESCRIPTORS: u64 = 5;
const HTTP_DESCRIPTORS: u64 = 2;
const OWN_DESCRIPTORS: u64 = 64;

/// Raises the soft limit on open files to the hard one: the soft default
/// (1,024 on most systems) covers about 200 exec workers. Warns when even
/// the hard limit cannot cover `workers` handlers of `per_worker` files
/// each: handlers that cannot start then wait and start again later (see
/// `CannotStart`), which slows the run but loses nothing. Refuses a limit
/// too low for fifo and one handler: none might ever start. Handler
/// programs inherit the raised limit.
fn raise_open_file_limit(workers: usize, per_worker: u64) -> Result<(), UserError> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum)
        && soft < hard
    {
        let raised = rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::debug!("raised the open-file limit from {soft} to {hard}");
                limit = raised;
            }
            Err(e) => {
                tracing::debug!("cannot raise the open-file limit from {soft} to {hard}: {e}")
            }
        }
    }
    let needed = OWN_DESCRIPTORS + per_worker * workers as u64;
    let Some(soft) = limit.current else {
        return Ok(());
    };
    if per_worker > 0 && soft < OWN_DESCRIPTORS + per_worker {
        return Err(UserError::new(
            format!(
                "the open-file limit is {soft}: too low for fifo and even one handler (about {})",
                OWN_DESCRIPTORS + per_worker
            ),
            Some(format!(
                "raise it to at least {needed} for {workers} workers (ulimit -n, LimitNOFILE= in a systemd unit, --ulimit nofile= with docker)"
            )),
        ));
    }
    if soft < needed {
        tracing::warn!(
            "the open-file limit is {soft}, and {workers} workers need about {needed}: handlers that cannot start wait and start again later, slowing the run; raise the hard limit (LimitNOFILE= in a systemd unit, --ulimit nofile= with docker, ulimit -Hn as root) or give fewer --workers"
        );
    }
    Ok(())
}

/// A closed stdout begins a graceful shutdown.
async fn stop_when_closed(output: Output, shutdown: CancellationToken) {
    output.closed().await;
    if !shutdown.is_cancelled() {
        tracing::warn!(
            "stdout was closed: finishing the running handlers, handing the rest back and stopping"
        );
        shutdown.cancel();
    }
}

/// The first SIGINT or SIGTERM begins a graceful shutdown; a second one
/// (other than the first one repeated, see [`Signals::next_request`])
/// exits at once (messages then come back after their visibility timeout),
/// killing the programs still running first: none may outlive fifo and run
/// on while SQS hands its message to someone else. Either way the summary
/// is printed; on the immediate path it counts what was abandoned.
async fn forward_signals(
    shutdown: CancellationToken,
    programs: Option<ExecHandler>,
    counters: Arc<Counters>,
    started: Instant,
) {
    let Ok(mut signals) = Signals::listen() else {
        tracing::warn!("cannot listen for signals: Ctrl-C will not shut down gracefully");
        return;
    };
    let first = signals.next().await;
    let first_at = Instant::now();
    tracing::warn!(
        "shutting down on {first}: finishing running handlers, handing the rest back (signal again to exit at once)"
    );
    shutdown.cancel();
    signals.next_request(first, first_at).await;
    let killed = programs.map_or(0, |programs| programs.kill_all());
    let stats = counters.snapshot();
    stderr_line(format_args!("{}", summary(&stats, started.elapsed())));
    stderr_line(format_args!(
        "exiting at once: running programs killed ({killed}); {} held messages abandoned: they come back after their visibility timeout",
        stats.in_flight,
    ));
    crate::signals::exit_at_once();
}

/// The status line's thread: it only reads counters, and drawing to a
/// terminal that does not keep up must never hold up the engine.
struct Status {
    done: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Status {
    fn finish(mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A live status line on a terminal; otherwise a log line every few seconds.
fn show_status(counters: Arc<Counters>, progress: bool) -> Status {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let thread = std::thread::Builder::new()
        .name("fifo-status".to_owned())
        .spawn(move || {
            let terminal = progress && std::io::stderr().is_terminal();
            let bar = if terminal {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg}").expect("valid template"),
                );
                bar
            } else {
                ProgressBar::hidden()
            };
            let started = Instant::now();
            let mut last_log = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(REDRAW);
                let line = status_line(&counters.snapshot(), started.elapsed());
                if terminal {
                    bar.set_message(line);
                    bar.tick();
                } else if progress && last_log.elapsed() >= LOG_EVERY {
                    stderr_line(format_args!("fifo: {line}"));
                    last_log = Instant::now();
                }
            }
            bar.finish_and_clear();
        })
        .ok();
    Status { done, thread }
}

fn status_line(stats: &Stats, elapsed: Duration) -> String {
    format!(
        "processed {}, failed {}, in flight {}, busy groups {}, {:.0} msgs/s",
        stats.succeeded,
        stats.failed,
        stats.in_flight,
        stats.busy_groups,
        stats.succeeded as f64 / elapsed.as_secs_f64().max(0.001)
    )
}

fn summary(stats: &Stats, elapsed: Duration) -> String {
    let mut text = format!(
        "processed {} in {:.2} s ({:.0} msgs/s); failed {}, retried {}, dead-lettered {}, handed back {}",
        crate::counted(stats.succeeded, "message"),
        elapsed.as_secs_f64(),
        stats.succeeded as f64 / elapsed.as_secs_f64().max(0.001),
        stats.failed,
        stats.retried,
        stats.dead_lettered,
        stats.released,
    );
    if stats.rejected > 0 {
        text += &format!("; {} rejected by the handler", stats.rejected);
    }
    if stats.lost > 0 {
        text += &format!(
            "; {} given up when SQS could not keep them ours (they come back after their visibility timeout)",
            stats.lost
        );
    }
    if stats.order_risks > 0 {
        text += &format!(
            "; {} may come back after later messages of their group (order risk: see the log)",
            crate::counted(stats.order_risks, "message")
        );
    }
    if stats.start_failures > 0 {
        text += &format!(
            "; handlers could not start {} (fifo's trouble: no message was charged)",
            crate::counted(stats.start_failures, "time")
        );
    }
    if stats.malformed > 0 {
        text += &format!("; {} malformed messages left alone", stats.malformed);
    }
    text
}
