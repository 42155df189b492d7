//! The clonable channel.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use grpc_lb_balance::outlier::OutlierDetectionConfig;
use grpc_lb_balance::{LoadBalancer, PolicyRegistry};
use grpc_lb_core::{BoxError, Connectivity, ConnectivityState, ResolveNow};
use grpc_lb_reconnect::Reconnect;
use grpc_lb_resolve::{Address, ResolverStatus};
use grpc_lb_service_config::ServiceConfig;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;
use tower::discover::Discover;
use tower_service::Service;

use crate::body::{CallEnd, InFlight, ResponseBody};
use crate::call::{
    closed, read_request_headers, stamp_deadline, wait_then_send, Plan, Resend, ResponseFuture,
};
use crate::observe::{CallRecord, ChannelEvent, ChannelStats, SubchannelInfo};
use crate::replay::{Head, ReplayableBody, REPLAY_BUFFER_LIMIT};
use crate::snapshot::{Picked, Shared};
use crate::worker::{IdleMode, Worker};

/// Per-request override of the channel's wait-for-ready default, set as a
/// request extension (`request.extensions_mut().insert(WaitForReady(true))`).
///
/// A wait-for-ready request waits for a ready connection through
/// TRANSIENT_FAILURE until its deadline; a fail-fast one fails at once with
/// `UNAVAILABLE` while the channel is in TRANSIENT_FAILURE (gRPC's
/// `doc/wait-for-ready.md`).
///
/// ```
/// use std::time::Duration;
/// use grpc_lb::{Channel, ConnectivityState, WaitForReady};
/// use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Nothing listens on this port: the channel goes TRANSIENT_FAILURE.
/// let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
/// let channel = Channel::builder(format!("ipv4:{dead}")).build()?;
/// channel.connect();
/// let mut state = ConnectivityState::Idle;
/// while state != ConnectivityState::TransientFailure {
///     state = channel.wait_for_state_change(state).await;
/// }
/// let mut client = GreeterClient::new(channel);
///
/// // Fail-fast (the default): UNAVAILABLE at once, with the cause.
/// let status = client.say_hello(HelloRequest { name: "a".into() }).await.unwrap_err();
/// assert_eq!(status.code(), tonic::Code::Unavailable);
///
/// // Wait-for-ready: waits for a connection until the RPC's deadline.
/// let mut request = tonic::Request::new(HelloRequest { name: "b".into() });
/// request.extensions_mut().insert(WaitForReady(true));
/// request.set_timeout(Duration::from_millis(100));
/// let status = client.say_hello(request).await.unwrap_err();
/// assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitForReady(pub bool);

/// A gRPC client channel: name resolution, load balancing and reconnection, as
/// one clonable `tower::Service<http::Request<_>>`.
///
/// Hand it to a tonic-generated client (`GreeterClient::new(channel)`) or call it
/// from hyper or axum code. Clones share one worker task, which follows the
/// resolver and keeps the subchannels connected whether or not requests flow.
///
/// `poll_ready` is the picker: when a connection is ready it reserves one with
/// a lock-free pick (atomics only, no lock across the pick), and `call` sends on
/// it. When none is ready, the request waits inside `call`, where its deadline
/// (`grpc-timeout`) and [`WaitForReady`] are known: it fails at once with
/// `UNAVAILABLE` in TRANSIENT_FAILURE unless it waits for ready, waits while
/// IDLE or CONNECTING, and fails with `DEADLINE_EXCEEDED` when its deadline
/// passes. At most `max_waiting` requests wait at once; more get
/// `RESOURCE_EXHAUSTED`.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use grpc_lb::Channel;
///
/// let channel = Channel::builder("dns:///greeter.local:50051")
///     .policy("round_robin")
///     .build()?;
/// let mut state = channel.watch_state();
/// println!("channel is {}", state.borrow_and_update().state);
/// // let mut client = GreeterClient::new(channel.clone());
/// # Ok(())
/// # }
/// ```
pub struct Channel<S> {
    handle: Arc<Handle<S>>,
    picked: Option<Picked<S>>,
}

/// Owned by the channel clones; dropping the last one stops the worker.
struct Handle<S> {
    shared: Arc<Shared<S>>,
    _shutdown: oneshot::Sender<()>,
}

impl<S> Clone for Channel<S> {
    fn clone(&self) -> Self {
        Channel {
            handle: self.handle.clone(),
            picked: None,
        }
    }
}

impl<S> fmt::Debug for Channel<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.handle.shared.channel_id)
            .field("state", &self.state())
            .finish()
    }
}

/// Options of a channel built by hand with [`Channel::pair`].
///
/// ```
/// use grpc_lb::balance::PolicyRegistry;
/// use grpc_lb::connect::Http2Connector;
/// use grpc_lb::reconnect::{ConnectMode, Reconnect, ReconnectConfig};
/// use grpc_lb::resolve::{Endpoint, ManualResolver, ResolverDiscover};
/// use grpc_lb::{Channel, ChannelOptions, SocketConnector};
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
/// let options = ChannelOptions { wait_for_ready: true, max_waiting: 64, ..Default::default() };
///
/// // Your own discovery (here a manual resolver), your own subchannels.
/// let (resolver, endpoints) = ManualResolver::new("mine");
/// let connector = SocketConnector::new(Http2Connector::<tonic::body::Body>::new());
/// let subchannel = ReconnectConfig::default().mode(ConnectMode::Eager).resolve_now(options.resolve_now.clone());
/// let discover = ResolverDiscover::new(resolver.stream(options.resolve_now.clone()), move |e: &Endpoint| {
///     Reconnect::with_config(connector.clone(), e.address.clone(), subchannel.clone())
/// });
/// let options = ChannelOptions { resolver_status: Some(discover.status()), ..options };
/// let policy = PolicyRegistry::with_defaults().build("round_robin")?;
///
/// let (channel, worker) =
///     Channel::pair::<_, _, _, _, http::Request<tonic::body::Body>>(discover, policy, options);
/// tokio::spawn(worker);
///
/// // Waits for ready (the option), so it is served once an endpoint appears.
/// let mut client = GreeterClient::new(channel);
/// let call = tokio::spawn(async move { client.say_hello(HelloRequest { name: "x".into() }).await });
/// endpoints.reset([Endpoint::from(greeter("late").await)]);
/// assert_eq!(call.await??.into_inner().message, "Hello x from late");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// Whether requests wait for ready by default (gRPC's default: no).
    pub wait_for_ready: bool,
    /// How many requests may wait for a connection at once.
    pub max_waiting: usize,
    /// The signal the subchannels raise; the worker raises it for the policy.
    pub resolve_now: ResolveNow,
    /// The resolver's status, for the channel's state before the first result.
    pub resolver_status: Option<watch::Receiver<ResolverStatus>>,
    /// The channel's id in logs.
    pub channel_id: u64,
    /// The default service config (grpc-go's `WithDefaultServiceConfig`):
    /// in force, for per-method `timeout` and `waitForReady`, until the
    /// resolver gives one (in `resolver_status`), and again when the resolver
    /// says it has none. The policy handed to [`Channel::pair`] is used as
    /// given; this config's `loadBalancingConfig` is followed only after a
    /// config change, and only with `policies`.
    pub service_config: Option<Arc<ServiceConfig>>,
    /// The policies a service config may choose from. With it, when the
    /// config in force chooses another policy (gRFC A24), the worker builds
    /// that one and hands it the current subchannels; a config naming none
    /// of these counts as a bad config. Without it, the channel keeps the
    /// policy it was given whatever the config says.
    pub policies: Option<PolicyRegistry>,
    /// Outlier detection (gRFC A50), off by default.
    pub outlier_detection: Option<OutlierDetectionConfig>,
    /// The deadline of a call that has none sooner (its own `grpc-timeout`,
    /// its method's `timeout` in the service config); none by default.
    pub timeout: Option<Duration>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            wait_for_ready: false,
            max_waiting: DEFAULT_MAX_WAITING,
            resolve_now: ResolveNow::new(),
            resolver_status: None,
            channel_id: grpc_lb_core::next_channelz_id(),
            service_config: None,
            policies: None,
            outlier_detection: None,
            timeout: None,
        }
    }
}

/// The default bound on requests waiting for a connection.
pub const DEFAULT_MAX_WAITING: usize = 1024;

impl<S> Channel<S> {
    /// A channel over a `Discover` of reconnecting subchannels, and the worker
    /// that runs it, for you to spawn. This is the by-hand composition: build the
    /// `Discover` from a resolver with [`ResolverDiscover`](grpc_lb_resolve::ResolverDiscover)
    /// (or bring your own) and pick a policy from
    /// [`PolicyRegistry`](grpc_lb_balance::PolicyRegistry).
    ///
    /// Such a channel has no idle mode: it cannot rebuild your `Discover`.
    #[allow(clippy::type_complexity)]
    pub fn pair<D, C, T, R, Req>(
        discover: D,
        policy: Box<dyn LoadBalancer>,
        options: ChannelOptions,
    ) -> (Channel<S>, Worker<D, C, T, R, Req>)
    where
        D: Discover<Key = Address, Service = Reconnect<C, T, R>> + Unpin,
        D::Error: Into<BoxError>,
        C: Service<T, Response = S>,
        C::Error: Into<BoxError>,
        S: Service<Req> + Clone,
        S::Error: Into<BoxError>,
        T: Clone + fmt::Debug,
        R: grpc_lb_backoff::Rng,
    {
        Self::pair_with_idle(discover, policy, options, None)
    }

    /// [`pair`](Self::pair), with idle mode when `idle` is given.
    #[allow(clippy::type_complexity)]
    pub(crate) fn pair_with_idle<D, C, T, R, Req>(
        discover: D,
        policy: Box<dyn LoadBalancer>,
        options: ChannelOptions,
        idle: Option<IdleMode<D>>,
    ) -> (Channel<S>, Worker<D, C, T, R, Req>)
    where
        D: Discover<Key = Address, Service = Reconnect<C, T, R>> + Unpin,
        D::Error: Into<BoxError>,
        C: Service<T, Response = S>,
        C::Error: Into<BoxError>,
        S: Service<Req> + Clone,
        S::Error: Into<BoxError>,
        T: Clone + fmt::Debug,
        R: grpc_lb_backoff::Rng,
    {
        let mut shared = Shared::new(
            options.channel_id,
            options.max_waiting,
            options.wait_for_ready,
            idle.is_some(),
            options.service_config.clone(),
        );
        shared.default_timeout = options.timeout;
        let shared = Arc::new(shared);
        let (shutdown, on_shutdown) = oneshot::channel();
        let worker = Worker::new(
            discover,
            options.resolver_status,
            policy,
            shared.clone(),
            options.resolve_now,
            on_shutdown,
        )
        .with_modes(options.outlier_detection, idle)
        .with_service_config(options.service_config, options.policies);
        let channel = Channel {
            handle: Arc::new(Handle {
                shared,
                _shutdown: shutdown,
            }),
            picked: None,
        };
        (channel, worker)
    }

    /// The channel's id, as shown in its logs.
    pub fn id(&self) -> u64 {
        self.handle.shared.channel_id
    }

    /// The channel's connectivity state (grpc-go's `GetState`).
    pub fn state(&self) -> ConnectivityState {
        self.handle.shared.connectivity.borrow().state
    }

    /// A watch on the channel's state and its last error.
    pub fn watch_state(&self) -> watch::Receiver<Connectivity> {
        self.handle.shared.connectivity.subscribe()
    }

    /// Waits until the state differs from `from` (grpc-go's `WaitForStateChange`).
    pub async fn wait_for_state_change(&self, from: ConnectivityState) -> ConnectivityState {
        let mut watch = self.watch_state();
        let changed = watch.wait_for(|c| c.state != from).await.map(|c| c.state);
        changed.unwrap_or(ConnectivityState::Shutdown)
    }

    /// Leaves IDLE without waiting for a request (grpc-go's `Connect`).
    pub fn connect(&self) {
        self.handle.shared.request_exit_idle();
    }

    /// Closes the channel, for every clone (grpc-go's `ClientConn.Close`):
    /// calls waiting for a connection fail at once with `UNAVAILABLE`
    /// "channel is closed", as do calls made from now on; calls already sent
    /// go on to their end; then the connections close, and the worker and
    /// every task of the channel end. The state goes SHUTDOWN. Dropping the
    /// last clone does the same.
    ///
    /// ```
    /// use grpc_lb::{Channel, ConnectivityState, WaitForReady};
    /// use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // Nothing listens there: a wait-for-ready call waits...
    /// let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    /// let channel = Channel::builder(format!("ipv4:{dead}")).wait_for_ready(true).build()?;
    /// let mut client = GreeterClient::new(channel.clone());
    /// let waiting = tokio::spawn(async move { client.say_hello(HelloRequest::default()).await });
    ///
    /// // ...until the channel is closed.
    /// channel.close();
    /// let status = waiting.await?.unwrap_err();
    /// assert_eq!(status.code(), tonic::Code::Unavailable);
    /// assert_eq!(status.message(), "channel is closed");
    /// let mut state = channel.state();
    /// while state != ConnectivityState::Shutdown {
    ///     state = channel.wait_for_state_change(state).await;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn close(&self) {
        self.handle.shared.close();
    }

    /// A watch whose value changes every time the worker publishes a new picker:
    /// the ready set, the state or the last error changed.
    pub fn watch_picker(&self) -> watch::Receiver<u64> {
        self.handle.shared.version.subscribe()
    }

    /// The channel's last state changes (up to 64), oldest first. Unlike
    /// [`watch_state`](Self::watch_state), which keeps only the latest value, no
    /// change is merged away: this is the channel's trace, as channelz keeps one.
    pub fn state_history(&self) -> Vec<ConnectivityState> {
        let history = self.handle.shared.history.lock();
        history
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// The addresses currently picked from.
    pub fn ready_addresses(&self) -> Vec<Address> {
        let snapshot = self.handle.shared.snapshot.load();
        snapshot.peers.iter().map(|p| p.address().clone()).collect()
    }

    /// The channel's subchannels, one per endpoint, in the resolver's order:
    /// each one's address, state, connection attempts and last error, read live
    /// from the subchannel.
    pub fn subchannels(&self) -> Vec<SubchannelInfo> {
        self.handle.shared.subchannel_infos()
    }

    /// A stream of the channel's changes from now on: its own state changes and
    /// its subchannels' additions, state changes and removals, one event per
    /// transition. Read [`state`](Self::state) and
    /// [`subchannels`](Self::subchannels) after subscribing for the starting
    /// point. A receiver more than [`EVENT_CAPACITY`](crate::EVENT_CAPACITY)
    /// events behind misses the oldest (`RecvError::Lagged`) and can resync
    /// from those two.
    pub fn events(&self) -> broadcast::Receiver<ChannelEvent> {
        self.handle.shared.events.subscribe()
    }

    /// The state behind this channel, held without keeping the channel (and
    /// so its worker) alive: for collectors that read it at each scrape.
    #[cfg(feature = "prometheus")]
    pub(crate) fn downgrade_shared(&self) -> std::sync::Weak<Shared<S>> {
        Arc::downgrade(&self.handle.shared)
    }

    /// The service config in force: the resolver's latest good one, else the
    /// default given to [`Builder::service_config`](crate::Builder::service_config)
    /// (or [`ChannelOptions::service_config`]), else none. Calls take their
    /// method's `timeout` and `waitForReady` from it.
    /// [`ChannelEvent::ServiceConfig`] tells when it changes.
    pub fn service_config(&self) -> Option<Arc<ServiceConfig>> {
        self.handle.shared.service_config.load_full()
    }

    /// The channel's call counters (channelz's calls started, succeeded and
    /// failed); [`ChannelStats`] says how calls are classified.
    pub fn stats(&self) -> ChannelStats {
        self.handle.shared.calls.stats()
    }
}

impl<S, B, ResBody> Service<http::Request<B>> for Channel<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: ReplayableBody + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<ResponseBody<ResBody>>;
    type Error = crate::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.picked.is_none() && !self.handle.shared.is_closed() {
            let snapshot = self.handle.shared.snapshot.load();
            self.picked = snapshot.pick::<http::Request<B>>(cx);
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let shared = &self.handle.shared;
        // A guard on the config in force, not a clone: no allocation, no lock.
        let method_timeout = match &*shared.service_config.load() {
            Some(config) => apply_method_config(config, &mut request),
            None => None,
        };
        let mut end = CallEnd::new(
            CallRecord::start(&shared.calls),
            shared.activity.as_ref().map(|a| a.begin()),
        );
        let (own, grpc) = read_request_headers(request.headers());
        // The sooner of the request's own deadline, its method's and the
        // channel's default (grpc-go's `newClientStreamWithParams`): the
        // clock is read, and a timer made, only for a call that has one.
        let timeout = [own, method_timeout, shared.default_timeout]
            .into_iter()
            .flatten()
            .min();
        let now = timeout.map(|_| Instant::now());
        let deadline = now.zip(timeout).map(|(now, timeout)| now + timeout);
        let plan = Plan {
            deadline,
            wait_for_ready: request
                .extensions()
                .get::<WaitForReady>()
                .map_or(shared.wait_for_ready, |w| w.0),
        };
        let Some(Picked {
            mut connection,
            load,
            outcome,
            peer,
            timed,
        }) = self.picked.take()
        else {
            if shared.is_closed() {
                return ResponseFuture::failed(closed(), end);
            }
            let attempts = wait_then_send(shared.clone(), request, plan);
            return ResponseFuture::waiting(attempts, shared.clone(), end, deadline, grpc);
        };
        // Sent now: the time left is the timeout, so a request whose own
        // `grpc-timeout` is the soonest keeps it as it is.
        let own_binds = own.is_some_and(|own| !own.is_zero()) && own == timeout;
        if !own_binds {
            if let Err(status) = stamp_deadline(&mut request, deadline.zip(now)) {
                return ResponseFuture::failed(status, end);
            }
        }
        let (parts, body) = request.into_parts();
        let (body, replay) = body.keep(REPLAY_BUFFER_LIMIT);
        let resend = Resend {
            shared: shared.clone(),
            head: Head::of(&parts, deadline.is_some()),
            replay,
            plan,
        };
        let in_flight = InFlight::start(load, outcome, timed);
        end.headers(true, false);
        let future = connection.call(http::Request::from_parts(parts, body));
        ResponseFuture::sent(future, in_flight, peer, resend, end, deadline, grpc)
    }
}

/// Applies the service config's entry for the request's method: its
/// `waitForReady` unless the request says otherwise (the service config doc:
/// the config gives the default, the application may override it). Returns
/// its `timeout`, which bounds the call's deadline (the sooner wins).
fn apply_method_config<B>(
    config: &ServiceConfig,
    request: &mut http::Request<B>,
) -> Option<Duration> {
    let method = config.method_config(request.uri().path())?;
    if let Some(wait) = method.wait_for_ready() {
        if request.extensions().get::<WaitForReady>().is_none() {
            request.extensions_mut().insert(WaitForReady(wait));
        }
    }
    method.timeout()
}

#[cfg(test)]
mod tests {
    use grpc_lb_core::grpc_timeout;

    use super::*;

    fn request(path: &str, timeout: Option<&str>, wait: Option<bool>) -> http::Request<()> {
        let mut request = http::Request::builder().uri(path);
        if let Some(timeout) = timeout {
            request = request.header(grpc_timeout::HEADER, timeout);
        }
        let mut request = request.body(()).unwrap();
        if let Some(wait) = wait {
            request.extensions_mut().insert(WaitForReady(wait));
        }
        request
    }

    #[test]
    fn method_config_sets_defaults_the_request_can_override() {
        let config: ServiceConfig = r#"{"methodConfig": [
            {"name": [{"service": "s"}], "timeout": "2s", "waitForReady": true}]}"#
            .parse()
            .unwrap();
        let mut plain = request("/s/m", None, None);
        let timeout = apply_method_config(&config, &mut plain);
        assert_eq!(timeout, Some(Duration::from_secs(2)));
        assert_eq!(
            plain.extensions().get::<WaitForReady>(),
            Some(&WaitForReady(true))
        );

        let mut own = request("/s/m", Some("1S"), Some(false));
        apply_method_config(&config, &mut own);
        assert_eq!(
            own.extensions().get::<WaitForReady>(),
            Some(&WaitForReady(false))
        );

        let mut other = request("/t/m", None, None);
        assert_eq!(apply_method_config(&config, &mut other), None);
        assert!(other.extensions().get::<WaitForReady>().is_none());
    }
}
