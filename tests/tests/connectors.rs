//! Transports under the Channel: Unix domain sockets out of the box, and a
//! custom connector in place of the default one, against in-process tonic
//! servers.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use grpc_lb::resolve::Address;
use grpc_lb::{AddressConnector, Channel, ConnectivityState};
use grpc_lb_helloworld::proto::{GreeterClient, GreeterServer, HelloRequest};
use grpc_lb_helloworld::NamedGreeter;
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tower::ServiceExt;

const LIMIT: Duration = Duration::from_secs(20);

/// A Greeter on a Unix listener, stopped when dropped.
struct UnixServer {
    _stop: oneshot::Sender<()>,
}

fn serve_unix(listener: UnixListener, name: &str) -> UnixServer {
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .add_service(GreeterServer::new(NamedGreeter::new(name)))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        });
    tokio::spawn(server);
    UnixServer { _stop: stop }
}

/// A socket path of its own for each test, in the temporary directory.
fn socket_path(test: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("grpc-lb-{test}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

async fn hello<S>(channel: &Channel<S>) -> Result<String, tonic::Status>
where
    Channel<S>: tonic::client::GrpcService<tonic::body::Body> + Clone,
    <Channel<S> as tonic::client::GrpcService<tonic::body::Body>>::Error:
        Into<grpc_lb::core::BoxError>,
    <Channel<S> as tonic::client::GrpcService<tonic::body::Body>>::ResponseBody:
        http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <<Channel<S> as tonic::client::GrpcService<tonic::body::Body>>::ResponseBody as http_body::Body>::Error:
        Into<grpc_lb::core::BoxError> + Send,
{
    let mut client = GreeterClient::new(channel.clone());
    let request = tonic::Request::new(HelloRequest { name: "t".into() });
    let reply = timeout(LIMIT, client.say_hello(request))
        .await
        .expect("the call ends");
    reply.map(|r| r.into_inner().message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_target_reaches_a_server_on_a_unix_socket() {
    let path = socket_path("unix-target");
    let _server = serve_unix(UnixListener::bind(&path).unwrap(), "unix");

    let channel = Channel::builder(format!("unix://{}", path.display()))
        .build()
        .unwrap();
    assert_eq!(hello(&channel).await.unwrap(), "Hello t from unix");
    assert_eq!(channel.state(), ConnectivityState::Ready);
    assert_eq!(channel.ready_addresses(), vec![Address::Unix(path.clone())]);
    let _ = std::fs::remove_file(&path);
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_abstract_target_reaches_a_server_in_the_abstract_namespace() {
    use std::os::linux::net::SocketAddrExt;

    let name = format!("grpc-lb-abstract-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let _server = serve_unix(UnixListener::from_std(listener).unwrap(), "abstract");

    let channel = Channel::builder(format!("unix-abstract:{name}"))
        .build()
        .unwrap();
    assert_eq!(hello(&channel).await.unwrap(), "Hello t from abstract");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_unix_socket_fails_with_the_path_and_backs_off() {
    let path = socket_path("unix-missing");
    let channel = Channel::builder(format!("unix://{}", path.display()))
        .build()
        .unwrap();
    channel.connect();
    let mut state = channel.watch_state();
    let failed = timeout(
        LIMIT,
        state.wait_for(|c| c.state == ConnectivityState::TransientFailure),
    )
    .await
    .expect("the channel fails")
    .unwrap()
    .clone();
    let error = failed.last_error.expect("a cause").to_string();
    assert!(
        error.contains(&format!("connect to unix:{} failed", path.display())),
        "{error}"
    );
    let status = hello(&channel).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_connector_carries_every_connection() {
    let path = socket_path("custom");
    let _server = serve_unix(UnixListener::bind(&path).unwrap(), "custom");

    // The resolver names a TCP address nobody listens on; the custom
    // transport sends every connection to the Unix socket instead, as a
    // proxy or tunnel would.
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    let socket = path.clone();
    let connector = AddressConnector::new().map_request(move |address: Address| {
        counted.fetch_add(1, Ordering::SeqCst);
        assert_eq!(address, Address::Socket("127.0.0.1:9".parse().unwrap()));
        Address::Unix(socket.clone())
    });
    let channel = Channel::builder("ipv4:127.0.0.1:9")
        .connector(connector)
        .build()
        .unwrap();
    assert_eq!(hello(&channel).await.unwrap(), "Hello t from custom");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    let _ = std::fs::remove_file(&path);
}
