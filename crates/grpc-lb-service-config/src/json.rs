//! Typed reads of JSON fields that report failures by JSON path.
//!
//! serde's derive would stop at the first type error with a byte offset; the
//! service config's users need the field's name, so the walk is by hand.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{ServiceConfigError, ServiceConfigErrorKind};

/// A JSON value together with the path that reached it.
#[derive(Clone, Copy)]
pub(crate) struct Field<'a> {
    pub(crate) path: &'a str,
    pub(crate) value: &'a Value,
}

pub(crate) type Result<T> = std::result::Result<T, ServiceConfigError>;

/// The longest duration protobuf's `Duration` can hold (10,000 years).
const MAX_DURATION_SECS: u64 = 315_576_000_000;

/// How a JSON value's type is named in errors ("a string", "an array"), so
/// that every JSON parser of the workspace words them alike.
///
/// ```
/// use grpc_lb_service_config::json_type_name;
///
/// assert_eq!(json_type_name(&serde_json::json!([1, 2])), "an array");
/// assert_eq!(json_type_name(&serde_json::Value::Null), "null");
/// ```
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl<'a> Field<'a> {
    pub(crate) fn error(&self, kind: ServiceConfigErrorKind) -> ServiceConfigError {
        ServiceConfigError::new(self.path, kind)
    }

    pub(crate) fn invalid(&self, reason: impl Into<String>) -> ServiceConfigError {
        self.error(ServiceConfigErrorKind::Invalid(reason.into()))
    }

    fn wrong_type(&self, expected: &'static str) -> ServiceConfigError {
        self.error(ServiceConfigErrorKind::WrongType {
            expected,
            found: json_type_name(self.value),
        })
    }

    pub(crate) fn object(&self) -> Result<&'a Map<String, Value>> {
        self.value
            .as_object()
            .ok_or_else(|| self.wrong_type("an object"))
    }

    pub(crate) fn array(&self) -> Result<&'a Vec<Value>> {
        self.value
            .as_array()
            .ok_or_else(|| self.wrong_type("an array"))
    }

    /// Reads every element of an array with `read`, each at its own path
    /// (`field[i]`).
    pub(crate) fn each<T>(&self, mut read: impl FnMut(Field<'_>) -> Result<T>) -> Result<Vec<T>> {
        self.array()?
            .iter()
            .enumerate()
            .map(|(i, value)| {
                let path = format!("{}[{i}]", self.path);
                read(Field { path: &path, value })
            })
            .collect()
    }

    pub(crate) fn string(&self) -> Result<&'a str> {
        self.value
            .as_str()
            .ok_or_else(|| self.wrong_type("a string"))
    }

    pub(crate) fn boolean(&self) -> Result<bool> {
        self.value
            .as_bool()
            .ok_or_else(|| self.wrong_type("a boolean"))
    }

    pub(crate) fn number(&self) -> Result<f64> {
        self.value
            .as_f64()
            .ok_or_else(|| self.wrong_type("a number"))
    }

    /// A whole number in `0..=max`.
    pub(crate) fn unsigned(&self, max: u64) -> Result<u64> {
        let Some(number) = self.value.as_number() else {
            return Err(self.wrong_type("a whole number"));
        };
        match number.as_u64() {
            Some(n) if n <= max => Ok(n),
            Some(n) => Err(self.invalid(format!("must be at most {max}, got {n}"))),
            None if number.as_i64().is_some() => {
                Err(self.invalid(format!("must not be negative, got {number}")))
            }
            None => Err(self.invalid(format!("must be a whole number, got {number}"))),
        }
    }

    /// A protobuf JSON duration: decimal seconds with an `s` suffix and at
    /// most nine fractional digits, such as `"1.5s"`. Negative ones are refused:
    /// no field of the service config can use one.
    pub(crate) fn duration(&self) -> Result<Duration> {
        let text = self.string()?;
        parse_duration(text).map_err(|reason| self.invalid(reason))
    }
}

fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let shape = || format!("{text:?} is not a duration such as \"1.5s\"");
    let body = text.strip_suffix('s').ok_or_else(shape)?;
    if body.starts_with('-') {
        return Err(format!("{text:?} is negative"));
    }
    let (whole, fraction) = match body.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (body, ""),
    };
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || body.ends_with('.') {
        return Err(shape());
    }
    if fraction.len() > 9 {
        return Err(format!("{text:?} has more than nine fractional digits"));
    }
    let seconds: u64 = whole
        .parse()
        .ok()
        .filter(|s| *s <= MAX_DURATION_SECS)
        .ok_or_else(|| format!("{text:?} is longer than {MAX_DURATION_SECS}s"))?;
    let nanos = if fraction.is_empty() {
        0
    } else {
        let padded = format!("{fraction:0<9}");
        padded.parse::<u32>().map_err(|_| shape())?
    };
    Ok(Duration::new(seconds, nanos))
}

/// Reads the optional `key` of `object`, found at `path`.
pub(crate) struct Object<'a> {
    pub(crate) path: &'a str,
    pub(crate) map: &'a Map<String, Value>,
}

impl<'a> Object<'a> {
    /// Calls `read` on the field when it is present and not `null`.
    pub(crate) fn optional<T>(
        &self,
        key: &str,
        read: impl FnOnce(Field<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => {
                let path = child_path(self.path, key);
                read(Field { path: &path, value }).map(Some)
            }
        }
    }

    pub(crate) fn required<T>(
        &self,
        key: &str,
        read: impl FnOnce(Field<'_>) -> Result<T>,
    ) -> Result<T> {
        self.optional(key, read)?.ok_or_else(|| {
            ServiceConfigError::new(child_path(self.path, key), ServiceConfigErrorKind::Missing)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_protobuf_json_form() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.000000001s"), Ok(Duration::new(1, 1)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("315576000000s"),
            Ok(Duration::from_secs(MAX_DURATION_SECS))
        );
        for bad in [
            "",
            "s",
            "1",
            "1.s",
            ".5s",
            "-1s",
            "1.0000000001s",
            "1ms",
            " 1s",
            "1e3s",
            "+1s",
            "315576000001s",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }
}
