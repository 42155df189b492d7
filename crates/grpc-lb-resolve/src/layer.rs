//! The resolver stage as a tower `Layer`: [`ResolveLayer`] over a make-service
//! of subchannels yields a `Discover` ([`ResolveDiscover`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use grpc_lb_core::{BoxError, NewSubchannel, ResolveNow, SharedError};
use tokio::sync::watch;
use tower::discover::Change;
use tower_layer::Layer;
use tower_service::Service;

use crate::attributes::ResolvedAttributes;
use crate::discover::{ResolverDiscover, ResolverStatus};
use crate::resolver::{Registry, ResolveError, UpdateStream};
use crate::target::Target;
use crate::update::{Address, Endpoint};

/// Resolves a target and makes a subchannel per address with the make-service
/// it wraps, as a `Discover`.
///
/// The layer owns nothing but the target; each [`ResolveDiscover`] it builds
/// starts its resolver with a fresh re-resolution signal and hands that signal
/// to every subchannel it asks the make-service for (in the
/// [`NewSubchannel`]), so that a failing subchannel re-resolves its own
/// resolver: nothing has to be wired by hand. Resolution errors come out of the
/// `Discover` as errors (a balancer tells its policy), and the resolver's
/// status, with its service config, is on [`ResolveDiscover::status`].
///
/// # Examples
///
/// ```
/// use grpc_lb_core::NewSubchannel;
/// use grpc_lb_resolve::{Address, ResolveLayer};
/// use futures::StreamExt;
/// use tower::discover::Change;
/// use tower::ServiceBuilder;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// // A make-service whose "subchannel" is its target as text.
/// let make = tower::service_fn(|new: NewSubchannel<Address>| async move {
///     Ok::<_, std::convert::Infallible>(new.target.to_string())
/// });
/// let mut discover = ServiceBuilder::new()
///     .layer(ResolveLayer::new("ipv4:127.0.0.1:50051,127.0.0.1:50052")?)
///     .service(make);
/// match discover.next().await.unwrap()? {
///     Change::Insert(address, subchannel) => assert_eq!(subchannel, address.to_string()),
///     Change::Remove(_) => unreachable!(),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ResolveLayer {
    target: Target,
    registry: Arc<Registry>,
}

impl ResolveLayer {
    /// Resolves `target` with the default resolvers (`dns`, `ipv4`, `ipv6`,
    /// `unix`, `passthrough`). A target that does not parse, or whose scheme
    /// has no resolver, is a typed error here.
    pub fn new(target: &str) -> Result<Self, ResolveError> {
        ResolveLayer::with_registry(target, Registry::with_defaults())
    }

    /// Resolves `target` with the resolvers of `registry`.
    pub fn with_registry(target: &str, registry: Registry) -> Result<Self, ResolveError> {
        let target = registry.parse(target).map_err(ResolveError::BadTarget)?;
        if registry.get(target.scheme()).is_none() {
            return Err(ResolveError::NoResolver {
                scheme: target.scheme().to_owned(),
            });
        }
        Ok(ResolveLayer {
            target,
            registry: Arc::new(registry),
        })
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }
}

impl fmt::Debug for ResolveLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolveLayer")
            .field("target", &self.target.to_string())
            .finish()
    }
}

impl<M> Layer<M> for ResolveLayer
where
    M: Service<NewSubchannel<Address>>,
{
    type Service = ResolveDiscover<M>;

    fn layer(&self, make: M) -> ResolveDiscover<M> {
        let resolve_now = ResolveNow::new();
        let started = self
            .registry
            .resolve_target(&self.target, resolve_now.clone());
        ResolveDiscover::new(started, make, resolve_now)
    }
}

type Endpoints = ResolverDiscover<UpdateStream, fn(&Endpoint) -> Endpoint, Endpoint>;

/// A `Discover` of subchannels for a resolved target, built by
/// [`ResolveLayer`]: keyed by [`Address`], each made by the make-service.
///
/// - Resolution errors are `Discover` errors; the stream goes on after them
///   and the last good set stays.
/// - A resolver that fails to start yields its error, then ends.
/// - [`status`](Self::status): what the resolver said (endpoint order,
///   errors, service config); [`resolve_now`](Self::resolve_now): the signal
///   its subchannels raise.
///
/// ```
/// use futures::StreamExt;
/// use grpc_lb_core::NewSubchannel;
/// use grpc_lb_resolve::{Address, ResolveLayer};
/// use tower::Layer;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// // A make-service that keeps each subchannel's re-resolution signal.
/// let make = tower::service_fn(|new: NewSubchannel<Address>| async move {
///     Ok::<_, std::convert::Infallible>(new.resolve_now)
/// });
/// let mut discover = ResolveLayer::new("ipv4:127.0.0.1:50051")?.layer(make);
/// let Some(Ok(tower::discover::Change::Insert(_, signal))) = discover.next().await else {
///     unreachable!()
/// };
/// signal.request(); // what a failing subchannel does
/// assert_eq!(discover.resolve_now().count(), 1); // the resolver's own signal
/// assert!(discover.status().borrow().resolved);
/// # Ok(())
/// # }
/// ```
pub struct ResolveDiscover<M>
where
    M: Service<NewSubchannel<Address>>,
{
    endpoints: Option<Endpoints>,
    start_error: Option<ResolveError>,
    make: M,
    making: Option<(Address, Pin<Box<M::Future>>)>,
    resolve_now: ResolveNow,
    channel_id: u64,
    status: watch::Receiver<ResolverStatus>,
    last_error: Option<SharedError>,
    attributes: ResolvedAttributes,
}

impl<M> ResolveDiscover<M>
where
    M: Service<NewSubchannel<Address>>,
{
    fn new(started: Result<UpdateStream, ResolveError>, make: M, resolve_now: ResolveNow) -> Self {
        let keep: fn(&Endpoint) -> Endpoint = Endpoint::clone;
        let (endpoints, start_error) = match started {
            Ok(updates) => (Some(ResolverDiscover::new(updates, keep)), None),
            Err(error) => (None, Some(error)),
        };
        let status = match &endpoints {
            Some(endpoints) => endpoints.status(),
            None => watch::channel(ResolverStatus::default()).1,
        };
        ResolveDiscover {
            endpoints,
            start_error,
            make,
            making: None,
            resolve_now,
            channel_id: grpc_lb_core::next_channelz_id(),
            status,
            last_error: None,
            attributes: ResolvedAttributes::default(),
        }
    }

    /// A watch on what the resolver has said: the endpoints' order, the last
    /// error, the service config.
    pub fn status(&self) -> watch::Receiver<ResolverStatus> {
        self.status.clone()
    }

    /// The re-resolution signal this resolver answers and its subchannels
    /// raise. A balancer over this discover reaches it through any subchannel
    /// (`Subchannel::request_resolution`), so it needs no wiring; this is for
    /// observers and tests.
    pub fn resolve_now(&self) -> ResolveNow {
        self.resolve_now.clone()
    }

    /// What the resolver said about each endpoint yielded (its weight and
    /// metadata), for a balancer to read as endpoints are added.
    pub fn attributes(&self) -> ResolvedAttributes {
        self.attributes.clone()
    }

    /// The channel id given to the subchannels, as shown in their logs.
    pub fn channel_id(&self) -> u64 {
        self.channel_id
    }

    /// A resolution error not yet reported.
    fn new_error(&mut self) -> Option<SharedError> {
        let error = self.status.borrow_and_update().last_error.clone()?;
        let fresh = self
            .last_error
            .as_ref()
            .is_none_or(|last| !Arc::ptr_eq(last, &error));
        self.last_error = Some(error.clone());
        fresh.then_some(error)
    }
}

impl<M> Stream for ResolveDiscover<M>
where
    M: Service<NewSubchannel<Address>> + Unpin,
    M::Error: Into<BoxError>,
{
    type Item = Result<Change<Address, M::Response>, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(error) = this.start_error.take() {
            return Poll::Ready(Some(Err(error.into())));
        }
        loop {
            if let Some((address, making)) = &mut this.making {
                let made = std::task::ready!(making.as_mut().poll(cx));
                let address = address.clone();
                this.making = None;
                return Poll::Ready(Some(match made {
                    Ok(subchannel) => Ok(Change::Insert(address, subchannel)),
                    Err(error) => Err(error.into()),
                }));
            }
            let Some(endpoints) = &mut this.endpoints else {
                return Poll::Ready(None);
            };
            match endpoints.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(Change::Insert(address, endpoint)))) => {
                    // Known before the endpoint is yielded, so a balancer
                    // adding it can read it.
                    this.attributes.insert(address.clone(), endpoint.attributes);
                    if let Err(error) = std::task::ready!(this.make.poll_ready(cx)) {
                        return Poll::Ready(Some(Err(error.into())));
                    }
                    let request = NewSubchannel::new(
                        address.clone(),
                        this.resolve_now.clone(),
                        this.channel_id,
                    );
                    this.making = Some((address, Box::pin(this.make.call(request))));
                }
                Poll::Ready(Some(Ok(Change::Remove(address)))) => {
                    this.attributes.remove(&address);
                    return Poll::Ready(Some(Ok(Change::Remove(address))));
                }
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => {
                    this.endpoints = None;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    return match this.new_error() {
                        Some(error) => Poll::Ready(Some(Err(Box::new(ResolutionFailed(error))))),
                        None => Poll::Pending,
                    };
                }
            }
        }
    }
}

impl<M> fmt::Debug for ResolveDiscover<M>
where
    M: Service<NewSubchannel<Address>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolveDiscover")
            .field("endpoints", &self.status.borrow().endpoints)
            .field("channel_id", &self.channel_id)
            .finish()
    }
}

/// The resolver reported an error; the last good set stays.
///
/// ```
/// use futures::StreamExt;
/// use grpc_lb_core::NewSubchannel;
/// use grpc_lb_resolve::{Address, ManualResolver, Registry, ResolutionFailed, ResolveLayer};
/// use tower::Layer;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let (resolver, handle) = ManualResolver::new("example");
/// let mut registry = Registry::new();
/// registry.register(resolver);
/// let make = tower::service_fn(|new: NewSubchannel<Address>| async move {
///     Ok::<_, std::convert::Infallible>(new.target)
/// });
/// let mut discover = ResolveLayer::with_registry("example:///greeter", registry)?.layer(make);
/// handle.error("no such host");
/// let error = discover.next().await.unwrap().unwrap_err();
/// assert!(error.is::<ResolutionFailed>());
/// assert_eq!(error.to_string(), "name resolution failed: no such host");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ResolutionFailed(SharedError);

impl fmt::Display for ResolutionFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "name resolution failed: {}", self.0)
    }
}

impl std::error::Error for ResolutionFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}
