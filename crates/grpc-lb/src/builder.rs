//! Building a channel from a target string.

use std::fmt;
use std::sync::Arc;

use grpc_lb_backoff::BackoffConfig;
use grpc_lb_balance::outlier::OutlierDetectionConfig;
use grpc_lb_balance::PolicyRegistry;
use grpc_lb_connect::http1::DEFAULT_MAX_CONNECTIONS;
use grpc_lb_connect::{
    BoxConnector, Http1Connector, Http1Pool, Http2Connection, Http2Connector, Io, KeepaliveConfig,
};
use grpc_lb_core::{BoxError, ResolveNow};
use grpc_lb_health::HealthCheck;
use grpc_lb_reconnect::{Reconnect, ReconnectConfig};
use grpc_lb_resolve::{Address, Endpoint, Registry, ResolveError, ResolverDiscover, Target};
use grpc_lb_service_config::ServiceConfig;
use http::uri::{Authority, Scheme};
use http_body::Body;
use tower_layer::{Identity, Layer, Stack};
use tower_service::Service;

use crate::channel::{Channel, ChannelOptions, DEFAULT_MAX_WAITING};
use crate::connector::AddressConnector;
use crate::error::{BuildError, Error};
use crate::idle::DEFAULT_IDLE_TIMEOUT;
use crate::settings::ConnectionSettings;
use crate::worker::{IdleMode, MakeHealth, Rebuild, StartHealth};

/// How a channel's subchannels are health-checked.
enum HealthSetup<S> {
    /// `Builder::health_check`: always, whatever the service config says.
    Fixed(StartHealth<S>),
    /// As the service config in force's `healthCheckConfig` says.
    FromConfig(MakeHealth<S>),
    /// This kind of channel cannot run the health watch.
    Unavailable,
}

/// Builds a [`Channel`] from a target such as `dns:///greeter.local:50051`.
///
/// Defaults: `pick_first` (gRPC's default policy), gRPC's connection backoff,
/// fail-fast, at most 1024 requests waiting for a connection, and the resolvers
/// and policies of [`Registry::with_defaults`] and
/// [`PolicyRegistry::with_defaults`]; plaintext HTTP/2 over
/// [`AddressConnector`] (TCP, Unix sockets), with the target's authority as
/// `:authority`; idle mode after 30 minutes without RPCs (grpc-go's default);
/// no health checking (unless the service config asks) and no outlier
/// detection.
///
/// tonic's `Endpoint` settings are here under tonic's names, with tonic's
/// defaults (`connect_timeout`, `tcp_keepalive`, `initial_stream_window_size`,
/// `user_agent`, ...: the "Connection settings" methods below), and
/// `docs/from-tonic.md` maps every `Endpoint` method.
///
/// # Middleware
///
/// [`layer`](Self::layer) wraps the built channel in your own tower
/// middleware, as `ServiceBuilder::layer` does; so do
/// [`concurrency_limit`](Self::concurrency_limit) and
/// [`rate_limit`](Self::rate_limit). [`build`](Self::build) then returns the
/// outermost service; without layers it returns the [`Channel`] itself
/// ([`GrpcChannel`](crate::GrpcChannel)).
///
/// # Transports
///
/// Every subchannel connects through the same stack, whatever the resolver and
/// the policy: the transport ([`AddressConnector`], or yours from
/// [`connector`](Self::connector)), then TLS if `tls` is set
/// (feature `tls`), then the HTTP/2 handshake (or the HTTP/1.1 pool of
/// [`build_http1`](Self::build_http1)).
///
/// The name in `:authority` and the name TLS checks certificates against come
/// from the target, never from the resolved addresses:
///
/// | target | `:authority` | TLS server name |
/// |---|---|---|
/// | `dns:///greeter.example:443` | `greeter.example:443` | `greeter.example` |
/// | `ipv4:10.0.0.1:443,10.0.0.2:443` | `10.0.0.1:443` | `10.0.0.1` (an IP SAN) |
/// | `unix:///run/greeter.sock` | `localhost` | `localhost` |
/// | `passthrough:///greeter.example:443` | `greeter.example:443` | `greeter.example` |
/// | `scheme://authority/endpoint` (custom) | `endpoint` | `endpoint`'s host |
///
/// [`authority`](Self::authority) overrides both (grpc-go's `WithAuthority`);
/// a name set on the `TlsConfig` overrides
/// the TLS name only.
///
/// # Examples
///
/// ```no_run
/// # #[cfg(feature = "tls")]
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use grpc_lb::{Channel, TlsConfig};
///
/// let ca = std::fs::read("ca.pem")?;
/// let channel = Channel::builder("ipv4:10.0.0.1:443,10.0.0.2:443")
///     .authority("greeter.example")          // checked on every endpoint
///     .tls(TlsConfig::new().with_root_certificates_pem(&ca)?)
///     .policy("round_robin")
///     .build()?;
/// # drop(channel);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Builder<L = Identity> {
    target: String,
    policy: String,
    policies: PolicyRegistry,
    resolvers: Registry,
    backoff: BackoffConfig,
    wait_for_ready: bool,
    max_waiting: usize,
    authority: Option<String>,
    connector: Option<BoxConnector<Address>>,
    #[cfg(feature = "tls")]
    tls: Option<grpc_lb_connect::tls::TlsConfig>,
    max_connections: usize,
    max_connections_per_subchannel: usize,
    service_config: Option<Arc<ServiceConfig>>,
    pub(crate) keepalive: KeepaliveConfig,
    health_check: Option<String>,
    outlier_detection: Option<OutlierDetectionConfig>,
    idle_timeout: std::time::Duration,
    /// The default deadline of every call ([`Builder::timeout`]).
    timeout: Option<std::time::Duration>,
    /// tonic's `Endpoint` settings (settings.rs).
    pub(crate) connection: ConnectionSettings,
    /// The user's middleware around the channel, outermost first added.
    layer: L,
}

impl<L> fmt::Debug for Builder<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("target", &self.target)
            .field("policy", &self.policy)
            .field("backoff", &self.backoff)
            .field("wait_for_ready", &self.wait_for_ready)
            .field("max_waiting", &self.max_waiting)
            .field("authority", &self.authority)
            .field("custom_connector", &self.connector.is_some())
            .field("service_config", &self.service_config.is_some())
            .field("keepalive", &self.keepalive)
            .field(
                "max_connections_per_subchannel",
                &self.max_connections_per_subchannel,
            )
            .field("health_check", &self.health_check)
            .field("outlier_detection", &self.outlier_detection)
            .field("idle_timeout", &self.idle_timeout)
            .field("timeout", &self.timeout)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
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
            authority: None,
            connector: None,
            #[cfg(feature = "tls")]
            tls: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_subchannel: 1,
            service_config: None,
            keepalive: KeepaliveConfig::new(),
            health_check: None,
            outlier_detection: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            timeout: None,
            connection: ConnectionSettings::new(),
            layer: Identity::new(),
        }
    }
}

impl<L> Builder<L> {
    /// Wraps the channel [`build`](Self::build) returns in `layer`, as
    /// `tower::ServiceBuilder::layer` does: the first layer added is the
    /// outermost. `build` then returns `layer`'s service, which any
    /// tonic-generated client takes as long as it is a `GrpcService` (a
    /// layer whose service is not `Clone` makes clients that cannot be
    /// cloned). The [`Channel`] under the layers keeps its state, events and
    /// counters; build it without layers to keep a handle on them, and wrap
    /// it yourself.
    ///
    /// ```
    /// use grpc_lb::{Channel, GrpcChannel};
    /// use tonic::service::interceptor::InterceptedService;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), grpc_lb::Error> {
    /// fn authorize(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    ///     request.metadata_mut().insert("authorization", "Bearer token".parse().unwrap());
    ///     Ok(request)
    /// }
    /// let authorize: fn(tonic::Request<()>) -> _ = authorize;
    /// let channel: InterceptedService<GrpcChannel, _> = Channel::builder("ipv4:127.0.0.1:50051")
    ///     .layer(tonic::service::InterceptorLayer::new(authorize))
    ///     .build()?;
    /// let client = grpc_lb_helloworld::proto::GreeterClient::new(channel);
    /// # drop(client);
    /// # Ok(())
    /// # }
    /// ```
    pub fn layer<T>(self, layer: T) -> Builder<Stack<T, L>> {
        let Builder {
            target,
            policy,
            policies,
            resolvers,
            backoff,
            wait_for_ready,
            max_waiting,
            authority,
            connector,
            #[cfg(feature = "tls")]
            tls,
            max_connections,
            max_connections_per_subchannel,
            service_config,
            keepalive,
            health_check,
            outlier_detection,
            idle_timeout,
            timeout,
            connection,
            layer: outer,
        } = self;
        Builder {
            target,
            policy,
            policies,
            resolvers,
            backoff,
            wait_for_ready,
            max_waiting,
            authority,
            connector,
            #[cfg(feature = "tls")]
            tls,
            max_connections,
            max_connections_per_subchannel,
            service_config,
            keepalive,
            health_check,
            outlier_detection,
            idle_timeout,
            timeout,
            connection,
            layer: Stack::new(layer, outer),
        }
    }

    /// Selects the load-balancing policy by name: the policy used while the
    /// service config in force (the resolver's, else
    /// [`service_config`](Self::service_config)'s) names none. A config's
    /// `loadBalancingConfig` overrides it, as a service config overrides
    /// grpc-go's default, `pick_first`.
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

    /// Sends this authority (`host[:port]`) as `:authority` and checks TLS
    /// certificates against its host, on every endpoint, instead of the
    /// target's (grpc-go's `WithAuthority`). Needed with TLS over `ipv4:` and
    /// `ipv6:` targets, whose authority is an IP address.
    ///
    /// ```
    /// let builder = grpc_lb::Channel::builder("ipv4:10.0.0.1:443,10.0.0.2:443")
    ///     .authority("greeter.example");
    /// # drop(builder);
    /// ```
    pub fn authority(mut self, authority: impl Into<String>) -> Self {
        self.authority = Some(authority.into());
        self
    }

    /// The default service config (grpc-go's `WithDefaultServiceConfig`): in
    /// force until the resolver gives a config, whenever the resolver says it
    /// has none, and when its first config is invalid. While in force, its
    /// `loadBalancingConfig` (the first registered policy) chooses the policy
    /// instead of [`policy`](Self::policy), its `healthCheckConfig` turns
    /// health checking on, and each method's `timeout` and `waitForReady`
    /// apply to its calls. A config from the resolver replaces it as a whole
    /// (nothing is merged). A config that names only unknown policies fails
    /// [`build`](Self::build) with [`BuildError::ServiceConfig`]. Its
    /// `retryPolicy` is applied by wrapping the channel in
    /// `grpc_lb_retry::RetryLayer`.
    ///
    /// ```
    /// # use grpc_lb::Channel;
    /// let config = r#"{"loadBalancingConfig": [{"round_robin": {}}],
    ///                  "methodConfig": [{"name": [{}], "timeout": "5s"}]}"#;
    /// let builder = Channel::builder("ipv4:127.0.0.1:50051").service_config(config.parse()?);
    /// # drop(builder);
    /// # Ok::<(), grpc_lb::service_config::ServiceConfigError>(())
    /// ```
    pub fn service_config(mut self, config: ServiceConfig) -> Self {
        self.service_config = Some(Arc::new(config));
        self
    }

    /// HTTP/2 keepalive for every connection of a gRPC channel (gRFC A8; off
    /// by default, as in grpc-go). A `too_many_pings` GOAWAY from any server
    /// doubles the time for all the channel's later connections. See
    /// [`KeepaliveConfig`] for the defaults and the 10 s minimum.
    ///
    /// ```
    /// use std::time::Duration;
    /// use grpc_lb::connect::KeepaliveConfig;
    ///
    /// let builder = grpc_lb::Channel::builder("dns:///greeter.example:50051").keepalive(
    ///     KeepaliveConfig::new()
    ///         .time(Duration::from_secs(30))
    ///         .timeout(Duration::from_secs(5))
    ///         .permit_without_calls(true),
    /// );
    /// # drop(builder);
    /// ```
    pub fn keepalive(mut self, config: KeepaliveConfig) -> Self {
        self.keepalive = config;
        self
    }

    /// Up to this many HTTP/2 connections per endpoint (gRFC A105
    /// `max_connections_per_subchannel`; default 1, capped at 10): when all
    /// of an endpoint's connections are at the server's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`, a call opens one more instead of
    /// waiting for a stream. See
    /// [`Http2Connector::with_max_connections`](grpc_lb_connect::Http2Connector::with_max_connections).
    ///
    /// ```
    /// let builder = grpc_lb::Channel::builder("dns:///greeter.example:50051")
    ///     .max_connections_per_subchannel(4);
    /// # drop(builder);
    /// ```
    pub fn max_connections_per_subchannel(mut self, max: usize) -> Self {
        self.max_connections_per_subchannel = max;
        self
    }

    /// Turns on client-side health checking (gRFC A17) of `service_name`
    /// (empty: the server as a whole), as a service config's
    /// `healthCheckConfig` does; this name wins over the config's, and
    /// checking stays on whatever configs the resolver sends.
    ///
    /// Every connection then watches `grpc.health.v1.Health/Watch`, and the
    /// policy sees its subchannel CONNECTING until the first answer, READY
    /// while the answer is SERVING and TRANSIENT_FAILURE (with the status as
    /// the last error) otherwise, so traffic moves to the healthy endpoints.
    /// A server without the health service (`UNIMPLEMENTED`) is used as if
    /// healthy, and logged at ERROR, as in grpc-go. A failed watch is retried
    /// after gRPC's connection backoff. `pick_first` ignores health, as in
    /// gRPC. Applies to [`build`](Self::build) (tonic) channels; the others
    /// have no gRPC client to watch with, and log a warning.
    ///
    /// ```
    /// let builder = grpc_lb::Channel::builder("ipv4:127.0.0.1:50051,127.0.0.1:50052")
    ///     .policy("round_robin")
    ///     .health_check("helloworld.Greeter");
    /// # drop(builder);
    /// ```
    pub fn health_check(mut self, service_name: impl Into<String>) -> Self {
        self.health_check = Some(service_name.into());
        self
    }

    /// Turns on outlier detection (gRFC A50) with `config`: the channel counts
    /// each endpoint's call outcomes, judges them every `config.interval`,
    /// and keeps ejected endpoints out of the picker (the policy sees them in
    /// TRANSIENT_FAILURE) until their ejection time is over.
    ///
    /// A call counts as a success when its response has HTTP status 200 and
    /// no `grpc-status` other than 0 in its headers, and as a failure when it
    /// fails or has another status; calls cancelled by their caller do not
    /// count. A status sent in trailers after a message is not seen (see
    /// [`ChannelStats`](crate::ChannelStats)).
    ///
    /// ```
    /// use grpc_lb::balance::outlier::{FailurePercentage, OutlierDetectionConfig};
    ///
    /// let builder = grpc_lb::Channel::builder("ipv4:127.0.0.1:50051,127.0.0.1:50052")
    ///     .policy("round_robin")
    ///     .outlier_detection(OutlierDetectionConfig {
    ///         failure_percentage: Some(FailurePercentage::default()),
    ///         ..Default::default()
    ///     });
    /// # drop(builder);
    /// ```
    pub fn outlier_detection(mut self, config: OutlierDetectionConfig) -> Self {
        self.outlier_detection = Some(config);
        self
    }

    /// Idle mode (grpc-go's `WithIdleTimeout`): after `timeout` with no call
    /// open and none ended, the channel closes its connections and its
    /// resolver and reports IDLE; the next call, or
    /// [`Channel::connect`](crate::Channel::connect), starts the resolver
    /// again and reconnects (the call waits meanwhile, as on a new channel). A
    /// streaming call counts as open until its response body ends. Default
    /// [`DEFAULT_IDLE_TIMEOUT`](crate::DEFAULT_IDLE_TIMEOUT), 30 minutes, as
    /// grpc-go; `Duration::ZERO` turns idle mode off.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = grpc_lb::Channel::builder("dns:///greeter.local:50051")
    ///     .idle_timeout(Duration::from_secs(5 * 60));
    /// # drop(builder);
    /// ```
    pub fn idle_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The target as given.
    pub(crate) fn target_str(&self) -> &str {
        &self.target
    }

    /// The service name health checking starts with, if it is on.
    /// A deadline for every call that has none sooner: its own
    /// `grpc-timeout` (tonic's `Request::set_timeout`) or its method's
    /// `timeout` in the service config win when sooner, as grpc-go takes the
    /// sooner of the caller's deadline and the config's. The deadline covers
    /// the whole call, from the wait for a connection to the end of the
    /// response body; at it the call fails with `DEADLINE_EXCEEDED` and its
    /// stream is cancelled. None by default.
    ///
    /// ```
    /// use std::time::Duration;
    /// use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // Nothing listens there; wait-for-ready calls wait, but not forever.
    /// let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    /// let channel = grpc_lb::Channel::builder(format!("ipv4:{dead}"))
    ///     .wait_for_ready(true)
    ///     .timeout(Duration::from_millis(200))
    ///     .build()?;
    /// let status = GreeterClient::new(channel).say_hello(HelloRequest::default()).await.unwrap_err();
    /// assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    /// # Ok(())
    /// # }
    /// ```
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn health_service(&self) -> Option<String> {
        self.health_check.clone().or_else(|| {
            let config = self.service_config.as_ref()?.health_check()?;
            Some(config.service_name().to_owned())
        })
    }

    /// Connects with TLS (feature `tls`): the certificate of every endpoint is
    /// checked against the target's host, or [`authority`](Self::authority),
    /// or the config's own server name; `:scheme` is `https`; ALPN `h2` is
    /// required.
    ///
    /// A handshake that fails (a certificate for another name, expired, or
    /// from an untrusted issuer; a plaintext server; a client certificate the
    /// server refuses) fails that connection attempt: the endpoint backs off
    /// like from any failed connection, and the channel reports the
    /// `TlsError` as its cause.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use grpc_lb::{Channel, TlsConfig};
    ///
    /// let tls = TlsConfig::new()
    ///     .with_root_certificates_pem(&std::fs::read("ca.pem")?)?
    ///     .with_client_identity_pem(&std::fs::read("client.pem")?, &std::fs::read("client.key")?)?;
    /// let channel = Channel::builder("dns:///greeter.example:443").tls(tls).build()?;
    /// # drop(channel);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: grpc_lb_connect::tls::TlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Connects every endpoint through this transport instead of
    /// [`AddressConnector`]: any `tower::Service<Address>` whose response is a
    /// byte stream (tokio's `AsyncRead + AsyncWrite`, hyper-util's model with
    /// `TokioIo`). TLS, if set, and HTTP run over the streams it returns, and
    /// the reconnect layer above backs off from its failures. Use it for
    /// proxies, socket options beyond the builder's own (`tcp_nodelay`,
    /// `tcp_keepalive*`, `local_address`, which apply to the default
    /// transport only), or a transport of your own. The HTTP/2 settings,
    /// the connect timeout and the user agent still apply above it.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use grpc_lb::resolve::Address;
    /// use grpc_lb::{AddressConnector, Channel};
    /// use tower::ServiceExt;
    ///
    /// // Every connection attempt is logged, then made as usual.
    /// let logging = AddressConnector::new().map_request(|address: Address| {
    ///     println!("connecting to {address}");
    ///     address
    /// });
    /// let channel = Channel::builder("dns:///greeter.example:50051")
    ///     .connector(logging)
    ///     .build()?;
    /// # drop(channel);
    /// # Ok(())
    /// # }
    /// ```
    pub fn connector<C>(mut self, connector: C) -> Self
    where
        C: Service<Address> + Clone + Send + Sync + 'static,
        C::Response: Io,
        C::Error: Into<BoxError>,
        C::Future: Send + 'static,
    {
        self.connector = Some(BoxConnector::new(connector));
        self
    }

    /// Builds the channel for tonic clients, and spawns its worker on the
    /// current tokio runtime.
    pub fn build(self) -> Result<L::Service, Error>
    where
        L: Layer<Channel<Http2Connection<tonic::body::Body>>>,
    {
        type Connection = Http2Connection<tonic::body::Body>;
        fn start(name: &str) -> StartHealth<Connection> {
            let check = HealthCheck::new(name);
            Arc::new(move |connection: &Connection| check.spawn(connection.clone()))
        }
        let health = match &self.health_check {
            Some(name) => HealthSetup::Fixed(start(name)),
            None => HealthSetup::FromConfig(Arc::new(start)),
        };
        self.build_h2(health)
    }

    /// The gRPC channel [`build`](Self::build) wraps in the layers.
    fn layered<S>(self, channel: Result<S, BuildError>) -> Result<L::Service, Error>
    where
        L: Layer<S>,
    {
        let layer = self.layer;
        Ok(layer.layer(channel?))
    }

    /// Builds the channel for requests with body type `B` (hyper or axum
    /// users), and spawns its worker on the current tokio runtime.
    pub fn build_for_body<B>(self) -> Result<L::Service, Error>
    where
        B: Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        L: Layer<Channel<Http2Connection<B>>>,
    {
        self.build_h2(HealthSetup::Unavailable)
    }

    fn build_h2<B>(self, health: HealthSetup<Http2Connection<B>>) -> Result<L::Service, Error>
    where
        B: Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        L: Layer<Channel<Http2Connection<B>>>,
    {
        let channel = self.channel_h2(health);
        self.layered(channel)
    }

    fn channel_h2<B>(
        &self,
        health: HealthSetup<Http2Connection<B>>,
    ) -> Result<Channel<Http2Connection<B>>, BuildError>
    where
        B: Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let (runtime, target, transport) = self.prepare(ALPN_H2)?;
        let user_agent = match &self.connection.user_agent {
            Some(Ok(value)) => Some(value.clone()),
            Some(Err(reason)) => return Err(BuildError::InvalidUserAgent(reason.clone())),
            None => None,
        };
        let mut connector = Http2Connector::<B>::new()
            .with_transport(transport.io)
            .with_scheme(transport.scheme)
            .with_keepalive(self.keepalive)
            .with_http2(self.connection.http2.clone())
            .with_connect_timeout(self.connection.connect_timeout)
            .with_user_agent(user_agent)
            .with_max_connections(self.max_connections_per_subchannel);
        if let Some(authority) = transport.authority {
            connector = connector.with_authority(authority);
        }
        self.spawn::<_, http::Request<B>>(runtime, &target, connector, health)
    }

    /// At most this many HTTP/1.1 connections, and so requests in flight, per
    /// endpoint, for channels of [`build_http1`](Self::build_http1) (default
    /// 32; at least 1). More requests wait for a connection to come free.
    pub fn max_connections_per_endpoint(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Builds a channel of HTTP/1.1 connection pools, one per endpoint, for
    /// REST backends (hyper and axum users), and spawns its worker on the
    /// current tokio runtime.
    ///
    /// The same resolvers, policies, reconnect and backoff serve it as a gRPC
    /// channel. Each endpoint's pool opens a connection per request in flight,
    /// up to [`max_connections_per_endpoint`](Self::max_connections_per_endpoint),
    /// and reuses each once its response body has been read to the end. An
    /// endpoint counts as READY while its connections are up; when a new
    /// connection fails or the last one closes it goes IDLE, and reconnecting
    /// backs off as for gRPC. With `tls`, ALPN offers `http/1.1`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), grpc_lb::core::BoxError> {
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Empty};
    /// use tower::{Service, ServiceExt};
    ///
    /// let mut channel = grpc_lb::Channel::builder("dns:///api.internal:8080")
    ///     .policy("round_robin")
    ///     .build_http1::<Empty<Bytes>>()?;
    /// let request = http::Request::get("/users/1").body(Empty::new())?;
    /// let response = channel.ready().await?.call(request).await?;
    /// let body = response.into_body().collect().await?.to_bytes();
    /// # drop(body);
    /// # Ok(())
    /// # }
    /// ```
    pub fn build_http1<B>(self) -> Result<L::Service, Error>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        L: Layer<Channel<Http1Pool<B>>>,
    {
        let channel = self.channel_http1();
        self.layered(channel)
    }

    fn channel_http1<B>(&self) -> Result<Channel<Http1Pool<B>>, BuildError>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let (runtime, target, transport) = self.prepare(ALPN_HTTP11)?;
        let mut connector = Http1Connector::<B>::new()
            .with_transport(transport.io)
            .with_scheme(transport.scheme)
            .with_max_connections(self.max_connections);
        if let Some(authority) = transport.authority {
            connector = connector.with_authority(authority);
        }
        self.spawn::<_, http::Request<B>>(runtime, &target, connector, HealthSetup::Unavailable)
    }

    /// What every kind of channel needs before its connector: the runtime to
    /// spawn the worker on, the parsed target, and the transport for `alpn`.
    fn prepare(
        &self,
        alpn: &[u8],
    ) -> Result<(tokio::runtime::Handle, Target, Transport), BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let target = self
            .resolvers
            .parse(&self.target)
            .map_err(|e| BuildError::Target(ResolveError::BadTarget(e)))?;
        let transport = self.transport(&target, alpn)?;
        Ok((runtime, target, transport))
    }

    /// The transport stack below HTTP: the connector, TLS if set, and the
    /// names to send and check. `alpn` matters only with TLS.
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    fn transport(&self, target: &Target, alpn: &[u8]) -> Result<Transport, BuildError> {
        let authority_text = self.authority.clone().unwrap_or_else(|| target.authority());
        let authority = match Authority::try_from(authority_text.as_str()) {
            Ok(authority) => Some(authority),
            // A target's authority that is no valid `host[:port]` (a custom
            // resolver's endpoint) leaves the address as `:authority`.
            Err(_) if self.authority.is_none() => None,
            Err(_) => return Err(BuildError::InvalidAuthority(authority_text)),
        };
        let io = self.connector.clone().unwrap_or_else(|| {
            BoxConnector::new(AddressConnector::with_tcp(self.connection.tcp.clone()))
        });
        // `origin` changes what is sent, not the name TLS checks.
        let (authority, origin_scheme) = match &self.connection.origin {
            Some(origin) => match (origin.scheme(), origin.authority()) {
                (Some(scheme), Some(sent)) => (Some(sent.clone()), Some(scheme.clone())),
                _ => return Err(BuildError::InvalidOrigin(origin.to_string())),
            },
            None => (authority, None),
        };
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let mut tls = tls.clone();
            if tls.server_name().is_none() {
                tls = tls
                    .with_server_name(host_of(&authority_text))
                    .map_err(BuildError::Tls)?;
            }
            if alpn != ALPN_H2 {
                tls = tls.with_alpn_protocols(vec![alpn.to_vec()]);
            }
            let io = grpc_lb_connect::tls::TlsConnector::new(tls, io);
            return Ok(Transport {
                io: BoxConnector::new(io),
                authority,
                scheme: origin_scheme.unwrap_or(Scheme::HTTPS),
            });
        }
        Ok(Transport {
            io,
            authority,
            scheme: origin_scheme.unwrap_or(Scheme::HTTP),
        })
    }

    /// Builds the discovery of subchannels over `connector`, and spawns the
    /// channel's worker.
    fn spawn<C, Req>(
        &self,
        runtime: tokio::runtime::Handle,
        target: &Target,
        connector: C,
        health: HealthSetup<C::Response>,
    ) -> Result<Channel<C::Response>, BuildError>
    where
        C: Service<Address> + Clone + Send + Unpin + 'static,
        C::Error: Into<BoxError>,
        C::Future: Send,
        C::Response: Service<Req> + Clone + Send + Sync + Unpin + 'static,
        <C::Response as Service<Req>>::Error: Into<BoxError>,
        Req: 'static,
    {
        let chosen = match &self.service_config {
            Some(config) => {
                crate::config::choose(config, &self.policies)
                    .map_err(BuildError::ServiceConfig)?
                    .policy
            }
            None => None,
        };
        let policy_name = chosen.as_deref().unwrap_or(self.policy.as_str());
        let policy = self
            .policies
            .build(policy_name)
            .map_err(BuildError::Policy)?;
        let resolve_now = ResolveNow::new();
        let updates = self
            .resolvers
            .resolve_target(target, resolve_now.clone())
            .map_err(BuildError::Target)?;
        let channel_id = grpc_lb_core::next_channelz_id();
        let config = ReconnectConfig::default()
            .backoff(self.backoff)
            .resolve_now(resolve_now.clone())
            .channel_id(channel_id);
        // One function makes every discovery of this channel, so that idle
        // mode can start the resolver again with the same type of Discover.
        let make_discover = move |updates| {
            let connector = connector.clone();
            let config = config.clone();
            ResolverDiscover::new(updates, move |endpoint: &Endpoint| {
                Reconnect::with_config(connector.clone(), endpoint.address.clone(), config.clone())
            })
        };
        let discover = make_discover.clone()(updates);
        let idle = (!self.idle_timeout.is_zero()).then(|| {
            let resolvers = self.resolvers.clone();
            let policies = self.policies.clone();
            let policy_name = policy_name.to_owned();
            let target = target.clone();
            let resolve_now = resolve_now.clone();
            let rebuild: Rebuild<_> = Box::new(move || {
                let updates = resolvers.resolve_target(&target, resolve_now.clone())?;
                let discover = make_discover(updates);
                let status = discover.status();
                let policy = policies.build(&policy_name)?;
                Ok((discover, Some(status), policy))
            });
            IdleMode::new(self.idle_timeout, rebuild)
        });
        let options = ChannelOptions {
            wait_for_ready: self.wait_for_ready,
            max_waiting: self.max_waiting,
            resolve_now,
            resolver_status: Some(discover.status()),
            channel_id,
            service_config: self.service_config.clone(),
            policies: Some(self.policies.clone()),
            outlier_detection: self.outlier_detection.clone(),
            timeout: self.timeout,
        };
        if matches!(health, HealthSetup::Unavailable) {
            if let Some(service) = self.health_service() {
                tracing::warn!(
                    service,
                    "[Channel #{channel_id}] health checking needs a tonic channel (Builder::build); not checking"
                );
            }
        }
        tracing::info!(
            "[Channel #{}] Channel created for target {:?} with policy {}",
            options.channel_id,
            self.target,
            policy.name()
        );
        let (channel, mut worker) =
            Channel::pair_with_idle::<_, _, _, _, Req>(discover, policy, options, idle);
        // A service config naming no policy leaves the choice to `policy`, as
        // grpc-go's leaves it to its default, pick_first.
        worker.set_fallback_policy(self.policy.clone());
        match health {
            HealthSetup::Fixed(start) => worker.set_health(start),
            HealthSetup::FromConfig(make) => worker.set_make_health(make),
            HealthSetup::Unavailable => {}
        }
        runtime.spawn(worker);
        Ok(channel)
    }
}

const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

struct Transport {
    io: BoxConnector<Address>,
    authority: Option<Authority>,
    scheme: Scheme,
}

/// The host of an authority: `greeter.example` of `greeter.example:443`,
/// `::1` of `[::1]:443`.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(host, _)| host);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_size_is_max_waiting_with_tonics_default() {
        let builder = Builder::new("ipv4:127.0.0.1:1");
        assert_eq!(builder.max_waiting, 1024, "tonic's DEFAULT_BUFFER_SIZE");
        let builder = builder.buffer_size(16);
        assert_eq!(builder.max_waiting, 16);
        assert_eq!(builder.buffer_size(None).max_waiting, 16);
    }

    #[test]
    fn host_of_strips_the_port_and_brackets() {
        assert_eq!(host_of("greeter.example:443"), "greeter.example");
        assert_eq!(host_of("greeter.example"), "greeter.example");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("10.0.0.1:443"), "10.0.0.1");
        assert_eq!(host_of("::1"), "::1");
    }
}
