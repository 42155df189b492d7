//! A hyper HTTP/1.1 client balancing round-robin across three axum servers
//! through a `grpc_lb::Channel` of connection pools, which keeps working while
//! one of the servers shuts down.
//!
//! ```text
//! cargo run -p examples --example hyper_http1_axum
//! ```

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use grpc_lb::connect::Http1Pool;
use grpc_lb::core::BoxError;
use grpc_lb::Channel;
use http_body_util::{BodyExt, Empty};
use tower::{Service, ServiceExt};

type RestChannel = Channel<Http1Pool<Empty<Bytes>>>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    run().await.map(drop)
}

/// Sends ten GETs, shutting a server down after six; returns the answers
/// before and after.
async fn run() -> Result<(Vec<String>, Vec<String>), BoxError> {
    // Three axum servers on loopback, each with a way to shut it down.
    let (mut addrs, mut servers) = (Vec::new(), Vec::new());
    for name in ["alpha", "beta", "gamma"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?.to_string());
        let app = Router::new().route(
            "/",
            get(move || async move { format!("hello from {name}") }),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        servers.push((stop, tokio::spawn(async move { server.await })));
    }

    // The same resolver, round_robin and reconnect as for gRPC; each endpoint
    // is a pool of at most 8 HTTP/1.1 connections.
    let channel: RestChannel = Channel::builder(format!("ipv4:{}", addrs.join(",")))
        .policy("round_robin")
        .max_connections_per_endpoint(8)
        .build_http1()?;
    wait_for_ready(&channel, 3).await;

    let mut before = Vec::new();
    for _ in 0..6 {
        let answer = fetch(&channel, "/").await?;
        println!("GET / -> {answer}");
        before.push(answer);
    }

    let (stop, server) = servers.remove(1);
    let _ = stop.send(());
    server.await??;
    println!("-- beta shut down --");
    wait_for_ready(&channel, 2).await;
    let mut after = Vec::new();
    for _ in 0..4 {
        let answer = fetch(&channel, "/").await?;
        println!("GET / -> {answer}");
        after.push(answer);
    }
    Ok((before, after))
}

async fn fetch(channel: &RestChannel, path: &str) -> Result<String, BoxError> {
    let request = http::Request::get(path).body(Empty::new())?;
    let response = channel.clone().ready().await?.call(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Waits until `count` endpoints are connected and picked from.
async fn wait_for_ready(channel: &RestChannel, count: usize) {
    let mut picker = channel.watch_picker();
    while channel.ready_addresses().len() != count {
        if picker.changed().await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn balances_and_survives_a_shutdown() {
    let (mut before, mut after) = run().await.unwrap();
    // round_robin over the ready servers: each one in turn.
    before.sort();
    after.sort();
    let hello = |name: &str| format!("hello from {name}");
    let three = ["alpha", "alpha", "beta", "beta", "gamma", "gamma"].map(hello);
    assert_eq!(before, three);
    assert_eq!(after, ["alpha", "alpha", "gamma", "gamma"].map(hello));
}
