//! The sender's trace context, passed on to the handler's program or
//! service as W3C Trace Context: from a `traceparent` message attribute,
//! or converted from SQS's `AWSTraceHeader` system attribute (X-Ray's
//! format).

use fifo_handler::Message;

/// The `traceparent` for `message`: its `traceparent` attribute as sent,
/// otherwise its X-Ray trace header converted
/// (`Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1`
/// becomes `00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01`).
pub(crate) fn traceparent(message: &Message) -> Option<String> {
    if let Some(parent) = message.attributes.get("traceparent") {
        return Some(parent.clone());
    }
    from_xray(message.trace_header.as_deref()?)
}

fn from_xray(header: &str) -> Option<String> {
    let (mut root, mut parent, mut sampled) = (None, None, "00");
    for field in header.split(';').filter(|f| !f.trim().is_empty()) {
        match field.trim().split_once('=')? {
            ("Root", value) => root = Some(value),
            ("Parent", value) => parent = Some(value),
            ("Sampled", "1") => sampled = "01",
            _ => {}
        }
    }
    let (time, random) = root?.strip_prefix("1-")?.split_once('-')?;
    let trace_id = format!("{time}{random}");
    let parent = parent?;
    let hex = |text: &str, len| text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(&trace_id, 32) && hex(parent, 16)).then(|| format!("00-{trace_id}-{parent}-{sampled}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attribute_wins_and_an_xray_header_is_converted() {
        let mut message = Message {
            trace_header: Some(
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
                    .to_owned(),
            ),
            ..Message::default()
        };
        assert_eq!(
            traceparent(&message).as_deref(),
            Some("00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01")
        );
        message
            .attributes
            .insert("traceparent".to_owned(), "00-aa-bb-01".to_owned());
        assert_eq!(traceparent(&message).as_deref(), Some("00-aa-bb-01"));
    }

    #[test]
    fn a_header_without_a_parent_or_a_root_gives_none() {
        assert_eq!(from_xray("Root=1-5759e988-bd862e3fe1be46a994272793"), None);
        assert_eq!(from_xray("Parent=53995c3f42cd8ad8"), None);
        assert_eq!(from_xray("garbage"), None);
        assert_eq!(
            from_xray("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;"),
            Some("00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00".to_owned()),
            "a trailing semicolon"
        );
    }
}
