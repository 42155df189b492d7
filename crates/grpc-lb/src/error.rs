//! The one error type of a channel: what building one and calling through
//! one fail with.

use std::error::Error as StdError;
use std::fmt;

use grpc_lb_balance::UnknownPolicy;
use grpc_lb_core::BoxError;
use grpc_lb_resolve::ResolveError;
use grpc_lb_service_config::ServiceConfigError;

/// Why a channel could not be built, or a call through it failed: the error
/// of [`Builder::build`](crate::Builder::build) and the `Service::Error` of
/// every [`Channel`](crate::Channel).
///
/// It is `std::error::Error + Send + Sync + 'static`, so `?` takes it into a
/// `Box<dyn std::error::Error>` (or `+ Send + Sync`) as tonic's
/// `transport::Error` goes.
///
/// - A build error reads as its cause (`invalid target "dns:///:80": empty
///   host`); [`build_error`](Self::build_error) gives the [`BuildError`] to
///   match on.
/// - A call error reads `call failed`, with the cause as its
///   [`source`](StdError::source): almost always a [`tonic::Status`]
///   ([`status`](Self::status)), which is how tonic's generated clients find
///   the code (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, ...) behind it.
///
/// Each message appears once down the chain of sources.
///
/// ```
/// use grpc_lb::{BuildError, Channel};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let error = Channel::builder("dns:///:80").build().unwrap_err();
/// assert_eq!(error.to_string(), r#"invalid target "dns:///:80": empty host"#);
/// assert!(std::error::Error::source(&error).is_none(), "said once");
/// assert!(matches!(error.build_error(), Some(BuildError::Target(_))));
///
/// // `?` into `Box<dyn Error>` works, as with tonic.
/// fn build() -> Result<grpc_lb::GrpcChannel, Box<dyn std::error::Error>> {
///     Ok(Channel::builder("ipv4:127.0.0.1:50051").build()?)
/// }
/// assert!(build().is_ok());
/// # }
/// ```
pub struct Error {
    kind: Kind,
}

enum Kind {
    Build(BuildError),
    Call(BoxError),
}

impl Error {
    /// A failed call's error. An `Error` boxed into `error` (from a channel
    /// under this one) is unwrapped, not wrapped twice.
    pub(crate) fn call(error: BoxError) -> Self {
        match error.downcast::<Error>() {
            Ok(error) => *error,
            Err(error) => Error {
                kind: Kind::Call(error),
            },
        }
    }

    /// What went wrong building the channel, if that is what failed.
    pub fn build_error(&self) -> Option<&BuildError> {
        match &self.kind {
            Kind::Build(error) => Some(error),
            Kind::Call(_) => None,
        }
    }

    /// The gRPC status a call failed with, if it failed with one (the
    /// channel's own failures are all statuses: `UNAVAILABLE` with the
    /// connection's error, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`).
    pub fn status(&self) -> Option<&tonic::Status> {
        match &self.kind {
            Kind::Call(error) => error.downcast_ref(),
            Kind::Build(_) => None,
        }
    }

    /// The call's error as a boxed error (a build error, boxed).
    pub fn into_inner(self) -> BoxError {
        match self.kind {
            Kind::Build(error) => Box::new(error),
            Kind::Call(error) => error,
        }
    }
}

impl From<BuildError> for Error {
    fn from(error: BuildError) -> Self {
        Error {
            kind: Kind::Build(error),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Build(error) => error.fmt(f),
            Kind::Call(_) => f.pad("call failed"),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Build(error) => f.debug_tuple("Error::Build").field(error).finish(),
            Kind::Call(error) => f.debug_tuple("Error::Call").field(error).finish(),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.kind {
            // The build error's message is this error's own: its source
            // comes next.
            Kind::Build(error) => error.source(),
            Kind::Call(error) => Some(&**error),
        }
    }
}

/// Why a channel could not be built: what [`Error::build_error`] gives.
///
/// Each variant reads as its cause, once: its `Display` is the cause's
/// message (which says the cause's own causes), and it has no `source`;
/// the variant's field is the typed cause.
///
/// ```
/// use grpc_lb::{BuildError, Channel};
///
/// // Outside a tokio runtime there is nowhere to run the channel's worker.
/// let error = Channel::builder("ipv4:127.0.0.1:50051").build().unwrap_err();
/// assert!(matches!(error.build_error(), Some(BuildError::NoRuntime)));
///
/// let runtime = tokio::runtime::Builder::new_current_thread().build()?;
/// let _inside = runtime.enter();
/// let error = Channel::builder("dns:///greeter.local:99999").build().unwrap_err();
/// assert!(matches!(error.build_error(), Some(BuildError::Target(_))));
///
/// let error = Channel::builder("ipv4:127.0.0.1:50051").policy("grpclb").build().unwrap_err();
/// assert!(matches!(error.build_error(), Some(BuildError::Policy(_))));
/// println!("{error}"); // unknown load-balancing policy "grpclb" (known: ...)
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub enum BuildError {
    /// The target is malformed or has no resolver.
    Target(ResolveError),
    /// No policy of that name is registered.
    Policy(UnknownPolicy),
    /// No tokio runtime to run the channel's worker on.
    NoRuntime,
    /// The service config names only policies this channel does not have.
    ServiceConfig(ServiceConfigError),
    /// The authority (from [`Builder::authority`](crate::Builder::authority) or the target) is not a
    /// valid `host[:port]`.
    InvalidAuthority(String),
    /// [`Builder::user_agent`](crate::Builder::user_agent)'s value is no valid header value.
    InvalidUserAgent(String),
    /// [`Builder::origin`](crate::Builder::origin)'s URI has no scheme or no authority.
    InvalidOrigin(String),
    /// The TLS configuration is unusable, or the server name is not a valid
    /// DNS name or IP address.
    #[cfg(feature = "tls")]
    Tls(grpc_lb_connect::tls::TlsError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Target(error) => error.fmt(f),
            BuildError::Policy(error) => error.fmt(f),
            BuildError::ServiceConfig(error) => error.fmt(f),
            BuildError::NoRuntime => {
                f.pad("a channel must be built inside a tokio runtime, which runs its worker")
            }
            BuildError::InvalidAuthority(authority) => {
                write!(f, "invalid authority {authority:?}: expected host[:port]")
            }
            BuildError::InvalidUserAgent(reason) => write!(f, "invalid user agent: {reason}"),
            BuildError::InvalidOrigin(origin) => {
                write!(f, "invalid origin {origin:?}: expected scheme://authority")
            }
            #[cfg(feature = "tls")]
            BuildError::Tls(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for BuildError {
    /// None: the message already says the whole cause (the errors below
    /// write their own causes into their messages), and the variant's field
    /// is the typed cause to match on.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        None
    }
}

/// Every message down `error`'s chain of sources, outermost first.
#[cfg(test)]
pub(crate) fn chain(error: &(dyn StdError + 'static)) -> Vec<String> {
    let mut messages = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        messages.push(error.to_string());
        next = error.source();
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_said_once(error: &(dyn StdError + 'static)) {
        let messages = chain(error);
        for (i, outer) in messages.iter().enumerate() {
            for inner in &messages[i + 1..] {
                assert!(
                    !outer.contains(inner.as_str()),
                    "{inner:?} is said again in {outer:?}: {messages:#?}"
                );
            }
        }
    }

    #[test]
    fn error_is_a_std_error_that_is_send_sync_and_static() {
        fn std_error<E: StdError + Send + Sync + 'static>() {}
        std_error::<Error>();
    }

    #[tokio::test]
    async fn each_build_error_says_its_cause_once() {
        let bad = [
            crate::Channel::builder("dns:///greeter.local:99999").build(),
            crate::Channel::builder("dns:///:80").build(),
            crate::Channel::builder("nope:///x").build(),
            crate::Channel::builder("ipv4:127.0.0.1:1")
                .policy("grpclb")
                .build(),
            crate::Channel::builder("ipv4:127.0.0.1:1")
                .authority("a b")
                .build(),
        ];
        for result in bad {
            let error = result.unwrap_err();
            assert!(error.build_error().is_some());
            assert!(!error.to_string().is_empty());
            assert_said_once(&error);
        }
    }

    #[tokio::test]
    async fn an_unregistered_etcd_scheme_is_said_first_with_its_feature() {
        // A registry without etcd, as a build without the `etcd` feature.
        let error = crate::Channel::builder("etcd:///services/greeter")
            .resolver_registry(grpc_lb_resolve::Registry::new())
            .build()
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with(
                r#"invalid target "etcd:///services/greeter": no resolver is registered for scheme "etcd" (it needs grpc-lb's feature "etcd")"#
            ),
            "{message}"
        );
        assert_said_once(&error);
    }

    #[test]
    fn a_call_error_says_call_failed_then_the_status_once() {
        let status = tonic::Status::unavailable("connection unavailable: refused");
        let error = Error::call(Box::new(status));
        assert_eq!(error.to_string(), "call failed");
        assert_eq!(error.status().unwrap().code(), tonic::Code::Unavailable);
        assert_said_once(&error);
        // tonic's clients find the status down the chain.
        let found = tonic::Status::from_error(Box::new(error));
        assert_eq!(found.code(), tonic::Code::Unavailable);
        assert_eq!(found.message(), "connection unavailable: refused");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_connection_is_said_once_down_the_call_error_chain() {
        use tower::ServiceExt;
        // Nothing listens on a port just bound and closed: the connection is
        // refused, and the fail-fast call gets UNAVAILABLE with that cause.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let channel = crate::Channel::builder(format!("ipv4:{addr}"))
            .build()
            .unwrap();
        let request = http::Request::post("/helloworld.Greeter/SayHello")
            .header("content-type", "application/grpc")
            .body(tonic::body::Body::empty())
            .unwrap();
        let error = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            channel.clone().oneshot(request),
        )
        .await
        .expect("a refused connection fails the call")
        .unwrap_err();
        let status = error.status().expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains(&addr.to_string()), "{status:?}");
        assert_said_once(&error);
    }

    #[test]
    fn a_channel_error_from_below_is_not_wrapped_twice() {
        let inner = Error::call(Box::new(tonic::Status::internal("x")));
        let outer = Error::call(Box::new(inner));
        assert_eq!(chain(&outer).len(), 2, "{:?}", chain(&outer));
    }
}
