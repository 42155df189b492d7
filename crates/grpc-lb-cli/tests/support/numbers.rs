//! The streaming test service of tests/protos/grpclb/test/numbers.proto,
//! served by tonic in-process: its messages by prost's derive, its routing
//! written out as tonic's generated servers do it, so that the server knows
//! nothing of the tool's dynamic messages. Server reflection (v1, v1alpha,
//! both or neither) answers from the same .proto files, compiled by protox.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codec::Streaming;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Number {
    #[prost(int64, tag = "1")]
    pub value: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum Parity {
    Unspecified = 0,
    Even = 1,
    Odd = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Description {
    #[prost(enumeration = "Parity", tag = "1")]
    pub parity: i32,
    #[prost(int64, repeated, tag = "2")]
    pub divisors: Vec<i64>,
    #[prost(map = "string, string", tag = "3")]
    pub metadata: HashMap<String, String>,
    #[prost(message, optional, tag = "4")]
    pub note: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CountRequest {
    #[prost(int64, tag = "1")]
    pub to: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Total {
    #[prost(int64, tag = "1")]
    pub sum: i64,
    #[prost(int32, tag = "2")]
    pub count: i32,
}

/// The largest `to` of Count, and the largest number Describe factors.
const LIMIT: i64 = 10_000;

/// The directory holding `grpclb/test/*.proto` (the --import-path).
pub fn proto_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/protos")
}

/// numbers.proto.
pub fn numbers_proto() -> PathBuf {
    proto_dir().join("grpclb/test/numbers.proto")
}

/// The encoded FileDescriptorSet of numbers.proto and every import (a
/// protoset, as `protoc --include_imports -o` writes it), by protox.
pub fn protoset() -> Vec<u8> {
    let mut compiler = protox::Compiler::new([proto_dir()]).expect("the proto directory");
    compiler.include_imports(true);
    compiler
        .open_file(numbers_proto())
        .expect("numbers.proto compiles");
    compiler.encode_file_descriptor_set()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reflection {
    None,
    V1,
    V1Alpha,
    Both,
}

/// A tonic server of `grpclb.test.Numbers` on a free loopback port.
pub struct NumbersServer {
    runtime: tokio::runtime::Runtime,
    pub addr: SocketAddr,
}

impl NumbersServer {
    pub fn start(reflection: Reflection) -> NumbersServer {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let set = || {
            let bytes = protoset();
            tonic_reflection::server::Builder::configure()
                .register_file_descriptor_set(prost::Message::decode(bytes.as_slice()).unwrap())
        };
        let (v1, v1alpha) = match reflection {
            Reflection::None => (None, None),
            Reflection::V1 => (Some(set().build_v1().unwrap()), None),
            Reflection::V1Alpha => (None, Some(set().build_v1alpha().unwrap())),
            Reflection::Both => (
                Some(set().build_v1().unwrap()),
                Some(set().build_v1alpha().unwrap()),
            ),
        };
        let router = tonic::transport::Server::builder()
            .add_service(NumbersService)
            .add_optional_service(v1)
            .add_optional_service(v1alpha);
        runtime.spawn(router.serve_with_incoming(incoming));
        NumbersServer { runtime, addr }
    }

    pub fn target(&self) -> String {
        format!("ipv4:{}", self.addr)
    }
}

/// `grpclb.test.Numbers`, routed by path.
#[derive(Clone, Debug)]
pub struct NumbersService;

impl tonic::server::NamedService for NumbersService {
    const NAME: &'static str = "grpclb.test.Numbers";
}

type BoxFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for NumbersService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> BoxFuture {
        match request.uri().path() {
            "/grpclb.test.Numbers/Describe" => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
                Ok(grpc.unary(tower::service_fn(describe), request).await)
            }),
            "/grpclb.test.Numbers/Count" => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
                Ok(grpc
                    .server_streaming(tower::service_fn(count), request)
                    .await)
            }),
            "/grpclb.test.Numbers/Sum" => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
                Ok(grpc.client_streaming(tower::service_fn(sum), request).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

async fn describe(request: Request<Number>) -> Result<Response<Description>, Status> {
    let value = request.get_ref().value;
    if !(1..=LIMIT).contains(&value) {
        return Err(Status::invalid_argument(format!(
            "value {value} is not in 1..={LIMIT}"
        )));
    }
    let metadata = request
        .metadata()
        .iter()
        .filter_map(|entry| match entry {
            tonic::metadata::KeyAndValueRef::Ascii(key, value) => {
                let key = key.as_str();
                key.starts_with("x-")
                    .then(|| (key.to_owned(), value.to_str().unwrap_or("").to_owned()))
            }
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .collect();
    Ok(Response::new(Description {
        parity: if value % 2 == 0 {
            Parity::Even
        } else {
            Parity::Odd
        } as i32,
        divisors: (1..=value).filter(|d| value % d == 0).collect(),
        metadata,
        note: (value == 42).then(|| "the answer".to_owned()),
    }))
}

type NumberStream = tokio_stream::Iter<std::vec::IntoIter<Result<Number, Status>>>;

async fn count(request: Request<CountRequest>) -> Result<Response<NumberStream>, Status> {
    let to = request.get_ref().to;
    if !(0..=LIMIT).contains(&to) {
        return Err(Status::invalid_argument(format!(
            "to {to} is not in 0..={LIMIT}"
        )));
    }
    let numbers: Vec<Result<Number, Status>> = (1..=to).map(|value| Ok(Number { value })).collect();
    Ok(Response::new(tokio_stream::iter(numbers)))
}

async fn sum(request: Request<Streaming<Number>>) -> Result<Response<Total>, Status> {
    let mut numbers = request.into_inner();
    let mut total = Total::default();
    while let Some(number) = numbers.message().await? {
        total.sum += number.value;
        total.count += 1;
    }
    Ok(Response::new(total))
}
