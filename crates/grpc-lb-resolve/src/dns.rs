//! The `dns` resolver: A/AAAA (and optionally SRV) lookups with gRPC's
//! re-resolution rules, on [hickory-resolver].
//!
//! It follows grpc-go's `internal/resolver/dns` resolver:
//!
//! - An IP-literal host (`dns:///10.0.0.1:50051`) is reported once, as a
//!   [`Reset`](Update::Reset), without asking any DNS server; the stream then
//!   stays quiet.
//! - A name is looked up (A and AAAA), and the addresses, with the target's port,
//!   are reported as a `Reset`, deduplicated, in the order of the DNS answer
//!   (as grpc-go: only pick_first's `shuffleAddressList` reorders them).
//! - After a good resolution the resolver waits for a [`ResolveNow`] request
//!   (which subchannels raise on every failed connection attempt and lost
//!   connection), but resolves no sooner than [`min_resolution_interval`](DnsConfig::min_resolution_interval)
//!   (30 s) after the last resolution; requests coalesce meanwhile. An optional
//!   [`refresh_interval`](DnsConfig::refresh_interval) re-resolves periodically
//!   as well.
//! - A failed lookup (error, timeout, no such name, no addresses) is reported as
//!   an `Err` item naming the host and the cause, and retried after the
//!   [`error_backoff`](DnsConfig::error_backoff) delay of retry *i* (counting
//!   from 1, as grpc-go does); a good result starts that count over. The
//!   consumer keeps the last good set meanwhile.
//! - A `Reset` is emitted only when the set (whatever its order) differs from the last one reported,
//!   or when the previous item was an error (so that the error is cleared).
//!
//! - Each resolution of a name also looks up its service config, in the TXT
//!   record `_grpc_config.<host>` (gRFC A2, on by default as in grpc-go; see
//!   [`DnsConfig::service_config`]). A changed config is reported as an
//!   [`Update::ServiceConfig`] just before the addresses; an unusable record
//!   is reported as [`ServiceConfigUpdate::Invalid`], which never replaces
//!   the last good config.
//!
//! The authority of `dns://server[:port]/host` names the DNS server to ask
//! (over UDP, falling back to TCP for truncated answers); without it the
//! system's configuration (`/etc/resolv.conf`, with `/etc/hosts`) is used. The
//! resolver's answer cache is disabled, so a changed record is seen on the next
//! lookup.
//!
//! With [`srv_service`](DnsConfig::srv_service) set (e.g. `_grpc._tcp`), the
//! resolver first looks up SRV records `<srv_service>.<host>`: each target's
//! addresses, with the record's port, become endpoints weighted by the record's
//! weight, with the record's details in their metadata. Without SRV records it
//! falls back to the A/AAAA lookup of `host`.
//!
//! With [`grpclb_balancers`](DnsConfig::grpclb_balancers) on (grpc-go's
//! `EnableSRVLookups`), each resolution also looks up the SRV records
//! `_grpclb._tcp.<host>`: their targets' addresses, with the records' ports,
//! are added to the set, marked with [`GRPCLB_BALANCER_KEY`], for a grpclb
//! policy to take as its balancers. As in grpc-go, a failed SRV lookup does
//! not fail the resolution, and balancers alone (the host has no addresses)
//! are a result.
//!
//! Everything the stream does happens inside it: dropping the stream stops all
//! lookups. The only tasks involved are hickory's per-connection I/O tasks,
//! which the stream's hickory resolver owns and which end with it.
//!
//! # Examples
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//!
//! use futures::StreamExt;
//! use grpc_lb_core::ResolveNow;
//! use grpc_lb_resolve::dns::{DnsConfig, DnsResolver};
//! use grpc_lb_resolve::{Registry, Update};
//!
//! let mut registry = Registry::with_defaults();
//! registry.register(DnsResolver::new(
//!     DnsConfig::default()
//!         .min_resolution_interval(Duration::from_secs(10))
//!         .refresh_interval(Duration::from_secs(300)),
//! ));
//!
//! let resolve_now = ResolveNow::new();
//! // Ask the DNS server at 127.0.0.1:5353 for greeter.internal.
//! let mut updates = registry
//!     .resolve("dns://127.0.0.1:5353/greeter.internal:50051", resolve_now.clone())
//!     .unwrap();
//! match updates.next().await {
//!     Some(Ok(Update::Reset(endpoints))) => println!("{} endpoints", endpoints.len()),
//!     Some(Ok(other)) => println!("{other:?}"),
//!     Some(Err(error)) => eprintln!("resolution failed: {error}"),
//!     None => unreachable!("a DNS update stream never ends"),
//! }
//! // A subchannel lost its connection: look again (rate limited).
//! resolve_now.request();
//! # }
//! ```
//!
//! [hickory-resolver]: https://docs.rs/hickory-resolver

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::future::{self, Either};
use futures::stream::{self, StreamExt};
use grpc_lb_backoff::{BackoffConfig, DefaultRng};
use grpc_lb_core::{BoxError, ResolveNow};
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use tokio::time::Instant;

use crate::fixed::static_list;
use crate::resolver::{Resolver, UpdateStream};
use crate::service_config::{
    from_txt, ChoiceError, ClientSelector, ServiceConfigUpdate, TXT_ATTRIBUTE, TXT_RECORD_PREFIX,
};
use crate::target::{DnsServer, Host, Target};
use crate::update::{Address, Endpoint, Update};

/// Metadata key of an SRV-derived endpoint: the record's priority.
pub const SRV_PRIORITY_KEY: &str = "srv.priority";
/// Metadata key of an SRV-derived endpoint: the record's weight, as published
/// (the endpoint's weight is this value, raised to at least 1).
pub const SRV_WEIGHT_KEY: &str = "srv.weight";
/// Metadata key of an SRV-derived endpoint: the record's port.
pub const SRV_PORT_KEY: &str = "srv.port";
/// Metadata key of an SRV-derived endpoint: the record's target name.
pub const SRV_TARGET_KEY: &str = "srv.target";
/// Metadata key that marks an endpoint as a grpclb balancer found in the SRV
/// records `_grpclb._tcp.<host>` (see [`DnsConfig::grpclb_balancers`]); its
/// value is the record's target name.
pub const GRPCLB_BALANCER_KEY: &str = "grpclb.balancer";

/// How the [`DnsResolver`] resolves and re-resolves.
///
/// `Default` gives grpc-go's values; the setters change one value each.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_backoff::BackoffConfig;
/// use grpc_lb_resolve::dns::DnsConfig;
///
/// let config = DnsConfig::default()
///     .min_resolution_interval(Duration::from_secs(5))
///     .refresh_interval(Duration::from_secs(60))
///     .resolve_timeout(Duration::from_secs(10))
///     .error_backoff(BackoffConfig::try_from_secs_f64(0.5, 1.6, 0.2, 30.0, 20.0).unwrap())
///     .srv_service("_grpc._tcp");
/// # drop(config);
/// ```
#[derive(Clone, Debug)]
pub struct DnsConfig {
    min_resolution_interval: Duration,
    refresh_interval: Option<Duration>,
    resolve_timeout: Duration,
    error_backoff: BackoffConfig,
    srv_service: Option<String>,
    service_config: bool,
    grpclb_balancers: bool,
}

impl DnsConfig {
    /// grpc-go's `MinResolutionInterval`: 30 s.
    pub const DEFAULT_MIN_RESOLUTION_INTERVAL: Duration = Duration::from_secs(30);
    /// grpc-go's `ResolvingTimeout`: 30 s.
    pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);

    /// The shortest time between two resolutions started by
    /// [`ResolveNow`] requests (default 30 s, grpc-go's `MinResolutionInterval`).
    ///
    /// Requests raised sooner wait for the interval to elapse, and coalesce.
    pub fn min_resolution_interval(mut self, interval: Duration) -> Self {
        self.min_resolution_interval = interval;
        self
    }

    /// Re-resolve periodically, this long after each good resolution, whether or
    /// not anyone asked (default `None`: only on [`ResolveNow`], as grpc-go).
    ///
    /// Accepts a [`Duration`] or an `Option<Duration>`.
    pub fn refresh_interval(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.refresh_interval = interval.into();
        self
    }

    /// The time one resolution (every lookup it makes) may take before it counts
    /// as failed (default 30 s, grpc-go's `ResolvingTimeout`).
    pub fn resolve_timeout(mut self, timeout: Duration) -> Self {
        self.resolve_timeout = timeout;
        self
    }

    /// The delays between retries after a failed resolution (default: gRPC's
    /// connection backoff, 1 s base, ×1.6, 20% jitter, 120 s cap). As in
    /// grpc-go, the first retry waits `delay(1)` (about 1.6 s with the defaults),
    /// not the base delay. Only the delay parameters are used.
    pub fn error_backoff(mut self, backoff: BackoffConfig) -> Self {
        self.error_backoff = backoff;
        self
    }

    /// Look up SRV records `<service>.<host>` first, e.g. `"_grpc._tcp"`
    /// (default: no SRV lookup).
    ///
    /// Each SRV target's addresses become endpoints with the record's port and
    /// weight (at least 1), and with [`SRV_PRIORITY_KEY`], [`SRV_WEIGHT_KEY`],
    /// [`SRV_PORT_KEY`] and [`SRV_TARGET_KEY`] metadata. When the name has no SRV
    /// records, the A/AAAA records of the host itself are used, with the
    /// target's port.
    pub fn srv_service(mut self, service: impl Into<String>) -> Self {
        self.srv_service = Some(service.into());
        self
    }

    /// Whether each resolution also looks up the service config in the TXT
    /// record `_grpc_config.<host>` (gRFC A2; default true, as grpc-go,
    /// whose `GRPC_ENABLE_TXT_SERVICE_CONFIG` defaults to true).
    ///
    /// The TXT lookup runs beside the address lookups. A record that changed
    /// is reported as an [`Update::ServiceConfig`] before the addresses; "no
    /// record" (`NXDOMAIN`, no TXT data, no `grpc_config=` record) is
    /// [`ServiceConfigUpdate::NoConfig`]; a record that cannot be used is
    /// [`ServiceConfigUpdate::Invalid`], naming the field. A TXT lookup that
    /// fails otherwise (a timeout, `SERVFAIL`) changes nothing, and does not
    /// fail the resolution.
    pub fn service_config(mut self, enabled: bool) -> Self {
        self.service_config = enabled;
        self
    }

    /// Whether each resolution also looks up grpclb balancers in the SRV
    /// records `_grpclb._tcp.<host>` (default false, as grpc-go's
    /// `EnableSRVLookups`). Their addresses join the set as endpoints with
    /// [`GRPCLB_BALANCER_KEY`] metadata (the record's target name) besides
    /// the `srv.*` keys; only a grpclb policy should be given such a set.
    ///
    /// ```
    /// use grpc_lb_resolve::dns::DnsConfig;
    ///
    /// let config = DnsConfig::default().grpclb_balancers(true);
    /// # drop(config);
    /// ```
    pub fn grpclb_balancers(mut self, enabled: bool) -> Self {
        self.grpclb_balancers = enabled;
        self
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            min_resolution_interval: Self::DEFAULT_MIN_RESOLUTION_INTERVAL,
            refresh_interval: None,
            resolve_timeout: Self::DEFAULT_RESOLVE_TIMEOUT,
            error_backoff: BackoffConfig::default(),
            srv_service: None,
            service_config: true,
            grpclb_balancers: false,
        }
    }
}

/// The resolver for the `dns` scheme (and bare `host:port` targets).
///
/// See the [module documentation](self) for what it does.
///
/// # Examples
///
/// ```
/// use grpc_lb_resolve::dns::DnsResolver;
/// use grpc_lb_resolve::Registry;
///
/// let mut registry = Registry::new();
/// registry.register(DnsResolver::default());
/// assert!(registry.get("dns").is_some());
/// ```
#[derive(Clone, Debug, Default)]
pub struct DnsResolver {
    config: DnsConfig,
}

impl DnsResolver {
    /// A DNS resolver with `config`.
    pub fn new(config: DnsConfig) -> Self {
        DnsResolver { config }
    }
}

impl Resolver for DnsResolver {
    fn scheme(&self) -> &str {
        "dns"
    }

    fn resolve(&self, target: &Target, resolve_now: ResolveNow) -> Result<UpdateStream, BoxError> {
        let Target::Dns {
            dns_server,
            host,
            port,
        } = target
        else {
            return Err(format!("the dns resolver cannot resolve {target}").into());
        };
        match host {
            // grpc-go: an IP literal needs no resolution and is never re-resolved.
            Host::Ip(ip) => Ok(static_list([Endpoint::new(SocketAddr::new(*ip, *port))])),
            Host::Name(name) => Ok(watch(Watcher {
                host: name.clone(),
                port: *port,
                dns_server: dns_server.clone(),
                config: self.config.clone(),
                resolve_now,
                resolver: None,
                rng: DefaultRng::new(),
                retry: 1,
                last: None,
                last_failed: false,
                next: Next::Now,
                // One draw for the stream's life: a client stays in or out
                // of a percentage canary instead of flipping per resolution.
                selector: ClientSelector::new(),
                last_config: ServiceConfigUpdate::NoConfig,
                pending: VecDeque::new(),
            })),
        }
    }
}

/// When the next resolution starts.
#[derive(Debug)]
enum Next {
    /// At once (the first resolution).
    Now,
    /// On a `ResolveNow` request, but not before `not_before`; or at `refresh`.
    Requested {
        not_before: Instant,
        refresh: Option<Instant>,
    },
    /// At this instant (a retry after an error).
    At(Instant),
}

/// The state of one DNS update stream.
struct Watcher {
    host: String,
    port: u16,
    dns_server: Option<DnsServer>,
    config: DnsConfig,
    resolve_now: ResolveNow,
    /// Built on the first resolution (and again after a failure to build one).
    resolver: Option<TokioResolver>,
    rng: DefaultRng,
    /// The backoff index of the next retry after an error; 1 after a success.
    retry: u32,
    /// The last set reported.
    last: Option<Vec<Endpoint>>,
    /// Whether the last item was an error.
    last_failed: bool,
    next: Next,
    /// Who this client is, for the TXT record's choices.
    selector: ClientSelector,
    /// The last service config reported (none at first).
    last_config: ServiceConfigUpdate,
    /// Updates of one resolution not yet returned.
    pending: VecDeque<Update>,
}

fn watch(watcher: Watcher) -> UpdateStream {
    stream::unfold(watcher, |mut watcher| async move {
        let item = watcher.next_item().await;
        Some((item, watcher))
    })
    .boxed()
}

impl Watcher {
    /// Resolves until there is something to report. Never returns `None`: the
    /// stream lives as long as its consumer holds it.
    async fn next_item(&mut self) -> Result<Update, BoxError> {
        loop {
            if let Some(update) = self.pending.pop_front() {
                return Ok(update);
            }
            self.wait().await;
            let result = match tokio::time::timeout(self.config.resolve_timeout, self.resolve())
                .await
            {
                Ok(result) => result,
                Err(_) => Err(format!("timed out after {:?}", self.config.resolve_timeout).into()),
            };
            match result {
                Ok((endpoints, config)) => {
                    let now = Instant::now();
                    self.retry = 1;
                    self.next = Next::Requested {
                        not_before: now + self.config.min_resolution_interval,
                        refresh: self.config.refresh_interval.map(|every| now + every),
                    };
                    let changed = self
                        .last
                        .as_ref()
                        .is_none_or(|last| !same_endpoints(last, &endpoints));
                    tracing::debug!(
                        host = %self.host,
                        addresses = endpoints.len(),
                        changed,
                        "dns resolution"
                    );
                    // The config first, so that whoever applies it has it
                    // when the addresses come.
                    if let Some(config) = config {
                        if config != self.last_config {
                            self.last_config = config.clone();
                            self.pending.push_back(Update::ServiceConfig(config));
                        }
                    }
                    if changed || self.last_failed {
                        self.last_failed = false;
                        self.last = Some(endpoints.clone());
                        self.pending.push_back(Update::Reset(endpoints));
                    }
                }
                Err(cause) => {
                    let delay = self.config.error_backoff.delay(self.retry, &mut self.rng);
                    self.retry = self.retry.saturating_add(1);
                    self.next = Next::At(Instant::now() + delay);
                    self.last_failed = true;
                    let error = DnsResolveError {
                        host: self.host.clone(),
                        cause,
                    };
                    tracing::warn!(retry_in = ?delay, "{error}");
                    return Err(Box::new(error));
                }
            }
        }
    }

    /// Waits until the next resolution is due.
    async fn wait(&mut self) {
        match self.next {
            Next::Now => {}
            Next::At(at) => tokio::time::sleep_until(at).await,
            Next::Requested {
                not_before,
                refresh,
            } => {
                let resolve_now = &self.resolve_now;
                let requested = std::pin::pin!(async move {
                    resolve_now.requested().await;
                    tokio::time::sleep_until(not_before).await;
                });
                match refresh {
                    Some(refresh) => {
                        let refresh = std::pin::pin!(tokio::time::sleep_until(refresh));
                        let _: Either<_, _> = future::select(requested, refresh).await;
                    }
                    None => requested.await,
                }
            }
        }
    }

    /// One resolution: the deduplicated endpoints in the answer's order, or why there are
    /// none; and the service config, unless its lookup failed (`None`).
    async fn resolve(&mut self) -> Result<(Vec<Endpoint>, Option<ServiceConfigUpdate>), BoxError> {
        if self.resolver.is_none() {
            self.resolver = Some(build_resolver(self.dns_server.as_ref()).await?);
        }
        let Some(resolver) = self.resolver.as_ref() else {
            unreachable!("the resolver was just built");
        };
        // The cache is off (size 0, TTLs clamped to 0); clear it anyway so that
        // a re-resolution always asks the server.
        resolver.clear_cache();

        let backends = lookup_endpoints(
            resolver,
            self.config.srv_service.as_deref(),
            &self.host,
            self.port,
        );
        let grpclb = self.config.grpclb_balancers;
        let host = &self.host;
        let endpoints = async move {
            if !grpclb {
                return backends.await;
            }
            let balancers = lookup_srv(resolver, GRPCLB_SRV_SERVICE, host);
            let (backends, balancers) = future::join(backends, balancers).await;
            with_balancers(backends, balancers)
        };
        let config = async {
            Ok(if self.config.service_config {
                lookup_service_config(resolver, &self.host, &self.selector).await
            } else {
                None
            })
        };
        // A failed address lookup fails the resolution at once, without
        // waiting for the TXT answer.
        future::try_join(endpoints, config).await
    }
}

/// Whether two resolutions found the same endpoints, in whatever order: a
/// server that rotates its answers (as dnsmasq and many others do) is not
/// reporting a change.
fn same_endpoints(last: &[Endpoint], now: &[Endpoint]) -> bool {
    last.len() == now.len() && {
        let before: std::collections::HashMap<&Address, &Endpoint> =
            last.iter().map(|e| (&e.address, e)).collect();
        now.iter()
            .all(|endpoint| before.get(&endpoint.address) == Some(&endpoint))
    }
}

/// The endpoints of `host`: SRV targets first if `srv_service` is set, else
/// (or without SRV records) its A/AAAA addresses with `port`.
async fn lookup_endpoints(
    resolver: &TokioResolver,
    srv_service: Option<&str>,
    host: &str,
    port: u16,
) -> Result<Vec<Endpoint>, BoxError> {
    // In the answer's order, each address once: sorting them sent every
    // pick_first client to the lowest address. grpc-go keeps the order too,
    // and only pick_first's `shuffleAddressList` reorders (gRFC A62).
    let mut seen: HashSet<Address> = HashSet::new();
    let mut endpoints: Vec<Endpoint> = Vec::new();
    if let Some(service) = srv_service {
        for endpoint in lookup_srv(resolver, service, host).await? {
            if seen.insert(endpoint.address.clone()) {
                endpoints.push(endpoint);
            }
        }
    }
    if endpoints.is_empty() {
        let ips = lookup_ips(resolver, host).await?;
        for ip in ips {
            let address = SocketAddr::new(ip, port);
            if seen.insert(Address::Socket(address)) {
                endpoints.push(Endpoint::new(address));
            }
        }
    }
    if endpoints.is_empty() {
        return Err("no addresses".into());
    }
    Ok(endpoints)
}

/// The SRV service under which grpclb balancers are published.
const GRPCLB_SRV_SERVICE: &str = "_grpclb._tcp";

/// The backends and the grpclb balancers together, by grpc-go's rules: a
/// failed balancer lookup is ignored, and balancers without backends are a
/// result.
fn with_balancers(
    backends: Result<Vec<Endpoint>, BoxError>,
    balancers: Result<Vec<Endpoint>, BoxError>,
) -> Result<Vec<Endpoint>, BoxError> {
    let balancers: Vec<Endpoint> = match balancers {
        Ok(found) => found
            .into_iter()
            .map(|balancer| {
                let target = balancer
                    .attributes
                    .metadata
                    .get(SRV_TARGET_KEY)
                    .cloned()
                    .unwrap_or_default();
                balancer.with_metadata(GRPCLB_BALANCER_KEY, target)
            })
            .collect(),
        Err(error) => {
            tracing::debug!("grpclb balancer lookup failed: {error}");
            Vec::new()
        }
    };
    let mut endpoints = match backends {
        Ok(found) => found,
        Err(_) if !balancers.is_empty() => Vec::new(),
        Err(error) => return Err(error),
    };
    for balancer in balancers {
        // An address that is both is kept as the backend.
        if !endpoints.iter().any(|e| e.address == balancer.address) {
            endpoints.push(balancer);
        }
    }
    Ok(endpoints)
}

/// The service config in the TXT record `_grpc_config.<host>` (gRFC A2), or
/// `None` when the lookup failed for another reason than the record's absence.
///
/// A record's strings are joined (DNS cuts long text into strings of 255
/// bytes), and the first record that starts with `grpc_config=` is the
/// config; other TXT records at that name are ignored.
async fn lookup_service_config(
    resolver: &TokioResolver,
    host: &str,
    selector: &ClientSelector,
) -> Option<ServiceConfigUpdate> {
    let name = format!("{TXT_RECORD_PREFIX}{host}");
    let lookup = match resolver.txt_lookup(name.as_str()).await {
        Ok(lookup) => lookup,
        Err(error) if error.is_no_records_found() || error.is_nx_domain() => {
            return Some(ServiceConfigUpdate::NoConfig)
        }
        Err(error) => {
            // grpc-go ignores TXT errors by default (GRPC_GO_IGNORE_TXT_ERRORS);
            // keeping the config in force is the safer reading of "ignore".
            tracing::warn!(%name, "TXT lookup failed; keeping the service config in force: {error}");
            return None;
        }
    };
    for record in lookup.answers() {
        let RData::TXT(txt) = &record.data else {
            continue;
        };
        let bytes: Vec<u8> = txt
            .txt_data
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        if !bytes.starts_with(TXT_ATTRIBUTE.as_bytes()) {
            continue;
        }
        let update = match String::from_utf8(bytes) {
            Ok(text) => ServiceConfigUpdate::from(from_txt(&text, selector)),
            Err(_) => ServiceConfigUpdate::Invalid(std::sync::Arc::new(ChoiceError::not_utf8())),
        };
        tracing::debug!(%name, ?update, "service config from DNS");
        return Some(update);
    }
    tracing::debug!(%name, "no grpc_config= TXT record");
    Some(ServiceConfigUpdate::NoConfig)
}

/// The A and AAAA addresses of `host`; no records is an error.
async fn lookup_ips(resolver: &TokioResolver, host: &str) -> Result<Vec<IpAddr>, BoxError> {
    let lookup = resolver.lookup_ip(host).await.map_err(describe)?;
    let ips: Vec<IpAddr> = lookup.iter().collect();
    if ips.is_empty() {
        return Err("no addresses".into());
    }
    Ok(ips)
}

/// The endpoints named by SRV records `<service>.<host>`, best priority and
/// highest weight first; empty when the name has no SRV records.
async fn lookup_srv(
    resolver: &TokioResolver,
    service: &str,
    host: &str,
) -> Result<Vec<Endpoint>, BoxError> {
    let name = format!("{}.{}", service.trim_end_matches('.'), host);
    let lookup = match resolver.srv_lookup(name.as_str()).await {
        Ok(lookup) => lookup,
        Err(error) if error.is_no_records_found() => {
            tracing::debug!(%name, "no SRV records; falling back to A/AAAA");
            return Ok(Vec::new());
        }
        Err(error) => return Err(format!("SRV lookup of {name}: {}", describe(error)).into()),
    };
    let mut records: Vec<_> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some(srv.clone()),
            _ => None,
        })
        .collect();
    records.sort_by(|a, b| {
        (a.priority, std::cmp::Reverse(a.weight)).cmp(&(b.priority, std::cmp::Reverse(b.weight)))
    });
    let mut endpoints = Vec::new();
    let mut failures = Vec::new();
    for srv in records {
        let target = srv.target.to_ascii();
        match resolver.lookup_ip(srv.target.clone()).await {
            Ok(lookup) => {
                for ip in lookup.iter() {
                    endpoints.push(
                        Endpoint::new(SocketAddr::new(ip, srv.port))
                            .with_weight(u32::from(srv.weight.max(1)))
                            .with_metadata(SRV_PRIORITY_KEY, srv.priority.to_string())
                            .with_metadata(SRV_WEIGHT_KEY, srv.weight.to_string())
                            .with_metadata(SRV_PORT_KEY, srv.port.to_string())
                            .with_metadata(SRV_TARGET_KEY, target.clone()),
                    );
                }
            }
            Err(error) => {
                tracing::warn!(srv = %name, %target, "SRV target lookup failed: {error}");
                failures.push(format!("{target}: {}", describe(error)));
            }
        }
    }
    if endpoints.is_empty() && !failures.is_empty() {
        return Err(format!("no SRV target of {name} resolved ({})", failures.join("; ")).into());
    }
    Ok(endpoints)
}

/// A hickory error, said briefly.
fn describe(error: NetError) -> BoxError {
    if error.is_nx_domain() {
        "no such host (NXDOMAIN)".into()
    } else if error.is_no_records_found() {
        "no addresses".into()
    } else {
        Box::new(error)
    }
}

/// A hickory resolver asking `server`, or the system's servers, with no cache.
async fn build_resolver(server: Option<&DnsServer>) -> Result<TokioResolver, BoxError> {
    let mut builder = match server {
        None => TokioResolver::builder_tokio()
            .map_err(|error| format!("cannot read the system DNS configuration: {error}"))?,
        Some(server) => {
            let ips = match &server.host {
                Host::Ip(ip) => vec![*ip],
                // grpc-go dials the authority as given, resolving its name with
                // the system resolver; do the same.
                Host::Name(name) => {
                    let system = TokioResolver::builder_tokio()
                        .map_err(|error| {
                            format!(
                                "cannot resolve DNS server {name}: cannot read the system \
                                 DNS configuration: {error}"
                            )
                        })?
                        .build()
                        .map_err(|error| format!("cannot resolve DNS server {name}: {error}"))?;
                    lookup_ips(&system, name)
                        .await
                        .map_err(|error| format!("cannot resolve DNS server {name}: {error}"))?
                }
            };
            let name_servers = ips
                .into_iter()
                .map(|ip| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = server.port;
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = server.port;
                    NameServerConfig::new(ip, true, vec![udp, tcp])
                })
                .collect();
            let mut options = ResolverOpts::default();
            // Only the named server answers: no /etc/hosts.
            options.use_hosts_file = ResolveHosts::Never;
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                TokioRuntimeProvider::default(),
            )
            .with_options(options)
        }
    };
    let options = builder.options_mut();
    // Both families, as Go's LookupHost; pick_first interleaves them (A61).
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    // No caching: the resolver decides when to ask again, and must see changes.
    options.cache_size = 0;
    options.positive_max_ttl = Some(Duration::ZERO);
    options.negative_max_ttl = Some(Duration::ZERO);
    Ok(builder
        .build()
        .map_err(|error| format!("cannot build the DNS resolver: {error}"))?)
}

/// A failed resolution of one host.
#[derive(Debug)]
struct DnsResolveError {
    host: String,
    cause: BoxError,
}

impl fmt::Display for DnsResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dns resolution of {} failed: {}", self.host, self.cause)
    }
}

impl std::error::Error for DnsResolveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.cause)
    }
}
