//! What a channel lets you see of itself, in the spirit of grpc-go's channelz:
//! its subchannels, a stream of state changes, call counters, and the peer
//! that answered each call.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use grpc_lb_core::{ConnectivityState, SharedError};
use grpc_lb_reconnect::SubchannelHandle;
use grpc_lb_resolve::Address;
use grpc_lb_service_config::ServiceConfig;

/// How many events a [`Channel::events`](crate::Channel::events) receiver may
/// fall behind before it misses some (and reads `RecvError::Lagged`).
pub const EVENT_CAPACITY: usize = 1024;

/// The endpoint a call was sent to, put into the extensions of every response
/// the channel returns (grpc-go's `peer.Peer`).
///
/// With tonic, read it from the response:
/// `response.extensions().get::<grpc_lb::Peer>()`. It is there for any server,
/// whether or not the server says who it is. A call that fails before a
/// response arrives (no connection, a broken transport) has no response, and so
/// no peer.
///
/// ```
/// use grpc_lb::{Channel, Peer};
/// use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
///
/// # async fn greeter(name: &str) -> std::net::SocketAddr {
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// #     let addr = listener.local_addr().unwrap();
/// #     let service = grpc_lb_helloworld::proto::GreeterServer::new(grpc_lb_helloworld::NamedGreeter::new(name));
/// #     tokio::spawn(
/// #         tonic::transport::Server::builder()
/// #             .add_service(service)
/// #             .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
/// #     );
/// #     addr
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (a, b) = (greeter("a").await, greeter("b").await);
/// let channel = Channel::builder(format!("ipv4:{a},{b}")).policy("round_robin").build()?;
/// let mut client = GreeterClient::new(channel);
///
/// let response = client.say_hello(HelloRequest { name: "x".into() }).await?;
/// let peer = response.extensions().get::<Peer>().unwrap();
/// let served_by = if peer.address().as_socket() == Some(a) { "a" } else { "b" };
/// assert_eq!(response.into_inner().message, format!("Hello x from {served_by}"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Peer(Arc<Address>);

impl Peer {
    pub(crate) fn new(address: Address) -> Self {
        Peer(Arc::new(address))
    }

    /// The address the call was sent to, as the resolver named it.
    pub fn address(&self) -> &Address {
        &self.0
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Peer").field(&*self.0).finish()
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One subchannel as [`Channel::subchannels`](crate::Channel::subchannels)
/// reads it: read live from the subchannel, not from a cached copy.
///
/// ```
/// use grpc_lb::{Channel, ConnectivityState};
/// use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
///
/// # async fn greeter(name: &str) -> std::net::SocketAddr {
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// #     let addr = listener.local_addr().unwrap();
/// #     let service = grpc_lb_helloworld::proto::GreeterServer::new(grpc_lb_helloworld::NamedGreeter::new(name));
/// #     tokio::spawn(
/// #         tonic::transport::Server::builder()
/// #             .add_service(service)
/// #             .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
/// #     );
/// #     addr
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let addr = greeter("a").await;
/// let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
/// let channel = Channel::builder(format!("ipv4:{addr},{dead}")).policy("round_robin").build()?;
/// GreeterClient::new(channel.clone()).say_hello(HelloRequest::default()).await?;
///
/// let subchannels = channel.subchannels(); // in the resolver's order
/// assert_eq!(subchannels[0].address.as_socket(), Some(addr));
/// assert_eq!(subchannels[0].state, ConnectivityState::Ready);
/// assert_eq!(subchannels[0].connect_attempts, 1);
/// for subchannel in &subchannels {
///     println!("SubChannel #{} {} {}", subchannel.id, subchannel.address, subchannel.state);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SubchannelInfo {
    /// The subchannel's id, as shown in its logs (`SubChannel #id`).
    pub id: u64,
    /// The endpoint's address, the subchannel's key.
    pub address: Address,
    /// Its connectivity state.
    pub state: ConnectivityState,
    /// How many connection attempts it has started.
    pub connect_attempts: u64,
    /// Its last connection error, if any attempt has failed.
    pub last_error: Option<SharedError>,
}

impl SubchannelInfo {
    pub(crate) fn read(address: &Address, handle: &SubchannelHandle) -> Self {
        let connectivity = handle.connectivity();
        SubchannelInfo {
            id: handle.id(),
            address: address.clone(),
            state: connectivity.state,
            connect_attempts: handle.connect_attempts(),
            last_error: connectivity.last_error,
        }
    }
}

/// A change in a channel, as its worker sees it: one event per transition, none
/// merged away (unlike a `watch`). Read them from
/// [`Channel::events`](crate::Channel::events).
///
/// ```
/// use grpc_lb::{Channel, ChannelEvent, ConnectivityState};
///
/// # async fn greeter(name: &str) -> std::net::SocketAddr {
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// #     let addr = listener.local_addr().unwrap();
/// #     let service = grpc_lb_helloworld::proto::GreeterServer::new(grpc_lb_helloworld::NamedGreeter::new(name));
/// #     tokio::spawn(
/// #         tonic::transport::Server::builder()
/// #             .add_service(service)
/// #             .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
/// #     );
/// #     addr
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let addr = greeter("a").await;
/// let channel = Channel::builder(format!("ipv4:{addr}")).build()?;
/// let mut events = channel.events();
/// channel.connect();
///
/// // Every transition, in order: none is merged away.
/// let mut seen = Vec::new();
/// while let Ok(event) = events.recv().await {
///     if let ChannelEvent::State { to, .. } = event {
///         seen.push(to);
///         if to == ConnectivityState::Ready {
///             break;
///         }
///     }
/// }
/// assert_eq!(seen, [ConnectivityState::Connecting, ConnectivityState::Ready]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ChannelEvent {
    /// The channel's state changed.
    State {
        /// The state before.
        from: ConnectivityState,
        /// The state now.
        to: ConnectivityState,
        /// The cause, in TRANSIENT_FAILURE.
        last_error: Option<SharedError>,
    },
    /// The resolver added an endpoint; the channel made a subchannel for it.
    SubchannelAdded {
        /// The subchannel's id.
        id: u64,
        /// Its address.
        address: Address,
        /// Its state when added (IDLE for a new subchannel).
        state: ConnectivityState,
    },
    /// A subchannel's state changed.
    SubchannelState {
        /// The subchannel's id.
        id: u64,
        /// Its address.
        address: Address,
        /// The state before.
        from: ConnectivityState,
        /// The state now.
        to: ConnectivityState,
        /// Its last connection error (kept after a failure, as on the
        /// subchannel's watch).
        last_error: Option<SharedError>,
    },
    /// The resolver removed an endpoint; its subchannel is shut down.
    SubchannelRemoved {
        /// The subchannel's id.
        id: u64,
        /// Its address.
        address: Address,
    },
    /// The service config in force changed: the resolver gave a new one, or
    /// said it has none and the channel's default is back, or its first one
    /// was bad and the channel fails its calls. Sent once the channel's
    /// calls and picker follow it.
    ServiceConfig {
        /// The config now in force; `None` when there is none.
        config: Option<Arc<ServiceConfig>>,
        /// Why every call fails: the resolver's first config was bad and the
        /// channel has no default.
        error: Option<SharedError>,
        /// The load-balancing policy in use now.
        policy: String,
    },
}

/// A channel's call counters, as channelz's `CallsStarted`, `CallsSucceeded`
/// and `CallsFailed`, read with [`Channel::stats`](crate::Channel::stats).
///
/// A call is counted at its final status, as gRFC A48 and grpc-go's `Done`
/// count it: the `grpc-status` of its trailers (read through the
/// [`ResponseBody`](crate::ResponseBody)), of a *Trailers-Only* response's
/// headers, or the channel's own error. A request that is not gRPC (no
/// `application/grpc` content-type: REST over HTTP/1.1) is judged by its
/// response's HTTP status when the headers arrive.
///
/// - **failed**: the channel answered with an error (no connection in
///   TRANSIENT_FAILURE, the deadline passed, the transport broke, too many
///   waiting), the HTTP status is not 200, the status is not `0`, a gRPC
///   response ended without a status; and a call dropped before its end
///   (cancelled);
/// - **succeeded**: status `0`, or HTTP status 200 for a request that is not
///   gRPC.
///
/// `started - succeeded - failed` is the number of calls in flight.
///
/// ```
/// use grpc_lb::Channel;
/// use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
///
/// # async fn greeter(name: &str) -> std::net::SocketAddr {
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// #     let addr = listener.local_addr().unwrap();
/// #     let service = grpc_lb_helloworld::proto::GreeterServer::new(grpc_lb_helloworld::NamedGreeter::new(name));
/// #     tokio::spawn(
/// #         tonic::transport::Server::builder()
/// #             .add_service(service)
/// #             .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
/// #     );
/// #     addr
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let addr = greeter("a").await;
/// let channel = Channel::builder(format!("ipv4:{addr}")).build()?;
/// let mut client = GreeterClient::new(channel.clone());
/// for _ in 0..3 {
///     client.say_hello(HelloRequest::default()).await?;
/// }
/// let stats = channel.stats();
/// assert_eq!((stats.calls_started, stats.calls_succeeded, stats.calls_failed), (3, 3, 0));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelStats {
    /// Calls handed to the channel.
    pub calls_started: u64,
    /// Calls answered with a successful response.
    pub calls_succeeded: u64,
    /// Calls that failed or were cancelled.
    pub calls_failed: u64,
}

/// The counters behind [`ChannelStats`]: atomics, no lock on the call path.
#[derive(Debug)]
pub(crate) struct CallCounters {
    channel_id: u64,
    started: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
}

impl CallCounters {
    pub(crate) fn new(channel_id: u64) -> Self {
        CallCounters {
            channel_id,
            started: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> ChannelStats {
        // Finished counters are read first, so that started >= finished holds in
        // what is returned even while calls complete concurrently.
        let calls_succeeded = self.succeeded.load(Ordering::Acquire);
        let calls_failed = self.failed.load(Ordering::Acquire);
        let calls_started = self.started.load(Ordering::Acquire);
        ChannelStats {
            calls_started,
            calls_succeeded,
            calls_failed,
        }
    }
}

/// Records one call: started when made, finished once.
pub(crate) struct CallRecord {
    counters: Option<Arc<CallCounters>>,
}

impl CallRecord {
    pub(crate) fn start(counters: &Arc<CallCounters>) -> Self {
        counters.started.fetch_add(1, Ordering::AcqRel);
        CallRecord {
            counters: Some(counters.clone()),
        }
    }

    /// A record that counts nothing: the call was counted already.
    pub(crate) fn detached() -> Self {
        CallRecord { counters: None }
    }

    /// Counts the call's outcome, classified as [`ChannelStats`] says.
    pub(crate) fn finish(&mut self, ok: bool) {
        self.count(ok, if ok { "ok" } else { "failed" });
    }

    fn count(&mut self, ok: bool, outcome: &'static str) {
        let Some(counters) = self.counters.take() else {
            return;
        };
        let counter = if ok {
            &counters.succeeded
        } else {
            &counters.failed
        };
        counter.fetch_add(1, Ordering::AcqRel);
        tracing::trace!(channel = counters.channel_id, outcome, "call finished");
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.count(false, "cancelled");
    }
}

impl fmt::Debug for CallRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallRecord")
            .field("finished", &self.counters.is_none())
            .finish()
    }
}

/// A subchannel as the worker lists it for [`Channel::subchannels`](crate::Channel::subchannels).
#[derive(Clone, Debug)]
pub(crate) struct SubchannelEntry {
    pub(crate) address: Address,
    pub(crate) handle: SubchannelHandle,
}
