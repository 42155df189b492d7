//! What the resolver said about each endpoint it yields, for a balancer to
//! read when the endpoint is added.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use crate::update::{Address, Attributes};

/// The attributes of the endpoints a [`ResolveDiscover`](crate::ResolveDiscover)
/// has yielded, by address: a clonable, shared view, updated before each
/// endpoint is yielded and when it is removed.
///
/// A policy that weighs or hashes endpoints (ring_hash, weighted round robin)
/// reads an endpoint's weight and hash key from here as it is added; it is
/// not read on the call path, so the lock is never held across a pick.
///
/// ```
/// use futures::StreamExt;
/// use grpc_lb_core::NewSubchannel;
/// use grpc_lb_resolve::{Address, Endpoint, ManualResolver, Registry, ResolveLayer};
/// use tower::Layer;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// let (resolver, handle) = ManualResolver::new("example");
/// let mut registry = Registry::new();
/// registry.register(resolver);
/// let make = tower::service_fn(|new: NewSubchannel<Address>| async move {
///     Ok::<_, std::convert::Infallible>(new.target)
/// });
/// let mut discover = ResolveLayer::with_registry("example:///x", registry)?.layer(make);
/// let address: std::net::SocketAddr = "10.0.0.1:50051".parse()?;
/// handle.reset([Endpoint::new(address).with_weight(3).with_metadata("hash_key", "shard-7")]);
/// let attributes = discover.attributes();
/// let Some(Ok(tower::discover::Change::Insert(key, _))) = discover.next().await else {
///     unreachable!()
/// };
/// let seen = attributes.get(&key).expect("known once yielded");
/// assert_eq!(seen.weight, Some(3));
/// assert_eq!(seen.metadata["hash_key"], "shard-7");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct ResolvedAttributes {
    by_address: Arc<RwLock<HashMap<Address, Attributes>>>,
}

impl ResolvedAttributes {
    /// The attributes the resolver gave `address`, if it is a yielded
    /// endpoint.
    pub fn get(&self, address: &Address) -> Option<Attributes> {
        self.read().get(address).cloned()
    }

    /// How many endpoints are known.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no endpoint is known.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    pub(crate) fn insert(&self, address: Address, attributes: Attributes) {
        self.by_address
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(address, attributes);
    }

    pub(crate) fn remove(&self, address: &Address) {
        self.by_address
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(address);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Address, Attributes>> {
        self.by_address
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for ResolvedAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedAttributes")
            .field("endpoints", &self.len())
            .finish()
    }
}
