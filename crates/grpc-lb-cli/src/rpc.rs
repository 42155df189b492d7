//! What each call of a load sends: helloworld's `SayHello` (the default), or
//! any method with the request messages of `-d`, encoded once, through the
//! same call stack as a single `call METHOD`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use grpc_lb::WaitForReady;
use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use http::uri::PathAndQuery;
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, MethodDescriptor};
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::channel::PeerSlot;
use crate::codec::PreEncodedCodec;
use crate::stack::CallStack;
use crate::CliError;

/// The call a load repeats.
#[derive(Debug, Clone)]
pub(crate) enum Rpc {
    /// `helloworld.Greeter/SayHello` with this `name`.
    SayHello { name: String },
    /// Any method, its schema found as `call METHOD` finds it.
    Method(Arc<MethodRpc>),
}

/// A method of any kind and the messages each call sends.
#[derive(Debug)]
pub(crate) struct MethodRpc {
    /// `package.Service/Method`.
    name: String,
    path: PathAndQuery,
    output: MessageDescriptor,
    /// The request messages, encoded: one for a unary or server-streaming
    /// method, all of `-d` for a client-streaming one.
    requests: Vec<Bytes>,
    client_streaming: bool,
    server_streaming: bool,
}

impl Rpc {
    /// Calls of `method`, each sending `messages` (as `-d` parsed them).
    pub(crate) fn method(
        method: &MethodDescriptor,
        messages: &[DynamicMessage],
    ) -> Result<Rpc, CliError> {
        let name = format!("{}/{}", method.parent_service().full_name(), method.name());
        let path = PathAndQuery::try_from(format!("/{name}"))
            .map_err(|error| CliError::failed(format!("the path of {name}: {error}")))?;
        Ok(Rpc::Method(Arc::new(MethodRpc {
            name,
            path,
            output: method.output(),
            requests: messages
                .iter()
                .map(|m| Bytes::from(m.encode_to_vec()))
                .collect(),
            client_streaming: method.is_client_streaming(),
            server_streaming: method.is_server_streaming(),
        })))
    }

    /// `package.Service/Method`, as the JSON's `method` shows it.
    pub(crate) fn name(&self) -> &str {
        match self {
            Rpc::SayHello { .. } => "helloworld.Greeter/SayHello",
            Rpc::Method(method) => &method.name,
        }
    }

    /// What a worker calls with.
    pub(crate) fn caller(&self, stack: CallStack) -> Caller {
        match self {
            Rpc::SayHello { name } => Caller::Greeter {
                client: GreeterClient::new(stack),
                name: name.clone(),
            },
            // The stack's message-size layer enforces the limits; tonic's
            // own would refuse at 4 MiB first.
            Rpc::Method(method) => Caller::Method {
                grpc: tonic::client::Grpc::new(stack).max_decoding_message_size(usize::MAX),
                method: method.clone(),
            },
        }
    }
}

/// One worker's client.
#[derive(Debug)]
pub(crate) enum Caller {
    Greeter {
        client: GreeterClient<CallStack>,
        name: String,
    },
    Method {
        grpc: tonic::client::Grpc<CallStack>,
        method: Arc<MethodRpc>,
    },
}

/// What every call of a load carries besides its message.
#[derive(Debug, Clone)]
pub(crate) struct CallSettings {
    /// Sent with each call (`-H`).
    pub(crate) metadata: MetadataMap,
    /// Each call's deadline (sent as `grpc-timeout`).
    pub(crate) timeout: Option<Duration>,
    pub(crate) wait_for_ready: bool,
}

impl CallSettings {
    fn request<T>(&self, message: T, slot: &PeerSlot) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if !self.metadata.is_empty() {
            *request.metadata_mut() = self.metadata.clone();
        }
        if let Some(timeout) = self.timeout {
            request.set_timeout(timeout);
        }
        if self.wait_for_ready {
            request.extensions_mut().insert(WaitForReady(true));
        }
        request.extensions_mut().insert(slot.clone());
        request
    }
}

impl Caller {
    /// Makes one call; `slot` learns the backend that answered. A streamed
    /// response is read to its end: the call's status is the stream's.
    pub(crate) async fn call(
        &mut self,
        settings: &CallSettings,
        slot: &PeerSlot,
    ) -> Result<(), Status> {
        match self {
            Caller::Greeter { client, name } => {
                let request = settings.request(HelloRequest { name: name.clone() }, slot);
                client.say_hello(request).await.map(drop)
            }
            Caller::Method { grpc, method } => {
                grpc.ready().await.map_err(|error| {
                    Status::unavailable(format!("the channel is not ready: {error}"))
                })?;
                let codec = PreEncodedCodec::new(method.output.clone());
                let path = method.path.clone();
                let first = || method.requests.first().cloned().unwrap_or_default();
                match (method.client_streaming, method.server_streaming) {
                    (false, false) => {
                        let request = settings.request(first(), slot);
                        grpc.unary(request, path, codec).await.map(drop)
                    }
                    (false, true) => {
                        let request = settings.request(first(), slot);
                        let response = grpc.server_streaming(request, path, codec).await?;
                        drain(response.into_inner()).await
                    }
                    (true, server_streaming) => {
                        let stream = tokio_stream::iter(method.requests.clone());
                        let request = settings.request(stream, slot);
                        if server_streaming {
                            let response = grpc.streaming(request, path, codec).await?;
                            drain(response.into_inner()).await
                        } else {
                            grpc.client_streaming(request, path, codec).await.map(drop)
                        }
                    }
                }
            }
        }
    }
}

/// Reads a response stream to its end.
async fn drain(mut stream: tonic::codec::Streaming<DynamicMessage>) -> Result<(), Status> {
    while stream.message().await?.is_some() {}
    Ok(())
}
