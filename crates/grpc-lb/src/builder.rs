//! Building a channel from a target string.

use std::fmt;

use grpc_lb_backoff::BackoffConfig;
use grpc_lb_balance::{PolicyRegistry, UnknownPolicy};
use grpc_lb_connect::{Http2Connection, Http2Connector};
use grpc_lb_core::{BoxError, ResolveNow};
use grpc_lb_reconnect::{Reconnect, ReconnectConfig};
use grpc_lb_resolve::{Endpoint, Registry, ResolveError, ResolverDiscover};
use http::uri::Authority;
use http_body::Body;

use crate::channel::{Channel, ChannelOptions, DEFAULT_MAX_WAITING};
use crate::connector::SocketConnector;

/// Builds a [`Channel`] from a target such as `dns:///greeter.local:50051`.
///
/// Defaults: `pick_first` (gRPC's default policy), gRPC's connection backoff,
/// fail-fast, at most 1024 requests waiting for a connection, and the resolvers
/// and policies of [`Registry::with_defaults`] and
/// [`PolicyRegistry::with_defaults`].
#[derive(Clone)]
pub struct Builder {
    target: String,
    policy: String,
    policies: PolicyRegistry,
    resolvers: Registry,
    backoff: BackoffConfig,
    wait_for_ready: bool,
    max_waiting: usize,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("target", &self.target)
            .field("policy", &self.policy)
            .field("backoff", &self.backoff)
            .field("wait_for_ready", &self.wait_for_ready)
            .field("max_waiting", &self.max_waiting)
            .finish()
    }
}

/// Why a channel could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// The target is malformed or has no resolver.
    Target(ResolveError),
    /// No policy of that name is registered.
    Policy(UnknownPolicy),
    /// No tokio runtime to run the channel's worker on.
    NoRuntime,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Target(error) => error.fmt(f),
            BuildError::Policy(error) => error.fmt(f),
            BuildError::NoRuntime => {
                f.pad("a channel must be built inside a tokio runtime, which runs its worker")
            }
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Target(error) => Some(error),
            BuildError::Policy(error) => Some(error),
            BuildError::NoRuntime => None,
        }
    }
}

impl Channel<Http2Connection<tonic::body::Body>> {
    /// Starts building a channel to `target`.
    pub fn builder(target: impl Into<String>) -> Builder {
        Builder::new(target)
    }
}

impl Builder {
    /// A builder for `target`, with the defaults above.
    pub fn new(target: impl Into<String>) -> Self {
        Builder {
            target: target.into(),
            policy: "pick_first".into(),
            policies: PolicyRegistry::with_defaults(),
            resolvers: Registry::with_defaults(),
            backoff: BackoffConfig::default(),
            wait_for_ready: false,
            max_waiting: DEFAULT_MAX_WAITING,
        }
    }

    /// Selects the load-balancing policy by name.
    pub fn policy(mut self, name: impl Into<String>) -> Self {
        self.policy = name.into();
        self
    }

    /// Uses these policies (to add your own).
    pub fn policy_registry(mut self, policies: PolicyRegistry) -> Self {
        self.policies = policies;
        self
    }

    /// Uses these resolvers (to add your own schemes).
    pub fn resolver_registry(mut self, resolvers: Registry) -> Self {
        self.resolvers = resolvers;
        self
    }

    /// The subchannels' connection backoff.
    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }

    /// Whether requests wait for ready by default.
    pub fn wait_for_ready(mut self, enabled: bool) -> Self {
        self.wait_for_ready = enabled;
        self
    }

    /// How many requests may wait for a connection at once.
    pub fn max_waiting(mut self, max: usize) -> Self {
        self.max_waiting = max;
        self
    }

    /// Builds the channel for tonic clients, and spawns its worker on the
    /// current tokio runtime.
    pub fn build(self) -> Result<Channel<Http2Connection<tonic::body::Body>>, BuildError> {
        self.build_for_body::<tonic::body::Body>()
    }

    /// Builds the channel for requests with body type `B` (hyper or axum
    /// users), and spawns its worker on the current tokio runtime.
    pub fn build_for_body<B>(self) -> Result<Channel<Http2Connection<B>>, BuildError>
    where
        B: Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let target = self
            .resolvers
            .parse(&self.target)
            .map_err(|e| BuildError::Target(ResolveError::BadTarget(e)))?;
        let policy = self
            .policies
            .build(&self.policy)
            .map_err(BuildError::Policy)?;
        let resolve_now = ResolveNow::new();
        let updates = self
            .resolvers
            .resolve_target(&target, resolve_now.clone())
            .map_err(BuildError::Target)?;

        let mut connector = Http2Connector::<B>::new();
        if let Ok(authority) = Authority::try_from(target.authority().as_str()) {
            connector = connector.with_authority(authority);
        }
        let connector = SocketConnector::new(connector);
        let channel_id = grpc_lb_core::next_channelz_id();
        let config = ReconnectConfig::default()
            .backoff(self.backoff)
            .resolve_now(resolve_now.clone())
            .channel_id(channel_id);
        let discover = ResolverDiscover::new(updates, move |endpoint: &Endpoint| {
            Reconnect::with_config(connector.clone(), endpoint.address.clone(), config.clone())
        });
        let options = ChannelOptions {
            wait_for_ready: self.wait_for_ready,
            max_waiting: self.max_waiting,
            resolve_now,
            resolver_status: Some(discover.status()),
            channel_id,
            service_config: None,
        };
        tracing::info!(
            "[Channel #{}] Channel created for target {:?} with policy {}",
            options.channel_id,
            self.target,
            policy.name()
        );
        let (channel, worker) =
            Channel::pair::<_, _, _, _, http::Request<B>>(discover, policy, options);
        runtime.spawn(worker);
        Ok(channel)
    }
}
