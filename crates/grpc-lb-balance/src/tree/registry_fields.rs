//! Reading the provided policies' JSON configs: each field with its default
//! when absent, a typed error when present and wrong. Unknown fields are
//! ignored, as grpc-go's `json.Unmarshal` ignores them.

use std::time::Duration;

use serde_json::{Map, Value};

use super::PolicyConfigError;
use crate::tree::{LeastRequest, RingHashConfig, WrrConfig};

fn invalid(policy: &str, field: &'static str, reason: impl Into<String>) -> PolicyConfigError {
    PolicyConfigError::InvalidField {
        policy: policy.to_owned(),
        field,
        reason: reason.into(),
    }
}

/// The config as an object (`null` reads as an empty one).
pub(super) fn object<'a>(
    policy: &str,
    config: &'a Value,
) -> Result<Option<&'a Map<String, Value>>, PolicyConfigError> {
    match config {
        Value::Object(map) => Ok(Some(map)),
        Value::Null => Ok(None),
        _ => Err(PolicyConfigError::NotAnObject(policy.to_owned())),
    }
}

fn field<'a>(map: Option<&'a Map<String, Value>>, name: &str) -> Option<&'a Value> {
    map.and_then(|map| map.get(name)).filter(|v| !v.is_null())
}

/// A proto `uint32`/`uint64`: a whole non-negative JSON number or a decimal
/// string (proto3 JSON writes 64-bit integers as strings).
fn unsigned(policy: &str, name: &'static str, value: &Value) -> Result<u64, PolicyConfigError> {
    match value {
        Value::Number(number) => number
            .as_u64()
            .ok_or_else(|| invalid(policy, name, format!("{number} is not a whole number ≥ 0"))),
        Value::String(text) => text
            .parse::<u64>()
            .map_err(|_| invalid(policy, name, format!("{text:?} is not a whole number ≥ 0"))),
        other => Err(invalid(
            policy,
            name,
            format!("expected a number, got {other}"),
        )),
    }
}

/// A proto `Duration` in JSON: decimal seconds with an `s` suffix ("10s",
/// "0.5s"), at most nine fractional digits, not negative.
fn duration(
    policy: &str,
    name: &'static str,
    value: &Value,
) -> Result<Duration, PolicyConfigError> {
    let Value::String(text) = value else {
        return Err(invalid(
            policy,
            name,
            format!("expected a duration string such as \"10s\", got {value}"),
        ));
    };
    let bad = || {
        invalid(
            policy,
            name,
            format!("{text:?} is not a duration such as \"10s\" or \"0.5s\""),
        )
    };
    let seconds = text.strip_suffix('s').ok_or_else(bad)?;
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // Proto's Duration range: at most 315,576,000,000 s.
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    if whole > 315_576_000_000 {
        return Err(bad());
    }
    let nanos = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}")
            .parse::<u32>()
            .map_err(|_| bad())?
    };
    Ok(Duration::new(whole, nanos))
}

fn boolean(policy: &str, name: &'static str, value: &Value) -> Result<bool, PolicyConfigError> {
    value
        .as_bool()
        .ok_or_else(|| invalid(policy, name, format!("expected true or false, got {value}")))
}

/// least_request (A48): `choiceCount` default 2; below 2 is rejected, above
/// 10 is lowered to 10 (grpc-go `leastrequest.ParseConfig`).
pub(super) fn least_request(
    policy: &str,
    config: &Value,
) -> Result<LeastRequest, PolicyConfigError> {
    let map = object(policy, config)?;
    let count = match field(map, "choiceCount") {
        Some(value) => unsigned(policy, "choiceCount", value)?,
        None => LeastRequest::DEFAULT_CHOICE_COUNT as u64,
    };
    if count < 2 {
        return Err(invalid(
            policy,
            "choiceCount",
            format!("{count} is below 2"),
        ));
    }
    Ok(LeastRequest::new(count.min(10) as usize))
}

/// ring_hash (A42, A76): `minRingSize` 1024, `maxRingSize` 4096,
/// `requestHashHeader` none; then [`RingHashConfig::validate`]'s checks and cap.
pub(super) fn ring_hash_config(
    policy: &str,
    config: &Value,
) -> Result<RingHashConfig, PolicyConfigError> {
    let map = object(policy, config)?;
    let mut parsed = RingHashConfig::default();
    if let Some(value) = field(map, "minRingSize") {
        parsed.min_ring_size = unsigned(policy, "minRingSize", value)?;
    }
    if let Some(value) = field(map, "maxRingSize") {
        parsed.max_ring_size = unsigned(policy, "maxRingSize", value)?;
    }
    if let Some(value) = field(map, "requestHashHeader") {
        let Value::String(header) = value else {
            return Err(invalid(
                policy,
                "requestHashHeader",
                format!("expected a string, got {value}"),
            ));
        };
        // A76: an empty header means none.
        if !header.is_empty() {
            parsed = parsed.request_hash_header(header.clone());
        }
    }
    parsed.validate().map_err(PolicyConfigError::RingHash)
}

/// weighted_round_robin (A58): the defaults of [`WrrConfig::default`], then
/// [`WrrConfig::validate`]'s checks.
pub(super) fn wrr_config(policy: &str, config: &Value) -> Result<WrrConfig, PolicyConfigError> {
    let map = object(policy, config)?;
    let mut parsed = WrrConfig::default();
    if let Some(value) = field(map, "enableOobLoadReport") {
        parsed.enable_oob_load_report = boolean(policy, "enableOobLoadReport", value)?;
    }
    for (name, slot) in [
        ("oobReportingPeriod", &mut parsed.oob_reporting_period),
        ("blackoutPeriod", &mut parsed.blackout_period),
        (
            "weightExpirationPeriod",
            &mut parsed.weight_expiration_period,
        ),
        ("weightUpdatePeriod", &mut parsed.weight_update_period),
    ] {
        if let Some(value) = field(map, name) {
            *slot = duration(policy, name, value)?;
        }
    }
    if let Some(value) = field(map, "errorUtilizationPenalty") {
        parsed.error_utilization_penalty = value.as_f64().ok_or_else(|| {
            invalid(
                policy,
                "errorUtilizationPenalty",
                format!("expected a number, got {value}"),
            )
        })?;
    }
    parsed.validate().map_err(PolicyConfigError::Wrr)
}

#[cfg(test)]
pub(super) fn parse_duration(text: &str) -> Result<Duration, PolicyConfigError> {
    duration("test", "d", &Value::String(text.to_owned()))
}
