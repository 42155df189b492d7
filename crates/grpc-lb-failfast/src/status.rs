//! The gRPC status a client-side failure becomes, as gRPC's
//! `doc/statuscodes.md` and grpc-go's HTTP/2 error table
//! (`internal/transport/http_util.go`, `http2ErrConvTab`) give it.

use std::error::Error as StdError;
use std::sync::Arc;

use grpc_lb_core::{BoxError, TransportError};
use tonic::{Code, Status};

/// The status an HTTP/2 error code (`RST_STREAM`, `GOAWAY`) maps to, as
/// grpc-go's `http2ErrConvTab` gives it, with gRPC's protocol spec where the
/// two differ (`FLOW_CONTROL_ERROR` is `INTERNAL`, as the spec, C-core and
/// Java have it; grpc-go alone says `RESOURCE_EXHAUSTED`). `CANCEL` is
/// `CANCELLED` here; a caller that knows its deadline has passed reports it
/// as `DEADLINE_EXCEEDED` (the spec's §Client Cancellation).
///
/// ```
/// use grpc_lb_failfast::code_from_h2_reason;
/// use tonic::Code;
///
/// assert_eq!(code_from_h2_reason(h2::Reason::REFUSED_STREAM), Code::Unavailable);
/// assert_eq!(code_from_h2_reason(h2::Reason::ENHANCE_YOUR_CALM), Code::ResourceExhausted);
/// assert_eq!(code_from_h2_reason(h2::Reason::CANCEL), Code::Cancelled);
/// ```
pub fn code_from_h2_reason(reason: h2::Reason) -> Code {
    match reason {
        h2::Reason::NO_ERROR
        | h2::Reason::PROTOCOL_ERROR
        | h2::Reason::INTERNAL_ERROR
        | h2::Reason::FLOW_CONTROL_ERROR
        | h2::Reason::SETTINGS_TIMEOUT
        | h2::Reason::STREAM_CLOSED
        | h2::Reason::FRAME_SIZE_ERROR
        | h2::Reason::COMPRESSION_ERROR
        | h2::Reason::CONNECT_ERROR
        | h2::Reason::HTTP_1_1_REQUIRED => Code::Internal,
        h2::Reason::REFUSED_STREAM => Code::Unavailable,
        h2::Reason::CANCEL => Code::Cancelled,
        h2::Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
        h2::Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
        _ => Code::Unknown,
    }
}

/// What a failure of the transport under an RPC means for the RPC.
enum Cause {
    /// A status already: kept as it is.
    Status,
    /// A failure the table maps to `code`.
    Code(Code),
    /// Not a failure this crate knows.
    Other,
}

/// Walks `error`'s source chain for the first cause that says which status
/// the RPC gets.
fn cause(error: &(dyn StdError + 'static)) -> Cause {
    let mut current = Some(error);
    let mut transport = false;
    while let Some(e) = current {
        if e.is::<Status>() {
            return Cause::Status;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return Cause::Code(if h2.is_go_away() || h2.is_io() {
                // The connection went away under the stream (grpc-go's
                // ConnectionError): UNAVAILABLE, whatever the GOAWAY's code.
                Code::Unavailable
            } else if let Some(reason) = h2.reason() {
                code_from_h2_reason(reason)
            } else {
                // h2 refused what this client asked of it.
                Code::Internal
            });
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            if hyper.is_timeout() {
                // A client's only hyper timeout is HTTP/2 keepalive's: the
                // connection is dead, which grpc-go reports as UNAVAILABLE
                // (a keepalive timeout closes the transport), not a deadline.
                return Cause::Code(Code::Unavailable);
            }
            if hyper.is_user() {
                return Cause::Code(Code::Internal);
            }
            // Canceled (never sent), closed, incomplete, an I/O error: the
            // connection failed; an h2 cause further down is more precise.
            transport = true;
        } else if e.is::<std::io::Error>() || e.is::<TransportError>() {
            transport = true;
        } else if e.is::<tower::timeout::error::Elapsed>() || e.is::<tokio::time::error::Elapsed>()
        {
            return Cause::Code(Code::DeadlineExceeded);
        }
        current = e.source();
    }
    if transport {
        Cause::Code(Code::Unavailable)
    } else {
        Cause::Other
    }
}

/// The gRPC status for any error of an RPC: the [`tonic::Status`] it is or
/// carries in its source chain; `UNAVAILABLE` for a connection that failed
/// under it (closed, reset, an I/O error, a `GOAWAY`, hyper's "canceled");
/// the [table](code_from_h2_reason) for an `RST_STREAM` code;
/// `DEADLINE_EXCEEDED` for an elapsed tower or tokio timeout; `UNKNOWN` for
/// anything else. The original error stays attached as the status's
/// `source`, so that a retry layer can still tell a refused stream from a
/// broken connection.
///
/// ```
/// use grpc_lb_core::{BoxError, TransportError};
/// use grpc_lb_failfast::to_status;
/// use tonic::Code;
///
/// let reset: BoxError = TransportError::new(h2::Error::from(h2::Reason::ENHANCE_YOUR_CALM)).into();
/// assert_eq!(to_status(reset).code(), Code::ResourceExhausted);
///
/// let timeout: BoxError = tower::timeout::error::Elapsed::new().into();
/// assert_eq!(to_status(timeout).code(), Code::DeadlineExceeded);
/// ```
pub fn to_status(error: BoxError) -> Status {
    match cause(&*error) {
        Cause::Status => match error.downcast::<Status>() {
            Ok(status) => *status,
            Err(error) => {
                let mut current: Option<&(dyn StdError + 'static)> = Some(&*error);
                while let Some(e) = current {
                    if let Some(status) = e.downcast_ref::<Status>() {
                        return status.clone();
                    }
                    current = e.source();
                }
                unreachable!("cause() found a Status in the chain")
            }
        },
        Cause::Code(code) => with_source(code, error),
        Cause::Other => with_source(Code::Unknown, error),
    }
}

fn with_source(code: Code, error: BoxError) -> Status {
    let mut status = Status::new(code, error.to_string());
    status.set_source(Arc::<dyn StdError + Send + Sync>::from(error));
    status
}

/// A request that failed because its transport failed becomes the gRPC
/// status [`to_status`] gives it, with the transport error as its source;
/// any other error (a status already, an application's own error) is passed
/// on as it is.
pub fn transport_to_status(error: BoxError) -> BoxError {
    match cause(&*error) {
        Cause::Code(code) => with_source(code, error).into(),
        Cause::Status | Cause::Other => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(error: impl Into<BoxError>) -> Code {
        to_status(error.into()).code()
    }

    /// gRPC's spec §Errors and grpc-go's `http2ErrConvTab`, code by code.
    #[test]
    fn rst_stream_codes() {
        use h2::Reason;
        let table = [
            (Reason::NO_ERROR, Code::Internal),
            (Reason::PROTOCOL_ERROR, Code::Internal),
            (Reason::INTERNAL_ERROR, Code::Internal),
            (Reason::FLOW_CONTROL_ERROR, Code::Internal),
            (Reason::SETTINGS_TIMEOUT, Code::Internal),
            (Reason::STREAM_CLOSED, Code::Internal),
            (Reason::FRAME_SIZE_ERROR, Code::Internal),
            (Reason::REFUSED_STREAM, Code::Unavailable),
            (Reason::CANCEL, Code::Cancelled),
            (Reason::COMPRESSION_ERROR, Code::Internal),
            (Reason::CONNECT_ERROR, Code::Internal),
            (Reason::ENHANCE_YOUR_CALM, Code::ResourceExhausted),
            (Reason::INADEQUATE_SECURITY, Code::PermissionDenied),
            (Reason::HTTP_1_1_REQUIRED, Code::Internal),
            (Reason::from(0x42), Code::Unknown),
        ];
        for (reason, expected) in table {
            assert_eq!(code_from_h2_reason(reason), expected, "{reason:?}");
            let reset = TransportError::new(h2::Error::from(reason));
            assert_eq!(code(reset), expected, "{reason:?} through the transport");
        }
    }

    #[test]
    fn failures_of_the_connection_are_unavailable() {
        let go_away = h2::Error::from(h2::Reason::NO_ERROR);
        assert_eq!(code(go_away), Code::Internal, "a reset, not a GOAWAY");
        assert_eq!(
            code(TransportError::new("reset by peer")),
            Code::Unavailable
        );
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(code(io), Code::Unavailable);
    }

    #[test]
    fn timeouts_are_deadline_exceeded() {
        assert_eq!(
            code(tower::timeout::error::Elapsed::new()),
            Code::DeadlineExceeded
        );
    }

    #[test]
    fn a_status_is_kept_and_anything_else_is_unknown() {
        let status = to_status(Status::not_found("gone").into());
        assert_eq!((status.code(), status.message()), (Code::NotFound, "gone"));
        let other = to_status("a bug".into());
        assert_eq!((other.code(), other.message()), (Code::Unknown, "a bug"));
        let passed = transport_to_status("a bug".into());
        assert_eq!(passed.to_string(), "a bug");
    }
}
