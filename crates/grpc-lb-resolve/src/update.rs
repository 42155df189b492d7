//! What resolvers say: addresses, endpoints and updates to the set of them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::service_config::ServiceConfigUpdate;

/// Where one endpoint can be reached. This is the endpoint's stable key in the
/// balancer: two updates that name the same address name the same endpoint.
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// A relative weight for weighted policies; `None` means the default weight.
    pub weight: Option<u32>,
    /// Free-form metadata (etcd's `Metadata`, SRV details, labels).
    pub metadata: BTreeMap<String, String>,
}

/// One endpoint: an address and its attributes.
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
