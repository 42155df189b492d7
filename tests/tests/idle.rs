//! Idle mode against a real tonic server on loopback that counts the
//! connections open on it: grpc-go's `internal/idle/idle_e2e_test.go` cases
//! (no activity → IDLE and the connection closes; an open stream keeps the
//! channel active; an RPC or `connect()` leaves idle).

mod support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use grpc_lb::{Channel, ConnectivityState};
use grpc_lb_helloworld::proto::GreeterServer;
use grpc_lb_helloworld::NamedGreeter;
use support::{backend, hello, wait_for_state, GrpcChannel, LIMIT};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::time::timeout;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const IDLE_TIMEOUT: Duration = Duration::from_millis(200);

/// A Greeter (and the health service, for a stream that stays open) that
/// counts the TCP connections open on it.
struct Server {
    addr: SocketAddr,
    connections: watch::Receiver<usize>,
    _stop: oneshot::Sender<()>,
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (count, connections) = watch::channel(0usize);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |io| {
            io.map(|inner| {
                count.send_modify(|n| *n += 1);
                CountedIo {
                    inner,
                    count: count.clone(),
                }
            })
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let router = tonic::transport::Server::builder()
            .add_service(GreeterServer::new(NamedGreeter::new("a")))
            .add_service(health);
        tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            connections,
            _stop: stop,
        }
    }

    async fn wait_for_connections(&self, open: usize) {
        let mut connections = self.connections.clone();
        timeout(LIMIT, connections.wait_for(|n| *n == open))
            .await
            .unwrap_or_else(|_| panic!("never {open} connections open on the server"))
            .unwrap();
    }
}

/// A server-side connection, counted open until hyper drops it.
struct CountedIo {
    inner: TcpStream,
    count: watch::Sender<usize>,
}

impl Drop for CountedIo {
    fn drop(&mut self) {
        self.count.send_modify(|n| *n -= 1);
    }
}

impl Connected for CountedIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for CountedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn channel(server: &Server, policy: &str) -> GrpcChannel {
    Channel::builder(format!("ipv4:{}", server.addr))
        .policy(policy)
        .idle_timeout(IDLE_TIMEOUT)
        .backoff(support::fast_backoff())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_activity_goes_idle_closes_the_connection_and_an_rpc_leaves_idle() {
    for policy in ["pick_first", "round_robin"] {
        let server = Server::start().await;
        let channel = channel(&server, policy);
        assert_eq!(backend(&hello(&channel, false).await.unwrap()), "a");
        server.wait_for_connections(1).await;

        wait_for_state(&channel, ConnectivityState::Idle).await;
        server.wait_for_connections(0).await;
        assert!(channel.subchannels().is_empty(), "{policy}");

        // The next RPC leaves idle: the resolver runs again and reconnects.
        assert_eq!(backend(&hello(&channel, false).await.unwrap()), "a");
        assert_eq!(channel.state(), ConnectivityState::Ready, "{policy}");
        server.wait_for_connections(1).await;
        // grpc-go: IDLE, then CONNECTING as the resolver starts again, READY.
        let history = channel.state_history();
        let ready_at = history
            .iter()
            .position(|s| *s == ConnectivityState::Ready)
            .unwrap();
        let idle_at = ready_at
            + history[ready_at..]
                .iter()
                .position(|s| *s == ConnectivityState::Idle)
                .unwrap();
        let after = &history[idle_at + 1..];
        assert_eq!(
            after.first(),
            Some(&ConnectivityState::Connecting),
            "{policy}: {history:?}"
        );
        assert_eq!(
            after.last(),
            Some(&ConnectivityState::Ready),
            "{policy}: {history:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_leaves_idle() {
    let server = Server::start().await;
    let channel = channel(&server, "round_robin");
    channel.connect();
    wait_for_state(&channel, ConnectivityState::Ready).await;
    wait_for_state(&channel, ConnectivityState::Idle).await;
    server.wait_for_connections(0).await;
    channel.connect();
    wait_for_state(&channel, ConnectivityState::Ready).await;
    server.wait_for_connections(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_keeps_the_channel_active() {
    let server = Server::start().await;
    let channel = channel(&server, "round_robin");
    let mut health = HealthClient::new(channel.clone());
    let mut stream = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    let mut states = channel.watch_state();
    states.borrow_and_update();
    // Several idle timeouts pass with the stream open and nothing else
    // happening: the channel must not change. This wait is the behaviour under
    // test (time passing), not a synchronisation.
    let changed = timeout(IDLE_TIMEOUT * 5, states.changed()).await;
    assert!(
        changed.is_err(),
        "the channel left READY: {:?}",
        channel.state_history()
    );
    assert_eq!(channel.state(), ConnectivityState::Ready);

    // Once the stream ends, the channel goes idle.
    drop(stream);
    wait_for_state(&channel, ConnectivityState::Idle).await;
    server.wait_for_connections(0).await;
}
