//! tonic's `health` example, from the client's side: servers report their
//! health with `tonic-health`, and a grpc-lb channel with health checking
//! sends calls only to the servers that say they are serving.
//!
//! `Builder::health_check(service)` makes every connection watch
//! `grpc.health.v1.Health/Watch` for that service (gRFC A17, as grpc-go's
//! `healthCheckConfig`). While a server answers NOT_SERVING, its subchannel
//! is in TRANSIENT_FAILURE and round_robin skips it; once it is SERVING again,
//! it is picked again. Its connection stays open throughout.
//!
//! ```text
//! cargo run -p examples --example health
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;

use grpc_lb::resolve::Address;
use grpc_lb::Channel;
use grpc_lb_helloworld::proto::{GreeterClient, GreeterServer, HelloRequest};
use grpc_lb_helloworld::{NamedGreeter, BACKEND_METADATA_KEY};
use tonic_health::server::HealthReporter;

type Error = Box<dyn std::error::Error + Send + Sync>;
type GrpcChannel = Channel<grpc_lb::connect::Http2Connection<tonic::body::Body>>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    run().await.map(drop)
}

/// Flips one server's health; returns who answered four calls at each step.
async fn run() -> Result<Vec<BTreeSet<String>>, Error> {
    let (one, _one_health) = greeter("server-1").await?;
    let (two, two_health) = greeter("server-2").await?;

    let channel = Channel::builder(format!("ipv4:{one},{two}"))
        .policy("round_robin")
        .health_check("helloworld.Greeter")
        .build()?;
    channel.connect();
    let mut client = GreeterClient::new(channel.clone());
    let mut steps = Vec::new();

    println!("both servers SERVING");
    wait_until_ready(&channel, &[one, two]).await?;
    steps.push(four_calls(&mut client).await?);

    println!("server-2 reports NOT_SERVING");
    two_health
        .set_not_serving::<GreeterServer<NamedGreeter>>()
        .await;
    wait_until_ready(&channel, &[one]).await?;
    println!("  picking from {:?}", channel.ready_addresses());
    steps.push(four_calls(&mut client).await?);

    println!("server-2 reports SERVING again");
    two_health
        .set_serving::<GreeterServer<NamedGreeter>>()
        .await;
    wait_until_ready(&channel, &[one, two]).await?;
    steps.push(four_calls(&mut client).await?);
    Ok(steps)
}

/// A Greeter server on loopback with the standard health service, reporting
/// `helloworld.Greeter` as SERVING; returns its address and health reporter.
async fn greeter(name: &str) -> Result<(SocketAddr, HealthReporter), Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<GreeterServer<NamedGreeter>>().await;
    let server = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(GreeterServer::new(NamedGreeter::new(name)))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    Ok((addr, reporter))
}

/// Waits until the channel picks from exactly these addresses.
async fn wait_until_ready(channel: &GrpcChannel, addrs: &[SocketAddr]) -> Result<(), Error> {
    let wanted: BTreeSet<Address> = addrs.iter().copied().map(Address::from).collect();
    let mut picker = channel.watch_picker();
    while channel
        .ready_addresses()
        .into_iter()
        .collect::<BTreeSet<_>>()
        != wanted
    {
        picker.changed().await?;
    }
    Ok(())
}

/// Makes four calls; returns the backends that answered them.
async fn four_calls(client: &mut GreeterClient<GrpcChannel>) -> Result<BTreeSet<String>, Error> {
    let mut answered = BTreeSet::new();
    for _ in 0..4 {
        let request = tonic::Request::new(HelloRequest {
            name: "hello".into(),
        });
        let response = client.say_hello(request).await?;
        let backend = response.metadata().get(BACKEND_METADATA_KEY);
        answered.insert(backend.ok_or("no backend named")?.to_str()?.to_owned());
        println!("RESPONSE={:?}", response.into_inner().message);
    }
    Ok(answered)
}

#[tokio::test]
async fn calls_only_serving_servers() {
    let steps = run().await.unwrap();
    let names = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    let expected = vec![
        names(&["server-1", "server-2"]),
        names(&["server-1"]),
        names(&["server-1", "server-2"]),
    ];
    assert_eq!(steps, expected);
}
