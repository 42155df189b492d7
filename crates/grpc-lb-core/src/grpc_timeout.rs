//! The `grpc-timeout` request header: how long the caller gives an RPC, as
//! gRPC's HTTP/2 protocol spells it (at most eight digits and a unit).
//!
//! ```
//! use std::time::Duration;
//! use grpc_lb_core::grpc_timeout;
//!
//! let mut headers = http::HeaderMap::new();
//! headers.insert(grpc_timeout::HEADER, grpc_timeout::encode(Duration::from_millis(1500)));
//! assert_eq!(headers[grpc_timeout::HEADER], "1500000u");
//! assert_eq!(grpc_timeout::parse(&headers), Some(Duration::from_millis(1500)));
//! ```

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header's name.
pub const HEADER: &str = "grpc-timeout";

/// The header's name, made once: a lookup by `&str` parses the name again on
/// every call.
pub const HEADER_NAME: HeaderName = HeaderName::from_static(HEADER);

/// The largest amount the header may carry in any unit.
const MAX_AMOUNT: u128 = 99_999_999;

/// The timeout a request's headers carry, if any; a malformed value counts as
/// none, as tonic's server treats it.
pub fn parse(headers: &HeaderMap) -> Option<Duration> {
    parse_value(headers.get(HEADER_NAME)?)
}

/// The timeout one `grpc-timeout` value carries; `None` when malformed.
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_core::grpc_timeout;
///
/// let value = http::HeaderValue::from_static("250m");
/// assert_eq!(grpc_timeout::parse_value(&value), Some(Duration::from_millis(250)));
/// assert_eq!(grpc_timeout::parse_value(&http::HeaderValue::from_static("1s")), None);
/// ```
pub fn parse_value(value: &HeaderValue) -> Option<Duration> {
    let value = value.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The header value for `timeout`: the finest unit whose amount fits in eight
/// digits, rounded up so that the server never sees less time than is left
/// (grpc-go's `encodeTimeout`, `internal/grpcutil/encode_duration.go`); no
/// time left is `0n`.
pub fn encode(timeout: Duration) -> HeaderValue {
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let (amount, unit) = units
        .iter()
        .map(|&(per, unit)| (nanos.div_ceil(per), unit))
        .find(|&(amount, _)| amount <= MAX_AMOUNT)
        .unwrap_or((MAX_AMOUNT, 'H'));
    // At most eight digits and the unit, written on the stack: no `format!`.
    let mut text = [0u8; 9];
    let mut at = text.len() - 1;
    text[at] = unit as u8;
    let mut rest = amount;
    loop {
        at -= 1;
        text[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&text[at..]).expect("digits and a unit letter")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_value(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, value.parse().unwrap());
        parse(&headers)
    }

    #[test]
    fn units() {
        for (value, expected) in [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("7u", Some(Duration::from_micros(7))),
            ("9n", Some(Duration::from_nanos(9))),
            ("10", None),
            ("S", None),
            ("123456789S", None),
            ("-1S", None),
            ("+1S", None),
        ] {
            assert_eq!(parse_value(value), expected, "{value}");
        }
    }

    #[test]
    fn encoding_is_grpc_gos() {
        for (timeout, expected) in [
            (Duration::ZERO, "0n"),
            (Duration::from_nanos(1), "1n"),
            (Duration::from_nanos(99_999_999), "99999999n"),
            (Duration::from_nanos(100_000_001), "100001u"),
            (Duration::from_millis(1500), "1500000u"),
            (Duration::from_secs(30), "30000000u"),
            (Duration::from_secs(100), "100000m"),
            (Duration::from_secs(100_000_000), "1666667M"),
            (Duration::MAX, "99999999H"),
        ] {
            assert_eq!(encode(timeout), expected, "{timeout:?}");
        }
    }

    #[test]
    fn encoding_round_trips_without_losing_time() {
        for timeout in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_nanos(99_999_999),
            Duration::from_nanos(100_000_001),
            Duration::from_millis(1500),
            Duration::from_secs(86_400 * 365),
            Duration::MAX,
        ] {
            let value = encode(timeout);
            let mut headers = HeaderMap::new();
            headers.insert(HEADER, value.clone());
            let back = parse(&headers).unwrap_or_else(|| panic!("{value:?}"));
            assert!(
                back >= timeout.min(Duration::from_secs(99_999_999 * 3600)),
                "{timeout:?} -> {value:?}"
            );
        }
    }
}
