//! The `too_many_pings` GOAWAY, from a raw HTTP/2 peer on loopback: the
//! frames are written by hand, so the GOAWAY's reason and debug data are
//! exactly what the test says. (The keepalive tests against a real grpcio
//! server are in `tests/tests/keepalive.rs`.)

use std::error::Error;
use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use grpc_lb_connect::{Http2Connector, KeepaliveConfig, TooManyPings};
use http_body_util::Empty;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower_service::Service;

const ENHANCE_YOUR_CALM: u32 = 0xb;
const NO_ERROR: u32 = 0x0;

/// An HTTP/2 frame header and payload.
fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags, 0, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}

/// A server that answers the preface with SETTINGS, then sends GOAWAY with
/// `code` and `debug`, and holds the socket until the client closes it.
async fn goaway_server(code: u32, debug: &'static [u8]) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut preface = [0u8; 24];
        socket.read_exact(&mut preface).await.unwrap();
        socket.write_all(&frame(0x4, 0, &[])).await.unwrap();
        let mut goaway = 0u32.to_be_bytes().to_vec();
        goaway.extend_from_slice(&code.to_be_bytes());
        goaway.extend_from_slice(debug);
        socket.write_all(&frame(0x7, 0, &goaway)).await.unwrap();
        let mut sink = Vec::new();
        let _ = socket.read_to_end(&mut sink).await;
    });
    addr
}

/// Connects, then waits until the connection closes, and returns the error
/// its `poll_ready` reports.
async fn closed_error(
    connector: &mut Http2Connector<Empty<Bytes>>,
    addr: std::net::SocketAddr,
) -> grpc_lb_core::BoxError {
    let mut connection = connector.call(addr).await.expect("connects");
    tokio::time::timeout(
        Duration::from_secs(10),
        poll_fn(|cx| {
            match Service::<http::Request<Empty<Bytes>>>::poll_ready(&mut connection, cx) {
                Poll::Ready(Err(error)) => Poll::Ready(error),
                // Ready or not, the original connection is woken when it closes.
                _ => Poll::Pending,
            }
        }),
    )
    .await
    .expect("the GOAWAY closes the connection")
}

fn find_too_many_pings<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a TooManyPings> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(found) = error.downcast_ref::<TooManyPings>() {
            return Some(found);
        }
        next = error.source();
    }
    None
}

#[tokio::test]
async fn too_many_pings_doubles_the_keepalive_time_of_later_connections() {
    let addr = goaway_server(ENHANCE_YOUR_CALM, b"too_many_pings").await;
    let mut connector = Http2Connector::<Empty<Bytes>>::new()
        .with_keepalive(KeepaliveConfig::new().time(Duration::from_secs(10)));
    let sibling = connector.clone();

    let error = closed_error(&mut connector, addr).await;
    let pings = find_too_many_pings(&*error)
        .unwrap_or_else(|| panic!("no TooManyPings in the chain of: {error}"));
    assert_eq!(pings.used_time(), Duration::from_secs(10));
    assert_eq!(pings.new_time(), Duration::from_secs(20));
    assert!(error.to_string().contains("too_many_pings"), "{error}");

    // Every clone (every subchannel of a channel) uses the new time.
    assert_eq!(connector.keepalive_time(), Some(Duration::from_secs(20)));
    assert_eq!(sibling.keepalive_time(), Some(Duration::from_secs(20)));
    // The configuration itself is unchanged.
    assert_eq!(
        connector.keepalive().get_time(),
        Some(Duration::from_secs(10))
    );

    // A second GOAWAY on a connection made with 20 s doubles again.
    let addr = goaway_server(ENHANCE_YOUR_CALM, b"too_many_pings").await;
    closed_error(&mut connector, addr).await;
    assert_eq!(sibling.keepalive_time(), Some(Duration::from_secs(40)));
}

#[tokio::test]
async fn other_goaways_leave_the_keepalive_time_alone() {
    let cases: [(u32, &'static [u8]); 3] = [
        (ENHANCE_YOUR_CALM, b"slow down"),
        (ENHANCE_YOUR_CALM, b""),
        (NO_ERROR, b"too_many_pings"),
    ];
    for (code, debug) in cases {
        let addr = goaway_server(code, debug).await;
        let mut connector = Http2Connector::<Empty<Bytes>>::new()
            .with_keepalive(KeepaliveConfig::new().time(Duration::from_secs(10)));
        let error = closed_error(&mut connector, addr).await;
        assert!(
            find_too_many_pings(&*error).is_none(),
            "code {code}, debug {debug:?}: {error}"
        );
        assert_eq!(connector.keepalive_time(), Some(Duration::from_secs(10)));
    }
}

#[tokio::test]
async fn without_keepalive_a_too_many_pings_goaway_changes_nothing() {
    let addr = goaway_server(ENHANCE_YOUR_CALM, b"too_many_pings").await;
    let mut connector = Http2Connector::<Empty<Bytes>>::new();
    let error = closed_error(&mut connector, addr).await;
    // grpc-go doubles a time of zero (off) into zero: still off.
    assert!(find_too_many_pings(&*error).is_none(), "{error}");
    assert_eq!(connector.keepalive_time(), None);
}
