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
/// use grpc_lb_balance::tree::{Endpoint, EndpointId, Helper, PickInfo, PickResult, Policy, SubchannelId};
/// use tower::discover::ServiceList;
/// use tower::{Service, ServiceExt};
///
/// /// Drops every call, as an xDS drop policy would drop a category.
/// #[derive(Debug)]
/// struct DropAll;
///
/// impl Policy for DropAll {
///     fn name(&self) -> &str { "drop_all" }
///     fn add_endpoint(&mut self, _: Endpoint<'_>, _: &mut dyn Helper) {}
///     fn remove_endpoint(&mut self, _: EndpointId, _: &mut dyn Helper) {}
///     fn subchannel_state(&mut self, _: SubchannelId, _: &grpc_lb_core::Connectivity, _: &mut dyn Helper) {}
///     fn exit_idle(&mut self, _: &mut dyn Helper) {}
///     fn pick(&mut self, _: &PickInfo<'_>) -> PickResult {
///         PickResult::Drop(Arc::new(std::io::Error::other("load shedding by policy")))
///     }
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
