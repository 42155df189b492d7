//! `grpc-lb call TARGET METHOD`: one call of any method, its request
//! messages read as JSON from `-d`, its responses printed as JSON, one line
//! per message, through the same balanced channel and call stack as the
//! SayHello load.

use std::process::ExitCode;
use std::time::Duration;

use grpc_lb::WaitForReady;
use http::uri::PathAndQuery;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use serde_json::{json, Value};
use tokio::time::Instant;
use tonic::codec::Streaming;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::body;
use crate::channel::PeerSlot;
use crate::codec::DynamicCodec;
use crate::in_force;
use crate::options::{BuiltClient, ChannelArgs};
use crate::request::{self, HeaderArgs};
use crate::schema::{Reflection, Schema, SchemaArgs, DEFAULT_METHOD};
use crate::stack::{call_stack, CallStack};
use crate::{CliError, CliResult};

/// What one call needs from `call`'s flags.
#[derive(Debug)]
pub(crate) struct Invocation<'a> {
    pub(crate) target: &'a str,
    /// `None`: helloworld's SayHello, from its built-in schema unless
    /// --proto or --protoset are given.
    pub(crate) method: Option<&'a str>,
    pub(crate) data: Option<&'a str>,
    pub(crate) headers: &'a HeaderArgs,
    pub(crate) schema: &'a SchemaArgs,
    pub(crate) channel: &'a ChannelArgs,
    pub(crate) wait_for_ready: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) json: bool,
}

/// Makes the call; exit 0 when it ended OK, 1 when its status was not.
pub(crate) async fn run(invocation: Invocation<'_>) -> CliResult {
    // Everything the flags alone decide is checked before connecting.
    let metadata = invocation.headers.metadata()?;
    let text = invocation.data.map(request::body_text).transpose()?;
    let BuiltClient {
        client: channel,
        default_config,
        options,
        stack,
    } = invocation
        .channel
        .build_client(invocation.target, invocation.wait_for_ready)
        .await?;
    let stack = call_stack(&channel, stack);
    let method = resolve(
        &Lookup {
            target: invocation.target,
            method: invocation.method,
            schema: invocation.schema,
            timeout: invocation.timeout,
        },
        &stack,
        &metadata,
    )
    .await?;
    let messages = request_messages(&method, text.as_deref())?;

    let start = Instant::now();
    let slot = PeerSlot::default();
    let mut printer = Printer {
        json: invocation.json,
        count: 0,
        responses: Vec::new(),
    };
    let result = call(
        &method,
        stack,
        messages,
        &invocation,
        metadata,
        &slot,
        &mut printer,
    )
    .await;
    let elapsed = start.elapsed();
    let name = format!("{}/{}", method.parent_service().full_name(), method.name());
    if invocation.json {
        let config = channel.service_config();
        let (code, message) = match &result {
            Ok(()) => (Code::Ok, String::new()),
            Err(status) => (status.code(), status.message().to_owned()),
        };
        let mut report = json!({
            "target": invocation.target,
            "method": name,
            "code": crate::load::code_name(code),
            "message": message,
            "responses": printer.responses,
            "backend": slot.get().map(ToString::to_string),
            "duration_ms": (elapsed.as_secs_f64() * 1e6).round() / 1000.0,
            "policy": in_force::policy(config.as_deref(), &invocation.channel.policy),
            "service_config": config.as_deref().map(in_force::config_json),
            "service_config_source": in_force::source(config.as_deref(), default_config.as_ref()),
            "options": options,
        });
        if let Some(grpclb) = channel.grpclb() {
            report["policy"] = json!(crate::grpclb::GRPCLB);
            report["grpclb"] = grpclb.json(None);
        }
        if let Some(tree) = channel.tree() {
            report["policy"] = json!(tree.policy.name());
            report["tree"] = tree.json();
        }
        println!("{report}");
    }
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // The status is in the JSON object.
        Err(_) if invocation.json => Ok(ExitCode::FAILURE),
        Err(status) => Err(CliError::failed(format!(
            "{name}: {}: {}",
            crate::load::code_name(status.code()),
            status.message()
        ))),
    }
}

/// Where to find a method's schema.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lookup<'a> {
    pub(crate) target: &'a str,
    /// `None`: helloworld's SayHello.
    pub(crate) method: Option<&'a str>,
    pub(crate) schema: &'a SchemaArgs,
    /// The deadline of the reflection calls.
    pub(crate) timeout: Option<Duration>,
}

/// The method to call, from the schema the flags name.
pub(crate) async fn resolve(
    invocation: &Lookup<'_>,
    stack: &CallStack,
    metadata: &MetadataMap,
) -> Result<MethodDescriptor, CliError> {
    let files = !invocation.schema.protos.is_empty() || !invocation.schema.protosets.is_empty();
    let mut schema = match (invocation.method, files) {
        // The default method needs no reflection: its schema is built in.
        (None, false) => Schema::Files {
            pool: DescriptorPool::decode(grpc_lb_helloworld::FILE_DESCRIPTOR_SET).map_err(
                |error| CliError::failed(format!("the built-in helloworld schema: {error}")),
            )?,
            origin: "the built-in helloworld schema",
        },
        _ => Schema::new(invocation.schema, || {
            Reflection::new(
                stack.clone(),
                invocation.target,
                metadata.clone(),
                invocation.timeout,
            )
        })?,
    };
    schema
        .method(invocation.method.unwrap_or(DEFAULT_METHOD))
        .await
}

/// The request messages `-d` holds; without `-d` a unary or
/// server-streaming method gets one empty message and a client-streaming
/// one none, as grpcurl sends them.
pub(crate) fn request_messages(
    method: &MethodDescriptor,
    text: Option<&str>,
) -> Result<Vec<DynamicMessage>, CliError> {
    let mut messages = match text {
        Some(text) => body::parse_messages(&method.input(), text).map_err(|error| {
            CliError::usage(format!(
                "-d: {error} (the request is a {})",
                method.input().full_name()
            ))
        })?,
        None => Vec::new(),
    };
    if !method.is_client_streaming() {
        match messages.len() {
            0 => messages.push(DynamicMessage::new(method.input())),
            1 => {}
            n => {
                return Err(CliError::usage(format!(
                    "-d holds {n} messages, but {} takes one request message",
                    method.full_name()
                )))
            }
        }
    }
    Ok(messages)
}

/// Prints responses as they come (one JSON line each), or keeps them for
/// the `--json` report.
struct Printer {
    json: bool,
    /// Responses printed (or kept) so far.
    count: usize,
    responses: Vec<Value>,
}

impl Printer {
    fn print(&mut self, message: &DynamicMessage) -> Result<(), Status> {
        let value = body::to_json(message).map_err(|error| {
            Status::internal(format!(
                "response {} cannot be shown as JSON: {error}",
                self.count + 1
            ))
        })?;
        self.count += 1;
        if self.json {
            self.responses.push(value);
        } else {
            println!("{value}");
        }
        Ok(())
    }

    async fn print_stream(&mut self, mut stream: Streaming<DynamicMessage>) -> Result<(), Status> {
        while let Some(message) = stream.message().await? {
            self.print(&message)?;
        }
        Ok(())
    }
}

async fn call(
    method: &MethodDescriptor,
    stack: CallStack,
    messages: Vec<DynamicMessage>,
    invocation: &Invocation<'_>,
    metadata: MetadataMap,
    slot: &PeerSlot,
    printer: &mut Printer,
) -> Result<(), Status> {
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let path = PathAndQuery::try_from(path)
        .map_err(|error| Status::internal(format!("the method's path: {error}")))?;
    // The stack's message-size layer enforces the limits (the service
    // config's and the flags'); tonic's own would refuse at 4 MiB first.
    let mut grpc = tonic::client::Grpc::new(stack).max_decoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|error| Status::unavailable(format!("the channel is not ready: {error}")))?;
    let codec = DynamicCodec::new(method.output());
    let finish = |request| prepare(request, &metadata, invocation, slot);
    match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, server_streaming) => {
            let Some(message) = messages.into_iter().next() else {
                return Err(Status::internal("no request message"));
            };
            let request = finish(tonic::Request::new(message));
            if server_streaming {
                let response = grpc.server_streaming(request, path, codec).await?;
                printer.print_stream(response.into_inner()).await
            } else {
                let response = grpc.unary(request, path, codec).await?;
                printer.print(response.get_ref())
            }
        }
        (true, server_streaming) => {
            let request = prepare(
                tonic::Request::new(tokio_stream::iter(messages)),
                &metadata,
                invocation,
                slot,
            );
            if server_streaming {
                let response = grpc.streaming(request, path, codec).await?;
                printer.print_stream(response.into_inner()).await
            } else {
                let response = grpc.client_streaming(request, path, codec).await?;
                printer.print(response.get_ref())
            }
        }
    }
}

/// The call's metadata, deadline, wait-for-ready and peer slot.
fn prepare<T>(
    mut request: tonic::Request<T>,
    metadata: &MetadataMap,
    invocation: &Invocation<'_>,
    slot: &PeerSlot,
) -> tonic::Request<T> {
    *request.metadata_mut() = metadata.clone();
    if let Some(timeout) = invocation.timeout {
        request.set_timeout(timeout);
    }
    if invocation.wait_for_ready {
        request.extensions_mut().insert(WaitForReady(true));
    }
    request.extensions_mut().insert(slot.clone());
    request
}
