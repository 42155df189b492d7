use std::fmt;

/// A service config that cannot be used, and which field says so.
///
/// The message names the field by its JSON path, for example
/// `methodConfig[0].retryPolicy.maxAttempts: must be at least 2, got 1`.
///
/// ```
/// use grpc_lb_service_config::{ServiceConfig, ServiceConfigErrorKind};
///
/// let error = r#"{"methodConfig": [{"name": [{}], "timeout": 5}]}"#
///     .parse::<ServiceConfig>()
///     .unwrap_err();
/// assert_eq!(error.field(), "methodConfig[0].timeout");
/// assert!(matches!(error.kind(), ServiceConfigErrorKind::WrongType { found: "a number", .. }));
/// println!("{error}");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfigError {
    field: String,
    kind: ServiceConfigErrorKind,
}

/// What is wrong with a service config.
///
/// ```
/// use grpc_lb_service_config::{ServiceConfig, ServiceConfigErrorKind};
///
/// let config: ServiceConfig = r#"{"loadBalancingConfig": [{"grpclb": {}}]}"#.parse()?;
/// let error = config.choose_policy(|name| name == "round_robin").unwrap_err();
/// assert_eq!(
///     error.kind(),
///     &ServiceConfigErrorKind::NoSupportedPolicy(vec!["grpclb".to_string()]),
/// );
/// # Ok::<(), grpc_lb_service_config::ServiceConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceConfigErrorKind {
    /// The text is not JSON at all.
    Syntax(String),
    /// The field holds a JSON value of the wrong type.
    WrongType {
        /// What the field must hold.
        expected: &'static str,
        /// What it holds.
        found: &'static str,
    },
    /// A required field is absent.
    Missing,
    /// The field has the right type but a value gRPC does not accept.
    Invalid(String),
    /// A method name appears in more than one place.
    DuplicateName(String),
    /// `loadBalancingConfig` names only policies this channel does not have.
    NoSupportedPolicy(Vec<String>),
}

impl ServiceConfigError {
    pub(crate) fn new(field: impl Into<String>, kind: ServiceConfigErrorKind) -> Self {
        ServiceConfigError {
            field: field.into(),
            kind,
        }
    }

    /// The JSON path of the offending field; empty for a syntax error.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    pub fn kind(&self) -> &ServiceConfigErrorKind {
        &self.kind
    }
}

impl fmt::Display for ServiceConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "invalid service config: {}", self.kind)
        } else {
            write!(f, "invalid service config: {}: {}", self.field, self.kind)
        }
    }
}

impl fmt::Display for ServiceConfigErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceConfigErrorKind::Syntax(message) => write!(f, "not JSON: {message}"),
            ServiceConfigErrorKind::WrongType { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            ServiceConfigErrorKind::Missing => f.write_str("required but missing"),
            ServiceConfigErrorKind::Invalid(reason) => f.write_str(reason),
            ServiceConfigErrorKind::DuplicateName(name) => {
                write!(f, "method name {name} is configured more than once")
            }
            ServiceConfigErrorKind::NoSupportedPolicy(names) => {
                write!(
                    f,
                    "none of the policies [{}] is supported",
                    names.join(", ")
                )
            }
        }
    }
}

impl std::error::Error for ServiceConfigError {}
