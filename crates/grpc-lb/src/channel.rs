//! The clonable channel.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use grpc_lb_balance::{EndpointLoad, LoadBalancer};
use grpc_lb_core::{grpc_timeout, BoxError, Connectivity, ConnectivityState, ResolveNow};
use grpc_lb_failfast::{transport_to_status, unavailable};
use grpc_lb_reconnect::Reconnect;
use grpc_lb_resolve::{Address, ResolverStatus};
use grpc_lb_service_config::ServiceConfig;
use pin_project_lite::pin_project;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;
use tower::discover::Discover;
use tower_service::Service;

use crate::observe::{CallRecord, ChannelEvent, ChannelStats, Peer, SubchannelInfo};
use crate::snapshot::{Picked, Shared};
use crate::worker::Worker;

/// Per-request override of the channel's wait-for-ready default, set as a
/// request extension (`request.extensions_mut().insert(WaitForReady(true))`).
///
/// A wait-for-ready request waits for a ready connection through
/// TRANSIENT_FAILURE until its deadline; a fail-fast one fails at once with
/// `UNAVAILABLE` while the channel is in TRANSIENT_FAILURE (gRPC's
/// `doc/wait-for-ready.md`).
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
    service_config: Option<Arc<ServiceConfig>>,
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
    /// Per-method `timeout` and `waitForReady` from a service config; the
    /// policy it names is chosen by whoever builds the channel.
    pub service_config: Option<Arc<ServiceConfig>>,
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
        let shared = Arc::new(Shared::new(
            options.channel_id,
            options.max_waiting,
            options.wait_for_ready,
        ));
        let (shutdown, on_shutdown) = oneshot::channel();
        let worker = Worker::new(
            discover,
            options.resolver_status,
            policy,
            shared.clone(),
            options.resolve_now,
            on_shutdown,
        );
        let channel = Channel {
            handle: Arc::new(Handle {
                shared,
                service_config: options.service_config,
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
        let entries = self.handle.shared.subchannels.load();
        entries
            .iter()
            .map(|entry| SubchannelInfo::read(&entry.address, &entry.handle))
            .collect()
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
    B: Send + 'static,
    ResBody: 'static,
{
    type Response = http::Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.picked.is_none() {
            let snapshot = self.handle.shared.snapshot.load();
            self.picked = snapshot.pick::<http::Request<B>>(cx);
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(config) = &self.handle.service_config {
            apply_method_config(config, &mut request);
        }
        let call = CallRecord::start(&self.handle.shared.calls);
        match self.picked.take() {
            Some(Picked {
                mut connection,
                load,
                peer,
                timed,
            }) => {
                let in_flight = InFlight::start(load, timed);
                ResponseFuture {
                    kind: Kind::Sent {
                        future: connection.call(request),
                        in_flight: Some(in_flight),
                        peer: Some(peer),
                    },
                    call,
                }
            }
            None => ResponseFuture {
                kind: Kind::Waiting {
                    future: Box::pin(wait_then_send(self.handle.shared.clone(), request)),
                },
                call,
            },
        }
    }
}

/// Counts one request against an endpoint's load until it is answered or
/// dropped, and times it when the pick reads round-trip times.
struct InFlight {
    load: Arc<EndpointLoad>,
    /// `None` when the pick does not use latency: reading the clock twice and
    /// updating the estimate were a fifth of a call's instructions in the
    /// channel (callgrind, `grpc-lb-bench pick`), for a figure only p2c reads.
    started: Option<Instant>,
}

impl InFlight {
    fn start(load: Arc<EndpointLoad>, timed: bool) -> Self {
        load.start();
        InFlight {
            load,
            started: timed.then(Instant::now),
        }
    }

    fn finish(self, answered: bool) {
        let rtt = match self.started {
            Some(started) if answered => Some(started.elapsed()),
            _ => None,
        };
        self.load.finish(rtt);
        std::mem::forget(self);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.load.finish(None);
    }
}

type WaitingFuture<ResBody> =
    Pin<Box<dyn Future<Output = Result<http::Response<ResBody>, BoxError>> + Send>>;

pin_project! {
    /// Response future of [`Channel`]: sent on the connection picked at
    /// `poll_ready`, or (boxed) waiting for one first.
    pub struct ResponseFuture<F, ResBody> {
        #[pin]
        kind: Kind<F, ResBody>,
        call: CallRecord,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, ResBody> {
        Sent { #[pin] future: F, in_flight: Option<InFlight>, peer: Option<Peer> },
        Waiting { future: WaitingFuture<ResBody> },
    }
}

impl<F, ResBody> fmt::Debug for ResponseFuture<F, ResBody> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F, ResBody>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<ResBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.kind.project() {
            KindProj::Sent {
                future,
                in_flight,
                peer,
            } => {
                let result = std::task::ready!(future.poll(cx));
                if let Some(in_flight) = in_flight.take() {
                    in_flight.finish(result.is_ok());
                }
                match result {
                    Ok(mut response) => {
                        if let Some(peer) = peer.take() {
                            response.extensions_mut().insert(peer);
                        }
                        Ok(response)
                    }
                    Err(error) => Err(transport_to_status(error.into())),
                }
            }
            KindProj::Waiting { future } => std::task::ready!(future.as_mut().poll(cx)),
        };
        this.call.finish(&result);
        Poll::Ready(result)
    }
}

/// The slow path: no connection was ready at `poll_ready`.
async fn wait_then_send<S, B, ResBody>(
    shared: Arc<Shared<S>>,
    request: http::Request<B>,
) -> Result<http::Response<ResBody>, BoxError>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
{
    let wait_for_ready = request
        .extensions()
        .get::<WaitForReady>()
        .map_or(shared.wait_for_ready, |w| w.0);
    let deadline = grpc_timeout::parse(request.headers()).map(|timeout| Instant::now() + timeout);
    let _permit = shared.waiting.clone().try_acquire_owned().map_err(|_| {
        tonic::Status::resource_exhausted(format!(
            "too many requests waiting for a connection (limit {})",
            shared.max_waiting
        ))
    })?;
    let mut version = shared.version.subscribe();
    loop {
        version.borrow_and_update();
        let snapshot = shared.snapshot.load_full();
        let picked = poll_fn(|cx| Poll::Ready(snapshot.pick::<http::Request<B>>(cx))).await;
        if let Some(Picked {
            mut connection,
            load,
            peer,
            timed,
        }) = picked
        {
            let in_flight = InFlight::start(load, timed);
            poll_fn(|cx| connection.poll_ready(cx))
                .await
                .map_err(|e| transport_to_status(e.into()))?;
            let result = connection.call(request).await;
            in_flight.finish(result.is_ok());
            let mut response = result.map_err(|e| transport_to_status(e.into()))?;
            response.extensions_mut().insert(peer);
            return Ok(response);
        }
        match snapshot.state {
            ConnectivityState::TransientFailure if !wait_for_ready => {
                return Err(unavailable(snapshot.last_error.as_ref()).into());
            }
            ConnectivityState::Shutdown => {
                return Err(tonic::Status::unavailable("channel is shut down").into());
            }
            ConnectivityState::Idle => shared.request_exit_idle(),
            _ => {}
        }
        let changed = version.changed();
        match deadline {
            Some(deadline) => {
                let timed_out = tokio::time::timeout_at(deadline, changed).await.is_err();
                if timed_out {
                    let cause = match &snapshot.last_error {
                        Some(error) => format!("; last error: {error}"),
                        None => String::new(),
                    };
                    return Err(tonic::Status::deadline_exceeded(format!(
                        "deadline exceeded while waiting for a connection (channel {}{cause})",
                        snapshot.state
                    ))
                    .into());
                }
            }
            None => {
                if changed.await.is_err() {
                    return Err(tonic::Status::unavailable("channel is shut down").into());
                }
            }
        }
    }
}

/// Applies the service config's entry for the request's method: its
/// `waitForReady` unless the request says otherwise (the service config doc:
/// the config gives the default, the application may override it), and its
/// `timeout` when sooner than the request's own deadline, written back as
/// `grpc-timeout` so that the wait here and the server both honour it.
fn apply_method_config<B>(config: &ServiceConfig, request: &mut http::Request<B>) {
    let Some(method) = config.method_config(request.uri().path()) else {
        return;
    };
    if let Some(wait) = method.wait_for_ready() {
        if request.extensions().get::<WaitForReady>().is_none() {
            request.extensions_mut().insert(WaitForReady(wait));
        }
    }
    if let Some(timeout) = method.timeout() {
        let sooner = grpc_timeout::parse(request.headers()).map_or(timeout, |own| own.min(timeout));
        request
            .headers_mut()
            .insert(grpc_timeout::HEADER, grpc_timeout::encode(sooner));
    }
}

#[cfg(test)]
mod tests {
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
        apply_method_config(&config, &mut plain);
        assert_eq!(plain.headers()[grpc_timeout::HEADER], "2000000u");
        assert_eq!(
            plain.extensions().get::<WaitForReady>(),
            Some(&WaitForReady(true))
        );

        let mut own = request("/s/m", Some("1S"), Some(false));
        apply_method_config(&config, &mut own);
        assert_eq!(own.headers()[grpc_timeout::HEADER], "1000000u");
        assert_eq!(
            own.extensions().get::<WaitForReady>(),
            Some(&WaitForReady(false))
        );

        let mut later = request("/s/m", Some("1M"), None);
        apply_method_config(&config, &mut later);
        assert_eq!(later.headers()[grpc_timeout::HEADER], "2000000u");

        let mut other = request("/t/m", None, None);
        apply_method_config(&config, &mut other);
        assert!(other.headers().get(grpc_timeout::HEADER).is_none());
        assert!(other.extensions().get::<WaitForReady>().is_none());
    }
}
