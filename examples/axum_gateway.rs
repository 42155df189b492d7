//! An axum HTTP gateway in front of a balanced tonic backend: `GET /hello/{name}`
//! becomes a `SayHello` RPC sent through one shared `grpc_lb::Channel`
//! (round_robin over three Greeter servers, with retries on `UNAVAILABLE`), and
//! the reply names the backend that answered. A backend that dies mid-run costs
//! no HTTP request.
//!
//! ```text
//! cargo run -p examples --example axum_gateway
//! ```

use std::net::SocketAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use grpc_lb::core::BoxError;
use grpc_lb::Channel;
use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use grpc_lb_helloworld::NamedGreeter;
use grpc_lb_retry::{Retry, RetryLayer};
use http_body_util::{BodyExt, Empty};
use tower::Layer;

type Backend = Retry<Channel<grpc_lb::connect::Http2Connection<tonic::body::Body>>>;

/// Retries an RPC refused with `UNAVAILABLE` on another backend, up to three
/// attempts, as a grpc-go service config would.
const SERVICE_CONFIG: &str = r#"{"methodConfig": [{
    "name": [{"service": "helloworld.Greeter"}],
    "timeout": "2s",
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}
}]}"#;

async fn hello(State(backend): State<Backend>, Path(name): Path<String>) -> (StatusCode, String) {
    // Each handler takes its own clone: the channel is shared, the pick is per call.
    let mut client = GreeterClient::new(backend);
    match client.say_hello(HelloRequest { name }).await {
        Ok(reply) => (StatusCode::OK, reply.into_inner().message),
        Err(status) => (
            StatusCode::BAD_GATEWAY,
            format!("{:?}: {}", status.code(), status.message()),
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    run().await.map(drop)
}

/// Sends twelve HTTP requests through the gateway, stopping a backend half
/// way; returns the answers, before and after the stop.
async fn run() -> Result<(Vec<String>, Vec<String>), BoxError> {
    // Three Greeter backends in this process, each stoppable.
    let (mut addrs, mut stops) = (Vec::new(), Vec::new());
    for name in ["backend-1", "backend-2", "backend-3"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?.to_string());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = grpc_lb_helloworld::serve(listener, NamedGreeter::new(name), async {
            let _ = stopped.await;
        });
        stops.push((stop, tokio::spawn(server)));
    }

    let channel = Channel::builder(format!("ipv4:{}", addrs.join(",")))
        .policy("round_robin")
        .build()?;
    let config = SERVICE_CONFIG.parse()?;
    let backend: Backend = RetryLayer::new(config).layer(channel.clone());

    let gateway = Router::new()
        .route("/hello/{name}", get(hello))
        .with_state(backend);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway_addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, gateway).await });
    println!("gateway listening on http://{gateway_addr}");

    let mut before = Vec::new();
    for i in 0..6 {
        let answer = get_text(gateway_addr, &format!("/hello/user{i}")).await?;
        println!("GET /hello/user{i} -> {answer}");
        before.push(answer);
    }
    let (stop, server) = stops.remove(1);
    let _ = stop.send(());
    server.await??;
    println!("-- backend-2 stopped --");
    let mut after = Vec::new();
    for i in 6..12 {
        let answer = get_text(gateway_addr, &format!("/hello/user{i}")).await?;
        println!("GET /hello/user{i} -> {answer}");
        after.push(answer);
    }
    let stats = channel.stats();
    println!(
        "channel: {} calls, {} failed",
        stats.calls_started, stats.calls_failed
    );
    Ok((before, after))
}

/// One HTTP/1.1 GET over a fresh connection, as a browser or curl would send it.
async fn get_text(addr: SocketAddr, path: &str) -> Result<String, BoxError> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(format!("{status} {}", String::from_utf8_lossy(&body)))
}

#[tokio::test]
async fn answers_every_request_through_a_backend_stop() {
    let (before, after) = run().await.unwrap();
    for (i, answer) in before.iter().chain(&after).enumerate() {
        assert!(
            answer.starts_with(&format!("200 OK Hello user{i} from backend-")),
            "{answer}"
        );
    }
    assert!(
        after.iter().all(|answer| !answer.ends_with("backend-2")),
        "{after:?}"
    );
}
