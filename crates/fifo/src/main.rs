//! The `fifo` command: process a FIFO queue (`run`), create queues, send to
//! them and list them, with settings layered from defaults, `fifo.toml`, the
//! environment and flags.
//!
//! Layout: `cli` (what the user typed), `settings` (what the program runs
//! on), one module per subcommand, `signals` (how SIGINT and SIGTERM stop
//! them), `error` (how failures are told), `stderr` (how lines reach
//! stderr, plain or JSON).

mod admin;
mod cli;
mod create_queue;
mod dlq;
mod error;
mod groups;
mod list_queues;
mod man;
mod metrics;
mod run;
mod send;
mod settings;
mod signals;
mod stderr;

use std::process::ExitCode;

use color_eyre::eyre::{Result, WrapErr};

use crate::cli::{Cli, Command, DlqCommand, LogFormat};
use crate::settings::Settings;

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    install_panic_hook();
    // Held until exit, so the last log lines are written.
    let _log_writer = init_logging(cli.global.verbose, cli.global.log_format);
    if cli.global.log_format == LogFormat::Json {
        stderr::use_json_lines();
    }
    // One thread: fifo's work is waiting on SQS and on handlers; handing
    // every event between threads cost more CPU than it saved.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    // A second signal ends the command at once (see `signals`): nothing it
    // still waits for is waited for.
    let ended = runtime.block_on(async {
        tokio::select! {
            biased;
            () = signals::exit_requested() => None,
            result = run(cli) => Some(result),
        }
    });
    let Some(result) = ended else {
        runtime.shutdown_background();
        return ExitCode::from(signals::INTERRUPTED);
    };
    match result {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            error::report(&err);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Completions { shell } = cli.command {
        // Needs no settings and no SQS.
        use std::io::Write;
        std::io::stdout()
            .lock()
            .write_all(&Cli::completions(shell))
            .wrap_err("writing the completion script")?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Man(args) = &cli.command {
        // Needs no settings and no SQS either.
        return man::run(args);
    }
    let settings = settings::load(cli.global.config.as_deref(), &cli.setting_flags(), |name| {
        std::env::var(name).ok()
    })?;
    let progress = !cli.global.no_progress;
    if let Command::Groups(args) = &cli.command {
        // Talks to a running fifo run, not to SQS.
        return groups::run(&settings, args).await;
    }
    if let Command::Run(args) = &cli.command {
        // Resolved before anything is connected: a mistake touches no queue.
        let plan = run::plan(&settings, args)?;
        return run::run(connect(&settings).await?, plan, progress).await;
    }
    let client = connect(&settings).await?;
    match &cli.command {
        Command::CreateQueue(args) => create_queue::run(&client, &settings, args).await,
        Command::Send(args) => send::run(&client, &settings, args, progress).await,
        Command::ListQueues(args) => list_queues::run(&client, args).await,
        Command::Dlq(DlqCommand::Peek(args)) => dlq::peek(&client, &settings, args).await,
        Command::Dlq(DlqCommand::Redrive(args)) => {
            dlq::redrive(&client, &settings, args, progress).await
        }
        Command::Purge(args) => dlq::purge(&client, args).await,
        Command::Completions { .. } | Command::Man(_) | Command::Run(_) | Command::Groups(_) => {
            unreachable!("answered above")
        }
    }
}

/// A client for the settings' queue, following the endpoint rule.
async fn connect(settings: &Settings) -> Result<fifo_sqs_client::Client> {
    fifo_sqs_client::connect(&fifo_sqs_client::ConnectOptions {
        queue_url: &settings.queue_url,
        endpoint_url: settings.endpoint_url.as_deref(),
        region: settings.region.as_deref(),
    })
    .await
    .wrap_err("connecting to SQS")
}

/// color-eyre tells a panic: its message, where, and a backtrace under
/// `RUST_BACKTRACE=1`. Its report hook is left out: it would resolve a
/// backtrace for every report made (seconds each in a debug build when
/// `RUST_BACKTRACE` is set) for a `{:?}` form fifo never prints, and the
/// sections it keeps cannot be read back. A failure ends with
/// `error::report`'s lines instead: one `error:` line and a `hint:`, or one
/// JSON object, which scripts read. Colours only on a terminal, as in the
/// log.
fn install_panic_hook() {
    use color_eyre::config::{HookBuilder, Theme};
    let colors = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let theme = if colors { Theme::dark() } else { Theme::new() };
    let (panic_hook, _report_hook) = HookBuilder::default().theme(theme).into_hooks();
    panic_hook.install();
}

/// Log lines go to stderr through a thread of their own, dropped rather
/// than waited for when stderr does not keep up: a stalled or closed stderr
/// never holds up the engine (whose heartbeats keep held messages ours).
fn init_logging(verbose: u8, format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    // aws-config warns of every credential source it tried and found
    // empty; the error that follows says it once, with the fix.
    let default = match verbose {
        0 => "warn,aws_config=error",
        1 => "info",
        _ => "debug",
    }
    .to_owned();
    // One event per step of each message's life (see `fifo_worker_pool`'s
    // `message_event`): what JSON logs are for, whatever RUST_LOG says of
    // other targets, unless it names this one.
    const MESSAGE_EVENTS: &str = "fifo::message=debug";
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let mut directives = from_env.clone().unwrap_or(default);
    if format == LogFormat::Json && !directives.contains("fifo::message") {
        directives += &format!(",{MESSAGE_EVENTS}");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("fifo-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder
            .with_ansi(
                std::env::var_os("NO_COLOR").is_none()
                    && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            )
            .with_target(false)
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    guard
}

/// A closed stdout (`fifo list-queues | head -1`) is not an error.
fn is_broken_pipe(err: &color_eyre::Report) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `1 message`, `2 messages`: a count with its noun.
pub(crate) fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_count_of_one_is_singular() {
        assert_eq!(super::counted(1, "message"), "1 message");
        assert_eq!(super::counted(0, "message"), "0 messages");
        assert_eq!(super::counted(6, "time"), "6 times");
    }
}
