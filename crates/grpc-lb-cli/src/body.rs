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
        let message = DynamicMessage::deserialize(input.clone(), &mut deserializer).map_err(
            |error| BodyError {
                message: messages.len() + 1,
                error,
            },
        )?;
        messages.push(message);
    }
    Ok(messages)
}

/// A message in the proto3 JSON mapping (fields at their default values
/// left out, as protojson and grpcurl print them).
pub(crate) fn to_json(message: &DynamicMessage) -> serde_json::Value {
    // A DynamicMessage serializes infallibly into a Value: its map keys
    // are strings and its floats that JSON lacks become "NaN"/"Infinity".
    serde_json::to_value(message).unwrap_or(serde_json::Value::Null)
}
