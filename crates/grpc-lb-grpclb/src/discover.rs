//! The `Discover` of the backends in use, balancer's or fallback.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use grpc_lb_resolve::{Address, Endpoint, ResolverDiscover, ResolverStatus, UpdateStream};
use tokio::sync::watch;
use tower::discover::Change;

use crate::backend::{LbToken, LB_TOKEN_KEY};
use crate::balancer::TaskGuard;
use crate::stats::ClientStatsRecorder;

type MakeBackend<S> = Box<dyn FnMut(&Endpoint) -> LbToken<S> + Send>;

/// A `tower::discover::Discover` of the backends grpclb uses, keyed by
/// address: those of the balancer's server list, each an [`LbToken`] with its
/// token and the client stats, or in fallback the resolver's backends,
/// without a token. Made by [`Grpclb::discover`](crate::Grpclb::discover).
///
/// A backend whose token changes is inserted again, with a new service: the
/// balancer under it sees a new endpoint. The discovery never ends and never
/// fails. The [crate example](crate) runs one under `Balance`; here, alone:
///
/// ```
/// use futures::StreamExt;
/// use grpc_lb_grpclb::{Grpclb, GrpclbConfig};
/// use grpc_lb_resolve::Endpoint;
/// use tower::discover::Change;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let never = tower::service_fn(|_: http::Request<tonic::body::Body>| std::future::pending::<Result<http::Response<tonic::body::Body>, std::convert::Infallible>>());
/// let fallback: std::net::SocketAddr = "127.0.0.1:7000".parse().unwrap();
/// let config = GrpclbConfig::default().with_fallback_timeout(std::time::Duration::from_millis(10));
/// // A balancer that never answers: after the fallback timeout the
/// // resolver's backend is the one, without a token.
/// let grpclb = Grpclb::new(config, "greeter", grpc_lb_resolve::static_list([Endpoint::new(fallback)]), never);
/// let mut discover = grpclb.discover(|address| address.to_string());
/// match discover.next().await {
///     Some(Ok(Change::Insert(address, backend))) => {
///         assert_eq!(address.to_string(), "127.0.0.1:7000");
///         assert!(backend.token().is_none());
///     }
///     _ => unreachable!(),
/// }
/// # }
/// ```
pub struct GrpclbDiscover<S> {
    inner: ResolverDiscover<UpdateStream, MakeBackend<S>, LbToken<S>>,
    /// The balancer stream and resolver tasks live as long as the discover
    /// does, even if the `Grpclb` that made it is dropped.
    _tasks: Arc<[TaskGuard; 2]>,
}

impl<S> GrpclbDiscover<S> {
    pub(crate) fn new(
        updates: UpdateStream,
        stats: ClientStatsRecorder,
        tasks: Arc<[TaskGuard; 2]>,
        mut make: impl FnMut(&Address) -> S + Send + 'static,
    ) -> Self {
        let make: MakeBackend<S> = Box::new(move |endpoint: &Endpoint| {
            let token = endpoint.attributes.metadata.get(LB_TOKEN_KEY);
            // Only the balancer's backends carry a token, and only they are
            // counted in the client stats.
            let stats = token.map(|_| stats.clone());
            LbToken::new(make(&endpoint.address), token.map(String::as_str), stats)
        });
        GrpclbDiscover {
            inner: ResolverDiscover::new(updates, make),
            _tasks: tasks,
        }
    }

    /// The backends in use now, in the order of the list or the resolver.
    pub fn status(&self) -> watch::Receiver<ResolverStatus> {
        self.inner.status()
    }
}

impl<S: Unpin> Stream for GrpclbDiscover<S> {
    type Item = Result<Change<Address, LbToken<S>>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.get_mut().inner).poll_next(cx)
    }
}

impl<S> fmt::Debug for GrpclbDiscover<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpclbDiscover")
            .field("backends", &self.inner)
            .finish()
    }
}
