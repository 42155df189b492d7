//! The resolver abstraction and the registry that picks a resolver by scheme.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use grpc_lb_core::{BoxError, ResolveNow};

use crate::target::{Target, TargetError};
use crate::update::Update;

/// What a resolver produces: a stream of updates, each `Ok` or a resolution error.
///
/// An `Err` item is a failed resolution, not the end: the stream goes on, and the
/// endpoints of the last good update stay in use. The end of the stream means the
/// resolver has stopped for good.
///
/// ```
/// use futures::StreamExt;
/// use grpc_lb_core::ResolveNow;
/// use grpc_lb_resolve::{Registry, Update, UpdateStream};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_resolve::ResolveError> {
/// let mut updates: UpdateStream =
///     Registry::with_defaults().resolve("ipv4:10.0.0.1:50051", ResolveNow::new())?;
/// let Some(Ok(Update::Reset(endpoints))) = updates.next().await else { unreachable!() };
/// assert_eq!(endpoints[0].address.to_string(), "10.0.0.1:50051");
/// # Ok(())
/// # }
/// ```
pub type UpdateStream = Pin<Box<dyn Stream<Item = Result<Update, BoxError>> + Send + 'static>>;

/// Turns targets of one scheme into update streams (grpc-go's `resolver.Builder`).
///
/// Implement it to plug a discovery system in by scheme, then
/// [`register`](Registry::register) it.
///
/// ```
/// use futures::StreamExt;
/// use grpc_lb_core::{BoxError, ResolveNow};
/// use grpc_lb_resolve::{Endpoint, Registry, Resolver, Target, Update, UpdateStream};
///
/// /// `greeters:N` resolves to N local ports starting at 50051.
/// struct Greeters;
///
/// impl Resolver for Greeters {
///     fn scheme(&self) -> &str {
///         "greeters"
///     }
///
///     fn resolve(&self, target: &Target, _: ResolveNow) -> Result<UpdateStream, BoxError> {
///         let Target::Custom { endpoint, .. } = target else {
///             return Err("not a greeters target".into());
///         };
///         let count: u16 = endpoint.parse()?;
///         let endpoints = (0..count)
///             .map(|i| Endpoint::from(std::net::SocketAddr::from(([127, 0, 0, 1], 50051 + i))))
///             .collect();
///         // One answer, then the stream stays open: ending it would mean
///         // "stopped for good".
///         let answer = futures::stream::once(async { Ok(Update::Reset(endpoints)) });
///         Ok(Box::pin(answer.chain(futures::stream::pending())))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let mut registry = Registry::with_defaults();
/// registry.register(Greeters);
/// let mut updates = registry.resolve("greeters:3", ResolveNow::new())?;
/// let Some(Ok(Update::Reset(endpoints))) = updates.next().await else { unreachable!() };
/// assert_eq!(endpoints.len(), 3);
/// assert!(registry.resolve("greeters:many", ResolveNow::new()).is_err());
/// # Ok(())
/// # }
/// ```
pub trait Resolver: Send + Sync + 'static {
    /// The scheme this resolver answers for, e.g. `"dns"`.
    fn scheme(&self) -> &str;

    /// Starts resolving `target`. The stream should act on `resolve_now`, which
    /// subchannels raise on every failed connection attempt and lost connection.
    fn resolve(&self, target: &Target, resolve_now: ResolveNow) -> Result<UpdateStream, BoxError>;
}

/// Why a target could not be resolved.
///
/// ```
/// use grpc_lb_core::ResolveNow;
/// use grpc_lb_resolve::{Registry, ResolveError};
///
/// let registry = Registry::with_defaults();
/// let Err(error) = registry.resolve("ipv4:10.0.0.300", ResolveNow::new()) else {
///     unreachable!()
/// };
/// assert!(matches!(&error, ResolveError::BadTarget(_)));
///
/// let empty = Registry::new(); // parses every built-in scheme, resolves none
/// let Err(error) = empty.resolve("ipv4:10.0.0.1:50051", ResolveNow::new()) else {
///     unreachable!()
/// };
/// assert_eq!(error.to_string(), r#"no resolver is registered for scheme "ipv4""#);
/// ```
#[derive(Debug)]
pub enum ResolveError {
    /// The target string is malformed.
    BadTarget(TargetError),
    /// No resolver is registered for the target's scheme.
    NoResolver {
        /// The scheme that has no resolver.
        scheme: String,
    },
    /// The resolver refused to start.
    Resolver(BoxError),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::BadTarget(error) => error.fmt(f),
            ResolveError::NoResolver { scheme } => {
                write!(f, "no resolver is registered for scheme {scheme:?}")
            }
            ResolveError::Resolver(error) => write!(f, "resolver failed to start: {error}"),
        }
    }
}

impl std::error::Error for ResolveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResolveError::BadTarget(error) => Some(error),
            ResolveError::NoResolver { .. } => None,
            ResolveError::Resolver(error) => Some(&**error),
        }
    }
}

/// Resolvers by scheme (grpc-go's resolver registry), extensible by users.
///
/// [`Registry::with_defaults`] knows `ipv4`, `ipv6`, `unix`, `unix-abstract` and
/// `passthrough`, plus `dns` and `etcd` when those features are on.
///
/// # Examples
///
/// ```
/// use grpc_lb_resolve::Registry;
///
/// let registry = Registry::with_defaults();
/// let target = registry.parse("ipv4:127.0.0.1:50051,127.0.0.2:50051").unwrap();
/// assert_eq!(target.scheme(), "ipv4");
/// assert!(registry.parse("ipv4:not-an-address").is_err());
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    resolvers: HashMap<String, Arc<dyn Resolver>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// A registry with every resolver this build provides.
    pub fn with_defaults() -> Self {
        let mut registry = Registry::new();
        for scheme in crate::fixed::SCHEMES {
            registry.register(crate::fixed::FixedResolver::new(scheme));
        }
        #[cfg(feature = "dns")]
        registry.register(crate::dns::DnsResolver::default());
        // With no endpoints of its own, it serves targets that name their etcd
        // server (`etcd://host:port/prefix`) and refuses the others clearly.
        #[cfg(feature = "etcd")]
        registry.register(crate::etcd::EtcdResolver::new(Vec::<String>::new()));
        registry
    }

    /// Adds a resolver, replacing any other for the same scheme.
    pub fn register(&mut self, resolver: impl Resolver) -> &mut Self {
        self.resolvers
            .insert(resolver.scheme().to_owned(), Arc::new(resolver));
        self
    }

    /// The resolver for `scheme`, if one is registered.
    pub fn get(&self, scheme: &str) -> Option<&Arc<dyn Resolver>> {
        self.resolvers.get(scheme)
    }

    /// Parses a target, accepting every registered scheme.
    pub fn parse(&self, target: &str) -> Result<Target, TargetError> {
        let schemes: Vec<&str> = self.resolvers.keys().map(String::as_str).collect();
        Target::parse_with_schemes(target, &schemes)
    }

    /// Parses `target` and starts the resolver for its scheme.
    pub fn resolve(
        &self,
        target: &str,
        resolve_now: ResolveNow,
    ) -> Result<UpdateStream, ResolveError> {
        let target = self.parse(target).map_err(ResolveError::BadTarget)?;
        self.resolve_target(&target, resolve_now)
    }

    /// Starts the resolver for an already parsed target.
    pub fn resolve_target(
        &self,
        target: &Target,
        resolve_now: ResolveNow,
    ) -> Result<UpdateStream, ResolveError> {
        let resolver = self
            .get(target.scheme())
            .ok_or_else(|| ResolveError::NoResolver {
                scheme: target.scheme().to_owned(),
            })?;
        resolver
            .resolve(target, resolve_now)
            .map_err(ResolveError::Resolver)
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut schemes: Vec<&String> = self.resolvers.keys().collect();
        schemes.sort();
        f.debug_struct("Registry")
            .field("schemes", &schemes)
            .finish()
    }
}
