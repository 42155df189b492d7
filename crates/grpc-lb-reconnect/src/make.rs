//! [`MakeReconnect`]: reconnecting subchannels made on demand, one per target,
//! and the [`Subchannel`] view of a [`Reconnect`].

use std::convert::Infallible;
use std::fmt;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use grpc_lb_backoff::Rng;
use grpc_lb_core::{BoxError, Connectivity, NewSubchannel, Subchannel};
use tokio::sync::watch;
use tower_layer::Layer;
use tower_service::Service;

use crate::{Reconnect, ReconnectConfig};

/// A make-service of subchannels: each [`NewSubchannel`] request answers with a
/// [`Reconnect`] to that target, over a clone of one connector.
///
/// This is [`ReconnectLayer`](crate::ReconnectLayer) without a target fixed up
/// front, for a resolver stage to call once per endpoint it discovers. The
/// request carries the resolver's re-resolution signal and the channel id, which
/// replace those of the config, so every subchannel raises the signal of the
/// resolver that made it.
///
/// # Examples
///
/// ```
/// use grpc_lb_core::{ConnectivityState, NewSubchannel, ResolveNow};
/// use grpc_lb_reconnect::{MakeReconnect, ReconnectConfig};
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
/// let mut make = MakeReconnect::new(connector, ReconnectConfig::default());
/// let signal = ResolveNow::new();
/// let mut subchannel = make
///     .ready()
///     .await?
///     .call(NewSubchannel::new("backend-1", signal, 1))
///     .await?;
/// assert_eq!(subchannel.handle().state(), ConnectivityState::Idle);
/// assert_eq!(subchannel.ready().await?.call("world").await?, "hello world");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MakeReconnect<C> {
    connector: C,
    config: ReconnectConfig,
}

impl<C> MakeReconnect<C> {
    /// Subchannels over clones of `connector`, with `config`.
    pub const fn new(connector: C, config: ReconnectConfig) -> Self {
        MakeReconnect { connector, config }
    }

    /// A layer that wraps a connector in a `MakeReconnect` with `config`.
    pub fn layer(config: ReconnectConfig) -> MakeReconnectLayer {
        MakeReconnectLayer::new(config)
    }

    /// The connector.
    pub fn get_ref(&self) -> &C {
        &self.connector
    }

    /// The connector, mutably.
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.connector
    }

    /// The connector, consuming the make-service.
    pub fn into_inner(self) -> C {
        self.connector
    }
}

impl<C: fmt::Debug> fmt::Debug for MakeReconnect<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MakeReconnect")
            .field("connector", &self.connector)
            .field("config", &self.config)
            .finish()
    }
}

impl<C, T> Service<NewSubchannel<T>> for MakeReconnect<C>
where
    C: Service<T> + Clone,
{
    type Response = Reconnect<C, T>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Making a subchannel connects nothing: the subchannel connects when
        // it is used, and its connector's readiness is its own business.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: NewSubchannel<T>) -> Self::Future {
        let config = self
            .config
            .clone()
            .resolve_now(request.resolve_now)
            .channel_id(request.channel_id);
        ready(Ok(Reconnect::with_config(
            self.connector.clone(),
            request.target,
            config,
        )))
    }
}

/// Wraps a connector in a [`MakeReconnect`].
///
/// ```
/// use grpc_lb_reconnect::{MakeReconnectLayer, ReconnectConfig};
/// use tower::ServiceBuilder;
/// # let connector = tower::service_fn(|_: std::net::SocketAddr| async {
/// #     Ok::<_, std::convert::Infallible>(tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(()) }))
/// # });
/// let make = ServiceBuilder::new()
///     .layer(MakeReconnectLayer::new(ReconnectConfig::default()))
///     .service(connector);
/// # let _ = make;
/// ```
#[derive(Clone, Debug, Default)]
pub struct MakeReconnectLayer {
    config: ReconnectConfig,
}

impl MakeReconnectLayer {
    /// A layer making subchannels with `config`.
    pub const fn new(config: ReconnectConfig) -> Self {
        MakeReconnectLayer { config }
    }
}

impl<C> Layer<C> for MakeReconnectLayer {
    type Service = MakeReconnect<C>;

    fn layer(&self, connector: C) -> Self::Service {
        MakeReconnect::new(connector, self.config.clone())
    }
}

// ===== impl Subchannel for Reconnect =====

impl<C, T, R, Req> Subchannel<Req> for Reconnect<C, T, R>
where
    C: Service<T>,
    C::Error: Into<BoxError>,
    C::Response: Service<Req>,
    <C::Response as Service<Req>>::Error: Into<BoxError>,
    T: Clone + fmt::Debug,
    R: Rng,
{
    fn connectivity(&self) -> watch::Receiver<Connectivity> {
        self.shared.connectivity.subscribe()
    }

    fn poll_connectivity(&mut self, cx: &mut Context<'_>) -> Connectivity {
        self.drive::<Req>(cx);
        self.shared.connectivity.borrow().clone()
    }

    fn connect(&mut self) {
        self.handle().connect();
    }

    fn disconnect(&mut self) {
        Reconnect::disconnect(self);
    }

    fn request_resolution(&self) {
        self.resolve_now.request();
    }
}
