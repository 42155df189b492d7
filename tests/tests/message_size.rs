//! Message size limits (the service config's `maxRequestMessageBytes` and
//! `maxResponseMessageBytes`) over a real Channel, against a tonic server that
//! counts what reaches it and a Python grpcio server.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use grpc_lb::Channel;
use grpc_lb_helloworld::proto::{Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest};
use grpc_lb_message_size::{MessageSize, MessageSizeLayer};
use grpc_lb_service_config::ServiceConfig;
use integration_tests::{ipv4_target, GreeterProcess};
use support::{fast_backoff, GrpcChannel, LIMIT};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tonic::{Code, Status};
use tower::Layer;

/// A Greeter that counts the requests it was handed.
#[derive(Clone, Default)]
struct Counting {
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Greeter for Counting {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(tonic::Response::new(HelloReply {
            message: format!("hello {}", request.into_inner().name.len()),
        }))
    }
}

async fn serve(greeter: Counting) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GreeterServer::new(greeter))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

fn limited(target: &str, layer: MessageSizeLayer) -> MessageSize<GrpcChannel> {
    let channel = Channel::builder(target)
        .backoff(fast_backoff())
        .build()
        .unwrap();
    layer.layer(channel)
}

async fn hello(client: &MessageSize<GrpcChannel>, name_len: usize) -> Result<String, Status> {
    let mut client = GreeterClient::new(client.clone());
    let request = tonic::Request::new(HelloRequest {
        name: "n".repeat(name_len),
    });
    timeout(LIMIT, client.say_hello(request))
        .await
        .expect("the call ends")
        .map(|reply| reply.into_inner().message)
}

fn request_limit(service: &str, bytes: u64) -> ServiceConfig {
    format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "{service}"}}],
            "maxRequestMessageBytes": {bytes}}}]}}"#
    )
    .parse()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_fails_resource_exhausted_and_is_never_handled() {
    let greeter = Counting::default();
    let addr = serve(greeter.clone()).await;
    let layer = MessageSizeLayer::new(request_limit("helloworld.Greeter", 64));
    let client = limited(&format!("ipv4:{addr}"), layer);

    // A HelloRequest with a 100-byte name encodes to 102 bytes.
    let status = hello(&client, 100).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "trying to send message larger than max (102 vs. 64)"
    );
    // 62 bytes encode to exactly 64: at the limit, allowed. The same channel
    // serves it: a refused message costs one stream, not the connection.
    assert_eq!(hello(&client, 62).await.unwrap(), "hello 62");
    assert_eq!(greeter.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_config_limits_only_the_methods_it_names() {
    let greeter = Counting::default();
    let addr = serve(greeter.clone()).await;
    let layer = MessageSizeLayer::new(request_limit("routeguide.RouteGuide", 8));
    let client = limited(&format!("ipv4:{addr}"), layer);
    assert_eq!(hello(&client, 1000).await.unwrap(), "hello 1000");

    // The channel's own limit applies where no method config does.
    let layer =
        MessageSizeLayer::new(request_limit("routeguide.RouteGuide", 8)).max_send_message_size(512);
    let client = limited(&format!("ipv4:{addr}"), layer);
    let status = hello(&client, 1000).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(greeter.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_response_from_grpcio_fails_resource_exhausted() {
    let servers = [GreeterProcess::start_python("127.0.0.1:0", "py")];
    let config: ServiceConfig = r#"{"methodConfig": [{"name": [{}],
        "maxResponseMessageBytes": 64}]}"#
        .parse()
        .unwrap();
    let client = limited(&ipv4_target(&servers), MessageSizeLayer::new(config));

    // "Hello <name> from py" in a HelloReply: small names fit in 64 bytes.
    assert_eq!(hello(&client, 5).await.unwrap(), "Hello nnnnn from py");
    let status = hello(&client, 100).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // The reply's one field: a tag byte, a length byte, the text.
    let reply_len = 2 + "Hello ".len() + 100 + " from py".len();
    assert_eq!(
        status.message(),
        format!("grpc: received message larger than max ({reply_len} vs. 64)")
    );
    assert_eq!(hello(&client, 5).await.unwrap(), "Hello nnnnn from py");
}
