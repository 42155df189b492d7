//! tonic's `Endpoint` settings on the Builder, observed by real HTTP/2
//! servers on loopback (hyper's, over TCP, a Unix socket and TLS): the
//! SETTINGS frame and connection WINDOW_UPDATE the client sends, the
//! `user-agent`, `:authority` and `:scheme` of its requests, the address it
//! connects from, the connect timeout, and the limits on calls.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use grpc_lb::{Channel, ConnectivityState, GrpcChannel};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::timeout;
use tower::{Service, ServiceExt};

const LIMIT: Duration = Duration::from_secs(20);

// ===== a server that records what the client's HTTP/2 preface said =====

/// The client's first SETTINGS frame and connection-level WINDOW_UPDATE.
#[derive(Clone, Debug, Default)]
struct Preface {
    /// `(identifier, value)` pairs of the client's first SETTINGS frame.
    settings: Option<Vec<(u16, u32)>>,
    /// The increment of the first WINDOW_UPDATE on stream 0.
    connection_window_increment: Option<u32>,
}

impl Preface {
    fn setting(&self, id: u16) -> Option<u32> {
        let settings = self.settings.as_ref()?;
        settings
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }
}

const HEADER_TABLE_SIZE: u16 = 0x1;
const INITIAL_WINDOW_SIZE: u16 = 0x4;
const MAX_FRAME_SIZE: u16 = 0x5;
const MAX_HEADER_LIST_SIZE: u16 = 0x6;
const SPEC_WINDOW: u32 = 65_535;

/// A server-side stream that parses the frames the client sends as they
/// are read, and publishes the [`Preface`].
struct Sniff<I> {
    inner: I,
    buffer: Vec<u8>,
    preface_done: bool,
    seen: watch::Sender<Preface>,
}

impl<I> Sniff<I> {
    fn parse(&mut self) {
        if !self.preface_done {
            if self.buffer.len() < 24 {
                return;
            }
            self.buffer.drain(..24);
            self.preface_done = true;
        }
        while self.buffer.len() >= 9 {
            let length =
                u32::from_be_bytes([0, self.buffer[0], self.buffer[1], self.buffer[2]]) as usize;
            if self.buffer.len() < 9 + length {
                return;
            }
            let kind = self.buffer[3];
            let flags = self.buffer[4];
            let stream = u32::from_be_bytes(self.buffer[5..9].try_into().unwrap()) & 0x7fff_ffff;
            let payload = self.buffer[9..9 + length].to_vec();
            self.buffer.drain(..9 + length);
            match kind {
                // SETTINGS, not an ACK.
                0x4 if flags & 0x1 == 0 => self.seen.send_modify(|seen| {
                    seen.settings.get_or_insert_with(|| {
                        payload
                            .chunks_exact(6)
                            .map(|entry| {
                                let id = u16::from_be_bytes([entry[0], entry[1]]);
                                let value = u32::from_be_bytes(entry[2..6].try_into().unwrap());
                                (id, value)
                            })
                            .collect()
                    });
                }),
                // WINDOW_UPDATE on the connection.
                0x8 if stream == 0 && payload.len() == 4 => self.seen.send_modify(|seen| {
                    let increment = u32::from_be_bytes(payload[..4].try_into().unwrap());
                    seen.connection_window_increment
                        .get_or_insert(increment & 0x7fff_ffff);
                }),
                _ => {}
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Sniff<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let new = buf.filled()[before..].to_vec();
            self.buffer.extend_from_slice(&new);
            self.parse();
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Sniff<I> {
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

/// What the server saw: the preface of the last connection, the peers it
/// accepted, and one message per request that arrived.
struct Seen {
    preface: watch::Receiver<Preface>,
    peers: mpsc::UnboundedReceiver<SocketAddr>,
    requests: mpsc::UnboundedReceiver<()>,
}

type EchoFuture = Pin<
    Box<
        dyn std::future::Future<
                Output = Result<http::Response<Full<Bytes>>, std::convert::Infallible>,
            > + Send,
    >,
>;

/// Answers every request with its `user-agent`, `:authority` and `:scheme`
/// (and `authorization`) in response headers, once `gate` lets it through.
fn echo_head(
    requests: mpsc::UnboundedSender<()>,
    gate: Option<Arc<Semaphore>>,
) -> impl Fn(http::Request<hyper::body::Incoming>) -> EchoFuture + Clone {
    move |request: http::Request<hyper::body::Incoming>| {
        let requests = requests.clone();
        let gate = gate.clone();
        Box::pin(async move {
            let _ = requests.send(());
            if let Some(gate) = gate {
                gate.acquire().await.unwrap().forget();
            }
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            let response = http::Response::builder()
                .header("x-user-agent", header("user-agent"))
                .header("x-authorization", header("authorization"))
                .header(
                    "x-authority",
                    request
                        .uri()
                        .authority()
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                )
                .header("x-scheme", request.uri().scheme_str().unwrap_or_default())
                .header("grpc-status", "0")
                .body(Full::new(Bytes::new()))
                .unwrap();
            Ok(response)
        })
    }
}

/// Serves HTTP/2 on every stream `accept` yields, sniffing each.
fn serve<I, F>(mut accept: F, gate: Option<Arc<Semaphore>>) -> Seen
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnMut()
            -> Pin<Box<dyn std::future::Future<Output = Option<(I, Option<SocketAddr>)>> + Send>>
        + Send
        + 'static,
{
    let (preface_tx, preface) = watch::channel(Preface::default());
    let (peer_tx, peers) = mpsc::unbounded_channel();
    let (request_tx, requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((stream, peer)) = accept().await {
            if let Some(peer) = peer {
                let _ = peer_tx.send(peer);
            }
            preface_tx.send_replace(Preface::default());
            let io = Sniff {
                inner: stream,
                buffer: Vec::new(),
                preface_done: false,
                seen: preface_tx.clone(),
            };
            let service = hyper::service::service_fn(echo_head(request_tx.clone(), gate.clone()));
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(io), service),
            );
        }
    });
    Seen {
        preface,
        peers,
        requests,
    }
}

async fn serve_tcp(ip: &str, gate: Option<Arc<Semaphore>>) -> (SocketAddr, Seen) {
    let listener = Arc::new(TcpListener::bind((ip, 0)).await.unwrap());
    let addr = listener.local_addr().unwrap();
    let seen = serve(
        move || {
            let listener = listener.clone();
            Box::pin(async move {
                let (stream, peer) = listener.accept().await.ok()?;
                Some((stream, Some(peer)))
            })
        },
        gate,
    );
    (addr, seen)
}

fn socket_path(test: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "grpc-lb-settings-{test}-{}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

fn serve_unix(path: &PathBuf) -> Seen {
    let listener = Arc::new(UnixListener::bind(path).unwrap());
    serve(
        move || {
            let listener = listener.clone();
            Box::pin(async move {
                let (stream, _) = listener.accept().await.ok()?;
                Some((stream, None))
            })
        },
        None,
    )
}

/// A TLS server for `localhost`, and the CA certificate (PEM) to trust.
async fn serve_tls() -> (SocketAddr, Seen, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tokio_rustls::rustls;

    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let addr = listener.local_addr().unwrap();
    let seen = serve(
        move || {
            let listener = listener.clone();
            let acceptor = acceptor.clone();
            Box::pin(async move {
                loop {
                    let (tcp, peer) = listener.accept().await.ok()?;
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        return Some((tls, Some(peer)));
                    }
                }
            })
        },
        None,
    );
    (addr, seen, ca.pem())
}

// ===== helpers =====

async fn connected(channel: &GrpcChannel) {
    channel.connect();
    let mut watch = channel.watch_state();
    let reached = timeout(
        LIMIT,
        watch.wait_for(|c| c.state == ConnectivityState::Ready),
    )
    .await;
    assert!(reached.is_ok(), "never READY: {:?}", channel.subchannels());
}

async fn preface(seen: &mut Seen, has: impl Fn(&Preface) -> bool) -> Preface {
    let preface = timeout(LIMIT, seen.preface.wait_for(|p| has(p)))
        .await
        .expect("the client's preface")
        .unwrap();
    preface.clone()
}

/// One request through the channel; the response's echoed headers.
async fn head<S, B>(channel: &mut S) -> http::HeaderMap
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
{
    let request = http::Request::post("/helloworld.Greeter/SayHello")
        .body(tonic::body::Body::empty())
        .unwrap();
    let response = timeout(LIMIT, channel.ready().await.unwrap().call(request))
        .await
        .expect("the call ends")
        .unwrap();
    response.headers().clone()
}

fn tuned(builder: grpc_lb::Builder) -> grpc_lb::Builder {
    builder
        .initial_stream_window_size(1_000_000)
        .initial_connection_window_size(3_000_000)
        .max_frame_size(32_768)
        .http2_max_header_list_size(20_000)
        .http2_header_table_size(8_192)
}

fn assert_tuned(preface: &Preface) {
    assert_eq!(
        preface.setting(INITIAL_WINDOW_SIZE),
        Some(1_000_000),
        "{preface:?}"
    );
    assert_eq!(preface.setting(MAX_FRAME_SIZE), Some(32_768), "{preface:?}");
    assert_eq!(
        preface.setting(MAX_HEADER_LIST_SIZE),
        Some(20_000),
        "{preface:?}"
    );
    assert_eq!(
        preface.setting(HEADER_TABLE_SIZE),
        Some(8_192),
        "{preface:?}"
    );
    assert_eq!(
        preface.connection_window_increment,
        Some(3_000_000 - SPEC_WINDOW)
    );
}

fn has_settings_and_window(preface: &Preface) -> bool {
    preface.settings.is_some() && preface.connection_window_increment.is_some()
}

// ===== HTTP/2 settings =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_settings_reach_the_server_over_tcp() {
    let (addr, mut seen) = serve_tcp("127.0.0.1", None).await;
    let channel = tuned(Channel::builder(format!("ipv4:{addr}")))
        .build()
        .unwrap();
    connected(&channel).await;
    assert_tuned(&preface(&mut seen, has_settings_and_window).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_settings_reach_the_server_over_a_unix_socket() {
    let path = socket_path("h2");
    let mut seen = serve_unix(&path);
    let channel = tuned(Channel::builder(format!("unix://{}", path.display())))
        .build()
        .unwrap();
    connected(&channel).await;
    assert_tuned(&preface(&mut seen, has_settings_and_window).await);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_settings_and_user_agent_reach_the_server_over_tls() {
    let (addr, mut seen, ca) = serve_tls().await;
    let tls = grpc_lb::TlsConfig::new()
        .with_root_certificates_pem(ca.as_bytes())
        .unwrap();
    let mut channel = tuned(Channel::builder(format!("ipv4:{addr}")))
        .authority("localhost")
        .tls(tls)
        .user_agent("greeter-tls/1")
        .build()
        .unwrap();
    connected(&channel).await;
    assert_tuned(&preface(&mut seen, has_settings_and_window).await);
    let head = head(&mut channel).await;
    assert_eq!(
        head["x-user-agent"],
        format!("greeter-tls/1 {}", grpc_lb::connect::DEFAULT_USER_AGENT)
    );
    assert_eq!(head["x-scheme"], "https");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_defaults_unless_set_and_the_adaptive_window_overrides_the_windows() {
    let (addr, mut seen) = serve_tcp("127.0.0.1", None).await;
    let channel = Channel::builder(format!("ipv4:{addr}")).build().unwrap();
    connected(&channel).await;
    let default = preface(&mut seen, has_settings_and_window).await;
    // hyper's client defaults: 2 MiB streams, 5 MiB connection.
    assert_eq!(
        default.setting(INITIAL_WINDOW_SIZE),
        Some(2 * 1024 * 1024),
        "{default:?}"
    );
    assert_eq!(
        default.connection_window_increment,
        Some(5 * 1024 * 1024 - SPEC_WINDOW)
    );
    drop(channel);

    let (addr, mut seen) = serve_tcp("127.0.0.1", None).await;
    let channel = Channel::builder(format!("ipv4:{addr}"))
        .initial_stream_window_size(1_000_000)
        .http2_adaptive_window(true)
        .build()
        .unwrap();
    connected(&channel).await;
    let adaptive = preface(&mut seen, |p| p.settings.is_some()).await;
    // BDP estimation starts from the spec's window, whatever was set.
    let stream_window = adaptive.setting(INITIAL_WINDOW_SIZE).unwrap_or(SPEC_WINDOW);
    assert_eq!(stream_window, SPEC_WINDOW, "{adaptive:?}");
}

// ===== user agent, origin, local address =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_user_agent_is_always_sent_after_the_users() {
    let (addr, _seen) = serve_tcp("127.0.0.1", None).await;
    let mut plain = Channel::builder(format!("ipv4:{addr}")).build().unwrap();
    let head = head(&mut plain).await;
    assert_eq!(head["x-user-agent"], grpc_lb::connect::DEFAULT_USER_AGENT);
    assert!(grpc_lb::connect::DEFAULT_USER_AGENT.starts_with("grpc-lb/0."));
    assert_eq!(head["x-authority"], addr.to_string());
    assert_eq!(head["x-scheme"], "http");

    let mut named = Channel::builder(format!("ipv4:{addr}"))
        .user_agent("greeter/2")
        .build()
        .unwrap();
    let head = self::head(&mut named).await;
    assert_eq!(
        head["x-user-agent"],
        format!("greeter/2 {}", grpc_lb::connect::DEFAULT_USER_AGENT)
    );

    let bad = Channel::builder(format!("ipv4:{addr}"))
        .user_agent("bad\nagent")
        .build()
        .unwrap_err();
    assert!(
        matches!(
            bad.build_error(),
            Some(grpc_lb::BuildError::InvalidUserAgent(_))
        ),
        "{bad}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_sets_the_scheme_and_authority_sent() {
    let (addr, _seen) = serve_tcp("127.0.0.1", None).await;
    let mut channel = Channel::builder(format!("ipv4:{addr}"))
        .origin("https://greeter.example:8443".parse().unwrap())
        .build()
        .unwrap();
    let head = head(&mut channel).await;
    assert_eq!(head["x-authority"], "greeter.example:8443");
    assert_eq!(head["x-scheme"], "https");

    let error = Channel::builder(format!("ipv4:{addr}"))
        .origin("/no-authority".parse().unwrap())
        .build()
        .unwrap_err();
    assert!(
        matches!(
            error.build_error(),
            Some(grpc_lb::BuildError::InvalidOrigin(_))
        ),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_address_is_the_address_the_server_sees() {
    let (addr, mut seen) = serve_tcp("127.0.0.1", None).await;
    let channel = Channel::builder(format!("ipv4:{addr}"))
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .build()
        .unwrap();
    connected(&channel).await;
    let peer = timeout(LIMIT, seen.peers.recv()).await.unwrap().unwrap();
    assert_eq!(peer.ip().to_string(), "127.0.0.2");
}

// ===== connect timeout =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_fails_an_attempt_the_server_never_answers() {
    // Accepts TCP and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (keep, mut accepted) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = keep.send(stream);
        }
    });
    let channel = Channel::builder(format!("ipv4:{addr}"))
        .connect_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    channel.connect();
    let mut watch = channel.watch_state();
    let failed = timeout(
        LIMIT,
        watch.wait_for(|c| c.state == ConnectivityState::TransientFailure),
    )
    .await
    .expect("the attempt times out")
    .unwrap()
    .clone();
    let cause = failed.last_error.expect("a cause").to_string();
    assert!(
        cause.contains("timed out") && cause.contains("300ms"),
        "{cause}"
    );
    assert!(accepted.recv().await.is_some(), "TCP did connect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_bounds_a_tls_handshake_and_a_silent_unix_socket() {
    async fn timed_out(channel: GrpcChannel) -> String {
        channel.connect();
        let mut watch = channel.watch_state();
        let failed = timeout(
            LIMIT,
            watch.wait_for(|c| c.state == ConnectivityState::TransientFailure),
        )
        .await
        .expect("the attempt times out")
        .unwrap()
        .clone();
        failed.last_error.expect("a cause").to_string()
    }
    // A TCP server that never answers the TLS ClientHello.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (keep, _accepted) = mpsc::unbounded_channel();
    let keep_unix = keep.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = keep.send(Box::new(stream) as Box<dyn std::any::Any + Send>);
        }
    });
    // No roots: the handshake never gets as far as checking a certificate.
    let tls = grpc_lb::TlsConfig::new();
    let channel = Channel::builder(format!("ipv4:{addr}"))
        .authority("localhost")
        .tls(tls)
        .connect_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let cause = timed_out(channel).await;
    assert!(
        cause.contains("timed out") && cause.contains("300ms"),
        "{cause}"
    );

    // A Unix socket whose server accepts and says nothing.
    let path = socket_path("silent");
    let unix = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = unix.accept().await {
            let _ = keep_unix.send(Box::new(stream));
        }
    });
    let channel = Channel::builder(format!("unix://{}", path.display()))
        .connect_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let cause = timed_out(channel).await;
    assert!(
        cause.contains("timed out") && cause.contains("300ms"),
        "{cause}"
    );
    let _ = std::fs::remove_file(&path);
}

// ===== limits and layers =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_holds_the_next_call_until_one_ends() {
    let gate = Arc::new(Semaphore::new(0));
    let (addr, mut seen) = serve_tcp("127.0.0.1", Some(gate.clone())).await;
    let channel = Channel::builder(format!("ipv4:{addr}"))
        .concurrency_limit(1)
        .build()
        .unwrap();
    let mut first = channel.clone();
    let first = tokio::spawn(async move { head(&mut first).await });
    timeout(LIMIT, seen.requests.recv()).await.unwrap().unwrap();

    // One call in flight: a clone is not ready.
    let mut second = channel.clone();
    let mut ready = tokio_test::task::spawn(second.ready());
    assert!(ready.poll().is_pending());
    gate.add_permits(1);
    timeout(LIMIT, first).await.unwrap().unwrap();
    timeout(LIMIT, ready).await.unwrap().unwrap();
    // The channel under the limit is still there.
    assert_eq!(channel.get_ref().state(), ConnectivityState::Ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_calls_beyond_the_period_s_for_every_clone() {
    let (addr, _seen) = serve_tcp("127.0.0.1", None).await;
    let mut channel = Channel::builder(format!("ipv4:{addr}"))
        .rate_limit(1, Duration::from_secs(3600))
        .build()
        .unwrap();
    head(&mut channel).await;
    let mut clone = channel.clone();
    let mut ready = tokio_test::task::spawn(clone.ready());
    assert!(ready.poll().is_pending(), "the hour's one call is spent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_of_the_users_wraps_every_call() {
    let (addr, _seen) = serve_tcp("127.0.0.1", None).await;
    fn authorize(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", "Bearer t".parse().unwrap());
        Ok(request)
    }
    let interceptor: fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> =
        authorize;
    // Layers stack as in ServiceBuilder: the first added is the outermost.
    let channel = Channel::builder(format!("ipv4:{addr}"))
        .layer(tonic::service::InterceptorLayer::new(interceptor))
        .concurrency_limit(8)
        .build()
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    let mut raw = channel;
    let head = head(&mut raw).await;
    assert_eq!(head["x-authorization"], "Bearer t");
}
