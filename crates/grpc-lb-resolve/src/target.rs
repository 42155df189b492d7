//! gRPC target names: the string a client is asked to connect to, parsed into
//! a [`Target`].
//!
//! The syntax follows gRPC's naming document (`doc/naming.md` in grpc/grpc)
//! and grpc-go's reading of it. A target is either `scheme:rest` with a scheme
//! this parser knows, or a bare `host[:port]`.
//!
//! # Accepted forms
//!
//! | form | example | parses to |
//! | --- | --- | --- |
//! | `dns:[//dns_server/]host[:port]` | `dns:///greeter.local:50051` | [`Target::Dns`] |
//! | | `dns://127.0.0.1:5353/greeter.local` (ask the DNS server at 127.0.0.1:5353) | |
//! | | `dns:greeter.local:8080`, `dns:///[::1]:50051`, `dns:///::1` | |
//! | `ipv4:addr[:port][,addr[:port]...]` | `ipv4:10.0.0.1:50051,10.0.0.2` | [`Target::Ipv4`] |
//! | `ipv6:addr[,...]` or `ipv6:[addr]:port[,...]` | `ipv6:[2607:f8b0:400e:c00::ef]:443,[::1]`, `ipv6:::1` | [`Target::Ipv6`] |
//! | `unix:path` (relative or absolute) | `unix:/run/greeter.sock`, `unix:greeter.sock` | [`Target::Unix`] |
//! | `unix://absolute_path` | `unix:///run/greeter.sock` | [`Target::Unix`] |
//! | `unix-abstract:name` | `unix-abstract:greeter` | [`Target::UnixAbstract`] |
//! | `passthrough:[//authority/]name` | `passthrough:///localhost:50051` | [`Target::Passthrough`] |
//! | `scheme://authority/endpoint`, `scheme:endpoint` (a registered scheme) | `etcd:///services/greeter` | [`Target::Custom`] |
//! | `host[:port]` (no scheme, or one that is not registered) | `localhost:50051`, `127.0.0.1:50051`, `[::1]:50051`, `greeter.local` | [`Target::Dns`] |
//!
//! Where a port may be left out it defaults to [`DEFAULT_PORT`] (443); the
//! port of a DNS server defaults to [`DEFAULT_DNS_PORT`] (53).
//!
//! ## A bare `host:port` means `dns`
//!
//! Like grpc-go's `NewClient`, a target whose scheme is not registered is
//! read as a whole as a `dns` target: `localhost:50051` has the URI scheme
//! `localhost`, which names no resolver, so it means `dns:///localhost:50051`.
//! A target with no scheme at all (`127.0.0.1:50051`, `[::1]:50051`,
//! `greeter.local`) is read the same way. This is why
//! [`Target::parse_with_schemes`] exists: a scheme that a resolver registry
//! knows (say `etcd`) turns `etcd:///services/greeter` into a
//! [`Target::Custom`], while [`Target::parse`], which knows only the built-in
//! schemes, reads it as a DNS `host:port`, which fails.
//!
//! ```
//! use grpc_lb_resolve::target::{Host, Target, TargetErrorKind};
//!
//! let t: Target = "localhost:50051".parse()?;
//! assert_eq!(
//!     t,
//!     Target::Dns { dns_server: None, host: Host::Name("localhost".into()), port: 50051 }
//! );
//! assert_eq!(t.to_string(), "dns:///localhost:50051");
//! assert_eq!(t.authority(), "localhost:50051");
//!
//! let t = Target::parse("ipv6:[::1]:80,::2")?;
//! assert_eq!(t.to_string(), "ipv6:[::1]:80,[::2]:443");
//!
//! let t = Target::parse("unix:///run/greeter.sock")?;
//! assert_eq!(t, Target::Unix { path: "/run/greeter.sock".into() });
//! assert_eq!(t.authority(), "localhost");
//!
//! let t = Target::parse_with_schemes("etcd:///services/greeter", &["etcd"])?;
//! assert_eq!(t.scheme(), "etcd");
//! assert_eq!(t.authority(), "services/greeter");
//!
//! let err = Target::parse("dns:///greeter.local:0").unwrap_err();
//! assert_eq!(err.kind(), &TargetErrorKind::InvalidPort("0".into()));
//! assert_eq!(
//!     err.to_string(),
//!     r#"invalid target "dns:///greeter.local:0": invalid port "0": port 0 is not allowed"#
//! );
//! # Ok::<(), grpc_lb_resolve::target::TargetError>(())
//! ```
//!
//! # What is checked
//!
//! - The whole target: at most [`MAX_TARGET_LEN`] bytes (and so must be its
//!   canonical form, see below), not empty, and without whitespace or control
//!   characters anywhere.
//! - Schemes: `[A-Za-z][A-Za-z0-9+.-]*`, compared without regard to case; a
//!   parsed [`Target::Custom`] keeps its scheme in lower case.
//! - Ports: decimal digits only, 1 to 65535. Port 0 is refused.
//! - Hosts: an IPv4 literal; an IPv6 literal (in brackets when a port
//!   follows, bare when it does not; zone ids such as `%eth0` are not
//!   accepted); or a name of ASCII letters, digits, `-`, `_` and dots, at most
//!   253 characters (not counting one trailing dot, which is allowed and
//!   kept), in labels of 1 to 63 characters that neither start nor end with
//!   `-`, whose last label is not all digits (`1.2.3` is a bad IPv4 address,
//!   not a name). Names are kept as written (no lower-casing, no punycode
//!   conversion: write internationalised names in their `xn--` form). An
//!   empty host is an error (grpc-go would dial `localhost` for `:80`; here
//!   it is refused).
//! - `ipv4:`/`ipv6:` lists: at least one entry, no empty entries, and every
//!   entry a literal of that family.
//! - `unix://` must be followed by an absolute path (`unix:///run/x.sock`);
//!   `unix:` paths and `unix-abstract:` names must not be empty. Paths are
//!   taken as written (no percent-decoding).
//! - `passthrough` names and custom endpoints must not be empty. In the
//!   `scheme:endpoint` form one leading `/` is dropped, as grpc-go does
//!   (`passthrough:/x` names `x`); nothing is percent-decoded, and `?` and `#`
//!   are part of the endpoint.
//!
//! # Canonical form
//!
//! A [`Target`]'s [`Display`](fmt::Display) writes a canonical form that
//! parses back to an equal `Target` (with the same extra schemes for a
//! [`Target::Custom`]): the scheme is always written, ports are always
//! written, and authorities are written with `//`: `dns:///host:443`,
//! `dns://8.8.8.8:53/host:443`, `ipv4:1.2.3.4:80,5.6.7.8:443`,
//! `ipv6:[::1]:443`, `unix:///abs/path` or `unix:rel/path`,
//! `unix-abstract:name`, `passthrough:///name`, `etcd://authority/endpoint`.
//! This holds for every `Target` the parser returns; a `Target` built by hand
//! with values the parser never produces (an empty address list, an IPv6
//! address in [`Target::Ipv4`], a scope id, an empty name, `Some("")` as an
//! authority, whitespace in a name, ...) may not survive the round trip.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::PathBuf;
use std::str::FromStr;

/// The port used when a target names a host or address without one.
pub const DEFAULT_PORT: u16 = 443;

/// The port of a DNS server named in a `dns://server/...` target without one.
pub const DEFAULT_DNS_PORT: u16 = 53;

/// The longest target accepted, in bytes. A target's canonical form
/// ([`Target`]'s `Display`) must not be longer either.
pub const MAX_TARGET_LEN: usize = 4096;

/// A parsed gRPC target.
///
/// See the [module documentation](self) for the syntax of each variant.
///
/// ```
/// use grpc_lb_resolve::target::{Host, Target};
///
/// let target: Target = "dns:///greeter.local:50051".parse()?;
/// assert_eq!(target.scheme(), "dns");
/// assert_eq!(target.authority(), "greeter.local:50051");
/// assert!(matches!(&target, Target::Dns { host: Host::Name(name), port: 50051, .. } if name == "greeter.local"));
///
/// // A bare host:port is a dns target too, as in grpc-go.
/// assert_eq!("greeter.local:50051".parse::<Target>()?, target);
///
/// let fixed: Target = "ipv4:127.0.0.1:50051,127.0.0.2:50051".parse()?;
/// assert_eq!(fixed.to_string(), "ipv4:127.0.0.1:50051,127.0.0.2:50051");
/// # Ok::<(), grpc_lb_resolve::target::TargetError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// `dns:[//dns_server/]host[:port]`, or a bare `host[:port]`: resolve
    /// `host` with DNS (or use it as is when it is an IP literal).
    Dns {
        /// The DNS server to ask, when the target names one; `None` means the
        /// system's resolver.
        dns_server: Option<DnsServer>,
        /// The name (or IP literal) to resolve.
        host: Host,
        /// The port to connect to on each resolved address.
        port: u16,
    },
    /// `ipv4:addr[:port][,...]`: a fixed list of IPv4 socket addresses, in
    /// the order written.
    Ipv4(Vec<SocketAddr>),
    /// `ipv6:addr[,...]` / `ipv6:[addr]:port[,...]`: a fixed list of IPv6
    /// socket addresses, in the order written.
    Ipv6(Vec<SocketAddr>),
    /// `unix:path` or `unix://absolute_path`: a Unix domain socket.
    Unix {
        /// The socket's path, relative (to the working directory) or absolute.
        path: PathBuf,
    },
    /// `unix-abstract:name`: a socket in Linux's abstract socket namespace.
    UnixAbstract {
        /// The abstract name, without the leading NUL byte.
        name: String,
    },
    /// `passthrough:[//authority/]name`: hand `name` to the connector as it
    /// is, without resolving it.
    Passthrough {
        /// The authority part of `passthrough://authority/name`, if any.
        authority: Option<String>,
        /// The name handed to the connector.
        name: String,
    },
    /// `scheme://authority/endpoint` or `scheme:endpoint` with a scheme
    /// registered by the caller of [`Target::parse_with_schemes`].
    Custom {
        /// The scheme, in lower case.
        scheme: String,
        /// The authority part of `scheme://authority/endpoint`, if any.
        authority: Option<String>,
        /// What the scheme's resolver is to resolve.
        endpoint: String,
    },
}

/// A host in a [`Target::Dns`] or a [`DnsServer`]: a name to resolve or an IP
/// literal.
///
/// `Display` writes a name as it is and an address without brackets
/// (`::1`); bracketing an IPv6 address that a port follows is left to the
/// caller (as [`Target`] and [`DnsServer`] do).
///
/// ```
/// use std::net::{IpAddr, Ipv6Addr};
/// use grpc_lb_resolve::target::{Host, Target};
///
/// let Target::Dns { host, port, .. } = "dns:[::1]:50051".parse()? else { unreachable!() };
/// assert_eq!(host, Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)));
/// assert_eq!((host.to_string(), port), ("::1".to_string(), 50051));
/// # Ok::<(), grpc_lb_resolve::target::TargetError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, as written in the target.
    Name(String),
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
}

/// The DNS server named by `dns://server[:port]/...`.
///
/// `Display` writes `host:port`, with an IPv6 host in brackets.
///
/// ```
/// use grpc_lb_resolve::target::{DnsServer, Target, DEFAULT_DNS_PORT};
///
/// let Target::Dns { dns_server, .. } = "dns://[::1]/greeter.local:50051".parse()? else {
///     unreachable!()
/// };
/// let server: DnsServer = dns_server.unwrap();
/// assert_eq!(server.port, DEFAULT_DNS_PORT);
/// assert_eq!(server.to_string(), "[::1]:53");
/// # Ok::<(), grpc_lb_resolve::target::TargetError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DnsServer {
    /// The server's name or address.
    pub host: Host,
    /// The server's port ([`DEFAULT_DNS_PORT`], 53, when the target gives none).
    pub port: u16,
}

/// What is wrong with a target.
///
/// `Display` says what and where, e.g.
/// `invalid target "dns:///:80": empty host`.
///
/// ```
/// use grpc_lb_resolve::target::{Target, TargetErrorKind};
///
/// let error = "dns:///greeter.local:99999".parse::<Target>().unwrap_err();
/// assert_eq!(error.input(), "dns:///greeter.local:99999");
/// assert_eq!(error.kind(), &TargetErrorKind::InvalidPort("99999".to_string()));
/// println!("{error}");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetError {
    input: String,
    kind: TargetErrorKind,
    detail: Option<String>,
}

/// The kinds of [`TargetError`].
///
/// Where a variant carries a `String`, it is the offending part of the
/// target, exactly as written.
///
/// ```
/// use grpc_lb_resolve::target::{Target, TargetErrorKind};
///
/// let kind = |s: &str| s.parse::<Target>().unwrap_err().kind().clone();
/// assert_eq!(kind(""), TargetErrorKind::Empty);
/// assert_eq!(kind("dns:///:80"), TargetErrorKind::EmptyHost);
/// assert_eq!(kind("ipv4:10.0.0.1:80,::1"), TargetErrorKind::InvalidIpv4("::1".to_string()));
/// assert!(matches!(kind("dns:///greeter local"), TargetErrorKind::InvalidCharacter { ch: ' ', .. }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetErrorKind {
    /// The target is the empty string.
    Empty,
    /// The target, or its canonical form, is longer than [`MAX_TARGET_LEN`]
    /// bytes.
    TooLong,
    /// The target contains whitespace or a control character.
    InvalidCharacter {
        /// Byte offset of the character in the target.
        at: usize,
        /// The character.
        ch: char,
    },
    /// A host (of a `dns` target or a bare `host:port`) is empty.
    EmptyHost,
    /// A host is neither a valid name nor an IP literal (the string is the
    /// host, or the whole `host:port` when it cannot be split).
    InvalidHost(String),
    /// A port is missing after `:`, not decimal, 0, or above 65535.
    InvalidPort(String),
    /// An entry of an `ipv4:` list is not an IPv4 address.
    InvalidIpv4(String),
    /// An entry of an `ipv6:` list is not an IPv6 address.
    InvalidIpv6(String),
    /// An `ipv4:` or `ipv6:` target lists no address.
    EmptyAddressList,
    /// The DNS server of `dns://server/...` is not a valid `host[:port]`.
    InvalidDnsServer(String),
    /// The path after `unix://` is not absolute (`unix://relative`).
    UnixPathNotAbsolute(String),
    /// A `unix:` path or `unix-abstract:` name is empty.
    EmptyPath,
    /// A `passthrough:` name or a custom target's endpoint is empty.
    EmptyEndpoint,
    /// The target names a scheme (`scheme://...`, or a scheme this crate has
    /// behind a feature, such as `etcd`) that no resolver is registered for,
    /// and read as a DNS `host[:port]` instead it is not valid either. The
    /// string is the scheme, as written.
    UnregisteredScheme(String),
}

impl Target {
    /// Parses `s` with only the built-in schemes (`dns`, `ipv4`, `ipv6`,
    /// `unix`, `unix-abstract`, `passthrough`).
    ///
    /// Any other scheme makes the whole string a DNS `host[:port]`.
    pub fn parse(s: &str) -> Result<Target, TargetError> {
        Self::parse_with_schemes(s, &[])
    }

    /// Parses `s`, also accepting `extra_schemes` (compared without regard to
    /// case) as [`Target::Custom`] targets. This is what a resolver registry
    /// uses, with the schemes it has resolvers for.
    ///
    /// The built-in schemes keep their meaning even when listed here.
    pub fn parse_with_schemes(s: &str, extra_schemes: &[&str]) -> Result<Target, TargetError> {
        let fail = |f: Fail| TargetError {
            input: s.to_owned(),
            kind: f.kind,
            detail: f.detail,
        };
        let target = parse_target(s, extra_schemes).map_err(fail)?;
        let mut len = LenCounter(0);
        // Writing to a LenCounter never fails.
        let _ = write!(len, "{target}");
        if len.0 > MAX_TARGET_LEN {
            return Err(fail(Fail::with(
                TargetErrorKind::TooLong,
                format!(
                    "its canonical form would be {} bytes long, more than the {MAX_TARGET_LEN} allowed",
                    len.0
                ),
            )));
        }
        Ok(target)
    }

    /// The target's scheme: `"dns"`, `"ipv4"`, `"ipv6"`, `"unix"`,
    /// `"unix-abstract"`, `"passthrough"`, or a custom target's scheme.
    pub fn scheme(&self) -> &str {
        match self {
            Target::Dns { .. } => "dns",
            Target::Ipv4(_) => "ipv4",
            Target::Ipv6(_) => "ipv6",
            Target::Unix { .. } => "unix",
            Target::UnixAbstract { .. } => "unix-abstract",
            Target::Passthrough { .. } => "passthrough",
            Target::Custom { scheme, .. } => scheme,
        }
    }

    /// The name to send as `:authority` and to check a TLS certificate
    /// against.
    ///
    /// - `dns`: `host:port`, always with the port, an IPv6 host in brackets;
    /// - `ipv4`/`ipv6`: the first address, as `addr:port` / `[addr]:port`
    ///   (empty for an empty list, which the parser never returns);
    /// - `unix` and `unix-abstract`: `localhost`;
    /// - `passthrough`: the name;
    /// - custom: the endpoint.
    pub fn authority(&self) -> String {
        match self {
            Target::Dns { host, port, .. } => HostPort(host, *port).to_string(),
            Target::Ipv4(addrs) | Target::Ipv6(addrs) => {
                addrs.first().map(ToString::to_string).unwrap_or_default()
            }
            Target::Unix { .. } | Target::UnixAbstract { .. } => "localhost".to_owned(),
            Target::Passthrough { name, .. } => name.clone(),
            Target::Custom { endpoint, .. } => endpoint.clone(),
        }
    }
}

impl FromStr for Target {
    type Err = TargetError;

    /// Same as [`Target::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::parse(s)
    }
}

impl fmt::Display for Target {
    /// Writes the canonical form, which parses back to an equal `Target`
    /// (see the [module documentation](self#canonical-form)).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Dns {
                dns_server,
                host,
                port,
            } => {
                f.write_str("dns://")?;
                if let Some(server) = dns_server {
                    write!(f, "{server}")?;
                }
                write!(f, "/{}", HostPort(host, *port))
            }
            Target::Ipv4(addrs) | Target::Ipv6(addrs) => {
                write!(f, "{}:", self.scheme())?;
                for (i, addr) in addrs.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{addr}")?;
                }
                Ok(())
            }
            Target::Unix { path } => {
                let path = path.to_string_lossy();
                if path.starts_with('/') {
                    write!(f, "unix://{path}")
                } else {
                    write!(f, "unix:{path}")
                }
            }
            Target::UnixAbstract { name } => write!(f, "unix-abstract:{name}"),
            Target::Passthrough { authority, name } => write!(
                f,
                "passthrough://{}/{name}",
                authority.as_deref().unwrap_or("")
            ),
            Target::Custom {
                scheme,
                authority,
                endpoint,
            } => write!(
                f,
                "{scheme}://{}/{endpoint}",
                authority.as_deref().unwrap_or("")
            ),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl fmt::Display for DnsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", HostPort(&self.host, self.port))
    }
}

impl TargetError {
    /// What is wrong.
    pub fn kind(&self) -> &TargetErrorKind {
        &self.kind
    }

    /// The target that failed to parse, as given.
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 100;
        match self.input.char_indices().nth(SHOWN) {
            Some((cut, _)) => write!(
                f,
                "invalid target {:?}... ({} bytes): {}",
                &self.input[..cut],
                self.input.len(),
                self.kind
            )?,
            None => write!(f, "invalid target {:?}: {}", self.input, self.kind)?,
        }
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TargetError {}

impl fmt::Display for TargetErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetErrorKind::Empty => f.write_str("empty target"),
            TargetErrorKind::TooLong => {
                write!(f, "target longer than {MAX_TARGET_LEN} bytes")
            }
            TargetErrorKind::InvalidCharacter { at, ch } => {
                write!(f, "invalid character {ch:?} at byte {at}")
            }
            TargetErrorKind::EmptyHost => f.write_str("empty host"),
            TargetErrorKind::InvalidHost(h) => write!(f, "invalid host {h:?}"),
            TargetErrorKind::InvalidPort(p) => write!(f, "invalid port {p:?}"),
            TargetErrorKind::InvalidIpv4(a) => write!(f, "invalid IPv4 address {a:?}"),
            TargetErrorKind::InvalidIpv6(a) => write!(f, "invalid IPv6 address {a:?}"),
            TargetErrorKind::EmptyAddressList => f.write_str("empty address list"),
            TargetErrorKind::InvalidDnsServer(s) => write!(f, "invalid DNS server {s:?}"),
            TargetErrorKind::UnixPathNotAbsolute(p) => {
                write!(
                    f,
                    "unix socket path {p:?} after \"unix://\" is not absolute"
                )
            }
            TargetErrorKind::EmptyPath => f.write_str("empty unix socket path or name"),
            TargetErrorKind::EmptyEndpoint => f.write_str("empty endpoint"),
            TargetErrorKind::UnregisteredScheme(scheme) => {
                write!(f, "no resolver is registered for scheme {scheme:?}")?;
                if let Some(feature) = feature_of_scheme(scheme) {
                    write!(f, " (it needs grpc-lb's feature {feature:?})")?;
                }
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Parsing.

/// A parse failure before the input is attached.
struct Fail {
    kind: TargetErrorKind,
    detail: Option<String>,
}

impl Fail {
    fn new(kind: TargetErrorKind) -> Self {
        Fail { kind, detail: None }
    }

    fn with(kind: TargetErrorKind, detail: impl Into<String>) -> Self {
        Fail {
            kind,
            detail: Some(detail.into()),
        }
    }

    /// The kind and detail as one message.
    fn message(&self) -> String {
        match &self.detail {
            Some(detail) => format!("{}: {detail}", self.kind),
            None => self.kind.to_string(),
        }
    }
}

fn parse_target(s: &str, extra_schemes: &[&str]) -> Result<Target, Fail> {
    if s.len() > MAX_TARGET_LEN {
        return Err(Fail::with(
            TargetErrorKind::TooLong,
            format!(
                "it is {} bytes long, more than the {MAX_TARGET_LEN} allowed",
                s.len()
            ),
        ));
    }
    if s.is_empty() {
        return Err(Fail::new(TargetErrorKind::Empty));
    }
    if let Some((at, ch)) = s
        .char_indices()
        .find(|&(_, c)| c.is_whitespace() || c.is_control())
    {
        return Err(Fail::with(
            TargetErrorKind::InvalidCharacter { at, ch },
            "targets may not contain whitespace or control characters",
        ));
    }

    let Some((scheme, rest)) = split_scheme(s) else {
        return parse_dns_endpoint(s);
    };
    match scheme.to_ascii_lowercase().as_str() {
        "dns" => parse_dns(rest),
        "ipv4" => parse_ipv4(rest),
        "ipv6" => parse_ipv6(rest),
        "unix" => parse_unix(rest),
        "unix-abstract" => {
            if rest.is_empty() {
                Err(Fail::new(TargetErrorKind::EmptyPath))
            } else {
                Ok(Target::UnixAbstract {
                    name: rest.to_owned(),
                })
            }
        }
        "passthrough" => {
            let (authority, name) = split_authority(rest);
            if name.is_empty() {
                return Err(Fail::with(
                    TargetErrorKind::EmptyEndpoint,
                    "passthrough needs a name: passthrough:///name",
                ));
            }
            Ok(Target::Passthrough {
                authority: authority.map(str::to_owned),
                name: name.to_owned(),
            })
        }
        lower if extra_schemes.iter().any(|e| e.eq_ignore_ascii_case(lower)) => {
            let (authority, endpoint) = split_authority(rest);
            if endpoint.is_empty() {
                return Err(Fail::with(
                    TargetErrorKind::EmptyEndpoint,
                    format!("write {lower}://authority/endpoint or {lower}:endpoint"),
                ));
            }
            Ok(Target::Custom {
                scheme: lower.to_owned(),
                authority: authority.map(str::to_owned),
                endpoint: endpoint.to_owned(),
            })
        }
        lower => parse_dns_endpoint(s).map_err(|fail| {
            if rest.starts_with("//") || feature_of_scheme(lower).is_some() {
                // Almost certainly meant as a URI with a scheme nobody
                // registered: say that first, then why the DNS reading
                // failed too.
                Fail::with(
                    TargetErrorKind::UnregisteredScheme(scheme.to_owned()),
                    format!(
                        "read as a DNS host[:port] instead, it is not valid either: {}",
                        fail.message()
                    ),
                )
            } else {
                fail
            }
        }),
    }
}

/// The feature of grpc-lb (and of this crate) that registers a resolver
/// for `scheme`, for the schemes this crate has behind one.
fn feature_of_scheme(scheme: &str) -> Option<&'static str> {
    scheme.eq_ignore_ascii_case("etcd").then_some("etcd")
}

/// Splits `scheme:rest` when `s` starts with a syntactically valid URI
/// scheme (`[A-Za-z][A-Za-z0-9+.-]*`) and a colon.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let bytes = s.as_bytes();
    if !bytes.first()?.is_ascii_alphabetic() {
        return None;
    }
    let end = bytes
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))?;
    if bytes[end] != b':' {
        return None;
    }
    // `end` indexes an ASCII byte, so both slices are on char boundaries.
    Some((&s[..end], &s[end + 1..]))
}

/// Splits the part after `scheme:` into an optional authority and the
/// endpoint: `//authority/endpoint` (an empty authority is `None`, a missing
/// `/` leaves the endpoint empty) or `endpoint` (one leading `/` dropped, as
/// grpc-go does).
fn split_authority(rest: &str) -> (Option<&str>, &str) {
    match rest.strip_prefix("//") {
        Some(after) => {
            let (authority, endpoint) = after.split_once('/').unwrap_or((after, ""));
            (Some(authority).filter(|a| !a.is_empty()), endpoint)
        }
        None => (None, rest.strip_prefix('/').unwrap_or(rest)),
    }
}

fn parse_dns(rest: &str) -> Result<Target, Fail> {
    let (server, endpoint) = split_authority(rest);
    let dns_server = match server {
        Some(server) => Some(parse_dns_server(server)?),
        None => None,
    };
    if endpoint.is_empty() {
        return Err(match server {
            Some(server) if !rest[2..].contains('/') => Fail::with(
                TargetErrorKind::EmptyHost,
                format!(
                    "\"dns://{server}\" names only a DNS server; write dns://{server}/host[:port], \
                     or dns:///{server} for the host itself"
                ),
            ),
            _ => Fail::new(TargetErrorKind::EmptyHost),
        });
    }
    let (host, port) = parse_host_port(endpoint, DEFAULT_PORT)?;
    Ok(Target::Dns {
        dns_server,
        host,
        port,
    })
}

fn parse_dns_server(server: &str) -> Result<DnsServer, Fail> {
    match parse_host_port(server, DEFAULT_DNS_PORT) {
        Ok((host, port)) => Ok(DnsServer { host, port }),
        Err(fail) => Err(Fail::with(
            TargetErrorKind::InvalidDnsServer(server.to_owned()),
            fail.message(),
        )),
    }
}

/// A whole target read as a DNS `host[:port]`.
fn parse_dns_endpoint(s: &str) -> Result<Target, Fail> {
    let (host, port) = parse_host_port(s, DEFAULT_PORT)?;
    Ok(Target::Dns {
        dns_server: None,
        host,
        port,
    })
}

/// Parses `host[:port]`, `[ipv6]:port`, `[ipv6]` or a bare IPv6 literal.
fn parse_host_port(s: &str, default_port: u16) -> Result<(Host, u16), Fail> {
    if s.is_empty() {
        return Err(Fail::new(TargetErrorKind::EmptyHost));
    }
    if let Some(bracketed) = s.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return Err(Fail::with(
                TargetErrorKind::InvalidHost(s.to_owned()),
                "missing ']' after an IPv6 address",
            ));
        };
        if inside.is_empty() {
            return Err(Fail::new(TargetErrorKind::EmptyHost));
        }
        let Ok(ip) = inside.parse::<Ipv6Addr>() else {
            return Err(Fail::with(
                TargetErrorKind::InvalidHost(inside.to_owned()),
                "only an IPv6 address may be written in brackets",
            ));
        };
        let port = match after.strip_prefix(':') {
            None if after.is_empty() => default_port,
            Some(port) => parse_port(port)?,
            None => {
                return Err(Fail::with(
                    TargetErrorKind::InvalidHost(s.to_owned()),
                    "only ':port' may follow ']'",
                ))
            }
        };
        return Ok((Host::Ip(IpAddr::V6(ip)), port));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((Host::Ip(ip), default_port));
    }
    let (host, port) = match s.split_once(':') {
        None => (s, None),
        Some((_, port)) if port.contains(':') => {
            return Err(Fail::with(
                TargetErrorKind::InvalidHost(s.to_owned()),
                "too many colons: an IPv6 address with a port is written [address]:port",
            ))
        }
        Some((host, port)) => (host, Some(port)),
    };
    if host.is_empty() {
        return Err(Fail::new(TargetErrorKind::EmptyHost));
    }
    let host = parse_host(host)?;
    let port = match port {
        Some(port) => parse_port(port)?,
        None => default_port,
    };
    Ok((host, port))
}

/// Parses a host with no port: an IPv4 literal or a DNS name.
fn parse_host(host: &str) -> Result<Host, Fail> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    match check_name(host) {
        Ok(()) => Ok(Host::Name(host.to_owned())),
        Err(reason) => Err(Fail::with(
            TargetErrorKind::InvalidHost(host.to_owned()),
            reason,
        )),
    }
}

/// Checks a DNS name (see the module docs for the rules).
fn check_name(name: &str) -> Result<(), String> {
    let body = name.strip_suffix('.').unwrap_or(name);
    if body.is_empty() {
        return Err("a name needs at least one label".to_owned());
    }
    if body.len() > 253 {
        return Err(format!(
            "a name may be at most 253 characters long, this one is {}",
            body.len()
        ));
    }
    if let Some(ch) = body
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(if ch.is_ascii() {
            format!("{ch:?} may not appear in a host name (letters, digits, '-', '_' and '.' may)")
        } else {
            format!(
                "{ch:?} may not appear in a host name; write internationalised names in their \
                 ASCII (xn--) form"
            )
        });
    }
    for label in body.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row, or a leading dot)".to_owned());
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} is longer than 63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    let last = body.rsplit('.').next().unwrap_or(body);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("it ends in an all-digit label but is not an IPv4 address".to_owned());
    }
    Ok(())
}

/// Parses a decimal port, 1 to 65535.
fn parse_port(port: &str) -> Result<u16, Fail> {
    let invalid = |why: &str| Fail::with(TargetErrorKind::InvalidPort(port.to_owned()), why);
    if port.is_empty() {
        return Err(invalid("missing port number after ':'"));
    }
    let mut value: u32 = 0;
    for b in port.bytes() {
        if !b.is_ascii_digit() {
            return Err(invalid("a port is a decimal number"));
        }
        value = value * 10 + u32::from(b - b'0');
        if value > u32::from(u16::MAX) {
            return Err(invalid("a port is at most 65535"));
        }
    }
    match u16::try_from(value) {
        Ok(0) => Err(invalid("port 0 is not allowed")),
        Ok(port) => Ok(port),
        Err(_) => Err(invalid("a port is at most 65535")),
    }
}

fn parse_ipv4(rest: &str) -> Result<Target, Fail> {
    let addrs = parse_address_list(rest, TargetErrorKind::InvalidIpv4, |entry| {
        let (addr, port) = entry.split_once(':').unwrap_or((entry, ""));
        let Ok(ip) = addr.parse::<Ipv4Addr>() else {
            // `::1` splits into an empty address; naming the whole entry says
            // what was written.
            let shown = if addr.is_empty() { entry } else { addr };
            return Err(Fail::with(
                TargetErrorKind::InvalidIpv4(shown.to_owned()),
                "an ipv4: target lists IPv4 addresses (a.b.c.d[:port])",
            ));
        };
        let port = if entry.len() == addr.len() {
            DEFAULT_PORT
        } else {
            parse_port(port)?
        };
        Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
    })?;
    Ok(Target::Ipv4(addrs))
}

fn parse_ipv6(rest: &str) -> Result<Target, Fail> {
    let addrs = parse_address_list(rest, TargetErrorKind::InvalidIpv6, |entry| {
        let (ip, port) = parse_ipv6_entry(entry)?;
        Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)))
    })?;
    Ok(Target::Ipv6(addrs))
}

/// The comma-separated list of an `ipv4:` or `ipv6:` target; `invalid` names the
/// error kind for an empty entry.
fn parse_address_list(
    rest: &str,
    invalid: fn(String) -> TargetErrorKind,
    parse_entry: impl Fn(&str) -> Result<SocketAddr, Fail>,
) -> Result<Vec<SocketAddr>, Fail> {
    if rest.is_empty() {
        return Err(Fail::new(TargetErrorKind::EmptyAddressList));
    }
    rest.split(',')
        .map(|entry| {
            if entry.is_empty() {
                return Err(Fail::with(
                    invalid(String::new()),
                    "empty entry in the address list",
                ));
            }
            parse_entry(entry)
        })
        .collect()
}

/// One entry of an `ipv6:` list: `[address]:port`, `[address]` or a bare
/// address.
fn parse_ipv6_entry(entry: &str) -> Result<(Ipv6Addr, u16), Fail> {
    const NOT_IPV6: &str = "not an IPv6 address (an address with a port is written [address]:port)";
    let invalid =
        |text: &str, why: &str| Fail::with(TargetErrorKind::InvalidIpv6(text.to_owned()), why);
    let Some(bracketed) = entry.strip_prefix('[') else {
        let ip = entry.parse().map_err(|_| invalid(entry, NOT_IPV6))?;
        return Ok((ip, DEFAULT_PORT));
    };
    let Some((inside, after)) = bracketed.split_once(']') else {
        return Err(invalid(entry, "missing ']'"));
    };
    let ip = inside
        .parse()
        .map_err(|_| invalid(inside, "not an IPv6 address"))?;
    let port = match after.strip_prefix(':') {
        None if after.is_empty() => DEFAULT_PORT,
        Some(port) => parse_port(port)?,
        None => return Err(invalid(entry, "only ':port' may follow ']'")),
    };
    Ok((ip, port))
}

fn parse_unix(rest: &str) -> Result<Target, Fail> {
    let path = match rest.strip_prefix("//") {
        Some("") => return Err(Fail::new(TargetErrorKind::EmptyPath)),
        Some(path) if !path.starts_with('/') => {
            return Err(Fail::with(
                TargetErrorKind::UnixPathNotAbsolute(path.to_owned()),
                format!(
                    "write unix:///{path} for an absolute path or unix:{path} for a relative one"
                ),
            ))
        }
        Some(path) => path,
        None if rest.is_empty() => return Err(Fail::new(TargetErrorKind::EmptyPath)),
        None => rest,
    };
    Ok(Target::Unix {
        path: PathBuf::from(path),
    })
}

// ---------------------------------------------------------------------------
// Formatting helpers.

/// `host:port`, an IPv6 host in brackets.
struct HostPort<'a>(&'a Host, u16);

impl fmt::Display for HostPort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.1),
            host => write!(f, "{host}:{}", self.1),
        }
    }
}

/// Counts the bytes written to it.
struct LenCounter(usize);

impl fmt::Write for LenCounter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 = self.0.saturating_add(s.len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unregistered_scheme_is_said_first_with_the_feature_it_needs() {
        let error = Target::parse("etcd:///services/greeter").unwrap_err();
        assert_eq!(
            error.kind(),
            &TargetErrorKind::UnregisteredScheme("etcd".into())
        );
        let message = error.to_string();
        assert!(
            message.starts_with(
                r#"invalid target "etcd:///services/greeter": no resolver is registered for scheme "etcd" (it needs grpc-lb's feature "etcd"): read as a DNS host[:port] instead"#
            ),
            "{message}"
        );
        let without_slashes = Target::parse("etcd:services/greeter").unwrap_err();
        assert_eq!(
            without_slashes.kind(),
            &TargetErrorKind::UnregisteredScheme("etcd".into())
        );
        let other = Target::parse("consul:///greeter").unwrap_err().to_string();
        assert!(
            other.starts_with(
                r#"invalid target "consul:///greeter": no resolver is registered for scheme "consul": "#
            ),
            "{other}"
        );
        // Registered, it parses.
        assert!(Target::parse_with_schemes("etcd:///services/greeter", &["etcd"]).is_ok());
        // A host:port that only looks like a scheme stays a DNS target.
        assert!(Target::parse("greeter.local:50051").is_ok());
    }

    #[test]
    fn scheme_split() {
        assert_eq!(split_scheme("dns:x"), Some(("dns", "x")));
        assert_eq!(split_scheme("a+b.c-d:"), Some(("a+b.c-d", "")));
        assert_eq!(
            split_scheme("greeter.local:50051"),
            Some(("greeter.local", "50051"))
        );
        assert_eq!(split_scheme("127.0.0.1:80"), None);
        assert_eq!(split_scheme("[::1]:80"), None);
        assert_eq!(split_scheme("::1"), None);
        assert_eq!(split_scheme("localhost"), None);
        assert_eq!(split_scheme("a_b:1"), None);
        assert_eq!(split_scheme(""), None);
    }

    #[test]
    fn authority_split() {
        assert_eq!(split_authority("///x"), (None, "x"));
        assert_eq!(split_authority("//a/x/y"), (Some("a"), "x/y"));
        assert_eq!(split_authority("//a"), (Some("a"), ""));
        assert_eq!(split_authority("//"), (None, ""));
        assert_eq!(split_authority("/x"), (None, "x"));
        assert_eq!(split_authority("x"), (None, "x"));
        assert_eq!(split_authority("////x"), (None, "/x"));
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("1").ok(), Some(1));
        assert_eq!(parse_port("65535").ok(), Some(65535));
        assert_eq!(parse_port("00080").ok(), Some(80));
        for bad in [
            "",
            "0",
            "65536",
            "99999999999999999999",
            "+80",
            "-1",
            "8a",
            "٣",
        ] {
            let Err(fail) = parse_port(bad) else {
                panic!("{bad:?} should be refused")
            };
            assert_eq!(fail.kind, TargetErrorKind::InvalidPort(bad.to_owned()));
        }
    }

    #[test]
    fn names() {
        let long_label = "a".repeat(63);
        let ok = [
            "localhost",
            "a",
            "greeter.local",
            "greeter.local.",
            "my_service.svc-1.cluster.local",
            "xn--bcher-kva.example",
            "1a",
            "123.example",
            "a.123b",
            long_label.as_str(),
        ];
        for name in ok {
            assert_eq!(check_name(name), Ok(()), "{name}");
        }
        let too_long_label = "a".repeat(64);
        let too_long_name = vec!["a".repeat(50); 6].join(".");
        let bad = [
            ".",
            "..",
            "a..b",
            ".a",
            "a.b..",
            "-a",
            "a-",
            "a.-b",
            "1.2.3",
            "123",
            "a.1",
            "bücher.example",
            "a/b",
            "a%b",
            "a:b",
            too_long_label.as_str(),
            too_long_name.as_str(),
        ];
        for name in bad {
            assert!(check_name(name).is_err(), "{name}");
        }
    }

    #[test]
    fn canonical_length_is_bounded() {
        // Each "::" entry (3 bytes with its comma) grows to "[::]:443,"
        // (9 bytes), so a short enough input can still be refused.
        let list = vec!["::"; 1000].join(",");
        let input = format!("ipv6:{list}");
        assert!(input.len() <= MAX_TARGET_LEN);
        let err = Target::parse(&input).unwrap_err();
        assert_eq!(err.kind(), &TargetErrorKind::TooLong);
        assert!(err.to_string().contains("canonical form"), "{err}");
    }
}
