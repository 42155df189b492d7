//! Errors of [`Balance`](crate::service::Balance).

use std::fmt;

use grpc_lb_core::SharedError;

/// The discovery stream ended with no endpoints: nothing can ever be picked.
///
/// While endpoints remain, the end of discovery is not an error: the balancer
/// keeps serving the last set.
///
/// ```
/// use grpc_lb_balance::service::{error::DiscoverClosed, Balance};
/// use grpc_lb_balance::tree::RoundRobin;
/// use tower::discover::ServiceList;
/// use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let nothing = ServiceList::new(Vec::<tower_test::mock::Mock<(), ()>>::new());
/// let mut balance = Balance::new(nothing, RoundRobin::new());
/// let error = balance.ready().await.unwrap_err();
/// assert!(error.is::<DiscoverClosed>());
/// # }
/// ```
#[derive(Debug, Default)]
pub struct DiscoverClosed(());

impl DiscoverClosed {
    pub(crate) fn new() -> Self {
        DiscoverClosed(())
    }
}

impl fmt::Display for DiscoverClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("discovery ended with no endpoints")
    }
}

impl std::error::Error for DiscoverClosed {}

/// The policy dropped the call ([`PickResult::Drop`](crate::tree::PickResult::Drop));
/// the policy's error is the source.
///
/// ```
/// use std::sync::Arc;
/// use grpc_lb_balance::service::{error::Dropped, Balance};
/// use grpc_lb_balance::tree::{Endpoint, EndpointId, FixedPicker, Helper, PickResult, Policy, SubchannelId};
/// use grpc_lb_core::ConnectivityState;
/// use tower::discover::ServiceList;
/// use tower::{Service, ServiceExt};
///
/// /// Drops every call, as an xDS drop policy would drop a category.
/// #[derive(Debug)]
/// struct DropAll;
///
/// impl Policy for DropAll {
///     fn name(&self) -> &str { "drop_all" }
///     fn add_endpoint(&mut self, _: Endpoint<'_>, helper: &mut dyn Helper) {
///         let shed = Arc::new(std::io::Error::other("load shedding by policy"));
///         let picker = Arc::new(FixedPicker::new(PickResult::Drop(shed)));
///         helper.update_state(ConnectivityState::Ready, None, picker);
///     }
///     fn remove_endpoint(&mut self, _: EndpointId, _: &mut dyn Helper) {}
///     fn subchannel_state(&mut self, _: SubchannelId, _: &grpc_lb_core::Connectivity, _: &mut dyn Helper) {}
///     fn exit_idle(&mut self, _: &mut dyn Helper) {}
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (service, _handle) = tower_test::mock::pair::<(), ()>();
/// let mut balance = Balance::new(ServiceList::new([service]), DropAll);
/// let error = balance.ready().await.unwrap().call(()).await.unwrap_err();
/// assert!(error.is::<Dropped>());
/// # }
/// ```
#[derive(Debug)]
pub struct Dropped {
    source: SharedError,
}

impl Dropped {
    pub(crate) fn new(source: SharedError) -> Self {
        Dropped { source }
    }
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "call dropped by the load-balancing policy: {}",
            self.source
        )
    }
}

impl std::error::Error for Dropped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// No endpoint can take the call: the policy is in TRANSIENT_FAILURE and the
/// call does not wait for ready (gRPC's UNAVAILABLE for a fail-fast call). The
/// policy's error is the source.
///
/// ```
/// use std::convert::Infallible;
/// use grpc_lb_balance::service::{error::Unavailable, Balance};
/// use grpc_lb_balance::tree::{PickInfo, RoundRobin};
/// use tower::discover::ServiceList;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A backend whose poll_ready fails: the policy is TRANSIENT_FAILURE.
/// let (service, mut backend) = tower_test::mock::pair::<(), ()>();
/// backend.send_error("refused");
/// let mut balance = Balance::new(ServiceList::new([service]), RoundRobin::new());
/// let handle = balance.handle();
/// tokio::spawn(std::future::poll_fn(move |cx| balance.poll_events(cx)));
/// let error = handle.pick(PickInfo::none()).await.unwrap_err();
/// assert!(error.is::<Unavailable>(), "{error}");
/// # }
/// ```
#[derive(Debug)]
pub struct Unavailable {
    source: SharedError,
}

impl Unavailable {
    pub(crate) fn new(source: SharedError) -> Self {
        Unavailable { source }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no endpoint can take the call: {}", self.source)
    }
}

impl std::error::Error for Unavailable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// The balancer behind a [`PickHandle`](super::PickHandle) was dropped.
///
/// ```
/// use grpc_lb_balance::service::{error::Closed, Balance};
/// use grpc_lb_balance::tree::{PickInfo, RoundRobin};
/// use tower::discover::ServiceList;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (service, _backend) = tower_test::mock::pair::<(), ()>();
/// let mut balance = Balance::new(ServiceList::new([service]), RoundRobin::new());
/// let handle = balance.handle();
/// drop(balance);
/// let error = handle.pick(PickInfo::none()).await.unwrap_err();
/// assert!(error.is::<Closed>());
/// # }
/// ```
#[derive(Debug, Default)]
pub struct Closed(());

impl Closed {
    pub(crate) fn new() -> Self {
        Closed(())
    }
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("the balancer was dropped")
    }
}

impl std::error::Error for Closed {}
