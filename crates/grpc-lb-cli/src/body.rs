//! The request body of `call -d`: JSON messages in the proto3 JSON mapping,
//! one or several, concatenated or separated by whitespace (newlines), as
//! grpcurl reads them, each parsed against the method's input type.
//!
//! Self-contained (prost-reflect and serde_json only): the fuzz target
//! `call_body_parse` includes this file as it is.

use std::fmt;

use prost_reflect::{DynamicMessage, MessageDescriptor};

/// Why a request body was refused: which message (counting from 1) and what
/// serde_json or the JSON mapping said, with its line and column.
#[derive(Debug)]
pub(crate) struct BodyError {
    /// The message the error is in, counting from 1.
    pub(crate) message: usize,
    pub(crate) error: serde_json::Error,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message {}: {}", self.message, self.error)
    }
}

impl std::error::Error for BodyError {}

/// Every message of `text`, in order; empty or all-whitespace text holds
/// none. Unknown fields are refused, as `protojson` refuses them by default.
pub(crate) fn parse_messages(
    input: &MessageDescriptor,
    text: &str,
) -> Result<Vec<DynamicMessage>, BodyError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let mut messages = Vec::new();
    // `end` skips whitespace and fails when anything else is left: the start
    // of the next message.
    while deserializer.end().is_err() {
        let message =
            DynamicMessage::deserialize(input.clone(), &mut deserializer).map_err(|error| {
                BodyError {
                    message: messages.len() + 1,
                    error,
                }
            })?;
        messages.push(message);
    }
    Ok(messages)
}

/// A message in the proto3 JSON mapping (fields at their default values
/// left out, as protojson and grpcurl print them). Fails for what JSON
/// cannot show: an `Any` whose type the schema lacks, a timestamp out of
/// range.
pub(crate) fn to_json(message: &DynamicMessage) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::to_value(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::DescriptorPool;

    fn hello_request() -> MessageDescriptor {
        DescriptorPool::decode(grpc_lb_helloworld::FILE_DESCRIPTOR_SET)
            .unwrap()
            .get_message_by_name("helloworld.HelloRequest")
            .unwrap()
    }

    fn names(text: &str) -> Result<Vec<serde_json::Value>, String> {
        parse_messages(&hello_request(), text)
            .map(|messages| messages.iter().map(|m| to_json(m).unwrap()).collect())
            .map_err(|error| error.to_string())
    }

    #[test]
    fn messages_may_be_concatenated_or_one_per_line() {
        let a = serde_json::json!({"name": "a"});
        let b = serde_json::json!({"name": "b"});
        assert_eq!(
            names(r#"{"name":"a"}{"name":"b"}"#).unwrap(),
            [a.clone(), b.clone()]
        );
        assert_eq!(
            names("{\"name\":\"a\"}\n\n{\"name\":\"b\"}\n").unwrap(),
            [a, b]
        );
        assert_eq!(names("").unwrap(), Vec::<serde_json::Value>::new());
        assert_eq!(names(" \n\t").unwrap(), Vec::<serde_json::Value>::new());
        // Default values are left out, as protojson prints them.
        assert_eq!(names(r#"{"name":""}"#).unwrap(), [serde_json::json!({})]);
    }

    #[test]
    fn errors_name_the_message_and_the_place() {
        assert_eq!(
            names(r#"{"name":"a"} {"nam":"b"}"#).unwrap_err(),
            "message 2: unrecognized field name 'nam' at line 1 column 19"
        );
        assert!(names(r#"{"name": 5}"#)
            .unwrap_err()
            .starts_with("message 1: "));
        assert!(names(r#"{"name": "a""#).unwrap_err().contains("EOF"));
        assert!(names("[]").unwrap_err().starts_with("message 1: "));
        assert!(names("{} x").unwrap_err().starts_with("message 2: "));
    }

    #[test]
    fn doubles_are_read_exactly() {
        // The fuzz target call_body_parse found serde_json's fast float
        // parse one ulp off here; float_roundtrip reads it as std does.
        let double = DescriptorPool::global()
            .get_message_by_name("google.protobuf.DoubleValue")
            .unwrap();
        let text = "1111111111111111111111111111111111";
        let messages = parse_messages(&double, text).unwrap();
        let want: f64 = text.parse().unwrap();
        assert_eq!(to_json(&messages[0]).unwrap(), serde_json::json!(want));
    }
}
