use std::error::Error;
use std::fmt;
use std::sync::Arc;

use grpc_lb_core::SharedError;

use super::SubchannelId;

/// What a picker knows about the call it picks for (grpc-go's `PickInfo`).
///
/// Readiness is asked for before the call exists (tower's `poll_ready` has no
/// request), so the balancer first picks with [`PickInfo::none`]; policies
/// that say [`uses_pick_info`](super::Policy::uses_pick_info) pick again with
/// the call's own info when it is made.
///
/// ```
/// use grpc_lb_balance::tree::PickInfo;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("x-user", "alice".parse().unwrap());
/// let info = PickInfo::new(Some("/helloworld.Greeter/SayHello"), Some(&headers));
/// assert_eq!(info.method(), Some("/helloworld.Greeter/SayHello"));
/// assert_eq!(info.header("x-user"), Some("alice"));
/// assert!(PickInfo::none().method().is_none());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct PickInfo<'a> {
    method: Option<&'a str>,
    headers: Option<&'a http::HeaderMap>,
    extensions: Option<&'a http::Extensions>,
}

impl<'a> PickInfo<'a> {
    /// Info for a call with this method path and these request headers.
    pub const fn new(method: Option<&'a str>, headers: Option<&'a http::HeaderMap>) -> Self {
        PickInfo {
            method,
            headers,
            extensions: None,
        }
    }

    /// The same info with the request's extensions, where a caller leaves
    /// values for the policy (ring_hash's [`RequestHash`](super::RequestHash)).
    pub const fn with_extensions(mut self, extensions: &'a http::Extensions) -> Self {
        self.extensions = Some(extensions);
        self
    }

    /// The request's extensions, if known.
    pub fn extensions(&self) -> Option<&'a http::Extensions> {
        self.extensions
    }

    /// No call known: the pick made when readiness is asked for.
    pub const fn none() -> Self {
        PickInfo {
            method: None,
            headers: None,
            extensions: None,
        }
    }

    /// The full method path, `/package.Service/Method`, if known.
    pub fn method(&self) -> Option<&'a str> {
        self.method
    }

    /// The request headers (gRPC metadata), if known.
    pub fn headers(&self) -> Option<&'a http::HeaderMap> {
        self.headers
    }

    /// One request header as text, if present and printable.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers?.get(name)?.to_str().ok()
    }
}

/// How one call ended, as told to [`OnDone`] (grpc-go's `DoneInfo`).
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    /// The call succeeded: a plain service answered `Ok`, or an HTTP response
    /// ended with `grpc-status: 0` (or with no gRPC status at all).
    Ok,
    /// An HTTP response ended with this non-zero `grpc-status`, from its
    /// trailers or a Trailers-Only response.
    Status {
        /// The gRPC status code.
        code: i32,
        /// The `grpc-message`, if any.
        message: &'a str,
    },
    /// The call failed with an error: the service's, or the body's.
    Error(&'a (dyn Error + Send + Sync + 'static)),
    /// The response or its body was dropped before the call ended.
    Cancelled,
}

/// The final status of one call.
///
/// ```
/// use grpc_lb_balance::tree::{DoneInfo, Outcome};
///
/// assert!(DoneInfo::new(Outcome::Ok).is_ok());
/// let unavailable = DoneInfo::new(Outcome::Status { code: 14, message: "gone" });
/// assert!(!unavailable.is_ok());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct DoneInfo<'a> {
    /// How the call ended.
    pub outcome: Outcome<'a>,
    /// The trailers the status came in (or a Trailers-Only response's
    /// headers), where backends send per-call load reports (ORCA's
    /// `endpoint-load-metrics-bin`, gRFC A51).
    pub trailers: Option<&'a http::HeaderMap>,
}

impl<'a> DoneInfo<'a> {
    /// Info for a call that ended with `outcome`.
    pub const fn new(outcome: Outcome<'a>) -> Self {
        DoneInfo {
            outcome,
            trailers: None,
        }
    }

    /// The same info with the call's trailers.
    pub const fn with_trailers(mut self, trailers: &'a http::HeaderMap) -> Self {
        self.trailers = Some(trailers);
        self
    }

    /// True if the call succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok)
    }
}

/// Told when a picked call starts and when it ends (grpc-go's `PickResult.Done`).
///
/// The balancer calls [`on_start`](Self::on_start) when it sends the call on
/// the picked subchannel, and [`on_done`](Self::on_done) exactly once with the
/// final status: for an HTTP response, from its trailers or the end of its
/// body, not from its headers. A pick that is not used calls neither.
///
/// ```
/// use std::sync::atomic::{AtomicIsize, Ordering};
/// use grpc_lb_balance::tree::{DoneInfo, OnDone, Outcome};
///
/// #[derive(Debug, Default)]
/// struct InFlight(AtomicIsize);
///
/// impl OnDone for InFlight {
///     fn on_start(&self) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
///     fn on_done(&self, _: &DoneInfo<'_>) {
///         self.0.fetch_sub(1, Ordering::Relaxed);
///     }
/// }
///
/// let counter = InFlight::default();
/// counter.on_start();
/// counter.on_done(&DoneInfo::new(Outcome::Ok));
/// assert_eq!(counter.0.load(Ordering::Relaxed), 0);
/// ```
pub trait OnDone: Send + Sync + fmt::Debug + 'static {
    /// The call was sent on the picked subchannel.
    fn on_start(&self) {}

    /// The call ended.
    fn on_done(&self, info: &DoneInfo<'_>);
}

/// A picked subchannel, with an optional callback for the call's end.
///
/// ```
/// use grpc_lb_balance::tree::{Pick, SubchannelId};
///
/// let pick = Pick::new(SubchannelId::from_raw(3));
/// assert_eq!(pick.subchannel(), SubchannelId::from_raw(3));
/// assert!(pick.done().is_none());
/// ```
#[derive(Clone, Debug)]
pub struct Pick {
    subchannel: SubchannelId,
    done: Option<Arc<dyn OnDone>>,
}

impl Pick {
    /// Picks `subchannel`.
    pub const fn new(subchannel: SubchannelId) -> Self {
        Pick {
            subchannel,
            done: None,
        }
    }

    /// Picks `subchannel` and tells `done` about the call. An `Arc` clone, so
    /// a policy keeps one callback per subchannel and picks allocate nothing.
    pub fn with_done(subchannel: SubchannelId, done: Arc<dyn OnDone>) -> Self {
        Pick {
            subchannel,
            done: Some(done),
        }
    }

    /// The picked subchannel.
    pub fn subchannel(&self) -> SubchannelId {
        self.subchannel
    }

    /// The callback, if any.
    pub fn done(&self) -> Option<&Arc<dyn OnDone>> {
        self.done.as_ref()
    }

    pub(crate) fn into_done(self) -> Option<Arc<dyn OnDone>> {
        self.done
    }
}

/// A picker's answer for one call (grpc-go's `PickResult` and pick errors).
#[derive(Clone, Debug)]
pub enum PickResult {
    /// Send the call on this subchannel.
    Pick(Pick),
    /// No subchannel yet: the call waits for the policy's next state
    /// (grpc-go's `ErrNoSubConnAvailable`).
    Queue,
    /// No subchannel can take calls (TRANSIENT_FAILURE): a call that waits
    /// for ready keeps waiting, a fail-fast call fails UNAVAILABLE with this
    /// error.
    Fail(SharedError),
    /// Fail the call with this error even if it waits for ready (grpc-go's
    /// drop: a status error from the picker).
    Drop(SharedError),
}
