//! A grpc-lb `Channel` whose connections are in memory and always ready, fed
//! by the manual resolver: what is left of a call is the channel's own path
//! (snapshot load, pick, reservation, response future), which is what the
//! pick benchmarks and the scale runs measure.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::task::{Context, Poll};

use grpc_lb::balance::PolicyRegistry;
use grpc_lb::core::ResolveNow;
use grpc_lb::reconnect::{Reconnect, ReconnectConfig};
use grpc_lb::resolve::{Address, Endpoint, ManualHandle, ManualResolver, ResolverDiscover};
use grpc_lb::{Channel, ChannelEvent, ChannelOptions};
use tokio::sync::broadcast::error::RecvError;
use tower_service::Service;

use crate::Error;

/// A connection that answers every request at once with an empty response.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemConnection;

impl<B> Service<http::Request<B>> for MemConnection {
    type Response = http::Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<http::Response<()>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let mut response = http::Response::new(());
        if request.headers().contains_key(http::header::CONTENT_TYPE) {
            // A gRPC request gets a Trailers-Only OK, as a real server's
            // status arrives: in headers the channel reads.
            let headers = response.headers_mut();
            headers.insert(http::header::CONTENT_TYPE, GRPC.clone());
            headers.insert(GRPC_STATUS.clone(), http::HeaderValue::from_static("0"));
        }
        ready(Ok(response))
    }
}

static GRPC: http::HeaderValue = http::HeaderValue::from_static("application/grpc");
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// Connects to any address at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemConnector;

impl Service<Address> for MemConnector {
    type Response = MemConnection;
    type Error = Infallible;
    type Future = Ready<Result<MemConnection, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _address: Address) -> Self::Future {
        ready(Ok(MemConnection))
    }
}

/// An in-memory channel.
pub type MemChannel = Channel<MemConnection>;

/// An in-memory channel under `policy`, the handle of its manual resolver, and
/// its worker, for the caller to spawn.
pub fn mem_channel(
    policy: &str,
) -> Result<
    (
        MemChannel,
        ManualHandle,
        impl Future<Output = ()> + Send + 'static,
    ),
    Error,
> {
    let (resolver, handle) = ManualResolver::new("mem");
    let updates = resolver.stream(ResolveNow::new());
    let discover = ResolverDiscover::new(updates, |e: &Endpoint| {
        Reconnect::with_config(MemConnector, e.address.clone(), ReconnectConfig::default())
    });
    let policy = PolicyRegistry::with_defaults().build(policy)?;
    let (channel, worker) =
        Channel::pair::<_, _, _, _, http::Request<()>>(discover, policy, ChannelOptions::default());
    Ok((channel, handle, worker))
}

/// `n` distinct endpoints (10.0.0.0/8, port 80), none of them reachable.
pub fn endpoints(n: usize) -> Vec<Endpoint> {
    (0..n).map(|i| Endpoint::new(nth_addr(i))).collect()
}

/// The `i`-th address [`endpoints`] gives.
pub fn nth_addr(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(0x0a00_0001 + i as u32), 80))
}

/// Waits, on the channel's events, until `done` holds. `done` is asked again
/// only once this task has caught up with the events (or lost some), so a
/// check that reads the whole endpoint list is not repeated per event.
pub async fn wait_until<S>(
    channel: &Channel<S>,
    mut done: impl FnMut(&Channel<S>) -> bool,
) -> Result<(), Error> {
    let mut events = channel.events();
    loop {
        if done(channel) {
            return Ok(());
        }
        loop {
            match events.recv().await {
                Ok(_) if !events.is_empty() => continue,
                Ok(_) | Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => return Err("channel worker stopped".into()),
            }
        }
    }
}

/// Whether an event is a subchannel added or removed, for waits that count them.
pub fn is_membership(event: &ChannelEvent) -> bool {
    matches!(
        event,
        ChannelEvent::SubchannelAdded { .. } | ChannelEvent::SubchannelRemoved { .. }
    )
}

/// One call through the channel as a caller makes it: `poll_ready` (the
/// pick), `call`, and one poll of the response future, which an in-memory
/// connection answers at once. Returns whether the call was answered.
/// Never inlined, so that `callgrind --toggle-collect` can count exactly it.
#[inline(never)]
pub fn call_once(channel: &mut MemChannel, cx: &mut Context<'_>) -> bool {
    let _ = Service::<http::Request<()>>::poll_ready(channel, cx);
    let future = channel.call(http::Request::new(()));
    matches!(pin!(future).poll(cx), Poll::Ready(Ok(_)))
}

/// A request shaped as tonic's generated client sends one: path, gRPC
/// headers, the method extension, a 7-byte message body, and, with
/// `timeout`, a `grpc-timeout`.
pub fn grpc_request(timeout: Option<std::time::Duration>) -> http::Request<tonic::body::Body> {
    let body = tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from_static(
        b"\0\0\0\0\x02\x0a\0",
    )));
    let mut request = http::Request::post("/helloworld.Greeter/SayHello")
        .header(http::header::CONTENT_TYPE, GRPC.clone())
        .header(http::header::TE, "trailers")
        .header(http::header::USER_AGENT, "tonic/0.14")
        .body(body)
        .expect("a valid request");
    if let Some(timeout) = timeout {
        request.headers_mut().insert(
            "grpc-timeout",
            http::HeaderValue::from_str(&format!("{}m", timeout.as_millis())).expect("digits"),
        );
    }
    request
        .extensions_mut()
        .insert(tonic::GrpcMethod::new("helloworld.Greeter", "SayHello"));
    request
}

/// [`call_once`] for a gRPC request made by the caller.
#[inline(never)]
pub fn call_once_grpc(
    channel: &mut MemChannel,
    cx: &mut Context<'_>,
    request: http::Request<tonic::body::Body>,
) -> bool {
    let _ = Service::<http::Request<tonic::body::Body>>::poll_ready(channel, cx);
    let future = channel.call(request);
    matches!(pin!(future).poll(cx), Poll::Ready(Ok(_)))
}
