//! tonic's generated-client options through a grpc-lb Channel, against
//! in-process tonic servers: interceptors, compression and message size limits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use grpc_lb::Channel;
use grpc_lb_helloworld::proto::{Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_stream::wrappers::TcpListenerStream;

const LIMIT: Duration = Duration::from_secs(20);

/// Answers with the `authorization` metadata the call carried.
#[derive(Debug, Default)]
struct EchoAuthorization;

#[tonic::async_trait]
impl Greeter for EchoAuthorization {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        Ok(tonic::Response::new(HelloReply {
            message: authorization,
        }))
    }
}

/// Answers with the request's name and the `grpc-encoding` it was sent
/// with, and counts the requests it read.
#[derive(Debug, Default)]
struct EchoNameAndEncoding(Arc<AtomicUsize>);

#[tonic::async_trait]
impl Greeter for EchoNameAndEncoding {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        let encoding = request
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("identity")
            .to_owned();
        let name = request.into_inner().name;
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(HelloReply {
            message: format!("{encoding} {name}"),
        }))
    }
}

/// A tonic server on 127.0.0.1, stopped when dropped.
struct Server {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn serve(service: GreeterServer<impl Greeter>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = stopped.await;
        });
    tokio::spawn(server);
    Server { addr, _stop: stop }
}

fn request(name: &str) -> HelloRequest {
    HelloRequest { name: name.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_interceptor_adds_metadata_and_can_reject_a_call() {
    let server = serve(GreeterServer::new(EchoAuthorization)).await;
    let channel = Channel::builder(format!("ipv4:{}", server.addr))
        .build()
        .unwrap();

    let mut client =
        GreeterClient::with_interceptor(channel.clone(), |mut call: tonic::Request<()>| {
            call.metadata_mut()
                .insert("authorization", "Bearer token".parse().unwrap());
            Ok(call)
        });
    let reply = timeout(LIMIT, client.say_hello(request("a")))
        .await
        .unwrap();
    assert_eq!(reply.unwrap().into_inner().message, "Bearer token");

    // A rejecting interceptor answers with its status and the default body;
    // the call never reaches the channel.
    let mut rejecting = GreeterClient::with_interceptor(channel.clone(), |_: tonic::Request<()>| {
        Err(tonic::Status::unauthenticated("no token"))
    });
    let status = timeout(LIMIT, rejecting.say_hello(request("b")))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(status.message(), "no token");
    assert_eq!(channel.stats().calls_started, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_compression_both_ways_through_the_channel() {
    use tonic::codec::CompressionEncoding::Gzip;
    let service = GreeterServer::new(EchoNameAndEncoding::default())
        .accept_compressed(Gzip)
        .send_compressed(Gzip);
    let server = serve(service).await;
    let channel = Channel::builder(format!("ipv4:{}", server.addr))
        .build()
        .unwrap();

    let mut client = GreeterClient::new(channel.clone())
        .send_compressed(Gzip)
        .accept_compressed(Gzip);
    let reply = timeout(LIMIT, client.say_hello(request("zip")))
        .await
        .unwrap()
        .unwrap();
    // The server read a gzip request, and answered in gzip.
    assert_eq!(reply.metadata().get("grpc-encoding").unwrap(), "gzip");
    assert_eq!(reply.into_inner().message, "gzip zip");

    // A client that does not accept gzip gets an uncompressed answer.
    let mut plain = GreeterClient::new(channel);
    let reply = timeout(LIMIT, plain.say_hello(request("plain")))
        .await
        .unwrap()
        .unwrap();
    assert!(reply.metadata().get("grpc-encoding").is_none());
    assert_eq!(reply.into_inner().message, "identity plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_size_limits_of_the_generated_client_apply_through_the_channel() {
    let served = Arc::new(AtomicUsize::new(0));
    let server = serve(GreeterServer::new(EchoNameAndEncoding(served.clone()))).await;
    let channel = Channel::builder(format!("ipv4:{}", server.addr))
        .build()
        .unwrap();
    let long = "x".repeat(200);

    let mut decoding = GreeterClient::new(channel.clone()).max_decoding_message_size(100);
    let status = timeout(LIMIT, decoding.say_hello(request(&long)))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(
        status
            .message()
            .contains("decoded message length too large"),
        "{status:?}"
    );

    assert_eq!(served.load(Ordering::Relaxed), 1, "the server answered it");

    // tonic's encoder fails the request body, so hyper resets the stream
    // (INTERNAL_ERROR) before the message leaves: the server never reads
    // it. The status is not OUT_OF_RANGE: tonic's own Channel reports
    // hyper's reset as INTERNAL, grpc-lb's connection as UNAVAILABLE
    // (docs/from-tonic.md, "What behaves differently").
    let mut encoding = GreeterClient::new(channel.clone()).max_encoding_message_size(100);
    let result = timeout(LIMIT, encoding.say_hello(request(&long)))
        .await
        .unwrap();
    assert!(result.is_err(), "{result:?}");
    assert_eq!(
        served.load(Ordering::Relaxed),
        1,
        "the oversized request never arrived"
    );

    // Within the limits, both pass.
    let mut roomy = GreeterClient::new(channel)
        .max_decoding_message_size(1000)
        .max_encoding_message_size(1000);
    let reply = timeout(LIMIT, roomy.say_hello(request(&long)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.into_inner().message, format!("identity {long}"));
    assert_eq!(served.load(Ordering::Relaxed), 2);
}

/// `?` on the channel's errors inside a function returning `Box<dyn Error>`,
/// as tonic users write it.
async fn ready_and_call(
    channel: grpc_lb::GrpcChannel,
) -> Result<String, Box<dyn std::error::Error>> {
    use tower::ServiceExt;
    let mut channel = channel;
    channel.ready().await?;
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await?;
    let built = Channel::builder("ipv4:127.0.0.1:1").build()?;
    drop(built);
    let mut client = GreeterClient::new(channel);
    Ok(client.say_hello(request("q")).await?.into_inner().message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn question_mark_into_box_dyn_error_on_every_path() {
    let server = serve(GreeterServer::new(EchoAuthorization)).await;
    let channel = Channel::builder(format!("ipv4:{}", server.addr))
        .build()
        .unwrap();
    let message = timeout(LIMIT, ready_and_call(channel))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message, "none");

    // A call error is a grpc_lb::Error whose source is the status.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut channel = Channel::builder(format!("ipv4:{dead}")).build().unwrap();
    use tower::{Service, ServiceExt};
    let request = http::Request::post("/helloworld.Greeter/SayHello")
        .body(tonic::body::Body::empty())
        .unwrap();
    let error: grpc_lb::Error = timeout(LIMIT, channel.ready().await.unwrap().call(request))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.status().unwrap().code(), tonic::Code::Unavailable);
    assert_eq!(error.to_string(), "call failed");
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(error);
    assert_eq!(
        tonic::Status::from_error(boxed).code(),
        tonic::Code::Unavailable
    );
}
