//! tonic's `load_balance` client on a grpc-lb `Channel`: one channel over two
//! servers, round-robin.
//!
//! tonic's `Channel::balance_list(endpoints)` becomes a target listing the
//! addresses (`ipv4:a,b`, or `dns:///name:port` for every address a name
//! resolves to) and a policy. gRPC's default policy is `pick_first` (one
//! connection, the first address that works); `round_robin` connects to every
//! address and spreads the calls over the ready ones.
//!
//! ```text
//! cargo run -p examples --example load_balance
//! ```

use std::collections::BTreeMap;

use grpc_lb::Channel;
use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use grpc_lb_helloworld::{NamedGreeter, BACKEND_METADATA_KEY};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    run().await.map(drop)
}

/// Sends 12 calls over two servers; returns how many each one answered.
async fn run() -> Result<BTreeMap<String, usize>, Error> {
    let mut addrs = Vec::new();
    for name in ["server-1", "server-2"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?.to_string());
        let greeter = NamedGreeter::new(name);
        tokio::spawn(grpc_lb_helloworld::serve(
            listener,
            greeter,
            std::future::pending(),
        ));
    }

    let channel = Channel::builder(format!("ipv4:{}", addrs.join(",")))
        .policy("round_robin")
        .build()?;
    // round_robin picks among the connections that are ready: wait for both,
    // so that the split below is even (calls made sooner go to the first one
    // up, and none fails).
    channel.connect();
    let mut picker = channel.watch_picker();
    while channel.ready_addresses().len() < 2 {
        picker.changed().await?;
    }

    let mut client = GreeterClient::new(channel);
    let mut answered = BTreeMap::new();
    for _ in 0..12 {
        let request = tonic::Request::new(HelloRequest {
            name: "hello".into(),
        });
        let response = client.say_hello(request).await?;
        let backend = response.metadata().get(BACKEND_METADATA_KEY).cloned();
        println!("RESPONSE={:?}", response.into_inner().message);
        let backend = backend.ok_or("no backend named")?.to_str()?.to_owned();
        *answered.entry(backend).or_default() += 1;
    }
    println!("answered: {answered:?}");
    Ok(answered)
}

#[tokio::test]
async fn splits_the_calls_evenly() {
    let answered = run().await.unwrap();
    let expected = BTreeMap::from([("server-1".to_owned(), 6), ("server-2".to_owned(), 6)]);
    assert_eq!(answered, expected);
}
