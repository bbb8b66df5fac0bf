//! The `fifo` binary's integration tests, one module per part of what users
//! see, in one test binary so that the workspace links it once.

mod bad_input;
mod cli;
mod dlq;
mod faults;
mod groups;
mod http;
mod lambda;
mod logs;
mod metrics;
mod processes;
mod queue_commands;
mod send;
