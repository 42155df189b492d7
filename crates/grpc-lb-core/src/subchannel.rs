use std::task::Context;

use tokio::sync::watch;

use crate::{Connectivity, ResolveNow};

/// A service that knows its own gRPC connectivity: a subchannel.
///
/// A balancer reads a plain `tower::Service`'s health from its `poll_ready`
/// alone (ready, pending, or failing). A subchannel can say more: that it is
/// IDLE and connects only when asked, that it is backing off after a failure
/// (TRANSIENT_FAILURE, with the error), or that it is SHUTDOWN. Implementing
/// this trait lets a balancer drive it through those states without sending it
/// a request, and disconnect it when a policy no longer wants it, as grpc-go's
/// `SubConn` (`Connect`, `Shutdown`, state listener) allows.
///
/// `Req` is the request type the subchannel serves: driving a connected
/// subchannel asks its connection whether it is still alive, which for a
/// `tower::Service` depends on the request type.
///
/// `grpc_lb_reconnect::Reconnect` implements it.
///
/// # Examples
///
/// A subchannel of your own that is always connected:
///
/// ```
/// use std::task::Context;
/// use grpc_lb_core::{Connectivity, ConnectivityState, Subchannel};
/// use tokio::sync::watch;
///
/// struct Loopback {
///     state: watch::Sender<Connectivity>,
/// }
///
/// impl Subchannel<String> for Loopback {
///     fn connectivity(&self) -> watch::Receiver<Connectivity> {
///         self.state.subscribe()
///     }
///     fn poll_connectivity(&mut self, _cx: &mut Context<'_>) -> Connectivity {
///         self.state.borrow().clone()
///     }
///     fn connect(&mut self) {}
///     fn disconnect(&mut self) {}
/// }
///
/// let (state, _) = watch::channel(Connectivity::new(ConnectivityState::Ready));
/// let mut subchannel = Loopback { state };
/// let mut cx = Context::from_waker(std::task::Waker::noop());
/// let now = Subchannel::<String>::poll_connectivity(&mut subchannel, &mut cx);
/// assert_eq!(now.state, ConnectivityState::Ready);
/// ```
pub trait Subchannel<Req> {
    /// A receiver that sees every state this subchannel publishes, for
    /// observers (metrics, a fail-fast layer). A balancer does not need it: it
    /// reads [`poll_connectivity`](Self::poll_connectivity).
    fn connectivity(&self) -> watch::Receiver<Connectivity>;

    /// Advances the subchannel without asking for a connection (attempts in
    /// flight, backoff timers, lost connections) and returns its state
    /// afterwards. The task in `cx` is woken when the state may change again.
    fn poll_connectivity(&mut self, cx: &mut Context<'_>) -> Connectivity;

    /// Asks an IDLE subchannel to connect (grpc-go's `SubConn.Connect`). It
    /// takes effect at the next [`poll_connectivity`](Self::poll_connectivity).
    fn connect(&mut self);

    /// Drops the connection or the attempt in progress; the subchannel goes
    /// IDLE (what pick_first does to the subchannels it is not using).
    fn disconnect(&mut self);

    /// Asks the resolver that made this subchannel to resolve again, for a
    /// policy that wants re-resolution (pick_first at the end of its first
    /// pass). Subchannels of one resolver share its signal, so a balancer
    /// raises it through any of them. By default there is no resolver.
    fn request_resolution(&self) {}
}

/// What a resolver stage asks its make-service for: a subchannel to `target`.
///
/// The resolver stage owns the re-resolution signal, so it hands it to every
/// subchannel it makes: a subchannel whose attempt fails raises it, and the
/// resolver answers. Nothing has to be wired by hand.
///
/// ```
/// use grpc_lb_core::{NewSubchannel, ResolveNow};
///
/// let signal = ResolveNow::new();
/// let request = NewSubchannel::new("10.0.0.1:50051", signal.clone(), 7);
/// request.resolve_now.request();
/// assert_eq!(signal.count(), 1);
/// assert_eq!(request.target, "10.0.0.1:50051");
/// ```
#[derive(Clone, Debug)]
pub struct NewSubchannel<T> {
    /// Where the subchannel connects (an address, for the connector).
    pub target: T,
    /// The signal the subchannel raises when its connection fails or is lost.
    pub resolve_now: ResolveNow,
    /// The channel the subchannel belongs to, for its logs.
    pub channel_id: u64,
}

impl<T> NewSubchannel<T> {
    /// A request for a subchannel to `target` of channel `channel_id`.
    pub const fn new(target: T, resolve_now: ResolveNow, channel_id: u64) -> Self {
        NewSubchannel {
            target,
            resolve_now,
            channel_id,
        }
    }
}
