//! How a balancer reads an endpoint's connectivity: from `poll_ready`
//! ([`ByReadiness`]) or from the endpoint itself ([`ByConnectivity`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use grpc_lb_backoff::{Backoff, BackoffConfig};
use grpc_lb_core::{BoxError, Connectivity, ConnectivityState, SharedError, Subchannel};
use tokio::time::Sleep;
use tower_service::Service;

/// How a balancer learns an endpoint's connectivity and steers it.
///
/// Rust has no specialization, so a balancer cannot ask "does this service
/// implement [`Subchannel`]?" at run time. Instead the balancer takes the probe
/// as a type parameter: [`ByReadiness`] for any `tower::Service` (the default
/// of [`Balance::new`](crate::service::Balance::new)), [`ByConnectivity`] for
/// services that report their own state (selected by
/// [`Balance::subchannels`](crate::service::Balance::subchannels)). Using the
/// wrong one for a subchannel compiles only as `ByReadiness`, which still
/// works (READY while it can take a call) but cannot see IDLE or backoff.
pub trait Probe<S, Req>: Send + 'static {
    /// What the probe keeps per endpoint.
    type State: Send;

    /// A fresh state for a new endpoint.
    fn new_state() -> Self::State;

    /// Advances the endpoint and returns its state. `wanted` is true once the
    /// policy asked it to connect and until it asked it to disconnect. The
    /// task in `cx` (the endpoint's own waker) is woken when it may change.
    fn poll_state(
        service: &mut S,
        state: &mut Self::State,
        wanted: bool,
        cx: &mut Context<'_>,
    ) -> Connectivity;

    /// The policy asked the endpoint to connect.
    fn connect(service: &mut S, state: &mut Self::State);

    /// The policy asked the endpoint to disconnect.
    fn disconnect(service: &mut S, state: &mut Self::State);

    /// Can the endpoint take a call now? `Ready(true)`: yes, reserved for the
    /// next `call`. `Ready(false)`: no, and its state changed (read it again).
    /// `Pending`: not yet; `cx` is woken when it may.
    fn poll_dispatch(service: &mut S, state: &mut Self::State, cx: &mut Context<'_>) -> Poll<bool>;

    /// Asks the resolver behind the endpoint to resolve again, if it has one.
    fn request_resolution(service: &S) {
        let _ = service;
    }

    /// True if a call consumes readiness, so the endpoint must be polled
    /// again after each call to learn its state (plain tower services).
    const REPOLL_AFTER_CALL: bool;
}

/// Reads a plain `tower::Service`'s connectivity from its `poll_ready`.
///
/// - IDLE until the policy asks it to connect (pick_first's other endpoints
///   are never polled);
/// - READY while `poll_ready` is `Ready(Ok)`;
/// - CONNECTING while it is `Pending` (a `ConcurrencyLimit` at its limit, a
///   `Buffer` that is full);
/// - TRANSIENT_FAILURE when it errs. The endpoint is kept, not evicted as
///   tower's p2c does, and polled again after gRPC's connection backoff (1 s,
///   ×1.6, ±20 %, up to 120 s), reset by its next `Ready`.
///
/// ```
/// use grpc_lb_balance::service::Balance;
/// use grpc_lb_balance::tree::RoundRobin;
/// use grpc_lb_core::ConnectivityState;
/// use tower::discover::ServiceList;
/// use tower::Service;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A service whose poll_ready fails: it is kept, in TRANSIENT_FAILURE.
/// let failing = tower::service_fn(|_: ()| async { Ok::<(), &'static str>(()) })
///     .map_request(|()| ());
/// # use tower::ServiceExt;
/// let (mut service, mut handle) = tower_test::mock::pair::<(), ()>();
/// handle.send_error("refused");
/// # drop(failing);
/// let mut balance = Balance::new(ServiceList::new([service]), RoundRobin::new());
/// let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// assert!(balance.poll_ready(&mut cx).is_pending()); // never an error
/// assert_eq!(balance.state(), ConnectivityState::TransientFailure);
/// assert_eq!(balance.len(), 1); // not evicted
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ByReadiness;

/// What [`ByReadiness`] keeps per endpoint.
pub struct ReadinessState {
    backoff: Backoff,
    retry: Option<Pin<Box<Sleep>>>,
    error: Option<SharedError>,
}

impl fmt::Debug for ReadinessState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadinessState")
            .field("backing_off", &self.retry.is_some())
            .field("error", &self.error)
            .finish()
    }
}

impl ReadinessState {
    fn fail(&mut self, error: BoxError, cx: &mut Context<'_>) -> Connectivity {
        let error: SharedError = Arc::from(error);
        tracing::debug!(%error, "endpoint's poll_ready failed; retrying after backoff");
        let delay = self.backoff.next_delay();
        let mut sleep = Box::pin(tokio::time::sleep(delay));
        let _ = sleep.as_mut().poll(cx);
        self.retry = Some(sleep);
        self.error = Some(error.clone());
        Connectivity {
            state: ConnectivityState::TransientFailure,
            last_error: Some(error),
        }
    }
}

impl<S, Req> Probe<S, Req> for ByReadiness
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type State = ReadinessState;

    fn new_state() -> ReadinessState {
        ReadinessState {
            backoff: Backoff::new(BackoffConfig::default()),
            retry: None,
            error: None,
        }
    }

    fn poll_state(
        service: &mut S,
        state: &mut ReadinessState,
        wanted: bool,
        cx: &mut Context<'_>,
    ) -> Connectivity {
        if !wanted {
            return Connectivity::new(ConnectivityState::Idle);
        }
        if let Some(retry) = &mut state.retry {
            if retry.as_mut().poll(cx).is_pending() {
                return Connectivity {
                    state: ConnectivityState::TransientFailure,
                    last_error: state.error.clone(),
                };
            }
            state.retry = None;
        }
        match service.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                state.backoff.reset();
                Connectivity::new(ConnectivityState::Ready)
            }
            Poll::Pending => Connectivity {
                state: ConnectivityState::Connecting,
                last_error: state.error.clone(),
            },
            Poll::Ready(Err(error)) => state.fail(error.into(), cx),
        }
    }

    fn connect(_service: &mut S, _state: &mut ReadinessState) {}

    fn disconnect(_service: &mut S, _state: &mut ReadinessState) {}

    fn poll_dispatch(
        service: &mut S,
        state: &mut ReadinessState,
        cx: &mut Context<'_>,
    ) -> Poll<bool> {
        if state.retry.is_some() {
            return Poll::Ready(false);
        }
        match service.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(true),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(error)) => {
                state.fail(error.into(), cx);
                Poll::Ready(false)
            }
        }
    }

    const REPOLL_AFTER_CALL: bool = true;
}

/// Reads a [`Subchannel`]'s connectivity from the subchannel itself: IDLE,
/// CONNECTING, READY, TRANSIENT_FAILURE with its backoff, as published by
/// `grpc_lb_reconnect::Reconnect`. Connect and disconnect go to the subchannel.
///
/// ```
/// use grpc_lb_balance::service::Balance;
/// use grpc_lb_balance::tree::PickFirst;
/// use grpc_lb_core::ConnectivityState;
/// use grpc_lb_reconnect::Reconnect;
/// use tower::discover::ServiceList;
/// use tower::{Service, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// // An in-memory connector whose connections answer "hello <name> from <target>".
/// # use std::convert::Infallible;
/// let connector = tower::service_fn(|target: &'static str| async move {
///     Ok::<_, Infallible>(tower::service_fn(move |name: &'static str| async move {
///         Ok::<_, Infallible>(format!("hello {name} from {target}"))
///     }))
/// });
/// let subchannels = ServiceList::new([
///     Reconnect::new(connector.clone(), "a"),
///     Reconnect::new(connector, "b"),
/// ]);
/// let mut balance = Balance::new(subchannels, PickFirst::new()).subchannels();
/// let reply = balance.ready().await?.call("world").await?;
/// assert_eq!(reply, "hello world from a");
/// // pick_first asked only the first subchannel to connect; "b" is IDLE.
/// let mut states: Vec<_> = balance.endpoints().map(|(k, s)| (*k, s)).collect();
/// states.sort_by_key(|(key, _)| *key);
/// assert_eq!(states, [(0, ConnectivityState::Ready), (1, ConnectivityState::Idle)]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ByConnectivity;

impl<S, Req> Probe<S, Req> for ByConnectivity
where
    S: Service<Req> + Subchannel<Req>,
    S::Error: Into<BoxError>,
{
    type State = ();

    fn new_state() {}

    fn poll_state(
        service: &mut S,
        _: &mut (),
        _wanted: bool,
        cx: &mut Context<'_>,
    ) -> Connectivity {
        service.poll_connectivity(cx)
    }

    fn connect(service: &mut S, _: &mut ()) {
        service.connect();
    }

    fn disconnect(service: &mut S, _: &mut ()) {
        service.disconnect();
    }

    fn request_resolution(service: &S) {
        service.request_resolution();
    }

    fn poll_dispatch(service: &mut S, _: &mut (), cx: &mut Context<'_>) -> Poll<bool> {
        // A subchannel never fails poll_ready for a connection failure; an
        // error here is its service's, and the state says the rest.
        match service.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(true),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(false),
        }
    }

    const REPOLL_AFTER_CALL: bool = false;
}
