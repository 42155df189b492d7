//! The manual resolver: a handle that pushes updates, as grpc-go's
//! `resolver/manual` does. It is the workhorse of tests, and the way to feed a
//! channel from discovery code of your own.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use grpc_lb_core::{BoxError, ResolveNow};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::resolver::{Resolver, UpdateStream};
use crate::service_config::ServiceConfigUpdate;
use crate::target::Target;
use crate::update::{Address, Endpoint, Update};

/// A resolver whose updates come from a [`ManualHandle`].
///
/// Every stream it starts begins with the handle's current set (so a channel that
/// rebuilds its resolver, as one leaving idle mode does, starts from the same
/// state) and then receives each update pushed through the handle.
///
/// Updates are queued without a bound: this resolver is meant for tests and for
/// code that pushes updates at human or control-plane rates, not per request.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::StreamExt;
/// use grpc_lb_core::ResolveNow;
/// use grpc_lb_resolve::{ManualResolver, Registry, Endpoint, Update};
///
/// let (resolver, handle) = ManualResolver::new("test");
/// let mut registry = Registry::with_defaults();
/// registry.register(resolver);
///
/// let mut updates = registry.resolve("test:///greeter", ResolveNow::new()).unwrap();
/// let addr: std::net::SocketAddr = "127.0.0.1:50051".parse().unwrap();
/// handle.reset([Endpoint::new(addr)]);
/// assert_eq!(updates.next().await.unwrap().unwrap(), Update::Reset(vec![Endpoint::new(addr)]));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ManualResolver {
    scheme: String,
    shared: Arc<Mutex<Shared>>,
}

/// Pushes updates to every stream a [`ManualResolver`] has started.
///
/// ```
/// use futures::StreamExt;
/// use grpc_lb_core::ResolveNow;
/// use grpc_lb_resolve::{Endpoint, ManualResolver, Update};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (resolver, handle) = ManualResolver::new("example");
/// let addr: std::net::SocketAddr = "10.0.0.1:50051".parse().unwrap();
/// handle.reset([Endpoint::from(addr)]);
///
/// // A stream started later begins with the current set.
/// let mut updates = resolver.stream(ResolveNow::new());
/// assert_eq!(updates.next().await.unwrap().unwrap(), Update::Reset(vec![addr.into()]));
///
/// handle.error("lookup failed");
/// assert_eq!(updates.next().await.unwrap().unwrap_err().to_string(), "lookup failed");
/// assert_eq!(handle.resolve_now_requests(), 0);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ManualHandle {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// `None` until the first update: a new stream then starts with nothing.
    /// In the order given, which pick_first follows.
    current: Option<Vec<Endpoint>>,
    /// The last service config pushed, which a new stream starts with too.
    config: Option<ServiceConfigUpdate>,
    subscribers: Vec<mpsc::UnboundedSender<Result<Update, BoxError>>>,
    resolve_now: Vec<ResolveNow>,
}

impl Shared {
    fn send(&mut self, item: impl Fn() -> Result<Update, BoxError>) {
        self.subscribers.retain(|tx| tx.send(item()).is_ok());
    }
}

impl ManualResolver {
    /// A manual resolver for `scheme`, and the handle that drives it.
    pub fn new(scheme: impl Into<String>) -> (ManualResolver, ManualHandle) {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let resolver = ManualResolver {
            scheme: scheme.into(),
            shared: shared.clone(),
        };
        (resolver, ManualHandle { shared })
    }

    /// A handle to this resolver.
    pub fn handle(&self) -> ManualHandle {
        ManualHandle {
            shared: self.shared.clone(),
        }
    }

    /// Starts a stream without going through a target, for code that feeds a
    /// Discover adapter directly.
    pub fn stream(&self, resolve_now: ResolveNow) -> UpdateStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut shared = lock(&self.shared);
        if let Some(config) = &shared.config {
            let _ = tx.send(Ok(Update::ServiceConfig(config.clone())));
        }
        if let Some(current) = &shared.current {
            let _ = tx.send(Ok(Update::Reset(current.clone())));
        }
        shared.subscribers.push(tx);
        shared.resolve_now.push(resolve_now);
        UnboundedReceiverStream::new(rx).boxed()
    }
}

impl Resolver for ManualResolver {
    fn scheme(&self) -> &str {
        &self.scheme
    }

    fn resolve(&self, _target: &Target, resolve_now: ResolveNow) -> Result<UpdateStream, BoxError> {
        Ok(self.stream(resolve_now))
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // A panic while holding this lock cannot leave the map half-updated in a way
    // that matters more than losing every later update, so carry on.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ManualHandle {
    /// Replaces the whole set (grpc-go's `UpdateState`).
    pub fn reset(&self, endpoints: impl IntoIterator<Item = Endpoint>) {
        // As given: `ResolverDiscover` counts a repeated address once, where
        // it first appears.
        let update: Vec<Endpoint> = endpoints.into_iter().collect();
        let mut shared = lock(&self.shared);
        shared.current = Some(update.clone());
        shared.send(|| Ok(Update::Reset(update.clone())));
    }

    /// Adds endpoints (or replaces their attributes).
    pub fn add(&self, endpoints: impl IntoIterator<Item = Endpoint>) {
        let added: Vec<Endpoint> = endpoints.into_iter().collect();
        let mut shared = lock(&self.shared);
        let current = shared.current.get_or_insert_with(Vec::new);
        let mut index: HashMap<Address, usize> = current
            .iter()
            .enumerate()
            .map(|(i, e)| (e.address.clone(), i))
            .collect();
        for endpoint in &added {
            match index.get(&endpoint.address) {
                Some(&i) => current[i] = endpoint.clone(),
                None => {
                    index.insert(endpoint.address.clone(), current.len());
                    current.push(endpoint.clone());
                }
            }
        }
        shared.send(|| Ok(Update::Add(added.clone())));
    }

    /// Removes endpoints.
    pub fn remove(&self, addresses: impl IntoIterator<Item = Address>) {
        let removed: Vec<Address> = addresses.into_iter().collect();
        let mut shared = lock(&self.shared);
        let current = shared.current.get_or_insert_with(Vec::new);
        let gone: HashSet<&Address> = removed.iter().collect();
        current.retain(|e| !gone.contains(&e.address));
        shared.send(|| Ok(Update::Remove(removed.clone())));
    }

    /// Sends a service config, given as JSON: a valid one replaces the
    /// channel's last one from the resolver; an invalid one is reported as
    /// [`ServiceConfigUpdate::Invalid`] (with the field at fault) and the
    /// last good one stays (grpc-go's `UpdateState` with a `ServiceConfig`).
    ///
    /// ```
    /// use grpc_lb_resolve::ManualResolver;
    ///
    /// let (_resolver, handle) = ManualResolver::new("test");
    /// handle.service_config(r#"{"methodConfig": [{"name": [{}], "timeout": "2s"}]}"#);
    /// ```
    pub fn service_config(&self, json: &str) {
        self.send_service_config(ServiceConfigUpdate::parse(json));
    }

    /// Sends a service config update as it is: a config, "no config", or an
    /// error.
    pub fn send_service_config(&self, update: ServiceConfigUpdate) {
        let mut shared = lock(&self.shared);
        shared.config = Some(update.clone());
        shared.send(|| Ok(Update::ServiceConfig(update.clone())));
    }

    /// Reports a resolution error (grpc-go's `ReportError`).
    pub fn error(&self, message: impl Into<String>) {
        let message = message.into();
        lock(&self.shared).send(|| Err(message.clone().into()));
    }

    /// How many times the subchannels fed by this resolver asked for re-resolution.
    pub fn resolve_now_requests(&self) -> u64 {
        lock(&self.shared)
            .resolve_now
            .iter()
            .map(ResolveNow::count)
            .sum()
    }
}
