//! The gRPC status a response carries: `grpc-status` and `grpc-message`, read
//! from its trailers (or from its headers, in a Trailers-Only response) as
//! gRPC's `PROTOCOL-HTTP2.md` writes them.
//!
//! One reader for every crate that needs the status, so that they agree on
//! an odd one: a `grpc-status` that is not a decimal number is UNKNOWN
//! (core `doc/statuscodes.md`: "status parse error"), and the message is
//! percent-decoded, keeping what does not decode as it was (the spec: never
//! fail or drop a message because of it).

use std::borrow::Cow;
use std::fmt;

use http::{HeaderMap, HeaderName};

/// The `grpc-status` header.
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The `grpc-message` header.
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// The code of a call that succeeded.
pub const OK: i32 = 0;
/// The code of a status that could not be read (`UNKNOWN`).
pub const UNKNOWN: i32 = 2;

/// The status in a response's trailers (or Trailers-Only headers).
///
/// Reading the code costs one header lookup; the message is looked up and
/// decoded only when asked for.
///
/// ```
/// use grpc_lb_core::status::{GrpcStatus, UNKNOWN};
///
/// let mut trailers = http::HeaderMap::new();
/// trailers.insert("grpc-status", "14".parse().unwrap());
/// trailers.insert("grpc-message", "no backend: 50%25 down".parse().unwrap());
/// let status = GrpcStatus::from_headers(&trailers).unwrap();
/// assert_eq!(status.code(), 14);
/// assert!(!status.is_ok());
/// assert_eq!(status.message(), "no backend: 50% down");
///
/// // Not a number: UNKNOWN, as gRPC reads a status it cannot parse.
/// trailers.insert("grpc-status", "fourteen".parse().unwrap());
/// assert_eq!(GrpcStatus::from_headers(&trailers).unwrap().code(), UNKNOWN);
///
/// // No status at all.
/// assert!(GrpcStatus::from_headers(&http::HeaderMap::new()).is_none());
/// ```
#[derive(Clone, Copy)]
pub struct GrpcStatus<'a> {
    code: i32,
    headers: &'a HeaderMap,
}

impl<'a> GrpcStatus<'a> {
    /// The status in `headers`, or `None` when they have no `grpc-status`.
    pub fn from_headers(headers: &'a HeaderMap) -> Option<Self> {
        // Trailers hold a header or two: comparing names costs less than
        // hashing one for a lookup, which this does on every call.
        const SCANNED: usize = 8;
        let value = if headers.len() <= SCANNED {
            headers
                .iter()
                .find_map(|(name, value)| (*name == GRPC_STATUS).then_some(value))
        } else {
            headers.get(&GRPC_STATUS)
        }?;
        Some(GrpcStatus {
            code: parse_code(value.as_bytes()),
            headers,
        })
    }

    /// The status code: its number as sent (a code gRPC does not define yet
    /// is kept as it is, as grpc-go keeps it), or [`UNKNOWN`] when the value
    /// is not a decimal number that fits an `i32`.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// Whether the call succeeded (code 0).
    pub fn is_ok(&self) -> bool {
        self.code == OK
    }

    /// The `grpc-message`, percent-decoded; empty when there is none. A `%`
    /// not followed by two hex digits is kept as it is, and bytes that are
    /// not UTF-8 once decoded become U+FFFD.
    pub fn message(&self) -> Cow<'a, str> {
        match self.headers.get(&GRPC_MESSAGE) {
            Some(value) => percent_decode(value.as_bytes()),
            None => Cow::Borrowed(""),
        }
    }
}

impl fmt::Debug for GrpcStatus<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcStatus")
            .field("code", &self.code)
            .field("message", &self.message())
            .finish()
    }
}

/// `1*DIGIT` (the spec's `Status → "grpc-status" 1*DIGIT`), else UNKNOWN.
fn parse_code(value: &[u8]) -> i32 {
    if value.is_empty() || value.len() > 10 {
        return UNKNOWN;
    }
    let mut code: i64 = 0;
    for &byte in value {
        if !byte.is_ascii_digit() {
            return UNKNOWN;
        }
        code = code * 10 + i64::from(byte - b'0');
    }
    i32::try_from(code).unwrap_or(UNKNOWN)
}

/// Decodes `%XX` sequences; anything else is taken as it is.
fn percent_decode(value: &[u8]) -> Cow<'_, str> {
    if !value.contains(&b'%') {
        return String::from_utf8_lossy(value);
    }
    let mut decoded = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let byte = value[i];
        if byte == b'%' {
            let hex = value.get(i + 1..i + 3);
            if let Some([high, low]) = hex {
                if let (Some(high), Some(low)) = (hex_digit(*high), hex_digit(*low)) {
                    decoded.push(high << 4 | low);
                    i += 3;
                    continue;
                }
            }
        }
        decoded.push(byte);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&decoded).into_owned())
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(status: Option<&[u8]>, message: Option<&[u8]>) -> HeaderMap {
        let mut map = HeaderMap::new();
        if let Some(status) = status {
            map.insert(&GRPC_STATUS, http::HeaderValue::from_bytes(status).unwrap());
        }
        if let Some(message) = message {
            map.insert(
                &GRPC_MESSAGE,
                http::HeaderValue::from_bytes(message).unwrap(),
            );
        }
        map
    }

    fn code(value: &[u8]) -> i32 {
        let map = headers(Some(value), None);
        GrpcStatus::from_headers(&map).unwrap().code()
    }

    #[test]
    fn codes_are_decimal_numbers_and_anything_else_is_unknown() {
        assert_eq!(code(b"0"), OK);
        assert_eq!(code(b"14"), 14);
        assert_eq!(code(b"016"), 16);
        assert_eq!(code(b"99"), 99, "a code not defined yet is kept");
        assert_eq!(code(b"2147483647"), i32::MAX);
        for bad in [
            &b"2147483648"[..],
            b"99999999999",
            b"-1",
            b"+3",
            b" 3",
            b"3 ",
            b"0x1",
            b"ok",
            b"",
        ] {
            assert_eq!(code(bad), UNKNOWN, "{:?}", String::from_utf8_lossy(bad));
        }
        let ok = headers(Some(b"0"), None);
        assert!(GrpcStatus::from_headers(&ok).unwrap().is_ok());
        let failed = headers(Some(b"x"), None);
        assert!(!GrpcStatus::from_headers(&failed).unwrap().is_ok());
        assert!(GrpcStatus::from_headers(&headers(None, Some(b"m"))).is_none());
        // Found among many headers too (looked up, not scanned).
        let mut many = headers(Some(b"5"), None);
        for i in 0..20 {
            let name = HeaderName::try_from(format!("x-{i}")).unwrap();
            many.insert(name, http::HeaderValue::from_static("v"));
        }
        assert_eq!(GrpcStatus::from_headers(&many).unwrap().code(), 5);
    }

    fn message(value: &[u8]) -> String {
        let map = headers(Some(b"13"), Some(value));
        GrpcStatus::from_headers(&map)
            .unwrap()
            .message()
            .into_owned()
    }

    #[test]
    fn messages_are_percent_decoded_and_broken_escapes_kept() {
        assert_eq!(message(b"plain text"), "plain text");
        assert_eq!(message(b"50%25 off"), "50% off");
        assert_eq!(message(b"caf%C3%A9"), "café");
        assert_eq!(message(b"%e2%9C%93"), "✓", "hex of either case");
        assert_eq!(message(b"100%"), "100%", "a % at the end");
        assert_eq!(message(b"%zz and %4"), "%zz and %4", "not two hex digits");
        assert_eq!(message(b"%FF"), "\u{FFFD}", "not UTF-8 once decoded");
        let none = headers(Some(b"13"), None);
        assert_eq!(GrpcStatus::from_headers(&none).unwrap().message(), "");
    }
}
