//! A tonic [`Codec`] over [`DynamicMessage`]: requests are encoded from
//! whatever type they carry, responses decoded as the method's output type,
//! both known only at run time.

use bytes::{BufMut as _, Bytes};
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Encodes any [`DynamicMessage`], decodes the `output` message type.
#[derive(Debug, Clone)]
pub(crate) struct DynamicCodec {
    output: MessageDescriptor,
}

impl DynamicCodec {
    pub(crate) fn new(output: MessageDescriptor) -> Self {
        DynamicCodec { output }
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder {
            output: self.output.clone(),
        }
    }
}

/// The encoding half of [`DynamicCodec`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|error| Status::internal(format!("encoding the request: {error}")))
    }
}

/// The decoding half of [`DynamicCodec`].
#[derive(Debug, Clone)]
pub(crate) struct DynamicDecoder {
    output: MessageDescriptor,
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.output.clone(), src)
            .map(Some)
            .map_err(|error| {
                Status::internal(format!(
                    "the response is not a valid {}: {error}",
                    self.output.full_name()
                ))
            })
    }
}

/// The codec of a load of any method: every call sends the same request
/// messages, encoded once ([`Bytes`] clones share them), and decodes each
/// response as the method's output type, so that a response that is not one
/// fails its call as it fails a single call.
#[derive(Debug, Clone)]
pub(crate) struct PreEncodedCodec {
    output: MessageDescriptor,
}

impl PreEncodedCodec {
    pub(crate) fn new(output: MessageDescriptor) -> Self {
        PreEncodedCodec { output }
    }
}

impl Codec for PreEncodedCodec {
    type Encode = Bytes;
    type Decode = DynamicMessage;
    type Encoder = PreEncoded;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> PreEncoded {
        PreEncoded
    }

    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder {
            output: self.output.clone(),
        }
    }
}

/// The encoding half of [`PreEncodedCodec`]: copies the encoded message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreEncoded;

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}
