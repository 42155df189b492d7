//! tonic's `helloworld` client on a grpc-lb `Channel`.
//!
//! Where tonic writes `GreeterClient::connect("http://[::1]:50051")`, grpc-lb
//! builds a channel from a gRPC target (`ipv4:`, `dns:///`, `unix:`...) and
//! hands it to the same generated client. Building does not connect: the
//! channel starts IDLE, and the first call connects it (tonic's
//! `connect_lazy`); `channel.connect()` would start connecting at once.
//!
//! ```text
//! cargo run -p examples --example helloworld
//! ```

use grpc_lb::{Channel, ConnectivityState};
use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use grpc_lb_helloworld::NamedGreeter;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    run().await.map(drop)
}

/// Says hello to a server of its own, and returns the reply.
async fn run() -> Result<String, Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let greeter = NamedGreeter::new("greeter");
    tokio::spawn(grpc_lb_helloworld::serve(
        listener,
        greeter,
        std::future::pending(),
    ));

    let channel = Channel::builder(format!("ipv4:{addr}")).build()?;
    println!("channel to {addr} built: {}", channel.state());
    let mut client = GreeterClient::new(channel.clone());

    let request = tonic::Request::new(HelloRequest {
        name: "Tonic".into(),
    });
    let response = client.say_hello(request).await?;
    println!("RESPONSE={:?}", response.get_ref());
    println!("channel after the call: {}", channel.state());
    assert_eq!(channel.state(), ConnectivityState::Ready);
    Ok(response.into_inner().message)
}

#[tokio::test]
async fn says_hello() {
    assert_eq!(run().await.unwrap(), "Hello Tonic from greeter");
}
