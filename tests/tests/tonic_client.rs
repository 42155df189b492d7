//! tonic's generated-client options through a grpc-lb Channel, against
//! in-process tonic servers: interceptors, compression and message size limits.

use std::net::SocketAddr;
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
