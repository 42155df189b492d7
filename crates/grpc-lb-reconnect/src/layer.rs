use std::fmt;

use tower_layer::Layer;

use crate::{Reconnect, ReconnectConfig};

/// Wraps a connector in a [`Reconnect`] bound to one target.
///
/// # Examples
///
/// ```
/// use grpc_lb_reconnect::{ReconnectConfig, ReconnectLayer};
/// use tower::ServiceBuilder;
/// # let connector = tower::service_fn(|_: std::net::SocketAddr| async {
/// #     Ok::<_, std::convert::Infallible>(tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(()) }))
/// # });
///
/// let addr: std::net::SocketAddr = "127.0.0.1:50051".parse().unwrap();
/// let subchannel = ServiceBuilder::new()
///     .layer(ReconnectLayer::new(addr, ReconnectConfig::default()))
///     .service(connector);
/// let handle = subchannel.handle();
/// assert_eq!(handle.state(), grpc_lb_core::ConnectivityState::Idle);
/// ```
#[derive(Clone)]
pub struct ReconnectLayer<T> {
    target: T,
    config: ReconnectConfig,
}

impl<T> ReconnectLayer<T> {
    /// A layer that connects to `target` with `config`.
    pub const fn new(target: T, config: ReconnectConfig) -> Self {
        ReconnectLayer { target, config }
    }
}

impl<T: fmt::Debug> fmt::Debug for ReconnectLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectLayer")
            .field("target", &self.target)
            .field("config", &self.config)
            .finish()
    }
}

impl<C, T> Layer<C> for ReconnectLayer<T>
where
    C: tower_service::Service<T>,
    T: Clone,
{
    type Service = Reconnect<C, T>;

    fn layer(&self, connector: C) -> Self::Service {
        Reconnect::with_config(connector, self.target.clone(), self.config.clone())
    }
}
