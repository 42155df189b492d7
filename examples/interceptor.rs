//! tonic's `interceptor` client on a grpc-lb `Channel`: an interceptor adds
//! a token to every request, and the server checks it.
//!
//! `GreeterClient::with_interceptor(channel, interceptor)` works on a grpc-lb
//! channel as on tonic's. The interceptor runs before the channel sees the
//! request: returning an error answers the call with that status without
//! sending anything. (`tonic::service::InterceptorLayer` does the same as a
//! tower layer, for a stack shared by several clients.)
//!
//! ```text
//! cargo run -p examples --example interceptor
//! ```

use grpc_lb::Channel;
use grpc_lb_helloworld::proto::{GreeterClient, GreeterServer, HelloReply, HelloRequest};
use grpc_lb_helloworld::NamedGreeter;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Code, Request, Response, Status};

type Error = Box<dyn std::error::Error + Send + Sync>;

const TOKEN: &str = "Bearer some-secret-token";

#[tokio::main]
async fn main() -> Result<(), Error> {
    run().await.map(drop)
}

/// Calls with the right token, a wrong one, and a refused request; returns
/// the outcome of each call.
async fn run() -> Result<Vec<Result<String, Code>>, Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let greeter = GreeterServer::with_interceptor(NamedGreeter::new("greeter"), check_token);
    let server = tonic::transport::Server::builder()
        .add_service(greeter)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);

    let channel = Channel::builder(format!("ipv4:{addr}")).build()?;
    let mut outcomes = Vec::new();

    // A named interceptor type: the client's type is
    // `GreeterClient<InterceptedService<Channel<_>, Authorize>>`.
    let mut client = GreeterClient::with_interceptor(channel.clone(), Authorize::new(TOKEN));
    outcomes.push(outcome(client.say_hello(hello()).await));

    let mut client = GreeterClient::with_interceptor(channel.clone(), Authorize::new("Bearer ?"));
    outcomes.push(outcome(client.say_hello(hello()).await));

    // A function works too; this one refuses every request it sees.
    let mut client = GreeterClient::with_interceptor(channel.clone(), refuse);
    outcomes.push(outcome(client.say_hello(hello()).await));

    // The refused call never reached the channel.
    println!("channel: {} calls", channel.stats().calls_started);
    assert_eq!(channel.stats().calls_started, 2);
    Ok(outcomes)
}

/// Adds an `authorization` entry to every outgoing request.
#[derive(Clone, Debug)]
struct Authorize {
    token: MetadataValue<tonic::metadata::Ascii>,
}

impl Authorize {
    fn new(token: &'static str) -> Self {
        Self {
            token: MetadataValue::from_static(token),
        }
    }
}

impl Interceptor for Authorize {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        println!("Intercepting request: {:?}", request.metadata());
        request
            .metadata_mut()
            .insert("authorization", self.token.clone());
        Ok(request)
    }
}

/// A client interceptor that answers every call itself.
fn refuse(_: Request<()>) -> Result<Request<()>, Status> {
    Err(Status::failed_precondition("not sending this one"))
}

/// The server's interceptor: only requests with the right token get through.
fn check_token(request: Request<()>) -> Result<Request<()>, Status> {
    match request.metadata().get("authorization") {
        Some(token) if token == TOKEN => Ok(request),
        _ => Err(Status::unauthenticated("no valid auth token")),
    }
}

fn hello() -> Request<HelloRequest> {
    Request::new(HelloRequest {
        name: "Tonic".into(),
    })
}

/// The reply's message, or the failure's code.
fn outcome(result: Result<Response<HelloReply>, Status>) -> Result<String, Code> {
    match result {
        Ok(response) => {
            println!("RESPONSE={:?}", response.get_ref());
            Ok(response.into_inner().message)
        }
        Err(status) => {
            println!("ERROR={:?}: {}", status.code(), status.message());
            Err(status.code())
        }
    }
}

#[tokio::test]
async fn adds_the_token() {
    let outcomes = run().await.unwrap();
    let expected = vec![
        Ok("Hello Tonic from greeter".to_owned()),
        Err(Code::Unauthenticated),
        Err(Code::FailedPrecondition),
    ];
    assert_eq!(outcomes, expected);
}
