//! A tonic helloworld client that survives its server going away.
//!
//! The plain tonic-generated `GreeterClient` is handed a reconnecting stack
//! instead of a tonic `Channel`: `FailFast<Reconnect<Http2Connector>>`. Start a
//! server, run this, then stop and restart the server: calls fail with
//! `UNAVAILABLE` naming the cause while it is down, reconnect attempts are spaced
//! by the gRPC backoff, and calls succeed again once it is back.
//!
//! ```text
//! cargo run -p examples --example helloworld_server -- 127.0.0.1:50051
//! cargo run -p examples --example helloworld_client -- 127.0.0.1:50051
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use grpc_lb_connect::Http2Connector;
use grpc_lb_failfast::FailFast;
use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use grpc_lb_reconnect::{Reconnect, ReconnectConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "grpc_lb_reconnect=info".into()),
        )
        .init();
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:50051")
        .parse()?;

    let subchannel = Reconnect::with_config(
        Http2Connector::<tonic::body::Body>::new(),
        addr,
        ReconnectConfig::default(),
    );
    let handle = subchannel.handle();
    let mut client = GreeterClient::new(FailFast::new(subchannel, handle.watch()));

    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        ticker.tick().await;
        let request = HelloRequest {
            name: "client".into(),
        };
        match client.say_hello(request).await {
            Ok(reply) => println!("OK    {}", reply.into_inner().message),
            Err(status) => println!("{:?} {}", status.code(), status.message()),
        }
    }
}
