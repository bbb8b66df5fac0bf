//! The handlers of the `fifo` command, built on the `fifo-handler`
//! contract: `log` (print, optionally simulate work), `exec` (run a program
//! per message or batch) and `http` (POST each message to a service), and
//! `Output`, through which handlers write to stdout and stderr.
//!
//! The engine drops a handler's future to give up on it (a timeout): `exec`
//! then ends its program's process group. The engine runs on one thread, so
//! handlers never block it: `Output` writes on threads of its own and makes
//! a handler wait, not the thread, when the reader of our output is slow;
//! its failure never fails a message.
//!
//! `exec` and `http` can also hand messages over as Lambda's SQS event
//! (`lambda.rs`), for apps written for AWS Lambda.
//!
//! Layout: `log.rs`, `exec/` and `http.rs` are the handlers, `log_line.rs`
//! the log handler's line format (written and read back), `trace.rs` the
//! trace context passed on, `output.rs` the writer threads, `orphans.rs`
//! what keeps programs from outliving fifo.
#![warn(missing_docs)]

mod exec;
mod http;
mod lambda;
mod log;
pub mod log_line;
mod orphans;
mod output;
#[cfg(test)]
mod testing;
mod trace;

pub use exec::{EXIT_REJECT, EXIT_RETRY_LATER, ExecHandler, ProgramError, Refusal};
pub use http::{HttpError, HttpHandler, HttpOptions, http_url};
pub use lambda::EventSource;
pub use log::LogHandler;
pub use output::Output;
