//! A server reflection client (`grpc.reflection.v1`, falling back to
//! `v1alpha` when the server does not implement v1, as grpcurl does) that
//! fetches the files defining a symbol, and the files they import, into a
//! [`DescriptorPool`]. Its calls go through the same channel stack as the
//! call itself, with the same metadata and deadline.

use std::collections::HashSet;
use std::time::Duration;

use http::uri::PathAndQuery;
use prost::Message as _;
use prost_reflect::DescriptorPool;
use prost_types::FileDescriptorProto;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::Streaming;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

use crate::stack::CallStack;
use crate::CliError;

/// The versions of the reflection service, in the order they are tried.
/// Their messages are the same on the wire, so v1's types serve both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V1Alpha,
}

impl Version {
    fn service(self) -> &'static str {
        match self {
            Version::V1 => "grpc.reflection.v1.ServerReflection",
            Version::V1Alpha => "grpc.reflection.v1alpha.ServerReflection",
        }
    }

    fn path(self) -> PathAndQuery {
        PathAndQuery::from_static(match self {
            Version::V1 => "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            Version::V1Alpha => "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        })
    }
}

/// The open `ServerReflectionInfo` stream: one answer per question, in order.
struct Open {
    questions: mpsc::Sender<ServerReflectionRequest>,
    answers: Streaming<ServerReflectionResponse>,
}

/// What a question got: an answer, or the symbol or file was not found.
enum Answer {
    Found(MessageResponse),
    NotFound(String),
}

/// A reflection client and the descriptors it has fetched so far.
pub(crate) struct Reflection {
    grpc: tonic::client::Grpc<CallStack>,
    target: String,
    metadata: MetadataMap,
    timeout: Option<Duration>,
    /// The version the server answered on, once one did.
    version: Option<Version>,
    open: Option<Open>,
    pool: DescriptorPool,
}

impl std::fmt::Debug for Reflection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reflection")
            .field("target", &self.target)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Reflection {
    pub(crate) fn new(
        stack: CallStack,
        target: &str,
        metadata: MetadataMap,
        timeout: Option<Duration>,
    ) -> Self {
        Reflection {
            grpc: tonic::client::Grpc::new(stack),
            target: target.to_owned(),
            metadata,
            timeout,
            version: None,
            open: None,
            pool: DescriptorPool::new(),
        }
    }

    /// The target asked.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// The descriptors fetched so far.
    pub(crate) fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// The services the server lists.
    pub(crate) async fn list_services(&mut self) -> Result<Vec<String>, CliError> {
        match self
            .ask(MessageRequest::ListServices(String::new()))
            .await?
        {
            Answer::Found(MessageResponse::ListServicesResponse(list)) => {
                let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
                names.sort();
                Ok(names)
            }
            Answer::Found(other) => Err(self.unexpected(&other)),
            Answer::NotFound(message) => Err(self.failed(&message)),
        }
    }

    /// Fetches the file that defines `symbol` and everything it imports;
    /// `Ok(false)` when the server knows no such symbol.
    pub(crate) async fn load_symbol(&mut self, symbol: &str) -> Result<bool, CliError> {
        let request = MessageRequest::FileContainingSymbol(symbol.to_owned());
        match self.ask(request).await? {
            Answer::Found(MessageResponse::FileDescriptorResponse(files)) => {
                self.add_files(files.file_descriptor_proto).await?;
                Ok(true)
            }
            Answer::Found(other) => Err(self.unexpected(&other)),
            Answer::NotFound(_) => Ok(false),
        }
    }

    /// Adds encoded files to the pool, first fetching by name each import
    /// neither they nor the pool hold.
    async fn add_files(&mut self, encoded: Vec<Vec<u8>>) -> Result<(), CliError> {
        let mut files: Vec<FileDescriptorProto> = Vec::new();
        let mut names: HashSet<String> = HashSet::new();
        let mut asked: HashSet<String> = HashSet::new();
        let mut queue = encoded;
        loop {
            for bytes in queue.drain(..) {
                let file = FileDescriptorProto::decode(bytes.as_slice()).map_err(|error| {
                    self.failed(&format!("a file descriptor that does not decode: {error}"))
                })?;
                if self.pool.get_file_by_name(file.name()).is_none()
                    && names.insert(file.name().to_owned())
                {
                    files.push(file);
                }
            }
            let missing: Vec<String> = files
                .iter()
                .flat_map(|file| file.dependency.iter())
                .filter(|dep| {
                    !names.contains(*dep)
                        && !asked.contains(*dep)
                        && self.pool.get_file_by_name(dep).is_none()
                })
                .cloned()
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            if missing.is_empty() {
                break;
            }
            for name in missing {
                match self
                    .ask(MessageRequest::FileByFilename(name.clone()))
                    .await?
                {
                    Answer::Found(MessageResponse::FileDescriptorResponse(more)) => {
                        queue.extend(more.file_descriptor_proto);
                    }
                    Answer::Found(other) => return Err(self.unexpected(&other)),
                    Answer::NotFound(_) => {
                        return Err(self.failed(&format!("the server does not have {name:?}")))
                    }
                }
                // A server that answers with other files than the one asked
                // for would make this loop forever without it.
                asked.insert(name);
            }
        }
        self.pool
            .add_file_descriptor_protos(files)
            .map_err(|error| self.failed(&format!("its file descriptors are invalid: {error}")))
    }

    async fn ask(&mut self, request: MessageRequest) -> Result<Answer, CliError> {
        let question = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let answer = match self.open.as_mut() {
            Some(open) => {
                // A closed stream shows as the error its next message() gives.
                let _ = open.questions.send(question).await;
                open.answers.message().await
            }
            None => self.open_stream(question).await?,
        };
        match answer {
            Ok(Some(response)) => match response.message_response {
                Some(MessageResponse::ErrorResponse(error))
                    if error.error_code == Code::NotFound as i32 =>
                {
                    Ok(Answer::NotFound(error.error_message))
                }
                Some(MessageResponse::ErrorResponse(error)) => Err(self.failed(&format!(
                    "{}: {}",
                    crate::load::code_name(Code::from_i32(error.error_code)),
                    error.error_message
                ))),
                Some(found) => Ok(Answer::Found(found)),
                None => Err(self.failed("an answer without a response")),
            },
            Ok(None) => {
                self.open = None;
                Err(self.failed("the stream ended without an answer"))
            }
            Err(status) => {
                // The stream is over; a later question opens another.
                self.open = None;
                if status.code() == Code::NotFound {
                    Ok(Answer::NotFound(status.message().to_owned()))
                } else {
                    Err(self.status_failed(&status))
                }
            }
        }
    }

    /// Opens the stream with its first question, on v1 and, when the server
    /// does not implement v1, on v1alpha, and returns what came first (a
    /// server may send its headers only with the first answer). The stream
    /// is kept when an answer came.
    async fn open_stream(
        &mut self,
        first: ServerReflectionRequest,
    ) -> Result<Result<Option<ServerReflectionResponse>, Status>, CliError> {
        let versions: &[Version] = match self.version {
            Some(Version::V1) => &[Version::V1],
            Some(Version::V1Alpha) => &[Version::V1Alpha],
            None => &[Version::V1, Version::V1Alpha],
        };
        let mut unimplemented = Vec::new();
        for &version in versions {
            let (questions, receiver) = mpsc::channel(4);
            // The receiver is alive: this cannot fail.
            let _ = questions.send(first.clone()).await;
            let mut request = tonic::Request::new(ReceiverStream::new(receiver));
            *request.metadata_mut() = self.metadata.clone();
            if let Some(timeout) = self.timeout {
                request.set_timeout(timeout);
            }
            self.grpc
                .ready()
                .await
                .map_err(|error| self.failed(&format!("the channel is not ready: {error}")))?;
            let codec = tonic_prost::ProstCodec::<ServerReflectionRequest, ServerReflectionResponse>::default();
            let (answers, first_answer) =
                match self.grpc.streaming(request, version.path(), codec).await {
                    Ok(response) => {
                        let mut answers = response.into_inner();
                        let first_answer = answers.message().await;
                        (Some(answers), first_answer)
                    }
                    Err(status) => (None, Err(status)),
                };
            if let Err(status) = &first_answer {
                if status.code() == Code::Unimplemented {
                    unimplemented.push(version.service());
                    continue;
                }
            }
            self.version = Some(version);
            if let (Some(answers), Ok(Some(_))) = (answers, &first_answer) {
                self.open = Some(Open { questions, answers });
            }
            return Ok(first_answer);
        }
        Err(CliError::failed(format!(
            "{} does not serve reflection ({} UNIMPLEMENTED); give the schema with --proto or --protoset",
            self.target,
            unimplemented.join(" and ")
        )))
    }

    fn failed(&self, why: &str) -> CliError {
        CliError::failed(format!("server reflection at {}: {why}", self.target))
    }

    fn status_failed(&self, status: &Status) -> CliError {
        self.failed(&format!(
            "{}: {}",
            crate::load::code_name(status.code()),
            status.message()
        ))
    }

    fn unexpected(&self, answer: &MessageResponse) -> CliError {
        let kind = match answer {
            MessageResponse::FileDescriptorResponse(_) => "file descriptors",
            MessageResponse::AllExtensionNumbersResponse(_) => "extension numbers",
            MessageResponse::ListServicesResponse(_) => "a service list",
            MessageResponse::ErrorResponse(_) => "an error",
        };
        self.failed(&format!("answered with {kind}, not what was asked"))
    }
}
