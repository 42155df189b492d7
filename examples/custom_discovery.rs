//! Your own discovery source turned into a tower `Discover` of reconnecting
//! subchannels, fed to tower's p2c. `cargo run -p examples --example custom_discovery`

use std::{net::SocketAddr, time::Duration};

use futures::{stream, FutureExt, Stream, StreamExt};
use grpc_lb_connect::Http2Connector;
use grpc_lb_helloworld::{proto::GreeterClient, proto::HelloRequest, NamedGreeter};
use grpc_lb_reconnect::{Reconnect, ReconnectConfig};
use grpc_lb_resolve::{Endpoint, ResolverDiscover, Update};
use tower::{balance::p2c::Balance, load::CompleteOnResponse, load::PendingRequestsDiscover};

type Updates = Result<Update, grpc_lb_core::BoxError>;

/// Stands for any system you already run: a registry client, a file watcher...
fn my_discovery(servers: Vec<SocketAddr>) -> impl Stream<Item = Updates> + Unpin {
    let first = Update::Reset(servers[..2].iter().map(|a| Endpoint::new(*a)).collect());
    let third = Update::Add(vec![Endpoint::new(servers[2])]);
    let later = tokio::time::sleep(Duration::from_millis(300)).map(|()| Ok(third));
    stream::iter([Ok(first)])
        .chain(stream::once(later))
        .chain(stream::pending())
        .boxed()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut servers = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        servers.push(listener.local_addr()?);
        let (greeter, never) = (NamedGreeter::new(name), std::future::pending());
        tokio::spawn(grpc_lb_helloworld::serve(listener, greeter, never));
    }

    let connector = Http2Connector::<tonic::body::Body>::new();
    let subchannels = ResolverDiscover::new(my_discovery(servers), move |e: &Endpoint| {
        let addr = e
            .address
            .as_socket()
            .expect("my_discovery yields TCP addresses");
        Reconnect::with_config(connector.clone(), addr, ReconnectConfig::default())
    });
    let load = PendingRequestsDiscover::new(subchannels, CompleteOnResponse::default());
    let mut client = GreeterClient::new(Balance::new(load));

    for i in 0..12 {
        let request = HelloRequest {
            name: format!("call {i}"),
        };
        println!("{}", client.say_hello(request).await?.into_inner().message);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
