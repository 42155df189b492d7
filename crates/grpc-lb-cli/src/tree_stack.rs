//! The call path of the tree policies (crate::tree_policy): instead of a
//! `grpc_lb::Channel`, a fail-fast layer over grpc-lb-balance's `Balance`
//! running the policy over the resolver's endpoints, each a reconnecting
//! HTTP/2 subchannel, shared through the same buffer the grpclb path uses.

use std::fmt;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use grpc_lb::balance::service::{Balance, ByConnectivity, HttpCalls};
use grpc_lb::balance::tree::EndpointAttributes;
use grpc_lb::core::{Connectivity, ConnectivityState, ResolveNow, Subchannel};
use grpc_lb::failfast::FailFast;
use grpc_lb::reconnect::{Reconnect, ReconnectConfig};
use grpc_lb::resolve::{Address, Endpoint, ResolverDiscover, ResolverStatus, UpdateStream};
use grpc_lb::service_config::ServiceConfig;
use serde_json::{json, Value};
use tokio::sync::watch;
use tower::buffer::Buffer;
use tower_service::Service;

use crate::grpclb::TagBackend;
use crate::options::ChannelArgs;
use crate::tree_policy::TreePolicy;
use crate::CliError;

type Body = tonic::body::Body;
type Request = http::Request<Body>;
type Connector = grpc_lb::connect::Http2Connector<Body, grpc_lb::AddressConnector>;
/// One endpoint: a reconnecting subchannel that names itself in responses.
type Backend = TagBackend<Reconnect<Connector, Address>>;
type MakeBackend = Box<dyn FnMut(&Endpoint) -> Backend + Send>;
type Discover = ResolverDiscover<UpdateStream, MakeBackend, Backend>;
/// While the policy is in TRANSIENT_FAILURE a call fails at once with its
/// error (unless --wait-for-ready), as the channel's picker does.
type Stack = FailFast<Balance<Discover, Request, ByConnectivity, HttpCalls>>;
type StackFuture = <Stack as Service<Request>>::Future;

/// The tree stack, shared by every worker through a buffer.
pub(crate) type TreeService = Buffer<Request, StackFuture>;

/// The response body of the tree stack.
pub(crate) type TreeBody = <Stack as Service<Request>>::Response;

/// A tree policy's stack and what the report says about it.
pub(crate) struct TreeClient {
    pub(crate) policy: TreePolicy,
    pub(crate) service: TreeService,
    /// The config in force (the resolver's first, else `--service-config`),
    /// for the retry and message-size layers.
    pub(crate) config: Option<Arc<ServiceConfig>>,
    connectivity: watch::Receiver<Connectivity>,
    resolver: watch::Receiver<ResolverStatus>,
    resolve_now: ResolveNow,
}

impl fmt::Debug for TreeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TreeClient")
            .field("policy", &self.policy.name())
            .finish_non_exhaustive()
    }
}

/// Builds the tree stack over the resolver's `updates` (inside the runtime);
/// `resolve_now` is the signal those updates were started with.
pub(crate) async fn build(
    args: &ChannelArgs,
    (updates, resolve_now): (UpdateStream, ResolveNow),
    policy: TreePolicy,
    in_force: Option<Arc<ServiceConfig>>,
    wait_for_ready: bool,
) -> Result<TreeClient, CliError> {
    let backoff = args.backoff()?;
    let connector = args.backend_connector();
    let reconnect = ReconnectConfig::default().backoff(backoff);
    let eager = matches!(policy, TreePolicy::RingHash(_));
    let make: MakeBackend = Box::new(move |endpoint: &Endpoint| {
        let mut backend = TagBackend::new(
            Reconnect::with_config(
                connector.clone(),
                endpoint.address.clone(),
                reconnect.clone(),
            ),
            endpoint.address.clone(),
        );
        if eager {
            Subchannel::<Request>::connect(&mut backend);
        }
        backend
    });
    let discover = ResolverDiscover::new(updates, make);
    let resolver = discover.status();
    let mut balance = Balance::new(discover, policy.build())
        .resolve_now(resolve_now.clone())
        // ring_hash hashes each endpoint's address as text, as grpc-go does,
        // so that every client builds the same ring.
        .describe_endpoints(|address: &Address| EndpointAttributes::named(address.to_string()))
        .subchannels()
        .http();
    if eager {
        let limit = args
            .connect_timeout_ms
            .map_or(WARM_UP_LIMIT, Duration::from_millis);
        warm_up(&mut balance, &resolver, limit).await;
    }
    let connectivity = balance.connectivity();
    let stack = FailFast::new(balance, connectivity.clone()).wait_for_ready(wait_for_ready);
    let service = Buffer::new(stack, args.max_waiting.max(1));
    Ok(TreeClient {
        policy,
        service,
        config: in_force,
        connectivity,
        resolver,
        resolve_now,
    })
}

/// The longest the ring_hash warm-up waits for the first connections,
/// without `--connect-timeout-ms` (gRPC's minimum connect timeout).
const WARM_UP_LIMIT: Duration = Duration::from_secs(20);

/// ring_hash only: runs the balancer's events, with no call made, until the
/// resolver's first endpoints have all left CONNECTING (each was told to
/// connect when it was made), or `limit` passes.
///
/// Why: `Balance` picks for readiness without the request, and a hashed
/// call whose endpoint is not READY yet goes to the endpoint reserved for
/// readiness (the policy connects the wanted one for the next call), where
/// grpc-go queues the call. With every endpoint connected first, each call
/// reaches its hash's endpoint from the first call on.
async fn warm_up(
    balance: &mut Balance<Discover, Request, ByConnectivity, HttpCalls>,
    resolver: &watch::Receiver<ResolverStatus>,
    limit: Duration,
) {
    let settled = std::future::poll_fn(|cx| {
        if let Poll::Ready(Err(_)) = balance.poll_events(cx) {
            // Discovery ended with no endpoints: the calls report it.
            return Poll::Ready(());
        }
        let status = resolver.borrow();
        let connected = status.resolved
            && balance.len() == status.endpoints
            && balance.endpoints().all(|(_, state)| {
                !matches!(
                    state,
                    ConnectivityState::Connecting | ConnectivityState::Idle
                )
            });
        if connected || status.last_error.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    if tokio::time::timeout(limit, settled).await.is_err() {
        tracing::warn!(
            ?limit,
            "ring_hash: not every endpoint connected before the calls start"
        );
    }
}

/// The flags the tree path cannot take, refused before anything is sent.
pub(crate) fn check_flags(args: &ChannelArgs) -> Result<(), CliError> {
    if args.tls {
        return Err(CliError::usage(
            "the tree policies run plaintext here: --tls is not supported with them",
        ));
    }
    if args.health_check.is_some() || args.outlier_detection.is_some() {
        return Err(CliError::usage(
            "--health-check and --outlier-detection do not apply to the tree policies",
        ));
    }
    args.backoff()?;
    Ok(())
}

impl TreeClient {
    /// The tree facts of the report: the policy's config, its state, the
    /// resolver's endpoints.
    pub(crate) fn json(&self) -> Value {
        let connectivity = self.connectivity.borrow().clone();
        let resolver = self.resolver.borrow().clone();
        json!({
            "policy": self.policy.name(),
            "config": self.policy.json(),
            "state": connectivity.state.as_str(),
            "last_error": connectivity.last_error.as_ref().map(|e| e.to_string()),
            "endpoints": resolver.order.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "resolver_error": resolver.last_error.as_ref().map(|e| e.to_string()),
            "re_resolutions": self.resolve_now.count(),
        })
    }
}
