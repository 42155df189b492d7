//! tonic's `dynamic_load_balance` client on a grpc-lb `Channel`: endpoints
//! added and removed while calls flow.
//!
//! tonic's `Channel::balance_channel` takes `Change::Insert` / `Change::Remove`
//! messages. In grpc-lb, endpoints come from a resolver, and the manual
//! resolver is the one your own discovery code drives: register it under a
//! scheme, build the channel from a target with that scheme, then `add`,
//! `remove` or `reset` endpoints through its handle. The channel connects to
//! new endpoints, picks only ready ones, and fails calls fast (`UNAVAILABLE`)
//! while it has none.
//!
//! ```text
//! cargo run -p examples --example dynamic_load_balance
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;

use grpc_lb::resolve::{Address, Endpoint, ManualResolver, Registry};
use grpc_lb::{Channel, ConnectivityState};
use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use grpc_lb_helloworld::{NamedGreeter, BACKEND_METADATA_KEY};

type Error = Box<dyn std::error::Error + Send + Sync>;
type GrpcChannel = Channel<grpc_lb::connect::Http2Connection<tonic::body::Body>>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    run().await.map(drop)
}

/// Walks through a series of endpoint changes; returns, for each step, who
/// answered four calls (a backend's name, or the status code of a failure).
async fn run() -> Result<Vec<BTreeSet<String>>, Error> {
    let (one, two) = (greeter("server-1").await?, greeter("server-2").await?);

    let (resolver, endpoints) = ManualResolver::new("example");
    let mut resolvers = Registry::with_defaults();
    resolvers.register(resolver);
    let channel = Channel::builder("example:///greeter")
        .resolver_registry(resolvers)
        .policy("round_robin")
        .build()?;
    let mut client = GreeterClient::new(channel.clone());

    let mut steps = Vec::new();
    println!("Added first endpoint");
    endpoints.add([Endpoint::from(one)]);
    wait_until_ready(&channel, &[one]).await?;
    steps.push(four_calls(&mut client).await?);

    println!("Added second endpoint");
    endpoints.add([Endpoint::from(two)]);
    wait_until_ready(&channel, &[one, two]).await?;
    steps.push(four_calls(&mut client).await?);

    println!("Removed first endpoint");
    endpoints.remove([Address::from(one)]);
    wait_until_ready(&channel, &[two]).await?;
    steps.push(four_calls(&mut client).await?);

    println!("Removed second endpoint");
    endpoints.remove([Address::from(two)]);
    // No endpoint at all: the channel is in TRANSIENT_FAILURE, and calls fail
    // at once rather than wait.
    let mut state = channel.watch_state();
    state
        .wait_for(|now| now.state == ConnectivityState::TransientFailure)
        .await?;
    steps.push(four_calls(&mut client).await?);

    println!("Added third endpoint (the first server again)");
    endpoints.add([Endpoint::from(one)]);
    wait_until_ready(&channel, &[one]).await?;
    steps.push(four_calls(&mut client).await?);

    println!("... Bye");
    Ok(steps)
}

/// A Greeter server on loopback, which answers as `name`.
async fn greeter(name: &str) -> Result<SocketAddr, Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let greeter = NamedGreeter::new(name);
    tokio::spawn(grpc_lb_helloworld::serve(
        listener,
        greeter,
        std::future::pending(),
    ));
    Ok(addr)
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

/// Makes four calls; returns who answered them.
async fn four_calls(client: &mut GreeterClient<GrpcChannel>) -> Result<BTreeSet<String>, Error> {
    let mut answered = BTreeSet::new();
    for _ in 0..4 {
        let request = tonic::Request::new(HelloRequest {
            name: "hello".into(),
        });
        match client.say_hello(request).await {
            Ok(response) => {
                let backend = response.metadata().get(BACKEND_METADATA_KEY);
                let backend = backend.ok_or("no backend named")?.to_str()?.to_owned();
                println!("RESPONSE={:?}", response.into_inner().message);
                answered.insert(backend);
            }
            Err(status) => {
                println!("ERROR={:?}: {}", status.code(), status.message());
                answered.insert(format!("{:?}", status.code()));
            }
        }
    }
    Ok(answered)
}

#[tokio::test]
async fn follows_the_endpoint_changes() {
    let steps = run().await.unwrap();
    let names = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    let expected = vec![
        names(&["server-1"]),
        names(&["server-1", "server-2"]),
        names(&["server-2"]),
        names(&["Unavailable"]),
        names(&["server-1"]),
    ];
    assert_eq!(steps, expected);
}
