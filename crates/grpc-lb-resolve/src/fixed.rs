//! Resolvers for targets that name their addresses: `ipv4`, `ipv6`, `unix`,
//! `unix-abstract` and `passthrough`, and static lists given in code.

use futures::stream::{self, StreamExt};
use grpc_lb_core::{BoxError, ResolveNow};

use crate::resolver::{Resolver, UpdateStream};
use crate::target::Target;
use crate::update::{Address, Endpoint, Update};

pub(crate) const SCHEMES: [&str; 5] = ["ipv4", "ipv6", "unix", "unix-abstract", "passthrough"];

/// The resolver for one of the schemes whose targets are their own addresses.
///
/// It reports the addresses once, as a `Reset`, and then stays quiet: there is
/// nothing to re-resolve (grpc-go resolves IP literals once as well).
#[derive(Debug, Clone)]
pub(crate) struct FixedResolver {
    scheme: &'static str,
}

impl FixedResolver {
    pub(crate) fn new(scheme: &'static str) -> Self {
        FixedResolver { scheme }
    }
}

impl Resolver for FixedResolver {
    fn scheme(&self) -> &str {
        self.scheme
    }

    fn resolve(&self, target: &Target, _resolve_now: ResolveNow) -> Result<UpdateStream, BoxError> {
        let addresses: Vec<Address> = match target {
            Target::Ipv4(addrs) | Target::Ipv6(addrs) => {
                addrs.iter().copied().map(Address::Socket).collect()
            }
            Target::Unix { path } => vec![Address::Unix(path.clone())],
            Target::UnixAbstract { name } => vec![Address::UnixAbstract(name.clone())],
            Target::Passthrough { name, .. } => vec![Address::Name(name.clone())],
            other => {
                return Err(format!("the {} resolver cannot resolve {other}", self.scheme).into())
            }
        };
        Ok(static_list(addresses.into_iter().map(Endpoint::new)))
    }
}

/// A fixed set of endpoints as an update stream: one `Reset`, then nothing.
///
/// # Examples
///
/// ```
/// use grpc_lb_resolve::{static_list, Endpoint};
///
/// let updates = static_list([
///     Endpoint::new("127.0.0.1:50051".parse::<std::net::SocketAddr>().unwrap()),
///     Endpoint::new("127.0.0.1:50052".parse::<std::net::SocketAddr>().unwrap()).with_weight(2),
/// ]);
/// # drop(updates);
/// ```
pub fn static_list(endpoints: impl IntoIterator<Item = Endpoint>) -> UpdateStream {
    let reset = Update::Reset(endpoints.into_iter().collect());
    // Never ending: the end of a resolver's stream would mean "resolver gone".
    stream::once(async move { Ok(reset) })
        .chain(stream::pending())
        .boxed()
}
