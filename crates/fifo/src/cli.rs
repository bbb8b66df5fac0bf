//! What the user typed, as clap structs. `settings::load` merges these with
//! the file and the environment into the `Settings` the program runs on.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
}

#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// Settings file in TOML (keys: queue_url, endpoint_url, region, max_workers,
    /// visibility_timeout, wait_time_seconds, max_messages) [default: ./fifo.toml if present]
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// The queue's URL [env: SQS_QUEUE_URL]
    /// [default: http://localhost:4566/000000000000/test-fifo-queue.fifo]
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) queue_url: Option<String>,

    /// SQS endpoint [env: ENDPOINT_URL] [default: the queue URL's host, or the
    /// standard AWS endpoint when that host is AWS's]
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) endpoint_url: Option<String>,

    /// AWS region [env: AWS_REGION, AWS_DEFAULT_REGION] [default: from an AWS
    /// queue URL, the AWS profile, or us-east-1 for LocalStack]
    #[arg(long, global = true)]
    pub(crate) region: Option<String>,

    /// Never draw progress bars (they are hidden anyway when stderr is not a terminal)
    #[arg(long, global = true)]
    pub(crate) no_progress: bool,

    /// Log more: -v for info, -vv for debug [env: RUST_LOG]
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a FIFO queue with content-based de-duplication; prints its URL
    CreateQueue(CreateQueueArgs),
    /// Send messages to the queue, keeping each group's order
    Send(SendArgs),
    /// List queues with their message counts
    ListQueues(ListQueuesArgs),
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

    /// The queue's default visibility timeout in seconds, 0 to 43200
    /// [env: VISIBILITY_TIMEOUT] [default: 30]
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

    /// How many messages to send [default: 1, or one per group with --groups];
    /// with --file, how many times to send the file
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,

    /// Send exactly TEXT as each body [default: a JSON body with the group, a
    /// per-group sequence number 1, 2, 3… and an id of this invocation]
    #[arg(long, value_name = "TEXT", conflicts_with = "file")]
    pub(crate) body: Option<String>,

    /// Read messages from a file, or `-` for stdin: one per line, either plain
    /// text (the body) or a JSON object {"body": …, "group": …, "dedup_id": …}
    #[arg(long, value_name = "PATH")]
    pub(crate) file: Option<PathBuf>,

    /// De-duplication id; with several messages, message N gets ID-N
    /// [default: the queue decides by content, or a unique id per message when
    /// the queue has no content-based de-duplication]
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

impl Cli {
    /// The flags that override settings, for `settings::load`.
    pub(crate) fn setting_flags(&self) -> Flags {
        let mut flags = Flags::new();
        let mut add = |key, value: &Option<String>| {
            if let Some(value) = value {
                flags.push((key, value.clone()));
            }
        };
        add(&settings::QUEUE_URL, &self.global.queue_url);
        add(&settings::ENDPOINT_URL, &self.global.endpoint_url);
        add(&settings::REGION, &self.global.region);
        if let Command::CreateQueue(args) = &self.command {
            add(&settings::VISIBILITY_TIMEOUT, &args.visibility_timeout);
        }
        flags
    }
}
