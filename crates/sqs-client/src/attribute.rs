//! Message attributes, as they are sent and as they are received.

/// A message attribute: its SQS data type (`String`, `Number`, `Binary`,
/// optionally with a custom suffix such as `Number.int`) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAttribute {
    /// The data type as SQS gives it, e.g. `String`, `Number.int`, `Binary`.
    pub data_type: String,
    /// Text for a String or Number type, bytes for a Binary one.
    pub value: AttributeValue,
}

/// String and Number attributes carry text; Binary ones bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// The value of a String or Number attribute (SQS sends numbers as
    /// text).
    Text(String),
    /// The value of a Binary attribute.
    Binary(Vec<u8>),
}

impl MessageAttribute {
    /// The text of a String or Number attribute.
    pub fn text(&self) -> Option<&str> {
        match &self.value {
            AttributeValue::Text(text) => Some(text),
            AttributeValue::Binary(_) => None,
        }
    }
}
