//! The SQS client's integration tests: against endpoints that misbehave, and
//! against LocalStack, in one test binary so that the workspace links it
//! once.

mod endpoint_faults;
mod localstack;
