use std::fmt;
use std::time::Duration;

use tonic::Code;

use crate::json::{Field, Object, Result};

/// gRFC A6 caps `maxAttempts` at 5 whatever the config asks (grpc-go's
/// `defaultMaxCallAttempts`).
pub const MAX_ATTEMPTS_CAP: u32 = 5;

/// Which RPCs a [`MethodConfig`] applies to: one method, every method of a
/// service (empty `method`), or every method of every service (both empty).
///
/// ```
/// use grpc_lb_service_config::ServiceConfig;
///
/// let config: ServiceConfig = r#"{"methodConfig": [{"name": [
///     {"service": "helloworld.Greeter", "method": "SayHello"},
///     {"service": "routeguide.RouteGuide"}
/// ], "timeout": "1s"}]}"#.parse()?;
/// let names = config.method_configs()[0].names();
/// assert_eq!(names[0].to_string(), "/helloworld.Greeter/SayHello");
/// assert_eq!(names[1].service(), "routeguide.RouteGuide");
/// assert_eq!(names[1].method(), "");
/// assert_eq!(names[1].to_string(), "/routeguide.RouteGuide/*");
/// # Ok::<(), grpc_lb_service_config::ServiceConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MethodName {
    service: String,
    method: String,
}

impl MethodName {
    /// The fully qualified service name, such as `helloworld.Greeter`; empty
    /// for the channel-wide default.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The method name, such as `SayHello`; empty for every method of
    /// [`service`](Self::service).
    pub fn method(&self) -> &str {
        &self.method
    }
}

impl fmt::Display for MethodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.service.is_empty(), self.method.is_empty()) {
            (true, _) => f.write_str("(every method)"),
            (false, true) => write!(f, "/{}/*", self.service),
            (false, false) => write!(f, "/{}/{}", self.service, self.method),
        }
    }
}

/// The settings for the RPCs one `methodConfig` entry names.
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_service_config::ServiceConfig;
///
/// let config: ServiceConfig = r#"{"methodConfig": [{
///     "name": [{"service": "helloworld.Greeter"}],
///     "waitForReady": true,
///     "timeout": "0.250s",
///     "maxRequestMessageBytes": 1048576
/// }]}"#.parse()?;
/// let method = config.method_config("/helloworld.Greeter/SayHello").unwrap();
/// assert_eq!(method.wait_for_ready(), Some(true));
/// assert_eq!(method.timeout(), Some(Duration::from_millis(250)));
/// assert_eq!(method.max_request_message_bytes(), Some(1 << 20));
/// assert!(method.retry_policy().is_none());
/// # Ok::<(), grpc_lb_service_config::ServiceConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MethodConfig {
    names: Vec<MethodName>,
    wait_for_ready: Option<bool>,
    timeout: Option<Duration>,
    max_request_message_bytes: Option<u64>,
    max_response_message_bytes: Option<u64>,
    retry_policy: Option<RetryPolicy>,
}

impl MethodConfig {
    /// The methods this entry applies to.
    pub fn names(&self) -> &[MethodName] {
        &self.names
    }

    /// Whether these RPCs wait for a READY endpoint instead of failing fast;
    /// `None` leaves the channel's default.
    pub fn wait_for_ready(&self) -> Option<bool> {
        self.wait_for_ready
    }

    /// The longest these RPCs may take; a deadline set on the call itself
    /// wins when it is sooner.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The largest request message these RPCs may send.
    pub fn max_request_message_bytes(&self) -> Option<u64> {
        self.max_request_message_bytes
    }

    /// The largest response message these RPCs may receive.
    pub fn max_response_message_bytes(&self) -> Option<u64> {
        self.max_response_message_bytes
    }

    /// How failed attempts of these RPCs are retried.
    pub fn retry_policy(&self) -> Option<&RetryPolicy> {
        self.retry_policy.as_ref()
    }

    pub(crate) fn parse(field: Field<'_>) -> Result<Self> {
        let object = Object {
            path: field.path,
            map: field.object()?,
        };
        let names = object
            .optional("name", |field| field.each(parse_name))?
            .unwrap_or_default();
        Ok(MethodConfig {
            names,
            wait_for_ready: object.optional("waitForReady", |f| f.boolean())?,
            timeout: object.optional("timeout", |f| f.duration())?,
            max_request_message_bytes: object
                .optional("maxRequestMessageBytes", |f| f.unsigned(i64::MAX as u64))?,
            max_response_message_bytes: object
                .optional("maxResponseMessageBytes", |f| f.unsigned(i64::MAX as u64))?,
            retry_policy: object.optional("retryPolicy", RetryPolicy::parse)?,
        })
    }
}

fn parse_name(field: Field<'_>) -> Result<MethodName> {
    let object = Object {
        path: field.path,
        map: field.object()?,
    };
    let text = |f: Field<'_>| f.string().map(str::to_owned);
    let service = object.optional("service", text)?.unwrap_or_default();
    let method = object.optional("method", text)?.unwrap_or_default();
    if service.is_empty() && !method.is_empty() {
        return Err(field.invalid(format!("method {method:?} is given without its service")));
    }
    Ok(MethodName { service, method })
}

/// gRFC A6's `retryPolicy`: how many attempts an RPC may make, how long to
/// wait between them and which status codes are worth another attempt.
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_service_config::ServiceConfig;
/// use tonic::Code;
///
/// let config: ServiceConfig = r#"{"methodConfig": [{
///     "name": [{}],
///     "retryPolicy": {"maxAttempts": 10, "initialBackoff": "0.1s", "maxBackoff": "1s",
///                     "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}
/// }]}"#.parse()?;
/// let policy = config.method_configs()[0].retry_policy().unwrap();
/// assert_eq!(policy.max_attempts(), 5); // capped, as in every gRPC implementation
/// assert!(policy.is_retryable(Code::Unavailable));
/// assert!(!policy.is_retryable(Code::DeadlineExceeded));
/// assert_eq!(policy.nominal_backoff(3), Duration::from_millis(400));
/// assert_eq!(policy.nominal_backoff(9), Duration::from_secs(1));
/// # Ok::<(), grpc_lb_service_config::ServiceConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    backoff_multiplier: f64,
    retryable_status_codes: Vec<Code>,
}

impl RetryPolicy {
    /// Attempts in all, the first included: at least 2, at most
    /// [`MAX_ATTEMPTS_CAP`] whatever the config asked for.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The nominal wait before the first retry.
    pub fn initial_backoff(&self) -> Duration {
        self.initial_backoff
    }

    /// The longest nominal wait between attempts.
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// How much the nominal wait grows after each retry.
    pub fn backoff_multiplier(&self) -> f64 {
        self.backoff_multiplier
    }

    /// The status codes that make an attempt worth repeating.
    pub fn retryable_status_codes(&self) -> &[Code] {
        &self.retryable_status_codes
    }

    /// Whether an attempt that ended with `code` may be retried.
    pub fn is_retryable(&self, code: Code) -> bool {
        self.retryable_status_codes.contains(&code)
    }

    /// The wait before retry number `retry` (1 for the first retry) before
    /// jitter: `min(initialBackoff × multiplier^(retry−1), maxBackoff)`. gRFC
    /// A6 then draws the actual wait uniformly from 80 % to 120 % of it.
    pub fn nominal_backoff(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(i32::MAX as u32) as i32;
        let seconds = self.initial_backoff.as_secs_f64() * self.backoff_multiplier.powi(exponent);
        if seconds.is_finite() && seconds < self.max_backoff.as_secs_f64() {
            Duration::from_secs_f64(seconds)
        } else {
            self.max_backoff
        }
    }

    pub(crate) fn parse(field: Field<'_>) -> Result<Self> {
        let object = Object {
            path: field.path,
            map: field.object()?,
        };
        let max_attempts = object.required("maxAttempts", |f| {
            let n = f.unsigned(u64::from(u32::MAX))?;
            if n < 2 {
                return Err(f.invalid(format!("must be at least 2, got {n}")));
            }
            Ok(n as u32)
        })?;
        let positive_duration = |f: Field<'_>| {
            let d = f.duration()?;
            if d.is_zero() {
                return Err(f.invalid("must be greater than zero"));
            }
            Ok(d)
        };
        let initial_backoff = object.required("initialBackoff", positive_duration)?;
        let max_backoff = object.required("maxBackoff", positive_duration)?;
        let backoff_multiplier = object.required("backoffMultiplier", |f| {
            let m = f.number()?;
            if m <= 0.0 {
                return Err(f.invalid(format!("must be greater than zero, got {m}")));
            }
            Ok(m)
        })?;
        let retryable_status_codes = object.required("retryableStatusCodes", |f| {
            let codes = f.each(parse_code)?;
            if codes.is_empty() {
                return Err(f.invalid("must name at least one status code"));
            }
            Ok(codes)
        })?;
        Ok(RetryPolicy {
            max_attempts: max_attempts.min(MAX_ATTEMPTS_CAP),
            initial_backoff,
            max_backoff,
            backoff_multiplier,
            retryable_status_codes,
        })
    }
}

/// gRPC's canonical status code names, in code order.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The canonical name of a status code, such as `UNAVAILABLE`.
pub fn code_name(code: Code) -> &'static str {
    CODE_NAMES[code as usize]
}

/// A status code given by name (`"UNAVAILABLE"`) or by number (`14`), as
/// grpc-go's `codes.Code` accepts both.
fn parse_code(field: Field<'_>) -> Result<Code> {
    if field.value.is_number() {
        let n = field.unsigned(CODE_NAMES.len() as u64 - 1)?;
        return Ok(Code::from_i32(n as i32));
    }
    let name = field.string()?;
    match CODE_NAMES.iter().position(|known| *known == name) {
        Some(i) => Ok(Code::from_i32(i as i32)),
        None => Err(field.invalid(format!(
            "{name:?} is not a status code name such as \"UNAVAILABLE\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_match_tonic_numbering() {
        for (i, name) in CODE_NAMES.iter().enumerate() {
            let code = Code::from_i32(i as i32);
            assert_eq!(code_name(code), *name);
        }
        assert_eq!(code_name(Code::Unavailable), "UNAVAILABLE");
    }
}
