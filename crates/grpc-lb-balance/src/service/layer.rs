use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use tower::discover::Discover;
use tower_layer::Layer;
use tower_service::Service;

use super::calls::{HttpCalls, PlainCalls};
use super::probe::{ByConnectivity, ByReadiness, Probe};
use super::Balance;
use crate::tree::Policy;

/// Builds a [`Balance`] over a `Discover`, with a fresh policy from
/// `make_policy` each time (tower's `MakeBalanceLayer`, for a Discover instead
/// of a make-service).
///
/// ```
/// use grpc_lb_balance::service::BalanceLayer;
/// use grpc_lb_balance::tree::RoundRobin;
/// use tower::discover::ServiceList;
/// use tower::{Service, ServiceBuilder, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let backends = ServiceList::new(vec![
///     tower::service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n + 1) }),
/// ]);
/// let mut balanced = ServiceBuilder::new()
///     .layer(BalanceLayer::new(RoundRobin::new))
///     .service(backends);
/// assert_eq!(balanced.ready().await?.call(41).await?, 42);
/// # Ok(())
/// # }
/// ```
pub struct BalanceLayer<Req, P = ByReadiness, X = PlainCalls> {
    name: Arc<str>,
    make_policy: Arc<dyn Fn() -> Box<dyn Policy> + Send + Sync>,
    _marker: PhantomData<fn(Req) -> (P, X)>,
}

impl<Req> BalanceLayer<Req> {
    /// A layer whose balancers run the policy `make_policy` returns, e.g.
    /// `RoundRobin::new`.
    pub fn new<F, Pol>(make_policy: F) -> Self
    where
        F: Fn() -> Pol + Send + Sync + 'static,
        Pol: Policy,
    {
        let name = make_policy().name().into();
        BalanceLayer {
            name,
            make_policy: Arc::new(move || Box::new(make_policy()) as Box<dyn Policy>),
            _marker: PhantomData,
        }
    }
}

impl<Req, P, X> BalanceLayer<Req, P, X> {
    /// Balancers that read connectivity from the services
    /// ([`Balance::subchannels`]).
    pub fn subchannels(self) -> BalanceLayer<Req, ByConnectivity, X> {
        BalanceLayer {
            name: self.name,
            make_policy: self.make_policy,
            _marker: PhantomData,
        }
    }

    /// Balancers that read calls as HTTP ([`Balance::http`]).
    pub fn http(self) -> BalanceLayer<Req, P, HttpCalls> {
        BalanceLayer {
            name: self.name,
            make_policy: self.make_policy,
            _marker: PhantomData,
        }
    }
}

impl<Req, P, X> Clone for BalanceLayer<Req, P, X> {
    fn clone(&self) -> Self {
        BalanceLayer {
            name: self.name.clone(),
            make_policy: self.make_policy.clone(),
            _marker: PhantomData,
        }
    }
}

impl<Req, P, X> fmt::Debug for BalanceLayer<Req, P, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalanceLayer")
            .field("policy", &self.name)
            .finish()
    }
}

impl<D, Req, P, X> Layer<D> for BalanceLayer<Req, P, X>
where
    D: Discover,
    D::Service: Service<Req>,
    P: Probe<D::Service, Req>,
{
    type Service = Balance<D, Req, P, X>;

    fn layer(&self, discover: D) -> Self::Service {
        Balance::from_parts(discover, (self.make_policy)())
    }
}
