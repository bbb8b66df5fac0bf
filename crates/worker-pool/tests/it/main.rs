//! The engine's integration tests, on the in-memory queue and (feature
//! `sqs`) on LocalStack, in one test binary so that the workspace links it
//! once.

mod batches;
mod engine;
mod faults;
mod pace;
mod readme;
#[cfg(feature = "sqs")]
mod sqs;
mod steering;
