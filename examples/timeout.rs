//! Deadlines on a grpc-lb `Channel`: a call that takes too long ends instead
//! of hanging.
//!
//! A deadline is set per call with `Request::set_timeout` (sent as the
//! `grpc-timeout` header, as tonic does), or per method by the service
//! config's `timeout` (the sooner of the two wins). The channel enforces it
//! while the call waits for a connection; the server enforces it once the
//! call is sent (a tonic server ends the call with `CANCELLED`, "Timeout
//! expired"). (tonic's `Endpoint::timeout`, one deadline for every call,
//! has no `Builder` setting here yet: the service config's `timeout` with an
//! empty `name` entry, `[{}]`, applies to every method.)
//!
//! ```text
//! cargo run -p examples --example timeout
//! ```

use std::time::Duration;

use grpc_lb::Channel;
use grpc_lb_helloworld::proto::{Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest};
use grpc_lb_helloworld::NamedGreeter;
use tonic::{Code, Request, Response, Status};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Calls `helloworld.Greeter` methods with a 100 ms deadline.
const SERVICE_CONFIG: &str = r#"{"methodConfig": [{
    "name": [{"service": "helloworld.Greeter"}],
    "timeout": "0.1s"
}]}"#;

#[tokio::main]
async fn main() -> Result<(), Error> {
    run().await.map(drop)
}

/// Makes three calls with a deadline; returns how each ended.
async fn run() -> Result<Vec<Result<String, Code>>, Error> {
    let mut outcomes = Vec::new();

    println!("a server that answers at once, 5 s deadline:");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let greeter = NamedGreeter::new("greeter");
    tokio::spawn(grpc_lb_helloworld::serve(
        listener,
        greeter,
        std::future::pending(),
    ));
    let mut client = GreeterClient::new(Channel::builder(format!("ipv4:{addr}")).build()?);
    let mut request = hello();
    request.set_timeout(Duration::from_secs(5));
    outcomes.push(outcome(client.say_hello(request).await));

    println!("a server that never answers, 100 ms deadline:");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tonic::transport::Server::builder()
        .add_service(GreeterServer::new(Stalled))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    let mut client = GreeterClient::new(Channel::builder(format!("ipv4:{addr}")).build()?);
    let mut request = hello();
    request.set_timeout(Duration::from_millis(100));
    outcomes.push(outcome(client.say_hello(request).await));

    println!("an endpoint that never finishes connecting, 100 ms from the service config:");
    // Bound but never accepting: TCP connects, HTTP/2 never starts, so the
    // channel stays CONNECTING and the call waits for a connection.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let channel = Channel::builder(format!("ipv4:{}", silent.local_addr()?))
        .service_config(SERVICE_CONFIG.parse()?)
        .build()?;
    let mut client = GreeterClient::new(channel);
    outcomes.push(outcome(client.say_hello(hello()).await));
    Ok(outcomes)
}

/// A Greeter that never answers.
struct Stalled;

#[tonic::async_trait]
impl Greeter for Stalled {
    async fn say_hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        std::future::pending().await
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
            println!("\tRESPONSE={:?}", response.get_ref());
            Ok(response.into_inner().message)
        }
        Err(status) => {
            println!("\tERROR={:?}: {}", status.code(), status.message());
            Err(status.code())
        }
    }
}

#[tokio::test]
async fn ends_late_calls() {
    let outcomes = run().await.unwrap();
    assert_eq!(outcomes[0], Ok("Hello Tonic from greeter".to_owned()));
    // tonic's server ends a handler past its deadline with CANCELLED; a
    // client that enforces the deadline itself ends the call first, with
    // DEADLINE_EXCEEDED. Either way the call ends.
    assert!(
        matches!(outcomes[1], Err(Code::Cancelled | Code::DeadlineExceeded)),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(outcomes[2], Err(Code::DeadlineExceeded));
}
