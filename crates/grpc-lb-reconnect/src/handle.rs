//! A handle to watch and steer one reconnecting subchannel from outside.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use futures::task::AtomicWaker;
use grpc_lb_core::{Connectivity, ConnectivityState};
use tokio::sync::watch;

/// State shared between a [`Reconnect`](crate::Reconnect) and its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) channel_id: u64,
    pub(crate) subchannel_id: u64,
    pub(crate) connectivity: watch::Sender<Connectivity>,
    pub(crate) connect_attempts: AtomicU64,
    pub(crate) reset_backoff: AtomicBool,
    pub(crate) connect: AtomicBool,
    /// Woken when a handle asks for something, so the owner of the service acts on
    /// it the next time it is polled.
    pub(crate) waker: AtomicWaker,
}

impl Shared {
    pub(crate) fn new(channel_id: u64, subchannel_id: u64) -> Self {
        let (connectivity, _) = watch::channel(Connectivity::new(ConnectivityState::Idle));
        Shared {
            channel_id,
            subchannel_id,
            connectivity,
            connect_attempts: AtomicU64::new(0),
            reset_backoff: AtomicBool::new(false),
            connect: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }
}

/// Reads, watches and steers one [`Reconnect`](crate::Reconnect).
///
/// This is the equivalent of grpc-go's `GetState`, `WaitForStateChange`,
/// `Connect` and `ResetConnectBackoff`, for one subchannel. Handles are cheap to
/// clone and stay valid after the service is dropped, when the state reads
/// `SHUTDOWN`.
///
/// Requests made through a handle ([`connect`](Self::connect),
/// [`reset_backoff`](Self::reset_backoff)) wake the task that last polled the
/// service and take effect when it polls again; a balancer driving its endpoints
/// does so at once.
///
/// ```
/// use grpc_lb_core::ConnectivityState;
/// use grpc_lb_reconnect::Reconnect;
/// use std::future::poll_fn;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use std::convert::Infallible;
/// # let connector = tower::service_fn(|_: &'static str| async {
/// #     Ok::<_, Infallible>(tower::service_fn(|name: &'static str| async move {
/// #         Ok::<_, Infallible>(format!("hello {name}"))
/// #     }))
/// # });
/// let mut subchannel = Reconnect::new(connector, "backend-1");
/// let handle = subchannel.handle();
///
/// // Whoever owns the subchannel keeps driving it (a balancer does).
/// tokio::spawn(poll_fn(move |cx| {
///     subchannel.drive::<&str>(cx);
///     std::task::Poll::<()>::Pending
/// }));
///
/// // grpc-go's Connect and WaitForStateChange, for one subchannel.
/// handle.connect();
/// let mut state = ConnectivityState::Idle;
/// while state != ConnectivityState::Ready {
///     state = handle.wait_for_state_change(state).await;
/// }
/// assert_eq!(handle.connect_attempts(), 1);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SubchannelHandle {
    shared: Arc<Shared>,
}

impl SubchannelHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        SubchannelHandle { shared }
    }

    /// The id of the channel this subchannel belongs to, as shown in its logs.
    pub fn channel_id(&self) -> u64 {
        self.shared.channel_id
    }

    /// This subchannel's id, as shown in its logs.
    pub fn id(&self) -> u64 {
        self.shared.subchannel_id
    }

    /// The current state.
    pub fn state(&self) -> ConnectivityState {
        self.shared.connectivity.borrow().state
    }

    /// The current state with the last connection error.
    pub fn connectivity(&self) -> Connectivity {
        self.shared.connectivity.borrow().clone()
    }

    /// A receiver that sees every published state.
    pub fn watch(&self) -> watch::Receiver<Connectivity> {
        self.shared.connectivity.subscribe()
    }

    /// Waits until the state differs from `from`, and returns the new state.
    pub async fn wait_for_state_change(&self, from: ConnectivityState) -> ConnectivityState {
        let mut receiver = self.watch();
        let changed = receiver
            .wait_for(|c| c.state != from)
            .await
            .map(|c| c.state);
        // The sender lives as long as this handle, so the error is not reached.
        changed.unwrap_or(ConnectivityState::Shutdown)
    }

    /// How many connection attempts have been started.
    pub fn connect_attempts(&self) -> u64 {
        self.shared.connect_attempts.load(Ordering::Relaxed)
    }

    /// Asks an idle subchannel to connect without waiting for a request
    /// (grpc-go's `Connect`).
    pub fn connect(&self) {
        self.shared.connect.store(true, Ordering::Release);
        self.shared.waker.wake();
    }

    /// Forgets the backoff: a subchannel waiting out a backoff reconnects at once,
    /// and the next failure waits only the base delay (grpc-go's
    /// `ResetConnectBackoff`).
    pub fn reset_backoff(&self) {
        self.shared.reset_backoff.store(true, Ordering::Release);
        self.shared.waker.wake();
    }
}
