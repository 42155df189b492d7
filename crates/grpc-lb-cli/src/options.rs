//! The channel flags shared by `call` and `watch` (one clap `Args` struct),
//! each named after the library's setting and defaulting to the library's
//! default, and building a [`grpc_lb::Channel`] from them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args};
use grpc_lb::backoff::BackoffConfig;
use grpc_lb::balance::outlier::OutlierDetectionConfig;
use grpc_lb::balance::PolicyRegistry;
use grpc_lb::connect::KeepaliveConfig;
use grpc_lb::connect::{Http2Connector, TcpConnector};
use grpc_lb::service_config::{ServiceConfig, OUTLIER_DETECTION};
use grpc_lb::{AddressConnector, BuildError, Channel, TlsConfig, TlsError};
use grpc_lb_grpclb::GrpclbConfig;
use serde_json::{json, Value};

use crate::channel::{Client, GrpcChannel};
use crate::tree_policy::{TreePolicy, TreePolicyError};

/// The stack `call` runs instead of the channel.
enum Path {
    Grpclb(GrpclbConfig),
    Tree(TreePolicy),
}
use crate::CliError;

/// What `--policy` takes: the default registry's policies, and grpclb and
/// the tree policies (`call` only).
const POLICY_FLAG: [&str; 9] = [
    "pick_first",
    "round_robin",
    "p2c",
    "least_request",
    crate::grpclb::GRPCLB,
    crate::tree_policy::NAMES[0],
    crate::tree_policy::NAMES[1],
    crate::tree_policy::NAMES[2],
    crate::tree_policy::NAMES[3],
];

/// How to build the channel: every setting of `grpc_lb::Builder` (and of the
/// retry and message-size layers the tool puts around it).
#[derive(Debug, Clone, Args)]
pub(crate) struct ChannelArgs {
    /// Load-balancing policy (used while the service config in force names
    /// none); grpclb (`call` only) balances with a grpclb balancer;
    /// ring_hash, weighted_round_robin and least_request_experimental
    /// (`call` only) run the policy tree.
    #[arg(long, default_value = "pick_first", value_parser = POLICY_FLAG)]
    pub(crate) policy: String,

    /// ring_hash: the request header whose value is hashed to pick the
    /// endpoint (requestHashHeader, gRFC A76); send it with `-H 'NAME: value'`.
    #[arg(long, value_name = "NAME")]
    pub(crate) ring_hash_header: Option<String>,

    /// grpclb: a balancer's HOST:PORT, instead of the DNS SRV records
    /// `_grpclb._tcp.<host>` (repeatable; for ipv4:, ipv6: and other
    /// targets without SRV records).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) grpclb_balancer: Vec<String>,

    /// grpclb: how long to wait for the balancer's first server list before
    /// falling back to the resolver's backends, in ms (default: grpc-go's
    /// 10 000).
    #[arg(long, value_name = "MS")]
    pub(crate) grpclb_fallback_timeout_ms: Option<u64>,

    /// The default service config (JSON), applied in full: policy, outlier
    /// detection, health checking, each method's timeout, waitForReady,
    /// message sizes and retryPolicy, and retryThrottling. A config from the
    /// resolver replaces it.
    #[arg(long, value_name = "JSON")]
    pub(crate) service_config: Option<String>,

    /// Connection backoff: the delay after the first failure, in ms.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub(crate) backoff_base_ms: u64,

    /// Connection backoff: the factor by which the delay grows.
    #[arg(long, value_name = "M", default_value_t = 1.6)]
    pub(crate) backoff_multiplier: f64,

    /// Connection backoff: the relative random spread of each delay (0 to 1).
    #[arg(long, value_name = "J", default_value_t = 0.2)]
    pub(crate) backoff_jitter: f64,

    /// Connection backoff: the cap on the delay, in ms.
    #[arg(long, value_name = "MS", default_value_t = 120_000)]
    pub(crate) backoff_max_ms: u64,

    /// The least time one connection attempt is given, in ms.
    #[arg(long, value_name = "MS", default_value_t = 20_000)]
    pub(crate) min_connect_timeout_ms: u64,

    /// Bounds each connection attempt up to the server's SETTINGS (TLS
    /// included), in ms (default: none; min-connect-timeout still applies).
    #[arg(long, value_name = "MS")]
    pub(crate) connect_timeout_ms: Option<u64>,

    /// HTTP/2 keepalive: a PING after this long without frames, in ms
    /// (default: off; at least 10 000, gRFC A8).
    #[arg(long, value_name = "MS", alias = "http2-keep-alive-interval-ms")]
    pub(crate) keepalive_time_ms: Option<u64>,

    /// HTTP/2 keepalive: how long a PING may go unanswered, in ms.
    #[arg(long, value_name = "MS", alias = "keep-alive-timeout-ms",
          default_value_t = KeepaliveConfig::DEFAULT_TIMEOUT.as_millis() as u64)]
    pub(crate) keepalive_timeout_ms: u64,

    /// HTTP/2 keepalive: PING connections with no call open too.
    #[arg(long, alias = "keep-alive-while-idle")]
    pub(crate) keepalive_permit_without_calls: bool,

    /// Idle mode: close connections after this long without calls, in ms;
    /// 0 turns it off.
    #[arg(long, value_name = "MS",
          default_value_t = grpc_lb::DEFAULT_IDLE_TIMEOUT.as_millis() as u64)]
    pub(crate) idle_timeout_ms: u64,

    /// Client-side health checking (gRFC A17) of this service ("" for the
    /// server as a whole) over grpc.health.v1.Health/Watch.
    #[arg(long, value_name = "SERVICE")]
    pub(crate) health_check: Option<String>,

    /// Outlier detection (gRFC A50): the JSON config of
    /// outlier_detection_experimental, without childPolicy, e.g.
    /// '{"interval":"1s","failurePercentageEjection":{}}'.
    #[arg(long, value_name = "JSON")]
    pub(crate) outlier_detection: Option<String>,

    /// How many calls may wait for a connection at once; more fail with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, value_name = "N", alias = "buffer-size", default_value_t = 1024)]
    pub(crate) max_waiting: usize,

    /// Up to this many HTTP/2 connections per endpoint (gRFC A105): one
    /// more opens when every one is at the server's
    /// SETTINGS_MAX_CONCURRENT_STREAMS (1 to 10).
    #[arg(long, value_name = "N", alias = "connections", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=10))]
    pub(crate) max_connections_per_subchannel: u64,

    /// HTTP/2 stream-level flow-control window, in bytes (default: hyper's,
    /// 2 MiB).
    #[arg(long, value_name = "BYTES")]
    pub(crate) initial_stream_window_size: Option<u32>,

    /// HTTP/2 connection-level flow-control window, in bytes (default:
    /// hyper's, 5 MiB).
    #[arg(long, value_name = "BYTES")]
    pub(crate) initial_connection_window_size: Option<u32>,

    /// HTTP/2 adaptive flow control (BDP), overriding both windows.
    #[arg(long)]
    pub(crate) http2_adaptive_window: bool,

    /// HTTP/2 SETTINGS_MAX_FRAME_SIZE, in bytes (default: hyper's, 16 KiB).
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_frame_size: Option<u32>,

    /// HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE, in bytes (default: hyper's,
    /// 16 KiB).
    #[arg(long, value_name = "BYTES")]
    pub(crate) http2_max_header_list_size: Option<u32>,

    /// TCP_NODELAY on every TCP connection.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
    pub(crate) tcp_nodelay: bool,

    /// TCP keepalive probes after this long idle, in ms (default: off).
    #[arg(long, value_name = "MS")]
    pub(crate) tcp_keepalive_ms: Option<u64>,

    /// Connect from this local IP address.
    #[arg(long, value_name = "IP")]
    pub(crate) local_address: Option<IpAddr>,

    /// Sent as `user-agent`, followed by grpc-lb's own.
    #[arg(long, value_name = "UA")]
    pub(crate) user_agent: Option<String>,

    /// The authority (TLS server name, `:authority`) to use instead of the
    /// target's.
    #[arg(long, value_name = "NAME")]
    pub(crate) authority: Option<String>,

    /// Send this URI's scheme and authority as `:scheme` and `:authority`
    /// (TLS still checks the target's name, or --authority).
    #[arg(long, value_name = "URI")]
    pub(crate) origin: Option<http::Uri>,

    /// Retry only transparently (RPCs that never reached a server), ignoring
    /// every retryPolicy (grpc-go's WithDisableRetry).
    #[arg(long)]
    pub(crate) disable_retry: bool,

    /// The channel's largest request message, in bytes (default: 2 GiB - 1;
    /// the smaller wins against maxRequestMessageBytes).
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_send_message_size: Option<usize>,

    /// The channel's largest response message, in bytes (default: 4 MiB;
    /// the smaller wins against maxResponseMessageBytes).
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_receive_message_size: Option<usize>,

    /// Connect with TLS (rustls); servers are verified against --ca-cert, or
    /// the system's root certificates without it.
    #[arg(long)]
    pub(crate) tls: bool,

    /// CA certificate (PEM) to verify servers with (needs --tls).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,

    /// Client certificate chain (PEM) for mutual TLS (with --client-key).
    #[arg(long, value_name = "FILE")]
    pub(crate) client_cert: Option<PathBuf>,

    /// Client private key (PEM) for mutual TLS (with --client-cert).
    #[arg(long, value_name = "FILE")]
    pub(crate) client_key: Option<PathBuf>,
}

/// What the call path around the channel needs from the flags.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StackSettings {
    pub(crate) disable_retry: bool,
    pub(crate) max_send: Option<usize>,
    pub(crate) max_receive: Option<usize>,
}

/// The call path's client (a channel, or a grpclb stack), and what the flags
/// gave it.
#[derive(Debug)]
pub(crate) struct BuiltClient {
    pub(crate) client: Client,
    /// `--service-config`, parsed.
    pub(crate) default_config: Option<ServiceConfig>,
    /// The settings given to the builder, as the JSON reports them.
    pub(crate) options: Value,
    pub(crate) stack: StackSettings,
}

/// The channel, and what the flags gave it.
#[derive(Debug)]
pub(crate) struct Built {
    pub(crate) channel: GrpcChannel,
    /// `--service-config`, parsed.
    pub(crate) default_config: Option<ServiceConfig>,
    /// The settings given to the builder, as the JSON reports them.
    pub(crate) options: Value,
    pub(crate) stack: StackSettings,
}

impl ChannelArgs {
    /// The service config from `--service-config`, validated by the same
    /// parser the library uses.
    fn service_config(&self) -> Result<Option<ServiceConfig>, CliError> {
        let Some(json) = &self.service_config else {
            return Ok(None);
        };
        let config = ServiceConfig::from_json(json)
            .map_err(|error| CliError::usage(format!("--service-config: {error}")))?;
        Ok(Some(config))
    }

    /// The backoff from the flags, validated.
    pub(crate) fn backoff(&self) -> Result<BackoffConfig, CliError> {
        BackoffConfig::try_new(
            Duration::from_millis(self.backoff_base_ms),
            self.backoff_multiplier,
            self.backoff_jitter,
            Duration::from_millis(self.backoff_max_ms),
            Duration::from_millis(self.min_connect_timeout_ms),
        )
        .map_err(|error| CliError::usage(format!("bad backoff flags: {error}")))
    }

    pub(crate) fn keepalive(&self) -> KeepaliveConfig {
        let mut keepalive = KeepaliveConfig::new()
            .timeout(Duration::from_millis(self.keepalive_timeout_ms))
            .permit_without_calls(self.keepalive_permit_without_calls);
        if let Some(ms) = self.keepalive_time_ms {
            keepalive = keepalive.time(Duration::from_millis(ms));
        }
        keepalive
    }

    /// `--outlier-detection`, read by the service config's own parser as the
    /// config of an `outlier_detection_experimental` entry.
    fn outlier_detection(&self) -> Result<Option<OutlierDetectionConfig>, CliError> {
        let Some(text) = &self.outlier_detection else {
            return Ok(None);
        };
        let usage = |why: String| CliError::usage(format!("--outlier-detection: {why}"));
        let mut value: Value =
            serde_json::from_str(text).map_err(|e| usage(format!("not JSON: {e}")))?;
        let Some(object) = value.as_object_mut() else {
            return Err(usage("expected a JSON object".to_owned()));
        };
        object
            .entry("childPolicy")
            .or_insert_with(|| json!([{"pick_first": {}}]));
        let wrapped = json!({"loadBalancingConfig": [{OUTLIER_DETECTION: value}]});
        let config = ServiceConfig::from_value(&wrapped).map_err(|e| usage(e.to_string()))?;
        let policy = config
            .load_balancing_config()
            .first()
            .and_then(|entry| entry.outlier_detection())
            .ok_or_else(|| usage("not an outlier detection config".to_owned()))?;
        Ok(Some(grpc_lb::outlier_detection_config(policy)))
    }

    /// The TLS settings from the flags: `--ca-cert` or the system's roots,
    /// and a client identity when both `--client-cert` and `--client-key` are
    /// given.
    fn tls_config(&self) -> Result<Option<TlsConfig>, CliError> {
        let needs_tls =
            self.ca_cert.is_some() || self.client_cert.is_some() || self.client_key.is_some();
        if !self.tls {
            if needs_tls {
                return Err(CliError::usage(
                    "--ca-cert, --client-cert and --client-key need --tls",
                ));
            }
            return Ok(None);
        }
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path)
                .map_err(|error| CliError::usage(format!("{flag} {}: {error}", path.display())))
        };
        let tls_error = |flag: &str, error: TlsError| CliError::usage(format!("{flag}: {error}"));
        let mut config = TlsConfig::new();
        config = match &self.ca_cert {
            Some(path) => config
                .with_root_certificates_pem(&read("--ca-cert", path)?)
                .map_err(|e| tls_error("--ca-cert", e))?,
            None => config
                .with_native_roots()
                .map_err(|e| tls_error("--tls (system root certificates)", e))?,
        };
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                config = config
                    .with_client_identity_pem(
                        &read("--client-cert", cert)?,
                        &read("--client-key", key)?,
                    )
                    .map_err(|e| tls_error("--client-cert/--client-key", e))?;
            }
            (None, None) => {}
            _ => {
                return Err(CliError::usage(
                    "--client-cert and --client-key go together",
                ))
            }
        }
        Ok(Some(config))
    }

    /// The grpclb config, when `--service-config` selects grpclb, or
    /// `--policy grpclb` does while it names no policy.
    fn grpclb(
        &self,
        default_config: Option<&ServiceConfig>,
    ) -> Result<Option<GrpclbConfig>, CliError> {
        if let Some(config) = default_config {
            let selected = crate::grpclb::selected(config)
                .map_err(|error| CliError::usage(format!("--service-config: grpclb: {error}")))?;
            if let Some(grpclb) = selected {
                return Ok(Some(grpclb));
            }
            if crate::in_force::names_a_policy(config) {
                return Ok(None);
            }
        }
        Ok((self.policy == crate::grpclb::GRPCLB).then(GrpclbConfig::default))
    }

    /// The tree policy, when `--service-config` selects one, or `--policy`
    /// names one while the config names no policy.
    fn tree_policy(
        &self,
        default_config: Option<&ServiceConfig>,
    ) -> Result<Option<TreePolicy>, CliError> {
        let usage = |error: TreePolicyError| CliError::usage(format!("--service-config: {error}"));
        if let Some(config) = default_config {
            if let Some(policy) = crate::tree_policy::selected(config).map_err(usage)? {
                return Ok(Some(policy));
            }
            if crate::in_force::names_a_policy(config) {
                return Ok(None);
            }
        }
        crate::tree_policy::by_name(&self.policy)
            .map_err(|error| CliError::usage(format!("--policy {}: {error}", self.policy)))
    }

    /// `--ring-hash-header` applied to the tree policy in force.
    fn with_hash_header(&self, policy: TreePolicy) -> Result<TreePolicy, CliError> {
        policy
            .with_hash_header(self.ring_hash_header.as_deref())
            .map_err(|error| CliError::usage(error.to_string()))
    }

    /// The client of `call`: the grpclb stack when grpclb is selected, a
    /// tree policy's stack when one is, else the channel of
    /// [`build`](Self::build).
    pub(crate) async fn build_client(
        &self,
        target: &str,
        wait_for_ready: bool,
    ) -> Result<BuiltClient, CliError> {
        let default_config = self.service_config()?;
        let in_default = default_config.clone().map(std::sync::Arc::new);
        let mut chosen = match self.grpclb(default_config.as_ref())? {
            Some(grpclb) => Some((Path::Grpclb(grpclb), in_default.clone(), None)),
            None => self
                .tree_policy(default_config.as_ref())?
                .map(|tree| (Path::Tree(tree), in_default.clone(), None)),
        };
        let resolve_now = grpc_lb::core::ResolveNow::new();
        if chosen.is_none() && crate::grpclb::is_dns(target) {
            // The flags are checked before anything is sent.
            self.check_for_channel(default_config.as_ref(), true)?;
            // The resolver's config (a TXT record) may select grpclb or a
            // tree policy: look at its first resolution, and go on with that
            // stream if so.
            let (parsed, updates) = crate::grpclb::resolve_with(target, resolve_now.clone())?;
            let (config, updates) = crate::grpclb::peek_config(updates).await;
            if let Some(config) = config {
                // An entry the policy cannot read is passed over, as an
                // unusable resolver config is.
                let path = match crate::grpclb::selected(&config) {
                    Ok(Some(grpclb)) => Some(Path::Grpclb(grpclb)),
                    _ => match crate::tree_policy::selected(&config) {
                        Ok(Some(tree)) => Some(Path::Tree(tree)),
                        _ => None,
                    },
                };
                if let Some(path) = path {
                    chosen = Some((path, Some(config), Some((parsed, updates))));
                }
            }
        }
        let Some((path, in_force, resolved)) = chosen else {
            if !self.grpclb_balancer.is_empty() || self.grpclb_fallback_timeout_ms.is_some() {
                return Err(CliError::usage(
                    "--grpclb-balancer and --grpclb-fallback-timeout-ms need grpclb \
                     (--policy grpclb, or a --service-config selecting it)",
                ));
            }
            if self.ring_hash_header.is_some() {
                return Err(CliError::usage(
                    "--ring-hash-header needs ring_hash (--policy ring_hash, or a \
                     --service-config selecting it)",
                ));
            }
            let built = self.build_channel(target, wait_for_ready, true)?;
            return Ok(BuiltClient {
                client: Client::Channel(built.channel),
                default_config: built.default_config,
                options: built.options,
                stack: built.stack,
            });
        };
        let grpclb = match path {
            Path::Grpclb(grpclb) => grpclb,
            Path::Tree(tree) => {
                let tree = self.with_hash_header(tree)?;
                crate::tree_stack::check_flags(self)?;
                let updates = match resolved {
                    Some((_, updates)) => updates,
                    None => crate::grpclb::resolve_with(target, resolve_now.clone())?.1,
                };
                let client = crate::tree_stack::build(
                    self,
                    (updates, resolve_now),
                    tree,
                    in_force,
                    wait_for_ready,
                )
                .await?;
                let mut options = self.options_json(&self.keepalive(), None);
                options["ring_hash_header"] = json!(self.ring_hash_header);
                return Ok(BuiltClient {
                    client: Client::Tree(std::sync::Arc::new(client)),
                    default_config,
                    options,
                    stack: self.stack_settings(),
                });
            }
        };
        if self.ring_hash_header.is_some() {
            return Err(CliError::usage(
                "--ring-hash-header needs ring_hash, but the policy in force is grpclb",
            ));
        }
        crate::grpclb::check_flags(self)?;
        let resolved = match resolved {
            Some(resolved) => resolved,
            None => crate::grpclb::resolve(target)?,
        };
        let client = crate::grpclb::build(self, resolved, grpclb, in_force, wait_for_ready).await?;
        let mut options = self.options_json(&self.keepalive(), None);
        options["grpclb_balancer"] = json!(self.grpclb_balancer);
        options["grpclb_fallback_timeout_ms"] = json!(self.grpclb_fallback_timeout_ms);
        Ok(BuiltClient {
            client: Client::Grpclb(std::sync::Arc::new(client)),
            default_config,
            options,
            stack: self.stack_settings(),
        })
    }

    fn stack_settings(&self) -> StackSettings {
        StackSettings {
            disable_retry: self.disable_retry,
            max_send: self.max_send_message_size,
            max_receive: self.max_receive_message_size,
        }
    }

    /// The connector of a grpclb target's backends, from the flags that
    /// apply to one HTTP/2 connection.
    pub(crate) fn backend_connector(&self) -> Http2Connector<tonic::body::Body, AddressConnector> {
        let transport = AddressConnector::with_tcp(
            TcpConnector::new()
                .with_nodelay(self.tcp_nodelay)
                .with_keepalive(self.tcp_keepalive_ms.map(Duration::from_millis))
                .with_local_address(self.local_address),
        );
        let mut connector = Http2Connector::new()
            .with_transport(transport)
            .with_keepalive(self.keepalive())
            .with_http2(crate::grpclb::http2_config(self))
            .with_max_connections(self.max_connections_per_subchannel as usize)
            .with_connect_timeout(self.connect_timeout_ms.map(Duration::from_millis));
        if let Some(user_agent) = &self.user_agent {
            if let Ok(value) = http::HeaderValue::from_str(user_agent) {
                connector = connector.with_user_agent(Some(value));
            }
        }
        connector
    }

    /// The checks of [`build`](Self::build) that need no channel: the
    /// config's policy, backoff, outlier detection, TLS.
    fn check_for_channel(
        &self,
        default_config: Option<&ServiceConfig>,
        for_call: bool,
    ) -> Result<(), CliError> {
        if self.policy == crate::grpclb::GRPCLB && !for_call {
            return Err(CliError::usage(
                "--policy grpclb: only `call` takes grpclb targets",
            ));
        }
        if crate::tree_policy::is_tree(&self.policy) && !for_call {
            return Err(CliError::usage(format!(
                "--policy {}: only `call` runs the tree policies",
                self.policy
            )));
        }
        if self.ring_hash_header.is_some() && !for_call {
            return Err(CliError::usage(
                "--ring-hash-header: only `call` runs ring_hash",
            ));
        }
        if let Some(config) = default_config {
            // The library refuses such a config too; say which flag it was.
            let registry = PolicyRegistry::with_defaults();
            config
                .choose_policy(|name| {
                    registry.contains(name)
                        || name == OUTLIER_DETECTION
                        || (for_call && crate::tree_policy::is_tree(name))
                })
                .map_err(|error| CliError::usage(format!("--service-config: {error}")))?;
        }
        self.backoff()?;
        self.outlier_detection()?;
        self.tls_config()?;
        Ok(())
    }

    /// Builds the channel to `target` (inside the runtime, which runs its
    /// worker). Every problem with the flags or the target is a usage error.
    pub(crate) fn build(&self, target: &str, wait_for_ready: bool) -> Result<Built, CliError> {
        self.build_channel(target, wait_for_ready, false)
    }

    /// [`build`](Self::build); `for_call`: `--policy grpclb` was passed over
    /// because the config in force names a policy (it wins over `--policy`,
    /// which then falls back to pick_first, gRPC's default).
    fn build_channel(
        &self,
        target: &str,
        wait_for_ready: bool,
        for_call: bool,
    ) -> Result<Built, CliError> {
        let default_config = self.service_config()?;
        self.check_for_channel(default_config.as_ref(), for_call)?;
        let policy =
            if self.policy == crate::grpclb::GRPCLB || crate::tree_policy::is_tree(&self.policy) {
                "pick_first".to_owned()
            } else {
                self.policy.clone()
            };
        let keepalive = self.keepalive();
        let outlier = self.outlier_detection()?;
        let mut builder = Channel::builder(target)
            .policy(policy)
            .backoff(self.backoff()?)
            .wait_for_ready(wait_for_ready)
            .keepalive(keepalive)
            .idle_timeout(Duration::from_millis(self.idle_timeout_ms))
            .max_waiting(self.max_waiting)
            .max_connections_per_subchannel(self.max_connections_per_subchannel as usize)
            .initial_stream_window_size(self.initial_stream_window_size)
            .initial_connection_window_size(self.initial_connection_window_size)
            .http2_adaptive_window(self.http2_adaptive_window)
            .max_frame_size(self.max_frame_size)
            .tcp_nodelay(self.tcp_nodelay)
            .tcp_keepalive(self.tcp_keepalive_ms.map(Duration::from_millis))
            .local_address(self.local_address);
        if let Some(size) = self.http2_max_header_list_size {
            builder = builder.http2_max_header_list_size(size);
        }
        if let Some(ms) = self.connect_timeout_ms {
            builder = builder.connect_timeout(Duration::from_millis(ms));
        }
        if let Some(config) = default_config.clone() {
            builder = builder.service_config(config);
        }
        if let Some(service) = &self.health_check {
            builder = builder.health_check(service.clone());
        }
        if let Some(config) = outlier.clone() {
            builder = builder.outlier_detection(config);
        }
        if let Some(user_agent) = &self.user_agent {
            builder = builder.user_agent(user_agent.as_str());
        }
        if let Some(origin) = &self.origin {
            builder = builder.origin(origin.clone());
        }
        if let Some(authority) = &self.authority {
            builder = builder.authority(authority.clone());
        }
        if let Some(tls) = self.tls_config()? {
            builder = builder.tls(tls);
        }
        let channel = builder.build().map_err(|error| match error.build_error() {
            Some(BuildError::Target(cause)) => {
                CliError::usage(format!("bad target {target:?}: {cause}"))
            }
            _ => CliError::usage(error.to_string()),
        })?;
        let options = self.options_json(&keepalive, outlier.as_ref());
        Ok(Built {
            channel,
            default_config,
            options,
            stack: self.stack_settings(),
        })
    }

    /// The settings the channel was built with, after the library's own
    /// adjustments (keepalive's 10 s minimum), for the JSON's `options`.
    fn options_json(
        &self,
        keepalive: &KeepaliveConfig,
        outlier: Option<&OutlierDetectionConfig>,
    ) -> Value {
        let ms = |d: Duration| json!(d.as_millis() as u64);
        json!({
            "backoff_base_ms": self.backoff_base_ms,
            "backoff_multiplier": self.backoff_multiplier,
            "backoff_jitter": self.backoff_jitter,
            "backoff_max_ms": self.backoff_max_ms,
            "min_connect_timeout_ms": self.min_connect_timeout_ms,
            "connect_timeout_ms": self.connect_timeout_ms,
            "keepalive_time_ms": keepalive.get_time().map(|d| d.as_millis() as u64),
            "keepalive_timeout_ms": ms(keepalive.get_timeout()),
            "keepalive_permit_without_calls": keepalive.get_permit_without_calls(),
            "idle_timeout_ms": self.idle_timeout_ms,
            "health_check": self.health_check,
            "outlier_detection": outlier.map(outlier_json),
            "max_waiting": self.max_waiting,
            "max_connections_per_subchannel": self.max_connections_per_subchannel,
            "initial_stream_window_size": self.initial_stream_window_size,
            "initial_connection_window_size": self.initial_connection_window_size,
            "http2_adaptive_window": self.http2_adaptive_window,
            "max_frame_size": self.max_frame_size,
            "http2_max_header_list_size": self.http2_max_header_list_size,
            "tcp_nodelay": self.tcp_nodelay,
            "tcp_keepalive_ms": self.tcp_keepalive_ms,
            "local_address": self.local_address.map(|ip| ip.to_string()),
            "user_agent": self.user_agent,
            "authority": self.authority,
            "origin": self.origin.as_ref().map(ToString::to_string),
            "retry": !self.disable_retry,
            "max_send_message_size": self.max_send_message_size,
            "max_receive_message_size": self.max_receive_message_size,
            "tls": self.tls,
        })
    }
}

fn outlier_json(config: &OutlierDetectionConfig) -> Value {
    json!({
        "interval_ms": config.interval.as_millis() as u64,
        "base_ejection_time_ms": config.base_ejection_time.as_millis() as u64,
        "max_ejection_time_ms": config.max_ejection_time.as_millis() as u64,
        "max_ejection_percent": config.max_ejection_percent,
        "success_rate": config.success_rate.as_ref().map(|s| json!({
            "stdev_factor": s.stdev_factor,
            "enforcement_percentage": s.enforcement_percentage,
            "minimum_hosts": s.minimum_hosts,
            "request_volume": s.request_volume,
        })),
        "failure_percentage": config.failure_percentage.as_ref().map(|f| json!({
            "threshold": f.threshold,
            "enforcement_percentage": f.enforcement_percentage,
            "minimum_hosts": f.minimum_hosts,
            "request_volume": f.request_volume,
        })),
    })
}
