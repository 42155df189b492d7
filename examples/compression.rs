//! tonic's `compression` client on a grpc-lb `Channel`: gzip both ways.
//!
//! Compression is the generated client's business, not the channel's:
//! `send_compressed` / `accept_compressed` work on a client over a grpc-lb
//! channel as over tonic's (tonic's `gzip` feature). The server only
//! compresses its reply for a client that said it accepts gzip.
//!
//! ```text
//! cargo run -p examples --example compression
//! ```

use grpc_lb::Channel;
use grpc_lb_helloworld::proto::{Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

type Error = Box<dyn std::error::Error + Send + Sync>;
type GrpcChannel = Channel<grpc_lb::connect::Http2Connection<tonic::body::Body>>;

const ENCODING: &str = "grpc-encoding";

#[tokio::main]
async fn main() -> Result<(), Error> {
    run().await.map(drop)
}

/// Calls once with gzip and once without; returns, for each call, the
/// encoding of the request (as the server saw it) and of the response.
async fn run() -> Result<Vec<(String, String)>, Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let greeter = GreeterServer::new(EncodingGreeter)
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let server = tonic::transport::Server::builder()
        .add_service(greeter)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);

    let channel = Channel::builder(format!("ipv4:{addr}")).build()?;
    let mut encodings = Vec::new();

    let mut client = GreeterClient::new(channel.clone())
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    encodings.push(say_hello(&mut client).await?);

    let mut plain = GreeterClient::new(channel);
    encodings.push(say_hello(&mut plain).await?);
    Ok(encodings)
}

async fn say_hello(client: &mut GreeterClient<GrpcChannel>) -> Result<(String, String), Error> {
    let request = Request::new(HelloRequest {
        name: "Tonic".into(),
    });
    let response = client.say_hello(request).await?;
    let response_encoding = encoding(response.metadata());
    let request_encoding = response.into_inner().message;
    println!("request: {request_encoding}, response: {response_encoding}");
    Ok((request_encoding, response_encoding))
}

/// A Greeter that answers with the encoding its request came in.
struct EncodingGreeter;

#[tonic::async_trait]
impl Greeter for EncodingGreeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let message = encoding(request.metadata());
        Ok(Response::new(HelloReply { message }))
    }
}

/// The `grpc-encoding` of a message, `identity` when there is none.
fn encoding(metadata: &tonic::metadata::MetadataMap) -> String {
    let encoding = metadata.get(ENCODING).and_then(|value| value.to_str().ok());
    encoding.unwrap_or("identity").to_owned()
}

#[tokio::test]
async fn compresses_both_ways() {
    let encodings = run().await.unwrap();
    let expected = [("gzip", "gzip"), ("identity", "identity")];
    let expected = expected.map(|(request, response)| (request.to_owned(), response.to_owned()));
    assert_eq!(encodings, expected);
}
