//! The balancer as a tower layer over a `Discover` of your own: your own keys,
//! your own (non-gRPC) services, balanced by round_robin and by pick_first, and
//! tower middleware above the balancer that sees its backpressure.
//!
//! Each backend is an HTTP/1.1 server on loopback; each of your services is a
//! single HTTP/1.1 connection to one, which takes one request at a time, so a
//! busy backend's `poll_ready` is `Pending`. The balancer picks around busy
//! backends, and is `Pending` itself when all are busy: `LoadShed` above it
//! then sheds the call instead of queueing it, and `ConcurrencyLimit` caps the
//! calls in flight before the balancer is even asked.
//!
//! `cargo run -p examples --example balance_tower` (and `cargo test -p
//! examples --example balance_tower` runs it as a test).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use grpc_lb_balance::service::{Balance, BalanceLayer};
use grpc_lb_balance::tree::{PickFirst, Policy, RoundRobin};
use grpc_lb_core::BoxError;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tower::discover::Change;
use tower::{Service, ServiceBuilder, ServiceExt};

/// Your own key type: anything `Hash + Eq + Clone`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Backend {
    Primary,
    Secondary(u8),
}

/// Your own service: one HTTP/1.1 connection, ready while it is idle.
struct Http1Backend {
    send: SendRequest<Empty<Bytes>>,
}

impl Service<http::Request<Empty<Bytes>>> for Http1Backend {
    type Response = String;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<String, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.send.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Empty<Bytes>>) -> Self::Future {
        let response = self.send.send_request(request);
        Box::pin(async move {
            let body = response.await?.into_body().collect().await?.to_bytes();
            Ok(String::from_utf8_lossy(&body).into_owned())
        })
    }
}

/// A loopback HTTP/1.1 server that answers its name after `delay`.
async fn start_backend(name: &'static str, delay: Duration) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move {
            tokio::time::sleep(delay).await;
            name
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

async fn connect(addr: SocketAddr) -> Result<Http1Backend, BoxError> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(Http1Backend { send })
}

type Discovered = Result<Change<Backend, Http1Backend>, Infallible>;

/// Your own discovery: here a channel you push changes into.
async fn discover(
    backends: &[(Backend, SocketAddr)],
) -> Result<mpsc::UnboundedReceiver<Discovered>, BoxError> {
    let (changes, discover) = mpsc::unbounded();
    for (key, addr) in backends {
        changes.unbounded_send(Ok(Change::Insert(key.clone(), connect(*addr).await?)))?;
    }
    // Kept open: the balancer keeps serving, and would take later changes.
    std::mem::forget(changes);
    Ok(discover)
}

fn request() -> http::Request<Empty<Bytes>> {
    http::Request::builder()
        .uri("/")
        .header("host", "backend")
        .body(Empty::new())
        .expect("a valid request")
}

async fn names<S>(service: &mut S, calls: usize) -> Result<Vec<String>, BoxError>
where
    S: Service<http::Request<Empty<Bytes>>, Response = String, Error = BoxError>,
{
    let mut names = Vec::new();
    for _ in 0..calls {
        names.push(service.ready().await?.call(request()).await?);
    }
    Ok(names)
}

async fn balanced<P: Policy>(
    backends: &[(Backend, SocketAddr)],
    policy: fn() -> P,
) -> Result<Balanced, BoxError> {
    Ok(ServiceBuilder::new()
        .layer(BalanceLayer::new(policy))
        .service(discover(backends).await?))
}

type Balanced = Balance<mpsc::UnboundedReceiver<Discovered>, http::Request<Empty<Bytes>>>;

/// Waits until every backend is READY, handling the balancer's events with no
/// call made (its task is woken by each backend's own waker).
async fn settled(balance: &mut Balanced, backends: usize) -> Result<(), BoxError> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(Err(error)) = balance.poll_events(cx) {
            return Poll::Ready(Err(error));
        }
        let all_ready = balance
            .endpoints()
            .all(|(_, state)| state == grpc_lb_core::ConnectivityState::Ready);
        if balance.len() == backends && all_ready {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

async fn run() -> Result<(), BoxError> {
    let fast = Duration::ZERO;
    let backends = [
        (Backend::Primary, start_backend("primary", fast).await?),
        (
            Backend::Secondary(1),
            start_backend("secondary-1", fast).await?,
        ),
        (
            Backend::Secondary(2),
            start_backend("secondary-2", fast).await?,
        ),
    ];

    // round_robin: the READY backends in turn. An HTTP/1.1 connection is not
    // ready again until it has finished its last response, so a backend just
    // used may sit out a turn: the order varies, but every backend serves.
    let mut round_robin = balanced(&backends, RoundRobin::new).await?;
    let mut seen = names(&mut round_robin, 9).await?;
    println!("round_robin: {seen:?}");
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["primary", "secondary-1", "secondary-2"]);

    // pick_first: the first backend discovered, every time.
    let mut pick_first = balanced(&backends, PickFirst::new).await?;
    let seen = names(&mut pick_first, 3).await?;
    println!("pick_first: {seen:?}");
    assert_eq!(seen, ["primary", "primary", "primary"]);

    // Backpressure: slow backends, each busy with one call at a time.
    let slow = Duration::from_secs(1);
    let slow_backends = [
        (Backend::Primary, start_backend("slow-1", slow).await?),
        (Backend::Secondary(1), start_backend("slow-2", slow).await?),
    ];
    let mut balance = balanced(&slow_backends, RoundRobin::new).await?;
    settled(&mut balance, 2).await?;
    let mut shed = ServiceBuilder::new()
        .load_shed()
        .map_err(BoxError::from)
        .service(&mut balance);
    // Two calls in flight fill both backends; the third is shed at once,
    // because the balancer's poll_ready is Pending, not because of a timer.
    let first = shed.ready().await?.call(request());
    let second = shed.ready().await?.call(request());
    let third = shed.ready().await?.call(request()).await;
    let third = third.expect_err("every backend is busy");
    assert!(third.is::<tower::load_shed::error::Overloaded>(), "{third}");
    println!("load_shed: third call shed ({third})");
    let (first, second) = (first.await?, second.await?);
    println!("load_shed: in flight answered by {first} and {second}");
    // Without load-shed, a caller waits for a backend instead: the balancer
    // wakes it when one is free.
    let answer = balance.ready().await?.call(request()).await?;
    println!("waiting caller answered by {answer}");

    // A concurrency limit above the balancer: one call in flight at most, so
    // the second is shed even though a backend is free.
    let mut balance = balanced(&slow_backends, RoundRobin::new).await?;
    settled(&mut balance, 2).await?;
    let mut limited = ServiceBuilder::new()
        .load_shed()
        .map_err(BoxError::from)
        .concurrency_limit(1)
        .service(balance);
    let first = limited.ready().await?.call(request());
    let second = limited.ready().await?.call(request()).await;
    assert!(second
        .expect_err("over the limit")
        .is::<tower::load_shed::error::Overloaded>());
    println!("concurrency_limit: second call shed while the first is in flight");
    first.await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    run().await
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_example_runs() {
        super::run().await.unwrap();
    }
}
