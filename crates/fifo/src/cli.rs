//! What the user typed, as clap structs. `settings::load` merges these with
//! the file and the environment into the `Settings` the program runs on.

use std::path::PathBuf;

use clap::{Arg, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::settings::{self, Flags};

/// Process Amazon SQS FIFO queues in parallel without breaking per-group order.
///
/// Settings come from, low to high: defaults, fifo.toml (or --config FILE),
/// the environment, and flags. Against LocalStack
/// (`cargo xtask localstack-up`) the defaults just work.
#[derive(Debug, Parser)]
#[command(name = "fifo", version, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
    /// The settings given as flags, read by their long names.
    #[arg(skip)]
    setting_flags: Flags,
}

#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// Settings file in TOML [default: ./fifo.toml if present]
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// The queue's URL
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) queue_url: Option<String>,

    /// SQS endpoint [default: the queue URL's host, or the standard AWS
    /// endpoint when that host is AWS's]
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) endpoint_url: Option<String>,

    /// AWS region [default: from an AWS queue URL, the AWS profile, or
    /// us-east-1 for LocalStack]
    #[arg(long, global = true)]
    pub(crate) region: Option<String>,

    /// Never draw progress bars (they are hidden anyway when stderr is not a terminal)
    #[arg(long, global = true)]
    pub(crate) no_progress: bool,

    /// Log more: -v for info, -vv for debug [env: RUST_LOG]
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    /// Log lines as text, or as JSON objects, one per line, which add an
    /// event per message (received, started, succeeded, failed, retried,
    /// released, dead-lettered, rejected, not-started, blocked, skipped)
    /// with its group, id, sequence
    /// number, attempt, duration and error [env: FIFO_LOG_FORMAT]
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        env = "FIFO_LOG_FORMAT",
        hide_env = true,
        default_value = "text",
        ignore_case = true
    )]
    pub(crate) log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// How the lines of `fifo send --file` are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// JSON lines when the first line starts with `{` or `[`, plain text
    /// otherwise; then every line must agree
    Auto,
    /// Every line is a body, exactly as written
    Text,
    /// Every line is an object {"body": "…", "group": "…", "dedup_id": "…"}
    Jsonl,
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per process, parsed once"
)]
pub(crate) enum Command {
    /// Create a FIFO queue with content-based de-duplication; prints its URL
    CreateQueue(CreateQueueArgs),
    /// Send messages to the queue, keeping each group's order
    ///
    /// Messages are checked against SQS's rules before anything is sent: a bad
    /// --file line is refused with its line number and nothing is sent. From
    /// stdin or a pipe, lines are checked as they are read, and a bad line holds
    /// back the later messages of its group. A message that is not sent (refused,
    /// or its batch's answer lost) holds back the rest of its group, so a group
    /// never reaches the queue with a gap.
    ///
    /// The summary counts what SQS stored, what it dropped as a duplicate (a
    /// repeated body on a queue that de-duplicates by content, or a repeated
    /// de-duplication id, within the 5-minute window), and what was refused,
    /// held back, unknown or not attempted. Exit status 1 when anything was not
    /// sent.
    Send(SendArgs),
    /// List queues with their message counts
    ListQueues(ListQueuesArgs),
    /// Process the queue: groups in parallel, each group strictly in order
    ///
    /// Without a command, each message is logged (the `log` handler). With
    /// `-- CMD ARGS…`, CMD runs once per message (directly, not through a
    /// shell) with the body on stdin and FIFO_MESSAGE_ID, FIFO_GROUP_ID,
    /// FIFO_RECEIVE_COUNT, FIFO_SEQUENCE_NUMBER, FIFO_ATTEMPT (and TRACEPARENT
    /// when the sender gave a trace context) in its environment; exit status
    /// 0 is success, 65 rejects the message (dead-letters it at once), 75
    /// asks to run it again later without counting a failure, anything else
    /// is a failure that is retried. With --batch N, CMD runs once per batch
    /// instead (see --batch). With --http URL, each message is POSTed to URL.
    ///
    /// Ctrl-C or SIGTERM stops polling, lets running handlers finish (up to
    /// --shutdown-timeout), hands every other held message back to the queue
    /// at once, and exits 0. A second signal kills the running programs and
    /// exits at once.
    Run(RunArgs),
    /// A queue's dead letters: why each one died, and moving them back
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// The groups a running `fifo run --metrics-addr` holds, and the
    /// operators' actions on them
    ///
    /// Without an action, prints one line per group held by that process:
    /// blocked groups first, then the longest in their state. The actions
    /// need the admin token that the run was started with
    /// (--admin-token-file).
    Groups(GroupsArgs),
    /// Delete every message of a queue (SQS's PurgeQueue)
    ///
    /// SQS allows one purge per queue every 60 seconds; messages sent during
    /// the purge may be deleted too.
    Purge(PurgeArgs),
    /// Print a command's manual page, or write them all into a directory
    ///
    /// `fifo man --dir ~/.local/share/man/man1` writes one page per command
    /// (fifo.1, fifo-run.1, fifo-dlq-peek.1…); then `man fifo-run` works when
    /// ~/.local/bin is on PATH (man looks in ../share/man beside each PATH
    /// directory; otherwise add the directory above man1 to MANPATH).
    /// `fifo man run` prints the page of `fifo run` to stdout instead, for
    /// example into `man -l -`. Other flags are ignored.
    Man(ManArgs),
    /// Print a shell completion script to stdout
    ///
    /// For example `fifo completions bash > ~/.local/share/bash-completion/completions/fifo`,
    /// `fifo completions zsh > ~/.zfunc/_fifo` (with ~/.zfunc in fpath before
    /// compinit), or `fifo completions fish > ~/.config/fish/completions/fifo.fish`
    /// (create the directory first if it does not exist). Other flags are ignored.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Write every page into DIR (created if missing) instead of printing one
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub(crate) dir: Option<std::path::PathBuf>,

    /// The command whose page to print, such as `run` or `dlq peek`
    /// [default: fifo itself]
    #[arg(value_name = "COMMAND")]
    pub(crate) command: Vec<String>,
}

/// The shells `fifo completions` writes scripts for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Cli {
    /// The completion script for `shell`.
    pub(crate) fn completions(shell: Shell) -> Vec<u8> {
        let generator = match shell {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        };
        // Written into memory first: clap_complete panics on a failed write,
        // and a closed stdout (`fifo completions bash | head`) is no error.
        let mut script = Vec::new();
        clap_complete::generate(generator, &mut Cli::command(), "fifo", &mut script);
        script
    }
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    // Setting flags take text: `settings::load` checks them against their
    // row of `settings::KEYS`, as it does the file and the environment.
    // They are found by their long names (`setting_flags`), so a field
    // here and the row are all a new setting flag needs.
    /// Handlers running at once, each on a different group
    #[arg(long, value_name = "N")]
    pub(crate) workers: Option<String>,

    /// Messages per receive
    #[arg(long, value_name = "N")]
    pub(crate) max_messages: Option<String>,

    /// Long-poll wait in seconds
    #[arg(long, value_name = "SECS")]
    pub(crate) wait_time: Option<String>,

    /// Visibility timeout of received messages in seconds (at least 1 for
    /// fifo run); held messages are extended before it runs out
    #[arg(long, value_name = "SECS")]
    pub(crate) visibility_timeout: Option<String>,

    /// Receives under way at once, fixed [default: adapts from 1 to 16: more
    /// while workers wait for groups and SQS keeps pace, fewer when the
    /// queue runs dry]
    #[arg(long, value_name = "N")]
    pub(crate) pollers: Option<String>,

    /// Messages held at most (queued or running); polling pauses at this
    /// many [default: 20 × workers, at least 1000]
    #[arg(long, value_name = "N")]
    pub(crate) max_in_flight: Option<String>,

    /// Retries in process after a failure, with exponential backoff and full
    /// jitter; then the message and the rest of its group go back to the queue
    #[arg(long, value_name = "N")]
    pub(crate) retries: Option<String>,

    /// First backoff step in milliseconds; each retry doubles it
    #[arg(long, value_name = "MS")]
    pub(crate) backoff_base_ms: Option<String>,

    /// Longest backoff step in milliseconds (also caps how long a failed
    /// message stays invisible after it is handed back)
    #[arg(long, value_name = "MS")]
    pub(crate) backoff_max_ms: Option<String>,

    /// A handler running longer than this many seconds has failed (and an
    /// exec handler's process is killed) [default: no limit]
    #[arg(long, value_name = "SECS")]
    pub(crate) handler_timeout: Option<String>,

    /// Seconds running handlers get to finish after Ctrl-C or SIGTERM
    #[arg(long, value_name = "SECS")]
    pub(crate) shutdown_timeout: Option<String>,

    /// Exit once the queue is empty and nothing is held (polls wait at most
    /// 1 s so the end is noticed promptly); exit status 1 if any message
    /// failed, was rejected or was dead-lettered
    #[arg(long)]
    pub(crate) until_empty: bool,

    /// Exit after N messages succeeded
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) limit: Option<u64>,

    /// Give the handler up to N consecutive held messages of one group at
    /// once. CMD then runs once per batch, even of one message, with a JSON
    /// array of the messages on stdin (id, group_id, body, receive_count,
    /// sequence_number, sent_timestamp_ms, attributes) and FIFO_GROUP_ID,
    /// FIFO_BATCH_SIZE and FIFO_BATCH_DONE in its environment. Exit 0 means all succeeded; otherwise it may write how
    /// many did, from the first, to the file named by $FIFO_BATCH_DONE
    /// (nothing there: none). The next message failed and is retried alone;
    /// the ones after it run after it. --handler-timeout applies per call
    #[arg(long, value_name = "N")]
    pub(crate) batch: Option<String>,

    /// How CMD gets its messages: fifo (one message on stdin, or with
    /// --batch a JSON array, as above) or lambda (Lambda's SQS event on
    /// stdin, as `sam local invoke` gives it: {"Records": [...]}, one
    /// group's messages in order; CMD prints the function's answer on
    /// stdout, {"batchItemFailures": [{"itemIdentifier": ID}]}, read once it
    /// exits: all of stdout, or its last line when lines of log come
    /// before, which are forwarded; stderr is forwarded as it comes). The
    /// messages before the first one listed succeeded, that one failed, the
    /// rest run again after it; nothing listed is success of all; a
    /// non-zero exit fails the whole batch
    #[arg(long, value_name = "FORMAT")]
    pub(crate) batch_format: Option<String>,

    /// POST each message's body to URL instead of logging it: one request
    /// per message, with Elastic Beanstalk worker (sqsd) headers; 2xx
    /// succeeds, --http-reject-status rejects (dead-letters at once), 429 or
    /// 503 with Retry-After retries after that delay, anything else fails.
    /// --handler-timeout defaults to 30 s here
    #[arg(long, value_name = "URL", conflicts_with = "command")]
    pub(crate) http: Option<String>,

    /// Receive nothing until URL answers a GET with 2xx (the service behind
    /// --http is up)
    #[arg(long, value_name = "URL")]
    pub(crate) http_ready: Option<String>,

    /// Content-Type of the requests --http sends
    #[arg(long, value_name = "TYPE")]
    pub(crate) http_content_type: Option<String>,

    /// What --http POSTs: sqsd (each message's body, with Elastic
    /// Beanstalk worker headers) or lambda (Lambda's SQS event, as to an
    /// app behind Lambda Web Adapter's pass-through route: one group's
    /// messages in order, up to --batch; a 2xx answer's body is read as
    /// the function's {"batchItemFailures": [...]}, as --batch-format
    /// lambda says; an empty body is success of all)
    #[arg(long, value_name = "FORMAT")]
    pub(crate) http_format: Option<String>,

    /// The response status that rejects a message: it goes to the
    /// dead-letter queue at once, without the retries left
    #[arg(long, value_name = "STATUS")]
    pub(crate) http_reject_status: Option<String>,

    /// Serve Prometheus metrics on http://ADDR/metrics, and health checks on
    /// /healthz (the engine is alive) and /readyz (it is receiving: not
    /// while starting, stopping or while SQS is unreachable)
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_addr: Option<String>,

    /// Allow the admin actions on --metrics-addr (POST /groups/ID/skip,
    /// /groups/ID/retry, /pause, /resume) to requests with the bearer token
    /// held in PATH (one line, at least 16 characters; only its owner may
    /// read it: mode 0600 or 0400). Without it, every action answers 403
    #[arg(long, value_name = "PATH")]
    pub(crate) admin_token_file: Option<String>,

    /// What becomes of a message that failed on every attempt --retries
    /// allows: dead-letter (it goes back with the rest of its group, and to
    /// the dead-letter queue on its last allowed receive; the group goes
    /// on), or block (it stays held, its group waits behind it, and it runs
    /// again on a slow backoff until it succeeds or is skipped with `fifo
    /// groups skip`; other groups go on)
    #[arg(long, value_name = "WHAT")]
    pub(crate) exhausted: Option<String>,

    /// With --exhausted block: the longest wait, in seconds, between two
    /// runs of a blocked message (the wait doubles from the backoff base up
    /// to this)
    #[arg(long, value_name = "SECS")]
    pub(crate) blocked_retry_max: Option<String>,

    /// Handler starts per second for this whole process (a batch is one
    /// start; fractions allowed). Each process has its own: with N processes
    /// on a queue, give each 1/N of the total. A message over the limit
    /// waits in its group, its lease kept, never in a worker [default: no
    /// limit]
    #[arg(long, value_name = "N")]
    pub(crate) max_rate: Option<String>,

    /// Handler starts per second for each group, as --max-rate [default: no
    /// limit]
    #[arg(long, value_name = "N")]
    pub(crate) group_rate: Option<String>,

    /// log handler: simulated work per message, in milliseconds
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 0,
        conflicts_with = "command"
    )]
    pub(crate) work_ms: u64,

    /// log handler: print nothing per message
    #[arg(long, short, conflicts_with = "command")]
    pub(crate) quiet: bool,

    /// Run CMD per message instead of logging it (after `--`)
    #[arg(last = true, value_name = "CMD")]
    pub(crate) command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub(crate) struct GroupsArgs {
    #[command(subcommand)]
    pub(crate) action: Option<GroupsAction>,

    #[command(flatten)]
    pub(crate) target: AdminTarget,

    /// Print the groups as a JSON array, as GET /groups answers
    #[arg(long)]
    pub(crate) json: bool,
}

/// An operator's action on a running `fifo run`.
#[derive(Debug, Subcommand)]
pub(crate) enum GroupsAction {
    /// Move a blocked group's head to the dead-letter queue now (its
    /// fifo.reason says it was skipped by an operator, with its last error);
    /// the rest of the group goes on. The queue needs a dead-letter queue
    Skip {
        /// The message group id
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        id: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Run a group's head again now instead of after its backoff (a blocked
    /// group's, or one backing off)
    Retry {
        /// The message group id
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        id: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Start no handler and receive nothing until resumed; held messages
    /// keep their leases and running handlers finish
    Pause {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Undo a pause
    Resume {
        #[command(flatten)]
        target: AdminTarget,
    },
}

/// Which run `fifo groups` asks, and with what token.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct AdminTarget {
    /// The --metrics-addr of the fifo run to ask (HOST:PORT or a URL)
    /// [default: the metrics_addr setting, FIFO_METRICS_ADDR]
    #[arg(long, value_name = "ADDR")]
    pub(crate) addr: Option<String>,

    /// The file holding the admin token the run was started with
    #[arg(long, value_name = "PATH")]
    pub(crate) admin_token_file: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CreateQueueArgs {
    /// Queue name, ending in .fifo [default: the name in --queue-url / SQS_QUEUE_URL,
    /// test-fifo-queue.fifo]
    pub(crate) name: Option<String>,

    /// Also create a FIFO dead-letter queue and send messages there after
    /// --max-receive-count receives [default NAME: QUEUE-dlq.fifo]
    #[arg(long, value_name = "NAME", num_args = 0..=1)]
    pub(crate) dlq: Option<Option<String>>,

    /// Receives before a message moves to the dead-letter queue (1 to 1000)
    #[arg(long, value_name = "N", default_value_t = 5, requires = "dlq",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) max_receive_count: u32,

    /// The queue's default visibility timeout in seconds
    #[arg(long, value_name = "SECS")]
    pub(crate) visibility_timeout: Option<String>,

    /// High-throughput mode: de-duplication and throughput limits per group
    #[arg(long)]
    pub(crate) high_throughput: bool,
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Send every message to this group [default: `default`, unless --groups is given]
    #[arg(long, value_name = "ID", conflicts_with = "groups")]
    pub(crate) group: Option<String>,

    /// Spread the messages round-robin over N groups named group-1..group-N
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) groups: Option<u32>,

    /// How many messages to generate, each distinct (even with --body)
    /// [default: 1, or one per group with --groups]
    #[arg(long, value_name = "N", conflicts_with = "file",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,

    /// Send exactly TEXT as each body [default: a JSON body with the group, a
    /// per-group sequence number 1, 2, 3… and an id of this invocation]
    #[arg(long, value_name = "TEXT", conflicts_with = "file")]
    pub(crate) body: Option<String>,

    /// Read messages from a file, or `-` for stdin, one per line (see
    /// --format); blank lines are skipped. Lines without a group go to
    /// --group, or round-robin over --groups, or to `default`
    #[arg(long, value_name = "PATH")]
    pub(crate) file: Option<std::path::PathBuf>,

    /// How to read --file: `text` sends each line as it is (a trailing CR is
    /// dropped); `jsonl` reads each line as {"body": "…", "group": "…",
    /// "dedup_id": "…"} (only body required, other keys refused); `auto` is
    /// jsonl when the first line starts with `{` or `[`, text otherwise, and
    /// refuses a file whose lines disagree
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value = "auto",
        requires = "file"
    )]
    pub(crate) format: Format,

    /// De-duplication id for lines without one, and for generated messages:
    /// message N gets ID-N (with --file always, so line N of a one-line
    /// file gets ID-1), or ID when one message is generated [default: the
    /// queue decides by content for --file lines, or a unique id per
    /// message]
    #[arg(long, value_name = "ID")]
    pub(crate) dedup_id: Option<String>,

    /// Batches in flight at once (messages of one group are never in two at once)
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) concurrency: u32,
}

#[derive(Debug, Args)]
pub(crate) struct ListQueuesArgs {
    /// Only queues whose name starts with P
    #[arg(long, value_name = "P")]
    pub(crate) prefix: Option<String>,

    /// Redraw every SECS seconds until Ctrl-C [default SECS: 2]
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub(crate) watch: Option<f64>,

    /// Print JSON instead of a table
    #[arg(long, conflicts_with = "watch")]
    pub(crate) json: bool,
}

/// What to do with dead letters.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DlqCommand {
    /// Print the dead letters of QUEUE with the reasons fifo recorded,
    /// without deleting them
    ///
    /// The messages are received from QUEUE's dead-letter queue (found from
    /// its redrive policy) and made visible again at once; while they are
    /// looked at (a few seconds at most) no one else receives them, and each
    /// peek adds one to their receive count (so a dead-letter queue with a
    /// redrive policy of its own is refused). A FIFO receive brings at most
    /// one batch of a group at a time, so with many messages in a group only
    /// its first ones show. The id shown is the original message's.
    Peek(PeekArgs),
    /// Move the dead letters of QUEUE back to QUEUE (SQS's message move
    /// task), with a progress bar
    ///
    /// They join the end of their groups, in the order they were
    /// dead-lettered. Ctrl-C cancels the task: what was moved stays moved,
    /// the rest stays in the dead-letter queue.
    Redrive(RedriveArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RedriveArgs {
    /// The source queue: its URL or its name [default: --queue-url,
    /// SQS_QUEUE_URL]
    #[arg(value_name = "QUEUE")]
    pub(crate) queue: Option<String>,

    /// Move at most N messages per second [default: as fast as SQS goes]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=500))]
    pub(crate) rate: Option<u32>,
}

#[derive(Debug, Args)]
pub(crate) struct PeekArgs {
    /// The source queue: its URL or its name [default: --queue-url,
    /// SQS_QUEUE_URL]
    #[arg(value_name = "QUEUE")]
    pub(crate) queue: Option<String>,

    /// Show at most N dead letters
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) limit: u32,

    /// Print a JSON array (id, group_id, sequence_number, receive_count,
    /// body, attributes) instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PurgeArgs {
    /// The queue: its URL or its name
    #[arg(value_name = "QUEUE")]
    pub(crate) queue: String,

    /// Yes, delete every message in it
    #[arg(long)]
    pub(crate) yes: bool,
}

impl Cli {
    /// Parses the command line. The help of each flag that sets a setting
    /// ends with its environment variables and default, and `--config`'s
    /// with the file's keys, all from the one table in `settings`.
    pub(crate) fn parse_args() -> Cli {
        Cli::parse_from_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// [`Cli::parse_args`] on the arguments given.
    fn parse_from_args(
        args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
    ) -> Result<Cli, clap::Error> {
        let mut command = Cli::full_command();
        let matches = command.try_get_matches_from_mut(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        cli.setting_flags = setting_flags(&command, &matches);
        Ok(cli)
    }

    /// The command line's definition, with each setting's help saying
    /// where else its value comes from: what `--help` and the man pages
    /// show.
    pub(crate) fn full_command() -> clap::Command {
        with_settings(Cli::command())
    }

    /// The flags that override settings, for `settings::load`.
    pub(crate) fn setting_flags(&self) -> Flags {
        self.setting_flags.clone()
    }
}

/// The settings given as flags to the subcommand `matches` ran: every
/// argument whose long name is a setting's flag, by that setting's row.
fn setting_flags(command: &clap::Command, matches: &ArgMatches) -> Flags {
    let (mut command, mut matches) = (command, matches);
    while let Some((name, sub_matches)) = matches.subcommand() {
        let Some(sub) = command.find_subcommand(name) else {
            break;
        };
        (command, matches) = (sub, sub_matches);
    }
    command
        .get_arguments()
        .filter_map(|arg| {
            let key = settings::key_for_flag(&format!("--{}", arg.get_long()?))?;
            let value = matches
                .try_get_one::<String>(arg.get_id().as_str())
                .ok()??;
            Some((key, value.clone()))
        })
        .collect()
}

/// `command` and its subcommands, at every level, with where else each
/// setting flag's value comes from appended to its help.
fn with_settings(command: clap::Command) -> clap::Command {
    command
        .mut_args(with_setting)
        .mut_subcommands(with_settings)
}

/// `arg` with where else its setting comes from appended to its help.
fn with_setting(arg: Arg) -> Arg {
    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
    let suffix = match arg.get_long() {
        Some("config") => format!(
            "(keys: {})",
            settings::KEYS
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(long) => match settings::key_for_flag(&format!("--{long}")) {
            Some(key) => key.help_suffix(),
            None => return arg,
        },
        None => return arg,
    };
    arg.help(format!("{help} {suffix}"))
}

#[cfg(test)]
mod tests {
    use super::Cli;

    /// The setting flags given, as `--flag value`, in the order found.
    fn flags_of(args: &[&str]) -> Vec<String> {
        let cli = Cli::parse_from_args(["fifo"].iter().chain(args)).unwrap();
        cli.setting_flags()
            .iter()
            .map(|(key, value)| format!("{} {value}", key.flag))
            .collect()
    }

    #[test]
    fn setting_flags_are_found_by_their_long_names_at_every_level() {
        assert_eq!(
            flags_of(&[
                "--region",
                "eu-west-1",
                "run",
                "--workers",
                "3",
                "--http",
                "http://a/"
            ]),
            ["--workers 3", "--http http://a/", "--region eu-west-1"]
        );
        assert_eq!(
            flags_of(&["create-queue", "q.fifo", "--visibility-timeout", "0"]),
            ["--visibility-timeout 0"]
        );
        assert_eq!(
            flags_of(&["dlq", "peek", "--queue-url", "http://h/1/q.fifo"]),
            ["--queue-url http://h/1/q.fifo"]
        );
        assert!(flags_of(&["run", "--limit", "3", "--quiet"]).is_empty());
    }
}
