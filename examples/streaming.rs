//! tonic's `streaming` client on a grpc-lb `Channel`: server streaming,
//! client streaming and bidirectional streaming.
//!
//! Streaming calls go through the channel like unary ones: each call is one
//! pick, and all its messages, both ways, flow on the connection it was
//! picked for. A call counts as open (it keeps the channel out of idle mode)
//! until its response stream ends or is dropped; dropping it cancels the call
//! on the server.
//!
//! ```text
//! cargo run -p examples --example streaming
//! ```

use grpc_lb::Channel;
use grpc_lb_helloworld::echo::{EchoClient, EchoRequest};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    run().await.map(drop)
}

/// Makes the three kinds of streaming call; returns the messages received, in
/// order.
async fn run() -> Result<Vec<String>, Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(grpc_lb_helloworld::echo::serve(
        listener,
        std::future::pending(),
    ));

    let channel = Channel::builder(format!("ipv4:{addr}")).build()?;
    let mut client = EchoClient::new(channel.clone());

    println!("Streaming echo:");
    let request = EchoRequest {
        message: "foo".into(),
    };
    let stream = client.server_streaming_echo(request).await?.into_inner();
    // The server's stream never ends: take five, then drop the stream, which
    // cancels the call.
    let mut stream = stream.take(5);
    let mut received = Vec::new();
    while let Some(reply) = stream.next().await {
        let message = reply?.message;
        println!("\treceived: {message}");
        received.push(message);
    }
    drop(stream);

    println!("Client stream echo:");
    let requests = tokio_stream::iter(["a", "b", "c"]).map(|message| EchoRequest {
        message: message.into(),
    });
    let reply = client.client_streaming_echo(requests).await?.into_inner();
    println!("\treceived: {}", reply.message);
    received.push(reply.message);

    println!("Bidirectional stream echo:");
    // Send one message, wait for its echo, then send the next: both streams
    // stay open at once.
    let (send, requests) = tokio::sync::mpsc::channel(1);
    let response = client
        .bidirectional_streaming_echo(ReceiverStream::new(requests))
        .await?;
    let mut replies = response.into_inner();
    for i in 1..=3 {
        send.send(EchoRequest {
            message: format!("msg {i:02}"),
        })
        .await?;
        let reply = replies.next().await.ok_or("the stream ended early")??;
        println!("\treceived message: `{}`", reply.message);
        received.push(reply.message);
    }
    // Ending the request stream ends the server's side too.
    drop(send);
    if let Some(extra) = replies.next().await {
        return Err(format!("unexpected reply {extra:?}").into());
    }

    let stats = channel.stats();
    println!(
        "channel: {} calls, {} failed",
        stats.calls_started, stats.calls_failed
    );
    Ok(received)
}

#[tokio::test]
async fn streams_both_ways() {
    let received = run().await.unwrap();
    let server_streaming = ["foo 1", "foo 2", "foo 3", "foo 4", "foo 5"];
    let client_streaming = ["a b c"];
    let bidirectional = ["msg 01", "msg 02", "msg 03"];
    assert_eq!(
        received,
        [&server_streaming[..], &client_streaming, &bidirectional].concat()
    );
}
