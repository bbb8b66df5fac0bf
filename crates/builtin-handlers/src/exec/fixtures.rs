//! Test fixtures of the exec handler: a message, and handlers that run
//! `sh -c` scripts with their output captured.

use std::path::Path;
use std::time::Duration;

use fifo_handler::Message;

use super::ExecHandler;
use crate::Output;
use crate::testing::Capture;

/// A message of group `g`, on its second delivery.
pub(super) fn message() -> Message {
    Message {
        id: "m-1".to_owned(),
        group_id: "g".to_owned(),
        body: "hello".to_owned(),
        receive_count: 2,
        sequence_number: "42".to_owned(),
        attempt: 1,
        ..Message::default()
    }
}

/// A handler running `sh -c script`, and what it writes to stdout and
/// stderr.
pub(super) fn sh_with(script: &str, kill_grace: Duration) -> (ExecHandler, Capture, Capture) {
    let (out, err) = (Capture::default(), Capture::default());
    let handler = ExecHandler::new(
        Path::new("sh"),
        vec!["-c".into(), script.into()],
        kill_grace,
        Output::new(out.clone(), err.clone()),
    )
    .unwrap();
    (handler, out, err)
}

/// A handler running `sh -c script`, with five seconds of grace.
pub(super) fn sh(script: &str) -> ExecHandler {
    sh_with(script, Duration::from_secs(5)).0
}
