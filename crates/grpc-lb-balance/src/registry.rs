use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::every::EveryEndpoint;
use crate::pick::{LeastRequest, P2cPeakEwma, RoundRobin};
use crate::pick_first::PickFirst;
use crate::policy::LoadBalancer;

type Factory = Arc<dyn Fn() -> Box<dyn LoadBalancer> + Send + Sync>;

/// Policies by name (grpc-go's balancer registry), extensible by users.
///
/// [`with_defaults`](Self::with_defaults) knows `pick_first`, `round_robin`,
/// `p2c` and `least_request`.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use grpc_lb_balance::{EveryEndpoint, PolicyRegistry, RoundRobin};
///
/// let mut registry = PolicyRegistry::with_defaults();
/// // A policy of your own, selected by name like the built-in ones.
/// registry.register("my_round_robin", || {
///     Box::new(EveryEndpoint::new("my_round_robin", Arc::new(RoundRobin::new())))
/// });
/// assert_eq!(registry.build("my_round_robin").unwrap().name(), "my_round_robin");
/// ```
#[derive(Clone, Default)]
pub struct PolicyRegistry {
    factories: HashMap<String, Factory>,
}

impl PolicyRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        PolicyRegistry::default()
    }

    /// The built-in policies.
    pub fn with_defaults() -> Self {
        let mut registry = PolicyRegistry::new();
        registry.register("pick_first", || Box::new(PickFirst::default()));
        registry.register("round_robin", || {
            Box::new(EveryEndpoint::new(
                "round_robin",
                Arc::new(RoundRobin::new()),
            ))
        });
        registry.register("p2c", || {
            Box::new(EveryEndpoint::new("p2c", Arc::new(P2cPeakEwma::new())))
        });
        registry.register("least_request", || {
            Box::new(EveryEndpoint::new(
                "least_request",
                Arc::new(LeastRequest::default()),
            ))
        });
        registry
    }

    /// Adds or replaces the policy called `name`.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        factory: impl Fn() -> Box<dyn LoadBalancer> + Send + Sync + 'static,
    ) -> &mut Self {
        self.factories.insert(name.into(), Arc::new(factory));
        self
    }

    /// A new instance of the policy called `name`.
    pub fn build(&self, name: &str) -> Result<Box<dyn LoadBalancer>, UnknownPolicy> {
        match self.factories.get(name) {
            Some(factory) => Ok(factory()),
            None => Err(UnknownPolicy {
                name: name.to_owned(),
                known: self.names(),
            }),
        }
    }

    /// Whether a policy of this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.factories.keys().cloned().collect();
        names.sort();
        names
    }
}

impl fmt::Debug for PolicyRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyRegistry")
            .field("policies", &self.names())
            .finish()
    }
}

/// No policy is registered under the name asked for.
///
/// ```
/// use grpc_lb_balance::PolicyRegistry;
///
/// let Err(error) = PolicyRegistry::with_defaults().build("grpclb") else {
///     unreachable!("grpclb is not a policy of this crate");
/// };
/// assert_eq!(
///     error.to_string(),
///     r#"unknown load-balancing policy "grpclb" (known: least_request, p2c, pick_first, round_robin)"#,
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPolicy {
    name: String,
    known: Vec<String>,
}

impl fmt::Display for UnknownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown load-balancing policy {:?} (known: {})",
            self.name,
            self.known.join(", ")
        )
    }
}

impl std::error::Error for UnknownPolicy {}
