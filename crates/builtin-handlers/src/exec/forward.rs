//! The program's output forwarded line by line with its group's prefix,
//! and the last line of its stderr kept for a failure's text.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use crate::Output;

/// How long output is still forwarded after the program exited: enough for
/// what it wrote just before, while a background child that inherited the
/// pipes cannot hold the message.
const DRAIN: Duration = Duration::from_millis(50);

/// A longer line is forwarded in pieces of this size, each prefixed and
/// ended by a newline, so memory stays bounded whatever the program writes.
const MAX_LINE: usize = 64 * 1024;

/// Which of our streams a pipe of the program is forwarded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum To {
    Stdout,
    Stderr,
}

/// Forwards the program's output, line by line with the group's prefix,
/// until the pipe ends or, once the program has exited, until what it wrote
/// is drained. Reads on whatever the bytes are, so the program never gets
/// SIGPIPE from us while it runs.
pub(super) async fn forward(
    pipe: Option<impl AsyncRead + Unpin>,
    prefix: &str,
    output: &Output,
    to: To,
    exited: watch::Receiver<bool>,
) -> String {
    let Some(pipe) = pipe else {
        return String::new();
    };
    let mut last_line = String::new();
    let mut lines = Lines::new(prefix.as_bytes());
    let mut reader = Reader::new(pipe, exited);
    while let Some(read) = reader.next().await {
        let bytes = lines.push(read);
        write(bytes, prefix, output, to, &mut last_line).await;
    }
    write(lines.finish(), prefix, output, to, &mut last_line).await;
    last_line
}

/// `bytes` as forwarded lines, each prefixed with `prefix` (nothing for
/// no bytes).
pub(super) fn prefixed(prefix: &str, bytes: &[u8]) -> Vec<u8> {
    let mut lines = Lines::new(prefix.as_bytes());
    let mut out = lines.push(bytes);
    out.extend(lines.finish());
    out
}

/// Writes forwarded lines to `to`, keeping stderr's last line in
/// `last_line` (part of a failure's text).
async fn write(bytes: Vec<u8>, prefix: &str, output: &Output, to: To, last_line: &mut String) {
    match to {
        To::Stdout => output.stdout(bytes).await,
        To::Stderr => {
            remember_last_line(&bytes, prefix.len(), last_line);
            if output.json_stderr() {
                output.stderr(json_lines(&bytes, prefix)).await;
            } else {
                output.stderr(bytes).await;
            }
        }
    }
}

/// What the program writes to the pipe, kept rather than forwarded: its
/// first `limit` bytes (the rest is read and dropped, so that the program
/// is never stopped by a full pipe), and whether there was more.
pub(super) async fn keep(
    pipe: Option<impl AsyncRead + Unpin>,
    limit: usize,
    exited: watch::Receiver<bool>,
) -> (Vec<u8>, bool) {
    let (mut kept, mut more) = (Vec::new(), false);
    if let Some(pipe) = pipe {
        let mut reader = Reader::new(pipe, exited);
        while let Some(read) = reader.next().await {
            let room = limit - kept.len();
            more |= read.len() > room;
            kept.extend_from_slice(&read[..room.min(read.len())]);
        }
    }
    (kept, more)
}

/// Reads a program's pipe until it ends or, once the program has exited,
/// until what it wrote is drained.
struct Reader<P> {
    pipe: P,
    exited: watch::Receiver<bool>,
    buf: Vec<u8>,
    /// Set once the program exited: a background child may still hold the
    /// pipe open, so what is there is taken until then, and no more.
    drain_until: Option<tokio::time::Instant>,
    ended: bool,
}

impl<P: AsyncRead + Unpin> Reader<P> {
    fn new(pipe: P, exited: watch::Receiver<bool>) -> Reader<P> {
        Reader {
            pipe,
            exited,
            buf: vec![0; 16 * 1024],
            drain_until: None,
            ended: false,
        }
    }

    /// The next bytes read, or `None` once the pipe is done with.
    async fn next(&mut self) -> Option<&[u8]> {
        if self.ended {
            return None;
        }
        if self.drain_until.is_none() {
            let read = tokio::select! {
                // First: a program that writes without pause must not keep
                // us reading after it exited.
                biased;
                _ = self.exited.changed() => None,
                read = self.pipe.read(&mut self.buf) => Some(read),
            };
            match read {
                Some(read) => return self.took(read),
                None => self.drain_until = Some(tokio::time::Instant::now() + DRAIN),
            }
        }
        let deadline = self.drain_until.expect("set above");
        let read = tokio::time::timeout_at(deadline, self.pipe.read(&mut self.buf)).await;
        self.took(read.unwrap_or(Ok(0)))
    }

    fn took(&mut self, read: std::io::Result<usize>) -> Option<&[u8]> {
        match read {
            Ok(n @ 1..) => Some(&self.buf[..n]),
            Ok(0) | Err(_) => {
                self.ended = true;
                None
            }
        }
    }
}

/// Prefixed lines (`[group] text`, as forwarded) as JSON objects, one per
/// line: for JSON logs.
fn json_lines(bytes: &[u8], prefix: &str) -> Vec<u8> {
    let group = prefix
        .strip_prefix('[')
        .and_then(|p| p.strip_suffix("] "))
        .unwrap_or(prefix);
    let timestamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut out = Vec::new();
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let text = line.strip_prefix(prefix.as_bytes()).unwrap_or(line);
        let object = serde_json::json!({
            "timestamp": timestamp,
            "level": "INFO",
            "target": "fifo::handler",
            "group": group,
            "message": String::from_utf8_lossy(text),
        });
        out.extend_from_slice(object.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// The longest last line of stderr kept for the error.
const LAST_LINE: usize = 300;

/// Keeps in `last` the last non-empty line of `bytes` (prefixed lines, as
/// forwarded), without its prefix, cut to [`LAST_LINE`] bytes.
fn remember_last_line(bytes: &[u8], prefix: usize, last: &mut String) {
    let found = bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| line.get(prefix..))
        .rfind(|line| !line.iter().all(u8::is_ascii_whitespace));
    if let Some(line) = found {
        let line = String::from_utf8_lossy(line);
        let mut end = line.trim_end().len().min(LAST_LINE);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        *last = line[..end].to_owned();
    }
}

/// Cuts a program's output into prefixed lines.
struct Lines<'a> {
    prefix: &'a [u8],
    /// The start of a line whose end has not been read yet.
    partial: Vec<u8>,
}

impl<'a> Lines<'a> {
    fn new(prefix: &'a [u8]) -> Lines<'a> {
        Lines {
            prefix,
            partial: Vec::new(),
        }
    }

    /// Takes the next bytes read; returns the lines they complete, ready to
    /// write in one piece (so other groups' lines cannot cut into them).
    fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut ready = Vec::new();
        for mut piece in bytes.split_inclusive(|&b| b == b'\n') {
            // Cut what does not fit in a line of MAX_LINE bytes (newline
            // not counted).
            loop {
                let room = MAX_LINE - self.partial.len();
                let content = piece.len() - usize::from(piece.ends_with(b"\n"));
                if content <= room {
                    break;
                }
                let (head, tail) = piece.split_at(room);
                self.partial.extend_from_slice(head);
                self.end_line(&mut ready);
                piece = tail;
            }
            self.partial.extend_from_slice(piece);
            if self.partial.ends_with(b"\n") {
                self.end_line(&mut ready);
            }
        }
        ready
    }

    /// The last line when it has no newline, with one added.
    fn finish(&mut self) -> Vec<u8> {
        let mut ready = Vec::new();
        if !self.partial.is_empty() {
            self.end_line(&mut ready);
        }
        ready
    }

    fn end_line(&mut self, ready: &mut Vec<u8>) {
        ready.extend_from_slice(self.prefix);
        ready.append(&mut self.partial);
        if !ready.ends_with(b"\n") {
            ready.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fifo_handler::Handler;

    use super::*;
    use crate::exec::fixtures::{message, sh_with};

    #[tokio::test]
    async fn forwards_both_streams_prefixed_with_the_group() {
        let (handler, out, err) = sh_with("echo one; echo two >&2; printf three", Duration::ZERO);
        handler.handle(&message()).await.unwrap();
        handler.output.clone().finish().await;
        assert_eq!(out.text(), "[g] one\n[g] three\n");
        assert_eq!(err.text(), "[g] two\n");
    }

    #[tokio::test]
    async fn non_utf8_output_is_forwarded_and_the_program_runs_on() {
        // Output after the invalid byte would meet a closed pipe, and the
        // program SIGPIPE, if forwarding stopped there.
        let script =
            r"printf 'a\377b\n'; i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done";
        let (handler, out, _) = sh_with(script, Duration::ZERO);
        handler.handle(&message()).await.unwrap();
        handler.output.clone().finish().await;
        let bytes = out.bytes();
        assert!(bytes.starts_with(b"[g] a\xffb\n[g] line 0\n"), "{bytes:?}");
        assert!(bytes.ends_with(b"[g] line 1999\n"));
    }

    #[test]
    fn long_lines_are_cut_and_a_last_line_gets_a_newline() {
        let mut lines = Lines::new(b"[g] ");
        assert_eq!(lines.push(b"a\nb"), b"[g] a\n");
        assert_eq!(lines.push(b"c\n\nd"), b"[g] bc\n[g] \n");
        assert_eq!(lines.finish(), b"[g] d\n");
        let long = lines.push(&vec![b'x'; 2 * MAX_LINE + 1]);
        assert_eq!(long.len(), 2 * (4 + MAX_LINE + 1));
        assert_eq!(lines.finish(), b"[g] x\n");
        let mut just_fits = vec![b'y'; MAX_LINE];
        just_fits.push(b'\n');
        assert_eq!(lines.push(&just_fits).len(), 4 + MAX_LINE + 1);
        assert_eq!(lines.finish(), b"");
    }
}
