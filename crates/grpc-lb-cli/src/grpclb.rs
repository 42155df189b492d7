//! grpclb targets: when the service config in force (or `--policy grpclb`)
//! selects `grpclb`, the call path is crates/grpc-lb-grpclb's stack over
//! grpc-lb-balance's `Balance` instead of a `grpc_lb::Channel`: a pick_first
//! channel to the balancers (from DNS SRV `_grpclb._tcp.<host>`, or
//! `--grpclb-balancer`), the balancer's server list under the config's child
//! policy, the resolver's backends as the fallback, and drops.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use grpc_lb::balance::service::{Balance, ByConnectivity, HttpCalls};
use grpc_lb::balance::tree::{PickFirst, RoundRobin};
use grpc_lb::connect::{Http2Config, Http2Connector};
use grpc_lb::core::{Connectivity, ResolveNow, Subchannel};
use grpc_lb::failfast::FailFast;
use grpc_lb::reconnect::{Reconnect, ReconnectConfig};
use grpc_lb::resolve::dns::{DnsConfig, DnsResolver};
use grpc_lb::resolve::{
    Address, Endpoint, ManualResolver, Registry, ServiceConfigUpdate, Target, Update, UpdateStream,
};
use grpc_lb::service_config::ServiceConfig;
use grpc_lb::{AddressConnector, Channel};
use grpc_lb_grpclb::{
    ChildPolicy, Grpclb, GrpclbConfig, GrpclbConfigError, GrpclbDiscover, GrpclbDrop, Mode,
    TaskGuard, DROP_MESSAGE,
};
use pin_project_lite::pin_project;
use serde_json::{json, Value};
use tokio::sync::watch;
use tower::buffer::Buffer;
use tower_layer::Layer;
use tower_service::Service;

use crate::channel::GrpcChannel;
use crate::load::Tally;
use crate::options::ChannelArgs;
use crate::CliError;

/// The policy name in `loadBalancingConfig` and `--policy`.
pub(crate) const GRPCLB: &str = "grpclb";

/// The scheme of the balancer channel's own manual resolver.
const BALANCERS_SCHEME: &str = "grpclb-balancers";

type Body = tonic::body::Body;
type Connector = Http2Connector<Body, AddressConnector>;
/// One backend: a reconnecting subchannel that names itself in responses.
type Backend = TagBackend<Reconnect<Connector, Address>>;
/// Fail-fast over the drops over the balanced backends: while no backend
/// can be reached (TRANSIENT_FAILURE) a call fails at once with UNAVAILABLE
/// and takes no drop entry, as grpc-go's grpclb picks with an error picker
/// then.
type Stack = FailFast<
    GrpclbDrop<Balance<GrpclbDiscover<Backend>, http::Request<Body>, ByConnectivity, HttpCalls>>,
>;
type StackFuture = <Stack as Service<http::Request<Body>>>::Future;

/// The grpclb stack, shared by every worker through a buffer (a `Balance` is
/// one picker, not a clonable handle).
pub(crate) type GrpclbService = Buffer<http::Request<Body>, StackFuture>;

/// The response body of the grpclb stack.
pub(crate) type GrpclbBody = <Stack as Service<http::Request<Body>>>::Response;

/// The grpclb config `config` selects: its first supported
/// `loadBalancingConfig` entry (grpc-go's choice, `grpclb` counted as
/// supported) is `grpclb`. `Ok(None)`: it selects something else, or nothing.
pub(crate) fn selected(config: &ServiceConfig) -> Result<Option<GrpclbConfig>, GrpclbConfigError> {
    let registry = grpc_lb::balance::PolicyRegistry::with_defaults();
    let chosen = config.choose_policy(|name| {
        name == GRPCLB
            || registry.contains(name)
            || crate::tree_policy::is_tree(name)
            || name == grpc_lb::service_config::OUTLIER_DETECTION
    });
    match chosen {
        Ok(Some(entry)) if entry.name() == GRPCLB => {
            GrpclbConfig::from_value(entry.config()).map(Some)
        }
        _ => Ok(None),
    }
}

/// The target's resolver, with SRV lookups of `_grpclb._tcp.<host>` for
/// dns targets (grpc-go's EnableSRVLookups), started on `target`.
pub(crate) fn resolve(target: &str) -> Result<(Target, UpdateStream), CliError> {
    resolve_with(target, ResolveNow::new())
}

/// [`resolve`], re-resolving when `signal` is raised.
pub(crate) fn resolve_with(
    target: &str,
    signal: ResolveNow,
) -> Result<(Target, UpdateStream), CliError> {
    let mut registry = Registry::with_defaults();
    registry.register(DnsResolver::new(
        DnsConfig::default().grpclb_balancers(true),
    ));
    let bad = |error: &dyn fmt::Display| CliError::usage(format!("bad target {target:?}: {error}"));
    let parsed = registry.parse(target).map_err(|e| bad(&e))?;
    let updates = registry
        .resolve_target(&parsed, signal)
        .map_err(|e| bad(&e))?;
    Ok((parsed, updates))
}

/// Whether `target` is a dns target, the one built-in resolver that can
/// carry a service config (its TXT record).
pub(crate) fn is_dns(target: &str) -> bool {
    Registry::with_defaults()
        .parse(target)
        .is_ok_and(|parsed| parsed.scheme() == "dns")
}

/// The service config of the resolver's first resolution: the DNS resolver
/// reports it just before the addresses, so the updates are read up to the
/// first that is not a config; they are put back in front of the stream.
pub(crate) async fn peek_config(
    mut updates: UpdateStream,
) -> (Option<Arc<ServiceConfig>>, UpdateStream) {
    let mut read = Vec::new();
    let mut config = None;
    while let Some(update) = updates.next().await {
        let last = !matches!(update, Ok(Update::ServiceConfig(_)));
        if let Ok(Update::ServiceConfig(ServiceConfigUpdate::Config(found))) = &update {
            config = Some(found.clone());
        }
        read.push(update);
        if last {
            break;
        }
    }
    let replayed: UpdateStream = Box::pin(futures::stream::iter(read).chain(updates));
    (config, replayed)
}

/// A grpclb target's stack and what the report says about it.
pub(crate) struct GrpclbClient {
    pub(crate) grpclb: Grpclb,
    pub(crate) service: GrpclbService,
    /// The pick_first channel to the balancers (its state is reported).
    pub(crate) balancer_channel: GrpcChannel,
    /// Where the balancer addresses came from: `flag`, or `resolver` (DNS
    /// SRV records).
    pub(crate) balancers_from: &'static str,
    /// `--grpclb-balancer`'s addresses (empty: from DNS).
    given: Vec<SocketAddr>,
    /// The config in force (the resolver's first, else `--service-config`),
    /// for the retry and message-size layers.
    pub(crate) config: Option<Arc<ServiceConfig>>,
    _forwarding: Option<TaskGuard>,
}

impl fmt::Debug for GrpclbClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpclbClient")
            .field("balancers_from", &self.balancers_from)
            .finish_non_exhaustive()
    }
}

/// Builds the grpclb stack over the target's resolver `updates` (inside the
/// runtime); `in_force` is the service config the layers above follow.
pub(crate) async fn build(
    args: &ChannelArgs,
    (parsed, updates): (Target, UpdateStream),
    config: GrpclbConfig,
    in_force: Option<Arc<ServiceConfig>>,
    wait_for_ready: bool,
) -> Result<GrpclbClient, CliError> {
    let backoff = args.backoff()?;
    let mut config = config.with_backoff(backoff);
    let given = balancer_flags(&args.grpclb_balancer).await?;
    if let Some(ms) = args.grpclb_fallback_timeout_ms {
        config = config.with_fallback_timeout(Duration::from_millis(ms));
    } else if given.is_empty() && parsed.scheme() != "dns" {
        // No balancer can be found (no flag, no SRV records): grpc-go falls
        // back at once when the resolver gives no balancer address.
        config = config.with_fallback_timeout(Duration::ZERO);
    }

    // grpc-go dials the balancers with pick_first, over a manual resolver.
    let (balancers, handle) = ManualResolver::new(BALANCERS_SCHEME);
    let mut balancer_registry = Registry::with_defaults();
    balancer_registry.register(balancers);
    let mut builder = Channel::builder(format!("{BALANCERS_SCHEME}:///balancers"))
        .resolver_registry(balancer_registry)
        .policy("pick_first")
        .backoff(backoff)
        .keepalive(args.keepalive())
        // As grpc-go's BalanceLoad call: an unreachable balancer is left to
        // the fallback timer.
        .wait_for_ready(true);
    if let Some(ms) = args.connect_timeout_ms {
        builder = builder.connect_timeout(Duration::from_millis(ms));
    }
    let balancer_channel = builder
        .build()
        .map_err(|error| CliError::usage(format!("the grpclb balancer channel: {error}")))?;

    let name = parsed.authority();
    let grpclb = Grpclb::new(config, &name, updates, balancer_channel.clone());
    let (forwarding, balancers_from) = if given.is_empty() {
        (Some(grpclb.forward_balancer_addresses(handle)), "resolver")
    } else {
        handle.reset(given.iter().copied().map(Endpoint::from));
        (None, "flag")
    };

    let connector = args.backend_connector();
    let reconnect = ReconnectConfig::default().backoff(backoff);
    let discover = grpclb.discover(move |address| {
        TagBackend::new(
            Reconnect::with_config(connector.clone(), address.clone(), reconnect.clone()),
            address.clone(),
        )
    });
    let balance = match grpclb.config().child_policy() {
        ChildPolicy::RoundRobin => Balance::new(discover, RoundRobin::new()),
        ChildPolicy::PickFirst => Balance::new(discover, PickFirst::new()),
    }
    .subchannels()
    .http();
    let connectivity = balance.connectivity();
    grpclb.watch_backends(connectivity.clone());
    let stack = FailFast::new(grpclb.drop_layer().layer(balance), connectivity)
        .wait_for_ready(wait_for_ready);
    let service = Buffer::new(stack, args.max_waiting.max(1));
    Ok(GrpclbClient {
        grpclb,
        service,
        balancer_channel,
        balancers_from,
        given,
        config: in_force,
        _forwarding: forwarding,
    })
}

/// The flags a grpclb target cannot take, refused before anything is sent.
pub(crate) fn check_flags(args: &ChannelArgs) -> Result<(), CliError> {
    if args.tls {
        return Err(CliError::usage(
            "grpclb targets are plaintext here: --tls is not supported with grpclb",
        ));
    }
    args.backoff()?;
    Ok(())
}

/// `--grpclb-balancer HOST:PORT` values, looked up once.
async fn balancer_flags(values: &[String]) -> Result<Vec<SocketAddr>, CliError> {
    let mut addresses = Vec::new();
    for value in values {
        let found = tokio::net::lookup_host(value.as_str())
            .await
            .map_err(|error| CliError::usage(format!("--grpclb-balancer {value}: {error}")))?;
        let before = addresses.len();
        addresses.extend(found);
        if addresses.len() == before {
            return Err(CliError::usage(format!(
                "--grpclb-balancer {value}: no address"
            )));
        }
    }
    Ok(addresses)
}

impl GrpclbClient {
    /// The grpclb facts of the report: balancers, mode, lists, drops.
    pub(crate) fn json(&self, tally: Option<&Tally>) -> Value {
        let status = self.grpclb.status().borrow().clone();
        let mode = *self.grpclb.mode().borrow();
        let resolved = self.grpclb.resolved().borrow().clone();
        let balancers: Vec<String> = match self.balancers_from {
            "flag" => self.given.iter().map(ToString::to_string).collect(),
            _ => resolved
                .balancers
                .iter()
                .map(|e| e.address.to_string())
                .collect(),
        };
        let fallback: Vec<String> = resolved
            .backends
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        let server_list: Option<Vec<Value>> = status.server_list.as_ref().map(|list| {
            list.entries()
                .iter()
                .map(|entry| match entry {
                    grpc_lb_grpclb::ServerEntry::Backend { address, token } => {
                        json!({"address": address.to_string(), "token": token})
                    }
                    grpc_lb_grpclb::ServerEntry::Drop { token } => {
                        json!({"drop": true, "token": token})
                    }
                })
                .collect()
        });
        let mut object = json!({
            "balancers": balancers,
            "balancers_from": self.balancers_from,
            "service_name": self.grpclb.config().service_name(),
            "child_policy": self.grpclb.config().child_policy().name(),
            "fallback_timeout_ms": self.grpclb.config().fallback_timeout().as_millis() as u64,
            "mode": mode_name(mode.mode),
            "in_fallback": mode.mode == Mode::Fallback,
            "fallbacks": mode.fallbacks,
            "lists_used": mode.lists_used,
            "fallback_backends": fallback,
            "balancer_connected": status.connected,
            "balancer_channel_state": self.balancer_channel.state().as_str(),
            "server_lists": status.server_lists,
            "server_list": server_list,
            "fallback_responses": status.fallback_responses,
            "reports_sent": status.reports_sent,
            "streams_lost": status.streams_lost,
            "last_balancer_error": status.last_error.as_ref().map(|e| e.to_string()),
        });
        if let Some(tally) = tally {
            object["dropped"] = json!(dropped(tally));
        }
        object
    }
}

/// The calls the drop entries failed (UNAVAILABLE with grpclb's message).
pub(crate) fn dropped(tally: &Tally) -> u64 {
    tally
        .top_errors(usize::MAX)
        .into_iter()
        .filter(|(code, message, _)| *code == "UNAVAILABLE" && *message == DROP_MESSAGE)
        .map(|(_, _, count)| count)
        .sum()
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Waiting => "waiting",
        Mode::Balancer => "balancer",
        Mode::Fallback => "fallback",
    }
}

/// The address of the backend that answered, in the response's extensions
/// (what [`crate::channel::RecordPeer`] reads on the grpclb path, where no
/// `grpc_lb::Peer` is made).
#[derive(Clone, Debug)]
pub(crate) struct BackendAddress(pub(crate) Address);

/// A backend's subchannel that puts its [`BackendAddress`] on each response.
#[derive(Debug)]
pub(crate) struct TagBackend<S> {
    inner: S,
    address: Address,
}

impl<S> TagBackend<S> {
    /// `inner`, naming `address` in its responses.
    pub(crate) fn new(inner: S, address: Address) -> Self {
        TagBackend { inner, address }
    }
}

impl<S, Req, RB> Service<Req> for TagBackend<S>
where
    S: Service<Req, Response = http::Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TagFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        TagFuture {
            inner: self.inner.call(request),
            address: Some(self.address.clone()),
        }
    }
}

impl<S: Subchannel<Req>, Req> Subchannel<Req> for TagBackend<S> {
    fn connectivity(&self) -> watch::Receiver<Connectivity> {
        self.inner.connectivity()
    }
    fn poll_connectivity(&mut self, cx: &mut Context<'_>) -> Connectivity {
        self.inner.poll_connectivity(cx)
    }
    fn connect(&mut self) {
        self.inner.connect();
    }
    fn disconnect(&mut self) {
        self.inner.disconnect();
    }
    fn request_resolution(&self) {
        self.inner.request_resolution();
    }
}

pin_project! {
    /// The response future of [`TagBackend`].
    pub(crate) struct TagFuture<F> {
        #[pin]
        inner: F,
        address: Option<Address>,
    }
}

impl<F> fmt::Debug for TagFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TagFuture").finish_non_exhaustive()
    }
}

impl<F, RB, E> Future for TagFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(address)) = (&mut result, this.address.take()) {
            response.extensions_mut().insert(BackendAddress(address));
        }
        Poll::Ready(result)
    }
}

/// `Http2Config` from the channel flags that the backends' connections take.
pub(crate) fn http2_config(args: &ChannelArgs) -> Http2Config {
    let mut config = Http2Config::new()
        .initial_stream_window_size(args.initial_stream_window_size)
        .initial_connection_window_size(args.initial_connection_window_size)
        .adaptive_window(args.http2_adaptive_window)
        .max_frame_size(args.max_frame_size);
    if let Some(size) = args.http2_max_header_list_size {
        config = config.max_header_list_size(size);
    }
    config
}
