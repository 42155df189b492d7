//! A tonic client balancing round-robin over three helloworld servers through a
//! `grpc_lb::Channel`, which keeps working while one of them is killed.
//!
//! ```text
//! cargo run -p examples --example round_robin
//! ```

use grpc_lb::{Channel, ConnectivityState};
use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use grpc_lb_helloworld::NamedGreeter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Three in-process servers, each stoppable (kept alive while `stops` lives).
    let (mut addrs, mut stops) = (Vec::new(), Vec::new());
    for name in ["alpha", "beta", "gamma"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?.to_string());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        let shutdown = async move {
            let _ = stopped.await;
        };
        tokio::spawn(grpc_lb_helloworld::serve(
            listener,
            NamedGreeter::new(name),
            shutdown,
        ));
    }

    let channel = Channel::builder(format!("ipv4:{}", addrs.join(",")))
        .policy("round_robin")
        .build()?;
    channel.wait_for_state_change(ConnectivityState::Idle).await;
    let mut client = GreeterClient::new(channel.clone());

    for i in 0..9 {
        let reply = client
            .say_hello(HelloRequest {
                name: format!("call {i}"),
            })
            .await?;
        println!("{}", reply.into_inner().message);
    }
    println!("-- stopping gamma --");
    if let Some(gamma) = stops.pop() {
        let _ = gamma.send(());
    }
    let mut picker = channel.watch_picker();
    while channel.ready_addresses().len() != 2 {
        picker.changed().await?;
    }
    for i in 9..15 {
        let reply = client
            .say_hello(HelloRequest {
                name: format!("call {i}"),
            })
            .await?;
        println!("{}", reply.into_inner().message);
    }
    println!("channel state: {}", channel.state());
    Ok(())
}
