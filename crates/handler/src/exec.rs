use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::{Handler, Message, Outcome};

/// Runs a program once per message, directly (never through a shell): the
/// body on stdin, the metadata in `FIFO_MESSAGE_ID`, `FIFO_GROUP_ID`,
/// `FIFO_RECEIVE_COUNT` and `FIFO_SEQUENCE_NUMBER`. Exit status 0 is success.
/// Its output lines are forwarded prefixed with `[GROUP] `. Dropping the
/// handler's future (a timeout) kills the program.
#[derive(Debug, Clone)]
pub struct ExecHandler {
    program: PathBuf,
    args: Vec<OsString>,
}

impl ExecHandler {
    /// Finds `program` (a path, or a name looked up in `PATH`) now, so that a
    /// typo fails at start-up rather than on every message.
    pub fn new(program: &Path, args: Vec<OsString>) -> Result<ExecHandler, String> {
        let program = find_program(program)
            .ok_or_else(|| format!("program `{}` not found", program.display()))?;
        Ok(ExecHandler { program, args })
    }
}

fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

impl Handler for ExecHandler {
    async fn handle(&self, message: &Message) -> Outcome {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env("FIFO_MESSAGE_ID", &message.id)
            .env("FIFO_GROUP_ID", &message.group_id)
            .env("FIFO_RECEIVE_COUNT", message.receive_count.to_string())
            .env("FIFO_SEQUENCE_NUMBER", &message.sequence_number)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group: a Ctrl-C in the terminal reaches fifo,
            // which lets running handlers finish, not the handler itself.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        let stdin = child.stdin.take();
        let write_body = async {
            if let Some(mut stdin) = stdin {
                // A program that does not read its input is fine.
                let _ = stdin.write_all(message.body.as_bytes()).await;
            }
        };
        let prefix = format!("[{}] ", message.group_id);
        let (_, _, _, status) = tokio::join!(
            write_body,
            forward(child.stdout.take(), &prefix, false),
            forward(child.stderr.take(), &prefix, true),
            child.wait()
        );
        let status = status?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{} exited with {status}", self.program.display()).into())
        }
    }
}

/// Copies lines from the program to our stdout or stderr, prefixed.
async fn forward(output: Option<impl AsyncRead + Unpin>, prefix: &str, to_stderr: bool) {
    let Some(output) = output else { return };
    let mut lines = BufReader::new(output).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if to_stderr {
            eprintln!("{prefix}{line}");
        } else {
            let mut stdout = std::io::stdout().lock();
            let _ = std::io::Write::write_all(&mut stdout, format!("{prefix}{line}\n").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            id: "m-1".to_owned(),
            group_id: "g".to_owned(),
            body: "hello".to_owned(),
            receive_count: 2,
            sequence_number: "42".to_owned(),
            sent_timestamp_ms: 0,
            attributes: Default::default(),
        }
    }

    fn sh(script: &str) -> ExecHandler {
        ExecHandler::new(Path::new("sh"), vec!["-c".into(), script.into()]).unwrap()
    }

    #[tokio::test]
    async fn passes_body_and_metadata_and_reads_the_exit_status() {
        let check = r#"test "$(cat)" = hello && test "$FIFO_MESSAGE_ID" = m-1 && test "$FIFO_GROUP_ID" = g \
            && test "$FIFO_RECEIVE_COUNT" = 2 && test "$FIFO_SEQUENCE_NUMBER" = 42"#;
        assert!(sh(check).handle(&message()).await.is_ok());
        let err = sh("exit 3").handle(&message()).await.unwrap_err();
        assert!(err.to_string().contains("exit status: 3"), "{err}");
    }

    #[test]
    fn a_missing_program_is_found_out_at_once() {
        let err = ExecHandler::new(Path::new("no-such-program-here"), vec![]).unwrap_err();
        assert!(err.contains("not found"), "{err}");
    }
}
