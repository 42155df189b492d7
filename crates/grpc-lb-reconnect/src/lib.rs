//! Keeps one connection up, the way a gRPC subchannel does.
//!
//! [`Reconnect`] is a `tower::Service` built from a *connector* (any
//! `Service<Target>` whose response is a connected service: grpc-lb-connect's
//! `Http2Connector`, a hyper handshake, your own) and a target. It runs the
//! subchannel state machine of gRPC's `doc/connectivity-semantics-and-api.md`, as
//! grpc-go implements it in `addrConn`:
//!
//! ```text
//!            use (or eager)        SETTINGS received
//!   IDLE ─────────────────▶ CONNECTING ─────────────▶ READY
//!    ▲  ▲                        │                      │
//!    │  │ backoff over           │ attempt failed       │ lost or GOAWAY
//!    │  └──── TRANSIENT_FAILURE ◀┘                      │
//!    └──────────────────────────────────────────────────┘
//! ```
//!
//! - A failed attempt moves to `TRANSIENT_FAILURE` and waits the backoff of
//!   [`grpc_lb_backoff`] (1 s, ×1.6, ±20 %, 120 s cap by default); the timer starts
//!   when the attempt fails, as in grpc-go. When it ends the subchannel is `IDLE`
//!   again and reconnects when next used.
//! - Each attempt is bounded by `max(min_connect_timeout, current backoff)`.
//! - The backoff resets once a connection succeeds. With grpc-lb-connect's
//!   connector that is after the server's HTTP/2 SETTINGS frame.
//! - A lost connection moves `READY → IDLE` (not `TRANSIENT_FAILURE`: grpc-go's
//!   "always go idle"), and the next use reconnects. A connection whose
//!   `poll_ready` fails counts as lost: grpc-lb-connect's `Http2Connection`
//!   does so the moment a GOAWAY is read (grpc-go's addrConn goes IDLE on
//!   GOAWAY too), while the requests it already carries finish on it. In
//!   [`ConnectMode::Eager`] the subchannel reconnects as soon as it is driven,
//!   without waiting for a request.
//! - Every failed attempt and every lost connection raises the
//!   [`ResolveNow`](grpc_lb_core::ResolveNow) signal, for a resolver to act on.
//! - Every state change is logged with `tracing` in grpc-go's shape:
//!   `[Channel #1 SubChannel #2] Subchannel Connectivity change to READY`.
//!
//! # The readiness contract
//!
//! `poll_ready` returns `Ready(Ok)` only when a live connection is ready to take a
//! request. While connecting or backing off it returns `Pending`, and it never
//! turns a connection failure into an error: a balancer such as tower's p2c evicts
//! an endpoint whose `poll_ready` fails, for good. The failure is kept instead, and
//! published with the state on a [`SubchannelHandle`], so that a fail-fast layer
//! above can answer `UNAVAILABLE` with the real cause.
//!
//! A service does nothing unless polled. `poll_ready` is a request for a
//! connection; [`Reconnect::drive`] advances timers and in-flight attempts without
//! asking for one, which is what a balancer calls on endpoints it is not picking.
//!
//! # Examples
//!
//! ```no_run
//! # async fn run() -> Result<(), grpc_lb_core::BoxError> {
//! use grpc_lb_connect::Http2Connector;
//! use grpc_lb_reconnect::{Reconnect, ReconnectConfig};
//! use tower::{Service, ServiceExt};
//!
//! let connector = Http2Connector::<http_body_util::Empty<bytes::Bytes>>::new();
//! let mut subchannel = Reconnect::with_config(
//!     connector,
//!     "127.0.0.1:50051".parse::<std::net::SocketAddr>()?,
//!     ReconnectConfig::default(),
//! );
//! let handle = subchannel.handle();
//! let request = http::Request::new(http_body_util::Empty::new());
//! let response = subchannel.ready().await?.call(request).await?;
//! println!("{} is {}", response.status(), handle.state());
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod error;
pub mod future;
mod handle;
mod layer;
mod make;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use grpc_lb_backoff::{Backoff, BackoffConfig, DefaultRng, Rng};
use grpc_lb_core::{BoxError, Connectivity, ConnectivityState, ResolveNow, SharedError};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::error::ConnectTimeout;
use crate::future::ResponseFuture;
use crate::handle::Shared;
pub use crate::handle::SubchannelHandle;
pub use crate::layer::ReconnectLayer;
pub use crate::make::{MakeReconnect, MakeReconnectLayer};

/// When an idle subchannel connects.
///
/// ```
/// use grpc_lb_core::ConnectivityState;
/// use grpc_lb_reconnect::{ConnectMode, Reconnect, ReconnectConfig};
/// use std::future::poll_fn;
/// use std::task::Poll;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // An in-memory connector whose connections answer "hello <name>".
/// # use std::convert::Infallible;
/// # let connector = tower::service_fn(|_: &'static str| async {
/// #     Ok::<_, Infallible>(tower::service_fn(|name: &'static str| async move {
/// #         Ok::<_, Infallible>(format!("hello {name}"))
/// #     }))
/// # });
/// let eager = ReconnectConfig::default().mode(ConnectMode::Eager);
/// let mut subchannel = Reconnect::with_config(connector, "backend-1", eager);
///
/// // Driving an eager subchannel connects it without any request.
/// let state = poll_fn(|cx| Poll::Ready(subchannel.drive::<&str>(cx))).await;
/// assert_eq!(state, ConnectivityState::Ready);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConnectMode {
    /// Only when a request asks for it through `poll_ready` (grpc-go's idle
    /// subchannel: "reconnect when next used").
    #[default]
    Lazy,
    /// Whenever it is driven, as soon as the backoff allows, as round_robin's
    /// children do.
    Eager,
}

/// Settings for a [`Reconnect`].
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_backoff::BackoffConfig;
/// use grpc_lb_core::ResolveNow;
/// use grpc_lb_reconnect::{ConnectMode, ReconnectConfig};
///
/// let backoff = BackoffConfig::try_new(
///     Duration::from_millis(100),
///     1.6,
///     0.2,
///     Duration::from_secs(5),
///     Duration::from_secs(2),
/// )?;
/// let config = ReconnectConfig::default()
///     .backoff(backoff)
///     .mode(ConnectMode::Eager)
///     .resolve_now(ResolveNow::new())
///     .channel_id(7);
/// assert_eq!(config.backoff_config().max_delay(), Duration::from_secs(5));
/// assert_eq!(config.connect_mode(), ConnectMode::Eager);
/// # Ok::<(), grpc_lb_backoff::InvalidBackoff>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ReconnectConfig {
    backoff: BackoffConfig,
    mode: ConnectMode,
    resolve_now: Option<ResolveNow>,
    channel_id: Option<u64>,
}

impl ReconnectConfig {
    /// Uses this backoff schedule and connect timeout.
    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets when an idle subchannel connects.
    pub fn mode(mut self, mode: ConnectMode) -> Self {
        self.mode = mode;
        self
    }

    /// Raises this signal on every failed attempt and every lost connection.
    pub fn resolve_now(mut self, signal: ResolveNow) -> Self {
        self.resolve_now = Some(signal);
        self
    }

    /// Names the owning channel in logs; by default each subchannel gets a fresh
    /// channel id.
    pub fn channel_id(mut self, id: u64) -> Self {
        self.channel_id = Some(id);
        self
    }

    /// The backoff schedule in use.
    pub fn backoff_config(&self) -> &BackoffConfig {
        &self.backoff
    }

    /// The connect mode in use.
    pub fn connect_mode(&self) -> ConnectMode {
        self.mode
    }
}

/// A service that keeps one connection to `target` up, with gRPC's subchannel
/// state machine and connection backoff. See the [crate docs](crate).
///
/// ```
/// use grpc_lb_core::ConnectivityState;
/// use grpc_lb_reconnect::Reconnect;
/// use tower::{Service, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// // An in-memory connector whose connections answer "hello <name>".
/// # use std::convert::Infallible;
/// # let connector = tower::service_fn(|_: &'static str| async {
/// #     Ok::<_, Infallible>(tower::service_fn(|name: &'static str| async move {
/// #         Ok::<_, Infallible>(format!("hello {name}"))
/// #     }))
/// # });
/// let mut subchannel = Reconnect::new(connector, "backend-1");
/// let handle = subchannel.handle();
/// assert_eq!(handle.state(), ConnectivityState::Idle);
///
/// // The first request connects (lazy mode, like grpc-go's idle subchannel).
/// let reply = subchannel.ready().await?.call("world").await?;
/// assert_eq!(reply, "hello world");
/// assert_eq!(handle.state(), ConnectivityState::Ready);
/// assert_eq!(handle.connect_attempts(), 1);
/// # Ok(())
/// # }
/// ```
pub struct Reconnect<C, T, R = DefaultRng>
where
    C: Service<T>,
{
    connector: C,
    target: T,
    state: State<C::Future, C::Response>,
    backoff: Backoff<R>,
    /// The backoff drawn for the current (or last failed) attempt.
    attempt_backoff: Duration,
    /// Connect deadline while connecting, end of backoff while in failure. Created
    /// on first use so that construction does not need a runtime.
    timer: Option<Pin<Box<Sleep>>>,
    mode: ConnectMode,
    connect_requested: bool,
    resolve_now: ResolveNow,
    shared: Arc<Shared>,
}

enum State<F, S> {
    Idle,
    Connecting(Pin<Box<F>>),
    Ready(S),
    TransientFailure,
}

impl<F, S> State<F, S> {
    fn connectivity_state(&self) -> ConnectivityState {
        match self {
            State::Idle => ConnectivityState::Idle,
            State::Connecting(_) => ConnectivityState::Connecting,
            State::Ready(_) => ConnectivityState::Ready,
            State::TransientFailure => ConnectivityState::TransientFailure,
        }
    }
}

// ===== impl Reconnect =====

impl<C, T> Reconnect<C, T>
where
    C: Service<T>,
{
    /// A lazy subchannel with gRPC's default backoff.
    pub fn new(connector: C, target: T) -> Self {
        Reconnect::with_config(connector, target, ReconnectConfig::default())
    }

    /// A subchannel with the given settings.
    pub fn with_config(connector: C, target: T, config: ReconnectConfig) -> Self {
        Reconnect::with_config_and_rng(connector, target, config, DefaultRng::new())
    }
}

impl<C, T, R> Reconnect<C, T, R>
where
    C: Service<T>,
    R: Rng,
{
    /// A subchannel whose backoff jitter comes from `rng`, for deterministic tests.
    pub fn with_config_and_rng(connector: C, target: T, config: ReconnectConfig, rng: R) -> Self {
        let channel_id = config
            .channel_id
            .unwrap_or_else(grpc_lb_core::next_channelz_id);
        let shared = Arc::new(Shared::new(channel_id, grpc_lb_core::next_channelz_id()));
        Reconnect {
            connector,
            target,
            state: State::Idle,
            backoff: Backoff::with_rng(config.backoff, rng),
            attempt_backoff: config.backoff.base_delay(),
            timer: None,
            mode: config.mode,
            connect_requested: false,
            resolve_now: config.resolve_now.unwrap_or_default(),
            shared,
        }
    }

    /// A handle to read, watch and steer this subchannel.
    pub fn handle(&self) -> SubchannelHandle {
        SubchannelHandle::new(self.shared.clone())
    }

    /// The target this subchannel connects to.
    pub fn target(&self) -> &T {
        &self.target
    }

    /// The current state.
    pub fn state(&self) -> ConnectivityState {
        self.state.connectivity_state()
    }

    /// The connector.
    pub fn get_ref(&self) -> &C {
        &self.connector
    }

    /// The connector, mutably.
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.connector
    }
}

impl<C, T, R> Reconnect<C, T, R>
where
    C: Service<T>,
    C::Error: Into<BoxError>,
    T: Clone + fmt::Debug,
    R: Rng,
{
    /// Advances the subchannel without asking for a connection: finishes attempts
    /// in flight, ends backoffs, notices lost connections, and connects an idle
    /// subchannel only in [`ConnectMode::Eager`] or after
    /// [`SubchannelHandle::connect`]. Returns the state afterwards; the task is woken
    /// when it may change.
    ///
    /// `Req` is the request type the connected service is used with, needed to ask
    /// a connected service whether it is still alive.
    pub fn drive<Req>(&mut self, cx: &mut Context<'_>) -> ConnectivityState
    where
        C::Response: Service<Req>,
        <C::Response as Service<Req>>::Error: Into<BoxError>,
    {
        let _ = self.poll_subchannel::<Req>(cx, false);
        self.state()
    }

    /// The state machine. `Ready(())` means connected and the connection is ready
    /// for a request; `demand` means a caller wants to send one.
    fn poll_subchannel<Req>(&mut self, cx: &mut Context<'_>, demand: bool) -> Poll<()>
    where
        C::Response: Service<Req>,
        <C::Response as Service<Req>>::Error: Into<BoxError>,
    {
        self.take_handle_requests();
        loop {
            match &mut self.state {
                State::Idle => {
                    let wanted =
                        demand || self.connect_requested || self.mode == ConnectMode::Eager;
                    if !wanted {
                        break;
                    }
                    match self.connector.poll_ready(cx) {
                        Poll::Pending => break,
                        Poll::Ready(Ok(())) => self.start_attempt(),
                        Poll::Ready(Err(error)) => {
                            self.attempt_backoff = self.backoff.next_delay();
                            self.fail(error.into());
                        }
                    }
                }
                State::Connecting(attempt) => match attempt.as_mut().poll(cx) {
                    Poll::Ready(Ok(service)) => {
                        self.backoff.reset();
                        self.state = State::Ready(service);
                        self.publish(ConnectivityState::Ready, None);
                    }
                    Poll::Ready(Err(error)) => self.fail(error.into()),
                    Poll::Pending => {
                        if self.timer_mut().as_mut().poll(cx).is_pending() {
                            break;
                        }
                        let timeout = self.backoff.config().connect_timeout(self.attempt_backoff);
                        self.fail(ConnectTimeout::new(timeout).into());
                    }
                },
                State::TransientFailure => {
                    if self.timer_mut().as_mut().poll(cx).is_pending() {
                        break;
                    }
                    self.state = State::Idle;
                    self.publish_keeping_error(ConnectivityState::Idle);
                }
                State::Ready(service) => match service.poll_ready(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(()),
                    Poll::Pending => break,
                    Poll::Ready(Err(error)) => self.lose(error.into()),
                },
            }
        }
        // Pending: wake this task when a handle asks for something.
        self.shared.waker.register(cx.waker());
        if self.shared.connect.load(Ordering::Acquire)
            || self.shared.reset_backoff.load(Ordering::Acquire)
        {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    fn take_handle_requests(&mut self) {
        if self.shared.reset_backoff.load(Ordering::Relaxed)
            && self.shared.reset_backoff.swap(false, Ordering::AcqRel)
        {
            self.backoff.reset();
            if let State::TransientFailure = self.state {
                self.state = State::Idle;
                self.connect_requested = true;
                self.publish_keeping_error(ConnectivityState::Idle);
            }
        }
        if self.shared.connect.load(Ordering::Relaxed)
            && self.shared.connect.swap(false, Ordering::AcqRel)
        {
            self.connect_requested = true;
        }
    }

    fn start_attempt(&mut self) {
        self.connect_requested = false;
        self.attempt_backoff = self.backoff.next_delay();
        let timeout = self.backoff.config().connect_timeout(self.attempt_backoff);
        self.reset_timer(timeout);
        self.shared.connect_attempts.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            "[Channel #{} SubChannel #{}] Subchannel picks a new address {:?} to connect",
            self.shared.channel_id,
            self.shared.subchannel_id,
            self.target,
        );
        let attempt = self.connector.call(self.target.clone());
        self.state = State::Connecting(Box::pin(attempt));
        self.publish_keeping_error(ConnectivityState::Connecting);
    }

    fn fail(&mut self, error: BoxError) {
        self.reset_timer(self.attempt_backoff);
        self.state = State::TransientFailure;
        self.publish(ConnectivityState::TransientFailure, Some(error.into()));
        self.resolve_now.request();
    }

    fn lose(&mut self, error: BoxError) {
        self.state = State::Idle;
        self.publish(ConnectivityState::Idle, Some(error.into()));
        self.resolve_now.request();
    }
}

impl<C, T, R> Reconnect<C, T, R>
where
    C: Service<T>,
{
    /// The connected service while READY: a balancer clones it to send requests
    /// from many tasks (an HTTP/2 connection multiplexes them).
    pub fn connection(&self) -> Option<&C::Response> {
        match &self.state {
            State::Ready(service) => Some(service),
            _ => None,
        }
    }

    /// Drops the connection or the attempt in progress and goes IDLE, as a
    /// policy does with the subchannels it is not using. A subchannel backing
    /// off keeps its backoff.
    pub fn disconnect(&mut self) {
        if matches!(self.state, State::Ready(_) | State::Connecting(_)) {
            self.state = State::Idle;
            self.publish_keeping_error(ConnectivityState::Idle);
        }
    }

    fn timer_mut(&mut self) -> Pin<&mut Sleep> {
        self.timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::ZERO)))
            .as_mut()
    }

    fn reset_timer(&mut self, after: Duration) {
        let deadline = Instant::now().checked_add(after).unwrap_or_else(far_future);
        self.timer_mut().reset(deadline);
    }

    fn publish_keeping_error(&self, state: ConnectivityState) {
        let last_error = self.shared.connectivity.borrow().last_error.clone();
        self.publish(state, last_error);
    }

    fn publish(&self, state: ConnectivityState, last_error: Option<SharedError>) {
        let (channel, subchannel) = (self.shared.channel_id, self.shared.subchannel_id);
        match (&last_error, state) {
            (Some(error), ConnectivityState::TransientFailure) => tracing::info!(
                "[Channel #{channel} SubChannel #{subchannel}] Subchannel Connectivity change to {state}, last error: {error}"
            ),
            (Some(error), ConnectivityState::Idle) => tracing::info!(
                "[Channel #{channel} SubChannel #{subchannel}] Subchannel Connectivity change to {state}, cause: {error}"
            ),
            _ => tracing::info!(
                "[Channel #{channel} SubChannel #{subchannel}] Subchannel Connectivity change to {state}"
            ),
        }
        self.shared
            .connectivity
            .send_replace(Connectivity { state, last_error });
    }
}

/// Far enough that it never fires, near enough not to overflow `Instant`.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(60 * 60 * 24 * 365 * 30)
}

impl<C, T, R> Drop for Reconnect<C, T, R>
where
    C: Service<T>,
{
    fn drop(&mut self) {
        self.publish_keeping_error(ConnectivityState::Shutdown);
    }
}

impl<C, T, R> fmt::Debug for Reconnect<C, T, R>
where
    C: Service<T> + fmt::Debug,
    T: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reconnect")
            .field("connector", &self.connector)
            .field("target", &self.target)
            .field("state", &self.state.connectivity_state())
            .field("mode", &self.mode)
            .field("channel_id", &self.shared.channel_id)
            .field("subchannel_id", &self.shared.subchannel_id)
            .finish()
    }
}

impl<C, T, R, Req> Service<Req> for Reconnect<C, T, R>
where
    C: Service<T>,
    C::Error: Into<BoxError>,
    C::Response: Service<Req>,
    <C::Response as Service<Req>>::Error: Into<BoxError>,
    T: Clone + fmt::Debug,
    R: Rng,
{
    type Response = <C::Response as Service<Req>>::Response;
    type Error = BoxError;
    type Future = ResponseFuture<<C::Response as Service<Req>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_subchannel::<Req>(cx, true).map(Ok)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match &mut self.state {
            State::Ready(service) => ResponseFuture::called(service.call(request)),
            _ => ResponseFuture::not_ready(),
        }
    }
}

#[cfg(test)]
mod tests;
