//! What resolvers say: addresses, endpoints and updates to the set of them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::service_config::ServiceConfigUpdate;

/// Where one endpoint can be reached. This is the endpoint's stable key in the
/// balancer: two updates that name the same address name the same endpoint.
///
/// ```
/// use std::net::SocketAddr;
/// use std::path::PathBuf;
/// use grpc_lb_resolve::Address;
///
/// let tcp = Address::from("10.0.0.1:50051".parse::<SocketAddr>().unwrap());
/// assert_eq!(tcp.as_socket().map(|s| s.port()), Some(50051));
///
/// let unix = Address::Unix(PathBuf::from("/run/greeter.sock"));
/// assert_eq!(unix.to_string(), "unix:/run/greeter.sock");
/// assert_eq!(unix.as_socket(), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    /// A TCP socket address.
    Socket(SocketAddr),
    /// A Unix domain socket path.
    Unix(PathBuf),
    /// A socket in Linux's abstract Unix namespace.
    UnixAbstract(String),
    /// A name handed to the connector as it is (the `passthrough` scheme).
    Name(String),
}

impl Address {
    /// The socket address, for TCP endpoints.
    pub fn as_socket(&self) -> Option<SocketAddr> {
        match self {
            Address::Socket(addr) => Some(*addr),
            _ => None,
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Address::Socket(addr)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Socket(addr) => write!(f, "{addr}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::UnixAbstract(name) => write!(f, "unix-abstract:{name}"),
            Address::Name(name) => f.pad(name),
        }
    }
}

/// Optional per-endpoint attributes a resolver can attach.
///
/// ```
/// use std::net::SocketAddr;
/// use grpc_lb_resolve::Endpoint;
///
/// let addr: SocketAddr = "10.0.0.1:50051".parse().unwrap();
/// let endpoint = Endpoint::new(addr).with_weight(3).with_metadata("zone", "eu-west-1a");
/// assert_eq!(endpoint.attributes.weight, Some(3));
/// assert_eq!(endpoint.attributes.metadata["zone"], "eu-west-1a");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// A relative weight for weighted policies; `None` means the default weight.
    pub weight: Option<u32>,
    /// Free-form metadata (etcd's `Metadata`, SRV details, labels).
    pub metadata: BTreeMap<String, String>,
}

/// One endpoint: an address and its attributes.
///
/// ```
/// use std::net::SocketAddr;
/// use grpc_lb_resolve::{Address, Endpoint};
///
/// let addr: SocketAddr = "10.0.0.1:50051".parse().unwrap();
/// let endpoint = Endpoint::from(addr);
/// assert_eq!(endpoint.address, Address::Socket(addr));
/// assert_eq!(endpoint.attributes.weight, None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Where it is.
    pub address: Address,
    /// What the resolver said about it.
    pub attributes: Attributes,
}

impl Endpoint {
    /// An endpoint with no attributes.
    pub fn new(address: impl Into<Address>) -> Self {
        Endpoint {
            address: address.into(),
            attributes: Attributes::default(),
        }
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.attributes.weight = Some(weight);
        self
    }

    /// Adds one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.metadata.insert(key.into(), value.into());
        self
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint::new(addr)
    }
}

/// A change to the set of endpoints, as a resolver reports it.
///
/// `Reset` is what tower's `Change` lacks: "this is the whole set now". The
/// adapter in [`crate::discover`] turns it into the inserts and removals a tower
/// balancer understands.
///
/// ```
/// use futures::StreamExt;
/// use grpc_lb_core::ResolveNow;
/// use grpc_lb_resolve::{Endpoint, ManualResolver, Update};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (resolver, handle) = ManualResolver::new("example");
/// let mut updates = resolver.stream(ResolveNow::new());
/// let a: std::net::SocketAddr = "10.0.0.1:50051".parse().unwrap();
/// let b: std::net::SocketAddr = "10.0.0.2:50051".parse().unwrap();
///
/// handle.reset([Endpoint::from(a), Endpoint::from(b)]);
/// handle.remove([a.into()]);
/// assert_eq!(updates.next().await.unwrap().unwrap(), Update::Reset(vec![a.into(), b.into()]));
/// assert_eq!(updates.next().await.unwrap().unwrap(), Update::Remove(vec![a.into()]));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// The complete set; every endpoint not in it is gone. An empty set is valid
    /// and means "no endpoints".
    Reset(Vec<Endpoint>),
    /// These endpoints are added (or their attributes replaced).
    Add(Vec<Endpoint>),
    /// These endpoints are gone.
    Remove(Vec<Address>),
    /// The service config the resolver found for the target (gRFC A2 for
    /// DNS): a new one, none, or one that cannot be used. It says nothing
    /// about the endpoints; a resolver that has both sends the config first.
    ServiceConfig(ServiceConfigUpdate),
}
