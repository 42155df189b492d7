//! GOAWAY and MAX_CONCURRENT_STREAMS from a raw HTTP/2 peer on loopback: the
//! server's frames are written by hand, so the last-stream-id and the limit
//! are exactly what each test says, and the peer reports every stream the
//! client opens. (The same against grpcio is in `tests/tests/goaway.rs`.)

use std::error::Error;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use grpc_lb_connect::error::GoAway;
use grpc_lb_connect::{Http2Connection, Http2Connector};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower_service::Service;

const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// Far above any wait here: a hang fails instead of blocking the suite.
const LIMIT: Duration = Duration::from_secs(10);

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn goaway(last_stream_id: u32, code: u32) -> Vec<u8> {
    let mut payload = last_stream_id.to_be_bytes().to_vec();
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(b"test");
    frame(GOAWAY, 0, 0, &payload)
}

/// `:status: 200` (HPACK static index 8), ending the stream.
fn ok_response(stream: u32) -> Vec<u8> {
    frame(HEADERS, END_HEADERS | END_STREAM, stream, &[0x88])
}

/// A peer that sends `settings` as its preface, reports the id of every
/// stream the client opens, and writes whatever the test sends it.
async fn raw_peer(
    settings: Vec<u8>,
) -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<u32>,
    mpsc::UnboundedSender<Vec<u8>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (opened_tx, opened) = mpsc::unbounded_channel();
    let (write, mut to_write) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let (mut reader, mut writer) = socket.into_split();
        writer
            .write_all(&frame(SETTINGS, 0, 0, &settings))
            .await
            .unwrap();
        tokio::spawn(async move {
            while let Some(bytes) = to_write.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            // Hold the socket open until the client closes it.
            std::future::pending::<()>().await;
        });
        let mut preface = [0u8; 24];
        reader.read_exact(&mut preface).await.unwrap();
        loop {
            let mut header = [0u8; 9];
            if reader.read_exact(&mut header).await.is_err() {
                return;
            }
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let mut payload = vec![0; len];
            if reader.read_exact(&mut payload).await.is_err() {
                return;
            }
            if header[3] == HEADERS {
                let stream =
                    u32::from_be_bytes([header[5] & 0x7f, header[6], header[7], header[8]]);
                let _ = opened_tx.send(stream);
            }
        }
    });
    (addr, opened, write)
}

type Connection = Http2Connection<Empty<Bytes>>;

fn request() -> http::Request<Empty<Bytes>> {
    http::Request::post("/").body(Empty::new()).unwrap()
}

fn poll_ready_now(connection: &mut Connection) -> Poll<Result<(), grpc_lb_core::BoxError>> {
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    Service::<http::Request<Empty<Bytes>>>::poll_ready(connection, &mut cx)
}

fn find<'a, T: Error + 'static>(error: &'a (dyn Error + 'static)) -> Option<&'a T> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        next = error.source();
    }
    None
}

#[tokio::test]
async fn a_goaway_on_an_idle_connection_fails_poll_ready_at_once() {
    let (addr, _opened, write) = raw_peer(Vec::new()).await;
    let mut connection = Http2Connector::<Empty<Bytes>>::new()
        .call(addr)
        .await
        .unwrap();
    assert!(poll_ready_now(&mut connection).is_ready());

    // The peer keeps the socket open: only the GOAWAY itself can tell.
    write.send(goaway(0, 0)).unwrap();
    let error = tokio::time::timeout(
        LIMIT,
        poll_fn(|cx| {
            match Service::<http::Request<Empty<Bytes>>>::poll_ready(&mut connection, cx) {
                Poll::Ready(Err(error)) => Poll::Ready(error),
                // The original handle is woken when the GOAWAY is read.
                _ => Poll::Pending,
            }
        }),
    )
    .await
    .expect("the GOAWAY is seen without any request");
    let go_away = find::<GoAway>(&*error).unwrap_or_else(|| panic!("no GoAway in {error}"));
    assert_eq!((go_away.last_stream_id(), go_away.error_code()), (0, 0));
    assert_eq!(go_away.debug_data(), b"test");
    assert!(connection.is_draining());

    // A request handed to it anyway is refused unsent.
    let error = connection.call(request()).await.unwrap_err();
    assert!(find::<grpc_lb_core::NotSent>(&*error).is_some(), "{error}");
}

#[tokio::test]
async fn streams_up_to_the_last_stream_id_finish_and_those_above_fail_unprocessed() {
    let (addr, mut opened, write) = raw_peer(Vec::new()).await;
    let mut connection = Http2Connector::<Empty<Bytes>>::new()
        .call(addr)
        .await
        .unwrap();
    let calls: Vec<_> = (0..3).map(|_| connection.call(request())).collect();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            tokio::time::timeout(LIMIT, opened.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(ids, [1, 3, 5]);

    // A graceful GOAWAY keeping stream 1, then its answer.
    write.send(goaway(1, 0)).unwrap();
    write.send(ok_response(1)).unwrap();
    let mut results = Vec::new();
    for call in calls {
        results.push(tokio::time::timeout(LIMIT, call).await.unwrap());
    }
    let first = results.remove(0).expect("stream 1 is answered");
    assert_eq!(first.status(), http::StatusCode::OK);
    for error in results.into_iter().map(Result::unwrap_err) {
        // What grpc-lb-retry's classifier takes as unprocessed.
        let h2 = find::<h2::Error>(&*error).unwrap_or_else(|| panic!("{error}"));
        assert!(h2.is_go_away() && h2.is_remote(), "{error}");
        // Streams 3 and 5 were written: the server saw them, so they are
        // unprocessed (one transparent retry), not never sent.
        assert!(find::<grpc_lb_core::NotSent>(&*error).is_none(), "{error}");
    }
    assert!(connection.is_draining());
}

#[tokio::test]
async fn at_the_servers_stream_limit_requests_wait_for_a_stream() {
    // SETTINGS_MAX_CONCURRENT_STREAMS = 1.
    let (addr, mut opened, write) = raw_peer(vec![0, 3, 0, 0, 0, 1]).await;
    let mut connection = Http2Connector::<Empty<Bytes>>::new()
        .call(addr)
        .await
        .unwrap();
    assert_eq!(connection.max_concurrent_streams(), Some(1));

    let first = connection.call(request());
    assert_eq!(connection.in_flight(), 1);
    assert!(
        poll_ready_now(&mut connection).is_pending(),
        "full: not ready"
    );
    let mut clone = connection.clone();
    assert!(
        poll_ready_now(&mut clone).is_pending(),
        "the limit is the connection's"
    );
    let second = tokio::spawn(clone.call(request()));
    assert_eq!(
        tokio::time::timeout(LIMIT, opened.recv()).await.unwrap(),
        Some(1)
    );

    write.send(ok_response(1)).unwrap();
    let response = tokio::time::timeout(LIMIT, first).await.unwrap().unwrap();
    // The stream is held until the body ends.
    response.into_body().collect().await.unwrap();
    // Only now does the second go out, on the next stream.
    assert_eq!(
        tokio::time::timeout(LIMIT, opened.recv()).await.unwrap(),
        Some(3)
    );
    write.send(ok_response(3)).unwrap();
    let response = tokio::time::timeout(LIMIT, second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    drop(response);
    assert_eq!(connection.in_flight(), 0);
    assert!(poll_ready_now(&mut connection).is_ready());
}

#[tokio::test]
async fn a_request_waiting_for_a_stream_fails_unsent_on_goaway() {
    let (addr, mut opened, write) = raw_peer(vec![0, 3, 0, 0, 0, 1]).await;
    let mut connection = Http2Connector::<Empty<Bytes>>::new()
        .call(addr)
        .await
        .unwrap();
    let first = connection.call(request());
    let waiting = tokio::spawn(connection.call(request()));
    assert_eq!(
        tokio::time::timeout(LIMIT, opened.recv()).await.unwrap(),
        Some(1)
    );
    write.send(goaway(1, 0)).unwrap();
    let error = tokio::time::timeout(LIMIT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(find::<grpc_lb_core::NotSent>(&*error).is_some(), "{error}");
    // The one the server kept is answered.
    write.send(ok_response(1)).unwrap();
    assert_eq!(
        tokio::time::timeout(LIMIT, first)
            .await
            .unwrap()
            .unwrap()
            .status(),
        http::StatusCode::OK
    );
}

/// A peer allowing one stream per connection that accepts any number of
/// connections, reports `(connection, stream)` for every stream opened, and
/// answers them all once `release` is set.
async fn one_stream_peer() -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<(usize, u32)>,
    tokio::sync::watch::Sender<bool>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (opened_tx, opened) = mpsc::unbounded_channel();
    let (release, released) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        for index in 0.. {
            let (socket, _) = listener.accept().await.unwrap();
            let (opened_tx, released) = (opened_tx.clone(), released.clone());
            tokio::spawn(async move {
                let (mut reader, mut writer) = socket.into_split();
                writer
                    .write_all(&frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 1]))
                    .await
                    .unwrap();
                let writer = std::sync::Arc::new(tokio::sync::Mutex::new(writer));
                let mut preface = [0u8; 24];
                reader.read_exact(&mut preface).await.unwrap();
                loop {
                    let mut header = [0u8; 9];
                    if reader.read_exact(&mut header).await.is_err() {
                        return;
                    }
                    let len = usize::from(header[0]) << 16
                        | usize::from(header[1]) << 8
                        | usize::from(header[2]);
                    let mut payload = vec![0; len];
                    if reader.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    if header[3] == HEADERS {
                        let stream =
                            u32::from_be_bytes([header[5] & 0x7f, header[6], header[7], header[8]]);
                        let _ = opened_tx.send((index, stream));
                        let (writer, mut released) = (writer.clone(), released.clone());
                        tokio::spawn(async move {
                            let _ = released.wait_for(|r| *r).await;
                            let _ = writer.lock().await.write_all(&ok_response(stream)).await;
                        });
                    }
                }
            });
        }
    });
    (addr, opened, release)
}

#[tokio::test]
async fn at_the_limit_more_connections_open_up_to_the_maximum() {
    let (addr, mut opened, release) = one_stream_peer().await;
    let mut connection = Http2Connector::<Empty<Bytes>>::new()
        .with_max_connections(3)
        .call(addr)
        .await
        .unwrap();
    let calls: Vec<_> = (0..4)
        .map(|_| tokio::spawn(connection.clone().call(request())))
        .collect();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(
            tokio::time::timeout(LIMIT, opened.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    seen.sort();
    // One stream on each of three connections; the fourth call waits.
    assert_eq!(seen, [(0, 1), (1, 1), (2, 1)]);
    assert_eq!(connection.connections(), 3);
    assert!(
        poll_ready_now(&mut connection).is_pending(),
        "all full, none more allowed"
    );

    release.send(true).unwrap();
    for call in calls {
        let response = tokio::time::timeout(LIMIT, call)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
    }
    // The fourth went out on a connection already open.
    let (index, stream) = tokio::time::timeout(LIMIT, opened.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(index < 3 && stream == 3, "{index} {stream}");
    assert_eq!(connection.connections(), 3);
}

/// A TCP stream whose reads the test can hold back: while `hold` is set a
/// read is Pending and registers nothing, so the connection's task reads
/// again only once something else wakes it.
struct HeldStream {
    socket: Arc<tokio::net::TcpStream>,
    hold: Arc<AtomicBool>,
}

impl tokio::io::AsyncRead for HeldStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.hold.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        loop {
            std::task::ready!(self.socket.poll_read_ready(cx))?;
            match self.socket.try_read_buf(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result.map(drop)),
            }
        }
    }
}

impl tokio::io::AsyncWrite for HeldStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.socket.poll_write_ready(cx))?;
            match self.socket.try_write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The client's socket, shared with the test, and its hold switch.
type Held = (Arc<tokio::net::TcpStream>, Arc<AtomicBool>);

/// Connects over TCP, keeping the socket and the hold switch for the test.
#[derive(Clone, Default)]
struct HeldTransport {
    connected: Arc<Mutex<Option<Held>>>,
}

impl Service<std::net::SocketAddr> for HeldTransport {
    type Response = HeldStream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<HeldStream, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, addr: std::net::SocketAddr) -> Self::Future {
        let connected = self.connected.clone();
        Box::pin(async move {
            let socket = Arc::new(tokio::net::TcpStream::connect(addr).await?);
            let hold = Arc::new(AtomicBool::new(false));
            *connected.lock().unwrap() = Some((socket.clone(), hold.clone()));
            Ok(HeldStream { socket, hold })
        })
    }
}

/// An empty request body that lifts the hold when hyper's dispatch task
/// looks at it, just before it hands the request to h2 (which numbers the
/// stream and wakes the connection's task).
struct LiftsHold(Option<Arc<AtomicBool>>);

impl http_body::Body for LiftsHold {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        if let Some(hold) = &self.0 {
            hold.store(false, Ordering::SeqCst);
        }
        true
    }
}

fn lifting(hold: Option<Arc<AtomicBool>>) -> http::Request<LiftsHold> {
    http::Request::post("/").body(LiftsHold(hold)).unwrap()
}

// C-core and grpc-go drain with GOAWAY(2^31-1) first. A request whose stream
// h2 has numbered but not yet written when that GOAWAY is read must not go
// out: the server cannot have seen it, and may close before its second
// GOAWAY (then: a broken pipe, never retried). It fails as h2 fails the
// streams above a GOAWAY's last-stream-id, which the channel retries
// elsewhere (gRFC A6).
#[tokio::test]
async fn a_goaway_fails_the_requests_not_yet_written_whatever_its_last_stream_id() {
    let (addr, mut opened, write) = raw_peer(Vec::new()).await;
    let transport = HeldTransport::default();
    let mut connection = Http2Connector::<LiftsHold>::new()
        .with_transport(transport.clone())
        .call(addr)
        .await
        .unwrap();
    // One request written and answered: stream 1.
    let answered = connection.call(lifting(None));
    assert_eq!(
        tokio::time::timeout(LIMIT, opened.recv()).await.unwrap(),
        Some(1)
    );
    write.send(ok_response(1)).unwrap();
    let response = tokio::time::timeout(LIMIT, answered).await.unwrap();
    assert_eq!(response.unwrap().status(), http::StatusCode::OK);

    // The GOAWAY reaches the client's socket while its reads are held.
    let (socket, hold) = transport.connected.lock().unwrap().take().unwrap();
    hold.store(true, Ordering::SeqCst);
    let frame = goaway(0x7fff_ffff, 0);
    write.send(frame.clone()).unwrap();
    let mut peeked = vec![0; frame.len()];
    while socket.peek(&mut peeked).await.unwrap() < frame.len() {}
    assert_eq!(peeked, frame);
    drop(socket); // the connection's is then the last handle on it

    // The next request: h2 numbers it (stream 3) with the hold lifted, and
    // the connection's task reads the GOAWAY before it writes anything.
    let unsent = connection.call(lifting(Some(hold)));
    let error = tokio::time::timeout(LIMIT, unsent)
        .await
        .unwrap()
        .unwrap_err();
    let h2 = find::<h2::Error>(&*error).unwrap_or_else(|| panic!("{error}"));
    assert!(h2.is_go_away() && h2.is_remote(), "{error}");
    // Every stream this GOAWAY failed was unwritten, so the request says it
    // was never sent: a channel may send it again as often as one refused
    // before the wire, not just once (gRFC A6).
    assert!(
        find::<grpc_lb_core::NotSent>(&*error).is_some(),
        "not marked as never sent: {error}"
    );
    assert!(connection.is_draining());
    // Its HEADERS never went out: the client closes the connection once no
    // stream is left, and the peer saw none after stream 1.
    let after = tokio::time::timeout(LIMIT, opened.recv()).await.unwrap();
    assert_eq!(
        after, None,
        "a stream was written after the GOAWAY was read"
    );
}
