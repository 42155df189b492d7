//! What an attempt's outcome allows: done, a transparent retry, or a retry
//! under the policy.

use std::error::Error as StdError;
use std::time::Duration;

use grpc_lb_core::{BoxError, NotSent, TransportError};
use http::{HeaderMap, Response};
use tonic::Code;

/// The trailer a server sets to ask for a specific wait before the next
/// attempt, or (negative or malformed) for no retry at all.
const PUSHBACK: &str = "grpc-retry-pushback-ms";

#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Final: a success, a response already streaming (committed), or an
    /// error no retry can help.
    Done { success: bool },
    /// The request never left this client.
    NeverSent,
    /// A server refused the stream before processing it (REFUSED_STREAM, or a
    /// graceful GOAWAY that excluded it).
    Unprocessed,
    /// The attempt failed with a status the retry policy may accept.
    Failed { code: Code, pushback: Pushback },
}

#[derive(Debug, PartialEq)]
pub(crate) enum Pushback {
    None,
    Wait(Duration),
    /// The server asked not to be retried.
    Refuse,
}

pub(crate) fn classify<B>(result: &Result<Response<B>, BoxError>) -> Verdict {
    match result {
        Ok(response) => classify_response(response),
        Err(error) => classify_error(&**error),
    }
}

fn classify_response<B>(response: &Response<B>) -> Verdict {
    let headers = response.headers();
    // A grpc-status among the headers makes this a Trailers-Only response: the
    // whole answer. Without one, the server has started a real response and the
    // RPC is committed to this attempt (gRFC A6).
    let code = match headers.get("grpc-status") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
            .map(Code::from_i32)
            .unwrap_or(Code::Unknown),
        None if response.status() == http::StatusCode::OK => {
            return Verdict::Done { success: true }
        }
        None => http_status_to_code(response.status()),
    };
    if code == Code::Ok {
        return Verdict::Done { success: true };
    }
    Verdict::Failed {
        code,
        pushback: pushback(headers),
    }
}

fn pushback(headers: &HeaderMap) -> Pushback {
    let mut values = headers.get_all(PUSHBACK).iter();
    match (values.next(), values.next()) {
        (None, _) => Pushback::None,
        (Some(value), None) => match value.to_str().ok().and_then(|v| v.parse::<i64>().ok()) {
            Some(ms) if ms >= 0 => Pushback::Wait(Duration::from_millis(ms as u64)),
            _ => Pushback::Refuse,
        },
        (Some(_), Some(_)) => Pushback::Refuse,
    }
}

/// gRPC's mapping of HTTP statuses for responses without a `grpc-status`
/// (doc/http-grpc-status-mapping.md; grpc-go's `HTTPStatusConvTab`): 400 is
/// `INTERNAL`, 401 `UNAUTHENTICATED`, 403 `PERMISSION_DENIED`, 404
/// `UNIMPLEMENTED`, 429, 502, 503 and 504 `UNAVAILABLE`, anything else
/// (200 too, for a response that is not gRPC) `UNKNOWN`.
///
/// ```
/// use grpc_lb_retry::http_status_to_code;
/// use tonic::Code;
///
/// assert_eq!(http_status_to_code(http::StatusCode::NOT_FOUND), Code::Unimplemented);
/// assert_eq!(http_status_to_code(http::StatusCode::BAD_GATEWAY), Code::Unavailable);
/// assert_eq!(http_status_to_code(http::StatusCode::IM_A_TEAPOT), Code::Unknown);
/// ```
pub fn http_status_to_code(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// Why an RPC that failed may be sent again whatever its retry policy
/// (gRFC A6's transparent retries).
///
/// ```
/// use grpc_lb_core::{BoxError, TransportError};
/// use grpc_lb_retry::{transparent_retry, TransparentRetry};
///
/// let refused: BoxError = TransportError::new(h2::Error::from(h2::Reason::REFUSED_STREAM)).into();
/// assert_eq!(transparent_retry(&*refused), Some(TransparentRetry::Unprocessed));
/// let reset: BoxError = TransportError::new(h2::Error::from(h2::Reason::INTERNAL_ERROR)).into();
/// assert_eq!(transparent_retry(&*reset), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransparentRetry {
    /// The request never left this client (hyper's "canceled": the
    /// connection closed before it took the request). grpc-go sends such an
    /// RPC again for as long as its deadline allows.
    NeverSent,
    /// A server saw the stream but did not process it: `REFUSED_STREAM`, or a
    /// graceful `GOAWAY` that excluded it. Sent again once per RPC.
    Unprocessed,
}

/// Whether `error`, an attempt's failure before any response, allows a
/// transparent retry, and which: what [`Retry`](crate::Retry) itself uses,
/// for a channel to reuse.
pub fn transparent_retry(error: &(dyn StdError + 'static)) -> Option<TransparentRetry> {
    match classify_error(error) {
        Verdict::NeverSent => Some(TransparentRetry::NeverSent),
        Verdict::Unprocessed => Some(TransparentRetry::Unprocessed),
        _ => None,
    }
}

fn classify_error(error: &(dyn StdError + 'static)) -> Verdict {
    let mut transport = false;
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        if e.is::<NotSent>() {
            // The connection refused it before writing it (closed or draining).
            return Verdict::NeverSent;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            // h2 fails with the remote GOAWAY exactly the streams above its
            // last-stream-id, whatever its code (grpc-go marks them all
            // unprocessed); streams at or below it end on their own.
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote())
            {
                return Verdict::Unprocessed;
            }
            transport = true;
        } else if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            // hyper's "canceled": the request was dropped before the connection
            // ever took it.
            if hyper.is_canceled() {
                return Verdict::NeverSent;
            }
            transport = true;
        } else if let Some(status) = e.downcast_ref::<tonic::Status>() {
            // A status carrying its transport cause is looked through, so that a
            // refused stream is still recognised as one.
            if status.code() != Code::Unavailable || status.source().is_none() {
                return Verdict::Failed {
                    code: status.code(),
                    pushback: Pushback::None,
                };
            }
            transport = true;
        } else if e.is::<TransportError>() {
            transport = true;
        }
        current = e.source();
    }
    if transport {
        Verdict::Failed {
            code: Code::Unavailable,
            pushback: Pushback::None,
        }
    } else {
        Verdict::Done { success: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&'static str, &'static str)]) -> Response<()> {
        let mut builder = Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn failed(code: Code, pushback: Pushback) -> Verdict {
        Verdict::Failed { code, pushback }
    }

    #[test]
    fn responses() {
        let cases = [
            (response(200, &[]), Verdict::Done { success: true }),
            (
                response(200, &[("grpc-status", "0")]),
                Verdict::Done { success: true },
            ),
            (
                response(200, &[("grpc-status", "14")]),
                failed(Code::Unavailable, Pushback::None),
            ),
            (
                response(200, &[("grpc-status", "14"), (PUSHBACK, "25")]),
                failed(Code::Unavailable, Pushback::Wait(Duration::from_millis(25))),
            ),
            (
                response(200, &[("grpc-status", "14"), (PUSHBACK, "-1")]),
                failed(Code::Unavailable, Pushback::Refuse),
            ),
            (
                response(200, &[("grpc-status", "14"), (PUSHBACK, "soon")]),
                failed(Code::Unavailable, Pushback::Refuse),
            ),
            (
                response(
                    200,
                    &[("grpc-status", "14"), (PUSHBACK, "1"), (PUSHBACK, "2")],
                ),
                failed(Code::Unavailable, Pushback::Refuse),
            ),
            (
                response(200, &[("grpc-status", "x")]),
                failed(Code::Unknown, Pushback::None),
            ),
            (
                response(503, &[]),
                failed(Code::Unavailable, Pushback::None),
            ),
            (
                response(404, &[]),
                failed(Code::Unimplemented, Pushback::None),
            ),
            (response(500, &[]), failed(Code::Unknown, Pushback::None)),
        ];
        for (response, expected) in cases {
            let headers = format!("{:?}", response.headers());
            assert_eq!(classify(&Ok(response)), expected, "{headers}");
        }
    }

    #[test]
    fn errors() {
        let refused: BoxError =
            TransportError::new(h2::Error::from(h2::Reason::REFUSED_STREAM)).into();
        assert_eq!(classify::<()>(&Err(refused)), Verdict::Unprocessed);

        let reset: BoxError =
            TransportError::new(h2::Error::from(h2::Reason::INTERNAL_ERROR)).into();
        assert_eq!(
            classify::<()>(&Err(reset)),
            failed(Code::Unavailable, Pushback::None)
        );

        let mut wrapped = tonic::Status::unavailable("transport error");
        wrapped.set_source(std::sync::Arc::new(TransportError::new(h2::Error::from(
            h2::Reason::REFUSED_STREAM,
        ))));
        assert_eq!(classify::<()>(&Err(wrapped.into())), Verdict::Unprocessed);

        let fail_fast: BoxError = tonic::Status::unavailable("connection refused").into();
        assert_eq!(
            classify::<()>(&Err(fail_fast)),
            failed(Code::Unavailable, Pushback::None)
        );

        let deadline: BoxError = tonic::Status::deadline_exceeded("late").into();
        assert_eq!(
            classify::<()>(&Err(deadline)),
            failed(Code::DeadlineExceeded, Pushback::None)
        );

        let draining: BoxError =
            TransportError::new(NotSent::new("the connection is draining")).into();
        assert_eq!(classify::<()>(&Err(draining)), Verdict::NeverSent);

        let other: BoxError = "a bug".into();
        assert_eq!(
            classify::<()>(&Err(other)),
            Verdict::Done { success: false }
        );
    }
}
