//! A tonic client balancing round-robin over three helloworld servers through a
//! `grpc_lb::Channel`, which keeps working while one of them is killed.
//!
//! ```text
//! cargo run -p examples --example round_robin
//! ```

use grpc_lb::Channel;
use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use grpc_lb_helloworld::NamedGreeter;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    run().await.map(drop)
}

/// Makes 15 calls, stopping a server after nine; returns the replies before
/// and after.
async fn run() -> Result<(Vec<String>, Vec<String>), Error> {
    // Three in-process servers, each stoppable (kept alive while `stops` lives).
    let (mut addrs, mut stops) = (Vec::new(), Vec::new());
    for name in ["alpha", "beta", "gamma"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?.to_string());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let server = grpc_lb_helloworld::serve(listener, NamedGreeter::new(name), shutdown);
        stops.push((stop, tokio::spawn(server)));
    }

    let channel = Channel::builder(format!("ipv4:{}", addrs.join(",")))
        .policy("round_robin")
        .build()?;
    // Connect now and wait for all three, so that each one takes its turn.
    channel.connect();
    let mut picker = channel.watch_picker();
    while channel.ready_addresses().len() != 3 {
        picker.changed().await?;
    }
    let mut client = GreeterClient::new(channel.clone());

    let mut before = Vec::new();
    for i in 0..9 {
        let reply = client
            .say_hello(HelloRequest {
                name: format!("call {i}"),
            })
            .await?;
        println!("{}", reply.get_ref().message);
        before.push(reply.into_inner().message);
    }
    println!("-- stopping gamma --");
    if let Some((stop, gamma)) = stops.pop() {
        let _ = stop.send(());
        gamma.await??;
    }
    while channel.ready_addresses().len() != 2 {
        picker.changed().await?;
    }
    let mut after = Vec::new();
    for i in 9..15 {
        let reply = client
            .say_hello(HelloRequest {
                name: format!("call {i}"),
            })
            .await?;
        println!("{}", reply.get_ref().message);
        after.push(reply.into_inner().message);
    }
    println!("channel state: {}", channel.state());
    Ok((before, after))
}

#[tokio::test]
async fn keeps_answering_without_gamma() {
    let (before, after) = run().await.unwrap();
    for (i, reply) in before.iter().chain(&after).enumerate() {
        assert!(
            reply.starts_with(&format!("Hello call {i} from ")),
            "{reply}"
        );
    }
    let from = |reply: &String| reply.rsplit(' ').next().unwrap_or_default().to_owned();
    let mut after: Vec<String> = after.iter().map(from).collect();
    after.sort();
    assert_eq!(after, ["alpha", "alpha", "alpha", "beta", "beta", "beta"]);
}
