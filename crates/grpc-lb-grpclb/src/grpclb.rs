//! [`Grpclb`]: the pieces of one grpclb policy, wired to each other.

use std::sync::Arc;

use bytes::Bytes;
use grpc_lb_core::{BoxError, Connectivity};
use grpc_lb_resolve::{Address, Endpoint, ManualHandle, UpdateStream};
use tokio::sync::watch;

use crate::balancer::{BalancerClient, BalancerStatus, ServerList, TaskGuard};
use crate::config::GrpclbConfig;
use crate::discover::GrpclbDiscover;
use crate::drop::GrpclbDropLayer;
use crate::stats::ClientStatsRecorder;
use crate::updates::{split_resolver, ModeMachine, ModeStatus, Resolved};

/// One grpclb policy: the balancer stream, the resolver's addresses, and the
/// watches that join them to the [`GrpclbDiscover`] and the
/// [`GrpclbDropLayer`] it hands out. See the [crate docs](crate) for the
/// whole stack.
///
/// [`Grpclb::new`] spawns two tasks (the balancer stream, and the reader of
/// the resolver's updates), which end when the `Grpclb`, its clones and the
/// discovers it made are all dropped.
#[derive(Debug, Clone)]
pub struct Grpclb {
    config: GrpclbConfig,
    stats: ClientStatsRecorder,
    status: watch::Receiver<BalancerStatus>,
    resolved: watch::Receiver<Resolved>,
    backends: Arc<watch::Sender<Option<watch::Receiver<Connectivity>>>>,
    active: Arc<watch::Sender<Option<ServerList>>>,
    mode: Arc<watch::Sender<ModeStatus>>,
    _tasks: Arc<[TaskGuard; 2]>,
}

impl Grpclb {
    /// Starts grpclb for the target named `target_name` (sent to the
    /// balancer unless the config has a `serviceName`), with the resolver's
    /// `updates` (its backends are the fallback; endpoints marked as
    /// balancers are published on [`resolved`](Self::resolved) for the
    /// balancer channel), and `balancer`, a gRPC service to the balancer.
    ///
    /// Must be called within a tokio runtime.
    pub fn new<T>(
        config: GrpclbConfig,
        target_name: &str,
        updates: UpdateStream,
        balancer: T,
    ) -> Self
    where
        T: tonic::client::GrpcService<tonic::body::Body> + Send + 'static,
        T::Future: Send,
        T::Error: Into<BoxError>,
        T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
        <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
    {
        let stats = ClientStatsRecorder::new();
        let name = config.service_name().unwrap_or(target_name).to_owned();
        let client = BalancerClient::new(balancer, name, stats.clone(), *config.backoff());
        let (status, stream_task) = client.spawn();
        let (resolved_tx, resolved) = watch::channel(Resolved::default());
        let resolver_task = TaskGuard::new(tokio::spawn(split_resolver(updates, resolved_tx)));
        Grpclb {
            config,
            stats,
            status,
            resolved,
            backends: Arc::new(watch::channel(None).0),
            active: Arc::new(watch::channel(None).0),
            mode: Arc::new(watch::channel(ModeStatus::default()).0),
            _tasks: Arc::new([stream_task, resolver_task]),
        }
    }

    /// The `Discover` of the backends in use; `make` builds the service of
    /// each backend address (a reconnecting subchannel, typically). The
    /// fallback timer starts now. Make one per `Grpclb`: they share the
    /// drop layer's list.
    pub fn discover<S>(
        &self,
        make: impl FnMut(&Address) -> S + Send + 'static,
    ) -> GrpclbDiscover<S> {
        let machine = ModeMachine::new(
            self.status.clone(),
            self.resolved.clone(),
            self.backends.subscribe(),
            self.active.clone(),
            self.mode.clone(),
            self.config.fallback_timeout(),
        );
        GrpclbDiscover::new(
            machine.into_updates(),
            self.stats.clone(),
            self._tasks.clone(),
            make,
        )
    }

    /// The layer that applies the drop entries of the list in use, over the
    /// balanced service.
    pub fn drop_layer(&self) -> GrpclbDropLayer {
        GrpclbDropLayer::new(self.active.subscribe(), self.stats.clone())
    }

    /// Tells the policy the state of the balanced backends (the
    /// `connectivity()` watch of the `Balance` over the discover), so that it
    /// falls back when the balancer is lost and no backend is READY, as
    /// grpc-go does. Without it the last server list is kept for as long as
    /// the balancer is away.
    pub fn watch_backends(&self, state: watch::Receiver<Connectivity>) {
        self.backends.send_replace(Some(state));
    }

    /// Keeps `handle`, the manual resolver of the balancer channel, fed with
    /// the balancer addresses the resolver finds (grpc-go's grpclb feeds its
    /// balancer `ClientConn` the same way). Forwarding stops when the guard
    /// is dropped.
    ///
    /// ```
    /// use grpc_lb_grpclb::{Grpclb, GrpclbConfig};
    /// use grpc_lb_resolve::{Endpoint, ManualResolver, Update};
    /// use futures::StreamExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let balancer: std::net::SocketAddr = "127.0.0.1:9000".parse().unwrap();
    /// let marked = Endpoint::new(balancer).with_metadata(grpc_lb_grpclb::BALANCER_ADDRESS_KEY, "lb.example.");
    /// let (resolver, handle) = ManualResolver::new("balancers");
    /// let mut balancer_updates = resolver.stream(Default::default());
    /// # let never = tower::service_fn(|_: http::Request<tonic::body::Body>| std::future::pending::<Result<http::Response<tonic::body::Body>, std::convert::Infallible>>());
    /// let grpclb = Grpclb::new(
    ///     GrpclbConfig::default(),
    ///     "greeter.example",
    ///     grpc_lb_resolve::static_list([marked]),
    ///     never, // the balancer channel, built over `resolver`
    /// );
    /// let _forwarding = grpclb.forward_balancer_addresses(handle);
    /// assert_eq!(balancer_updates.next().await.unwrap().unwrap(), Update::Reset(vec![Endpoint::new(balancer)]));
    /// # }
    /// ```
    pub fn forward_balancer_addresses(&self, handle: ManualHandle) -> TaskGuard {
        let mut resolved = self.resolved.clone();
        TaskGuard::new(tokio::spawn(async move {
            let mut last: Option<Vec<Address>> = None;
            loop {
                let (addresses, known) = {
                    let now = resolved.borrow_and_update();
                    let addresses: Vec<Address> =
                        now.balancers.iter().map(|e| e.address.clone()).collect();
                    (addresses, now.resolved)
                };
                if known && last.as_ref() != Some(&addresses) {
                    handle.reset(addresses.iter().cloned().map(Endpoint::new));
                    last = Some(addresses);
                }
                if resolved.changed().await.is_err() {
                    return;
                }
            }
        }))
    }

    /// What the balancer stream has said.
    pub fn status(&self) -> watch::Receiver<BalancerStatus> {
        self.status.clone()
    }

    /// The resolver's addresses, split into balancers and fallback backends.
    pub fn resolved(&self) -> watch::Receiver<Resolved> {
        self.resolved.clone()
    }

    /// Which backends are in use.
    pub fn mode(&self) -> watch::Receiver<ModeStatus> {
        self.mode.subscribe()
    }

    /// The calls counted for the next load report.
    pub fn stats(&self) -> &ClientStatsRecorder {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &GrpclbConfig {
        &self.config
    }
}
