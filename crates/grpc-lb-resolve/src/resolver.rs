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
pub type UpdateStream = Pin<Box<dyn Stream<Item = Result<Update, BoxError>> + Send + 'static>>;

/// Turns targets of one scheme into update streams (grpc-go's `resolver.Builder`).
///
/// Implement it to plug a discovery system in by scheme, then
/// [`register`](Registry::register) it.
pub trait Resolver: Send + Sync + 'static {
    /// The scheme this resolver answers for, e.g. `"dns"`.
    fn scheme(&self) -> &str;

    /// Starts resolving `target`. The stream should act on `resolve_now`, which
    /// subchannels raise on every failed connection attempt and lost connection.
    fn resolve(&self, target: &Target, resolve_now: ResolveNow) -> Result<UpdateStream, BoxError>;
}

/// Why a target could not be resolved.
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
