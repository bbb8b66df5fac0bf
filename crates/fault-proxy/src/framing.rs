//! Reading the client's byte stream as HTTP requests, so that each request
//! head goes upstream whole and its SQS action is known (a reset can pick the
//! calls of one action).

/// A request head longer than this is not inspected: the rest of the
/// connection passes unread.
const MAX_HEAD: usize = 64 * 1024;

/// Where the client's byte stream stands, so that each request head is read
/// whole before any of it is forwarded.
#[derive(Debug)]
pub(crate) enum Framing {
    /// Collecting a request head up to its blank line.
    Head(Vec<u8>),
    /// Passing this many more body bytes.
    Body(u64),
    /// Not HTTP this proxy follows (a chunked body, an oversized head):
    /// everything passes unread.
    Opaque,
}

impl Default for Framing {
    fn default() -> Framing {
        Framing::Head(Vec::new())
    }
}

/// Bytes to forward; `action` is set when they are a whole request head.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Part {
    /// The request's SQS action, when these bytes are a whole request head.
    pub(crate) action: Option<String>,
    /// The bytes themselves.
    pub(crate) bytes: Vec<u8>,
}

impl Framing {
    /// Splits what was just read into the parts that may go upstream now;
    /// an unfinished head stays behind until the rest of it arrives.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<Part> {
        let pass = |bytes| Part {
            action: None,
            bytes,
        };
        let mut parts = Vec::new();
        let mut input = bytes.to_vec();
        while !input.is_empty() {
            match self {
                Framing::Opaque => parts.push(pass(std::mem::take(&mut input))),
                Framing::Body(left) => {
                    let n = input
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let rest = input.split_off(n);
                    parts.push(pass(std::mem::replace(&mut input, rest)));
                    *left -= n as u64;
                    if *left == 0 {
                        *self = Framing::default();
                    }
                }
                Framing::Head(head) => {
                    // The blank line may straddle the previous read.
                    let from = head.len().saturating_sub(3);
                    head.append(&mut input);
                    if let Some(at) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
                        input = head.split_off(from + at + 4);
                        let whole = std::mem::take(head);
                        let (action, body) = read_head(&whole);
                        *self = match body {
                            Some(0) => Framing::default(),
                            Some(length) => Framing::Body(length),
                            None => Framing::Opaque,
                        };
                        parts.push(Part {
                            action: Some(action),
                            bytes: whole,
                        });
                    } else if head.len() > MAX_HEAD {
                        parts.push(pass(std::mem::take(head)));
                        *self = Framing::Opaque;
                    }
                }
            }
        }
        parts
    }
}

/// The SQS action of a request head (or its method and path when it has no
/// `X-Amz-Target`), and its body length, `None` when that is not a plain
/// `Content-Length`.
pub(crate) fn read_head(head: &[u8]) -> (String, Option<u64>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut action = None;
    let mut body = Some(0);
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("x-amz-target") {
            action = Some(value.strip_prefix("AmazonSQS.").unwrap_or(value).to_owned());
        } else if name.eq_ignore_ascii_case("content-length") {
            body = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        }
    }
    let action = action.unwrap_or_else(|| {
        let mut words = request_line.split_whitespace();
        let method = words.next().unwrap_or_default();
        format!("{method} {}", words.next().unwrap_or_default())
    });
    (action, if chunked { None } else { body })
}
