//! Errors of [`Balance`](crate::service::Balance).

use std::fmt;

use grpc_lb_core::SharedError;

/// The discovery stream ended with no endpoints: nothing can ever be picked.
///
/// While endpoints remain, the end of discovery is not an error: the balancer
/// keeps serving the last set.
#[derive(Debug, Default)]
pub struct DiscoverClosed(());

impl DiscoverClosed {
    pub(crate) fn new() -> Self {
        DiscoverClosed(())
    }
}

impl fmt::Display for DiscoverClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("discovery ended with no endpoints")
    }
}

impl std::error::Error for DiscoverClosed {}

/// The policy dropped the call ([`PickResult::Drop`](crate::tree::PickResult::Drop));
/// the policy's error is the source.
#[derive(Debug)]
pub struct Dropped {
    source: SharedError,
}

impl Dropped {
    pub(crate) fn new(source: SharedError) -> Self {
        Dropped { source }
    }
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "call dropped by the load-balancing policy: {}",
            self.source
        )
    }
}

impl std::error::Error for Dropped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
