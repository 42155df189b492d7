//! Target-name parsing: tables of valid and invalid targets, and properties
//! (no panics, Display round trip, structured valid targets).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use grpc_lb_resolve::target::{
    DnsServer, Host, Target, TargetErrorKind, DEFAULT_DNS_PORT, DEFAULT_PORT, MAX_TARGET_LEN,
};
use proptest::prelude::*;

const EXTRA: &[&str] = &["etcd"];

fn name(n: &str) -> Host {
    Host::Name(n.to_owned())
}

fn ip(s: &str) -> Host {
    Host::Ip(s.parse().unwrap())
}

fn dns(host: Host, port: u16) -> Target {
    Target::Dns {
        dns_server: None,
        host,
        port,
    }
}

fn v4(s: &str, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(s.parse().unwrap(), port))
}

fn v6(s: &str, port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(s.parse().unwrap(), port, 0, 0))
}

fn custom(scheme: &str, authority: Option<&str>, endpoint: &str) -> Target {
    Target::Custom {
        scheme: scheme.to_owned(),
        authority: authority.map(str::to_owned),
        endpoint: endpoint.to_owned(),
    }
}

fn passthrough(authority: Option<&str>, n: &str) -> Target {
    Target::Passthrough {
        authority: authority.map(str::to_owned),
        name: n.to_owned(),
    }
}

/// (input, expected target, expected canonical form), parsed with `etcd`
/// registered.
fn valid_table() -> Vec<(&'static str, Target, &'static str)> {
    vec![
        // Bare host[:port]: dns.
        (
            "localhost:50051",
            dns(name("localhost"), 50051),
            "dns:///localhost:50051",
        ),
        (
            "127.0.0.1:50051",
            dns(ip("127.0.0.1"), 50051),
            "dns:///127.0.0.1:50051",
        ),
        ("[::1]:50051", dns(ip("::1"), 50051), "dns:///[::1]:50051"),
        ("[::1]", dns(ip("::1"), 443), "dns:///[::1]:443"),
        ("::1", dns(ip("::1"), 443), "dns:///[::1]:443"),
        ("fe80::1", dns(ip("fe80::1"), 443), "dns:///[fe80::1]:443"),
        (
            "greeter.local",
            dns(name("greeter.local"), DEFAULT_PORT),
            "dns:///greeter.local:443",
        ),
        (
            "greeter.local.:8080",
            dns(name("greeter.local."), 8080),
            "dns:///greeter.local.:8080",
        ),
        ("my-host:1", dns(name("my-host"), 1), "dns:///my-host:1"),
        (
            "svc_1.ns:65535",
            dns(name("svc_1.ns"), 65535),
            "dns:///svc_1.ns:65535",
        ),
        // dns:
        (
            "dns:///greeter.local:50051",
            dns(name("greeter.local"), 50051),
            "dns:///greeter.local:50051",
        ),
        (
            "DNS:///Greeter.Local:50051",
            dns(name("Greeter.Local"), 50051),
            "dns:///Greeter.Local:50051",
        ),
        (
            "dns://127.0.0.1:5353/greeter.local:50051",
            Target::Dns {
                dns_server: Some(DnsServer {
                    host: ip("127.0.0.1"),
                    port: 5353,
                }),
                host: name("greeter.local"),
                port: 50051,
            },
            "dns://127.0.0.1:5353/greeter.local:50051",
        ),
        (
            "dns://8.8.8.8/foo.googleapis.com",
            Target::Dns {
                dns_server: Some(DnsServer {
                    host: ip("8.8.8.8"),
                    port: DEFAULT_DNS_PORT,
                }),
                host: name("foo.googleapis.com"),
                port: 443,
            },
            "dns://8.8.8.8:53/foo.googleapis.com:443",
        ),
        (
            "dns://[::1]:5353/[::2]:80",
            Target::Dns {
                dns_server: Some(DnsServer {
                    host: ip("::1"),
                    port: 5353,
                }),
                host: ip("::2"),
                port: 80,
            },
            "dns://[::1]:5353/[::2]:80",
        ),
        (
            "dns://ns1.example/greeter",
            Target::Dns {
                dns_server: Some(DnsServer {
                    host: name("ns1.example"),
                    port: 53,
                }),
                host: name("greeter"),
                port: 443,
            },
            "dns://ns1.example:53/greeter:443",
        ),
        (
            "dns:greeter.local",
            dns(name("greeter.local"), 443),
            "dns:///greeter.local:443",
        ),
        ("dns:foo:8080", dns(name("foo"), 8080), "dns:///foo:8080"),
        ("dns:/foo:8080", dns(name("foo"), 8080), "dns:///foo:8080"),
        (
            "dns:///foo.googleapis.com:8080",
            dns(name("foo.googleapis.com"), 8080),
            "dns:///foo.googleapis.com:8080",
        ),
        ("dns:///::1", dns(ip("::1"), 443), "dns:///[::1]:443"),
        (
            "dns:///1.2.3.4",
            dns(ip("1.2.3.4"), 443),
            "dns:///1.2.3.4:443",
        ),
        ("dns:///host:080", dns(name("host"), 80), "dns:///host:80"),
        // ipv4:
        (
            "ipv4:127.0.0.1:1,127.0.0.2",
            Target::Ipv4(vec![v4("127.0.0.1", 1), v4("127.0.0.2", 443)]),
            "ipv4:127.0.0.1:1,127.0.0.2:443",
        ),
        (
            "ipv4:10.0.0.1",
            Target::Ipv4(vec![v4("10.0.0.1", 443)]),
            "ipv4:10.0.0.1:443",
        ),
        (
            "IPv4:1.2.3.4:80,5.6.7.8:443",
            Target::Ipv4(vec![v4("1.2.3.4", 80), v4("5.6.7.8", 443)]),
            "ipv4:1.2.3.4:80,5.6.7.8:443",
        ),
        // ipv6:
        (
            "ipv6:[::1]:80,[::2]",
            Target::Ipv6(vec![v6("::1", 80), v6("::2", 443)]),
            "ipv6:[::1]:80,[::2]:443",
        ),
        (
            "ipv6:::1",
            Target::Ipv6(vec![v6("::1", 443)]),
            "ipv6:[::1]:443",
        ),
        (
            "ipv6:2607:f8b0::ef",
            Target::Ipv6(vec![v6("2607:f8b0::ef", 443)]),
            "ipv6:[2607:f8b0::ef]:443",
        ),
        (
            "ipv6:[2607:f8b0:400e:c00::ef]:443,[::1]",
            Target::Ipv6(vec![v6("2607:f8b0:400e:c00::ef", 443), v6("::1", 443)]),
            "ipv6:[2607:f8b0:400e:c00::ef]:443,[::1]:443",
        ),
        (
            "ipv6:::ffff:1.2.3.4,[::]:9",
            Target::Ipv6(vec![v6("::ffff:1.2.3.4", 443), v6("::", 9)]),
            "ipv6:[::ffff:1.2.3.4]:443,[::]:9",
        ),
        // unix:
        (
            "unix:/tmp/a.sock",
            Target::Unix {
                path: "/tmp/a.sock".into(),
            },
            "unix:///tmp/a.sock",
        ),
        (
            "unix:///tmp/a.sock",
            Target::Unix {
                path: "/tmp/a.sock".into(),
            },
            "unix:///tmp/a.sock",
        ),
        (
            "unix:rel.sock",
            Target::Unix {
                path: "rel.sock".into(),
            },
            "unix:rel.sock",
        ),
        (
            "unix:run/sub",
            Target::Unix {
                path: "run/sub".into(),
            },
            "unix:run/sub",
        ),
        ("unix:/", Target::Unix { path: "/".into() }, "unix:///"),
        // unix-abstract:
        (
            "unix-abstract:foo",
            Target::UnixAbstract {
                name: "foo".to_owned(),
            },
            "unix-abstract:foo",
        ),
        (
            "unix-abstract:a/b:c",
            Target::UnixAbstract {
                name: "a/b:c".to_owned(),
            },
            "unix-abstract:a/b:c",
        ),
        // passthrough:
        (
            "passthrough:///localhost:50051",
            passthrough(None, "localhost:50051"),
            "passthrough:///localhost:50051",
        ),
        (
            "passthrough:localhost:50051",
            passthrough(None, "localhost:50051"),
            "passthrough:///localhost:50051",
        ),
        (
            "passthrough://proxy/some/name",
            passthrough(Some("proxy"), "some/name"),
            "passthrough://proxy/some/name",
        ),
        // custom (etcd registered):
        (
            "etcd:///services/greeter",
            custom("etcd", None, "services/greeter"),
            "etcd:///services/greeter",
        ),
        (
            "etcd://127.0.0.1:2379/services/greeter",
            custom("etcd", Some("127.0.0.1:2379"), "services/greeter"),
            "etcd://127.0.0.1:2379/services/greeter",
        ),
        (
            "ETCD:greeter",
            custom("etcd", None, "greeter"),
            "etcd:///greeter",
        ),
    ]
}

#[test]
fn valid_targets() {
    for (input, expected, canonical) in valid_table() {
        let parsed = Target::parse_with_schemes(input, EXTRA)
            .unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
        assert_eq!(parsed, expected, "{input:?}");
        assert_eq!(parsed.to_string(), canonical, "{input:?}");
        assert_eq!(
            Target::parse_with_schemes(canonical, EXTRA).as_ref(),
            Ok(&expected),
            "canonical form of {input:?}"
        );
        // Without etcd registered, only the custom targets change meaning.
        if !matches!(expected, Target::Custom { .. }) {
            assert_eq!(Target::parse(input), Ok(expected.clone()), "{input:?}");
            assert_eq!(input.parse::<Target>(), Ok(expected), "{input:?}");
        }
    }
}

#[test]
fn scheme_and_authority() {
    let cases: &[(&str, &str, &str)] = &[
        ("localhost:50051", "dns", "localhost:50051"),
        ("greeter.local", "dns", "greeter.local:443"),
        ("dns://8.8.8.8/[::1]:80", "dns", "[::1]:80"),
        ("ipv4:1.2.3.4,5.6.7.8:9", "ipv4", "1.2.3.4:443"),
        ("ipv6:::1,::2", "ipv6", "[::1]:443"),
        ("unix:/tmp/a.sock", "unix", "localhost"),
        ("unix-abstract:foo", "unix-abstract", "localhost"),
        (
            "passthrough:///localhost:50051",
            "passthrough",
            "localhost:50051",
        ),
        ("etcd://host/services/greeter", "etcd", "services/greeter"),
    ];
    for &(input, scheme, authority) in cases {
        let t = Target::parse_with_schemes(input, EXTRA).unwrap();
        assert_eq!(t.scheme(), scheme, "{input:?}");
        assert_eq!(t.authority(), authority, "{input:?}");
    }
}

#[test]
fn built_in_schemes_win_over_extra_ones() {
    assert_eq!(
        Target::parse_with_schemes("dns:///x:1", &["dns", "unix"]),
        Ok(dns(name("x"), 1))
    );
    // A registered scheme that looks like a host name takes the target.
    assert_eq!(
        Target::parse_with_schemes("localhost:50051", &["localhost"]),
        Ok(custom("localhost", None, "50051"))
    );
}

/// (input, expected kind, text the error's Display must contain besides the
/// quoted input).
fn invalid_table() -> Vec<(String, TargetErrorKind, &'static str)> {
    use TargetErrorKind::*;
    let s = |x: &str| x.to_owned();
    vec![
        (s(""), Empty, "empty target"),
        (s("dns:///"), EmptyHost, "empty host"),
        (s("dns:///:80"), EmptyHost, "empty host"),
        (s(":50051"), EmptyHost, "empty host"),
        (s("dns://8.8.8.8"), EmptyHost, "names only a DNS server"),
        (s("dns:///[]:80"), EmptyHost, "empty host"),
        (s("dns:///host:0"), InvalidPort(s("0")), "port 0"),
        (s("dns:///host:99999"), InvalidPort(s("99999")), "65535"),
        (s("dns:///host:65536"), InvalidPort(s("65536")), "65535"),
        (s("dns:///host:abc"), InvalidPort(s("abc")), "decimal"),
        (s("dns:///host:+80"), InvalidPort(s("+80")), "decimal"),
        (s("dns:///host:"), InvalidPort(s("")), "missing port"),
        (s("localhost:abc"), InvalidPort(s("abc")), "invalid port"),
        (s("dns:///a..b"), InvalidHost(s("a..b")), "empty label"),
        (s("dns:///-a"), InvalidHost(s("-a")), "'-'"),
        (s("dns:///1.2.3"), InvalidHost(s("1.2.3")), "IPv4"),
        (s("dns:///bücher.de"), InvalidHost(s("bücher.de")), "xn--"),
        (
            s("dns:///a:b:c"),
            InvalidHost(s("a:b:c")),
            "too many colons",
        ),
        (s("dns:///[foo]:80"), InvalidHost(s("foo")), "brackets"),
        (s("dns:///[::1"), InvalidHost(s("[::1")), "missing ']'"),
        (s("dns:///[::1]x"), InvalidHost(s("[::1]x")), "']'"),
        (s(&"a".repeat(64)), InvalidHost("a".repeat(64)), "63"),
        (
            s("dns://bad:0/x"),
            InvalidDnsServer(s("bad:0")),
            "port 0 is not allowed",
        ),
        (
            s("dns://a..b/x"),
            InvalidDnsServer(s("a..b")),
            "empty label",
        ),
        (s("ipv4:1.2.3"), InvalidIpv4(s("1.2.3")), "IPv4"),
        (s("ipv4:::1"), InvalidIpv4(s("::1")), "IPv4"),
        (s("ipv4:"), EmptyAddressList, "empty address list"),
        (s("ipv4:1.2.3.4,"), InvalidIpv4(s("")), "empty entry"),
        (s("ipv4:1.2.3.4:0"), InvalidPort(s("0")), "port 0"),
        (s("ipv4:1.2.3.4:1:2"), InvalidPort(s("1:2")), "decimal"),
        (s("ipv4:localhost:80"), InvalidIpv4(s("localhost")), "IPv4"),
        (s("ipv6:[::1"), InvalidIpv6(s("[::1")), "missing ']'"),
        (s("ipv6:"), EmptyAddressList, "empty address list"),
        (s("ipv6:1.2.3.4"), InvalidIpv6(s("1.2.3.4")), "IPv6"),
        (
            s("ipv6:::1:80:"),
            InvalidIpv6(s("::1:80:")),
            "[address]:port",
        ),
        (s("ipv6:[::1]:99999"), InvalidPort(s("99999")), "65535"),
        (s("ipv6:[::1]80"), InvalidIpv6(s("[::1]80")), "']'"),
        (s("ipv6:[1.2.3.4]"), InvalidIpv6(s("1.2.3.4")), "IPv6"),
        (
            s("unix://relative"),
            UnixPathNotAbsolute(s("relative")),
            "unix:///relative",
        ),
        (s("unix:"), EmptyPath, "empty unix socket path"),
        (s("unix://"), EmptyPath, "empty unix socket path"),
        (s("unix-abstract:"), EmptyPath, "empty unix socket path"),
        (s("passthrough:"), EmptyEndpoint, "empty endpoint"),
        (s("passthrough:///"), EmptyEndpoint, "empty endpoint"),
        (s("passthrough://auth"), EmptyEndpoint, "empty endpoint"),
        (
            s("dns:///a\0b"),
            InvalidCharacter { at: 8, ch: '\0' },
            "'\\0' at byte 8",
        ),
        (
            s("dns:///a b"),
            InvalidCharacter { at: 8, ch: ' ' },
            "' ' at byte 8",
        ),
        (
            s("dns://bad dns/x"),
            InvalidCharacter { at: 9, ch: ' ' },
            "' ' at byte 9",
        ),
        (
            s(" localhost"),
            InvalidCharacter { at: 0, ch: ' ' },
            "whitespace",
        ),
        (
            s("héllo\u{a0}"),
            InvalidCharacter {
                at: 6,
                ch: '\u{a0}',
            },
            "at byte 6",
        ),
        (s("x\n"), InvalidCharacter { at: 1, ch: '\n' }, "'\\n'"),
        (
            format!("dns:///{}", "a".repeat(MAX_TARGET_LEN)),
            TooLong,
            "4096",
        ),
        // Not registered: said first, then why the DNS reading fails too.
        (
            s("etcd:///x"),
            UnregisteredScheme(s("etcd")),
            "no resolver is registered for scheme \"etcd\" (it needs grpc-lb's feature \"etcd\"): read as a DNS host[:port] instead, it is not valid either: invalid port \"///x\"",
        ),
        (
            s("etcd://127.0.0.1:2379/x"),
            UnregisteredScheme(s("etcd")),
            "not valid either: invalid host",
        ),
    ]
}

#[test]
fn invalid_targets() {
    for (input, kind, message) in invalid_table() {
        let err = Target::parse(&input).expect_err(&input);
        assert_eq!(err.kind(), &kind, "{input:?}: {err}");
        assert_eq!(err.input(), input);
        let shown = err.to_string();
        assert!(shown.starts_with("invalid target \""), "{shown}");
        assert!(shown.contains(message), "{input:?}: {shown:?}");
        if input.len() <= 100 {
            assert!(shown.contains(&format!("{input:?}")), "{shown}");
        }
        // The kind's own message is part of the error's.
        assert!(shown.contains(&kind.to_string()), "{shown}");
    }
}

#[test]
fn error_messages_name_the_problem() {
    let msg = |s: &str| Target::parse(s).unwrap_err().to_string();
    assert_eq!(
        msg("dns:///:80"),
        r#"invalid target "dns:///:80": empty host"#
    );
    assert_eq!(
        msg("dns:///host:0"),
        r#"invalid target "dns:///host:0": invalid port "0": port 0 is not allowed"#
    );
    assert_eq!(
        msg("unix://relative"),
        "invalid target \"unix://relative\": unix socket path \"relative\" after \"unix://\" \
         is not absolute: write unix:///relative for an absolute path or unix:relative for a \
         relative one"
    );
    let long = msg(&"a".repeat(5000));
    assert!(long.contains("(5000 bytes)"), "{long}");
    assert!(long.len() < 400, "{long}");
    let err = Target::parse("etcd:///x").unwrap_err();
    assert!(std::error::Error::source(&err).is_none());
}

#[test]
fn registered_scheme_fixes_the_unregistered_error() {
    assert!(Target::parse("etcd:///x").is_err());
    assert_eq!(
        Target::parse_with_schemes("etcd:///x", EXTRA),
        Ok(custom("etcd", None, "x"))
    );
    assert_eq!(
        Target::parse_with_schemes("etcd://h/", EXTRA)
            .unwrap_err()
            .kind(),
        &TargetErrorKind::EmptyEndpoint
    );
}

#[test]
fn length_limit() {
    // Exactly the limit is fine, one more byte is not.
    let host = format!("{}.{}", "a".repeat(63), "b".repeat(63));
    let list = vec!["1.2.3.4:80"; 372].join(",");
    let at_limit = format!("ipv4:{list}");
    assert!(at_limit.len() <= MAX_TARGET_LEN);
    assert!(Target::parse(&at_limit).is_ok());
    let over = format!(
        "{}{}",
        at_limit,
        ",".repeat(MAX_TARGET_LEN + 1 - at_limit.len())
    );
    assert_eq!(over.len(), MAX_TARGET_LEN + 1);
    assert_eq!(
        Target::parse(&over).unwrap_err().kind(),
        &TargetErrorKind::TooLong
    );
    assert!(Target::parse(&host).is_ok());
    // 253 characters is the longest name.
    let longest = [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61),
    ]
    .join(".");
    assert_eq!(longest.len(), 253);
    assert!(Target::parse(&longest).is_ok());
    assert!(Target::parse(&format!("{longest}.")).is_ok());
    assert!(Target::parse(&format!("{longest}e")).is_err());
}

// ---------------------------------------------------------------------------
// Properties.

/// Asserts the round trip for a target that parsed.
fn assert_round_trip(t: &Target, schemes: &[&str]) -> Result<(), TestCaseError> {
    let shown = t.to_string();
    let again = Target::parse_with_schemes(&shown, schemes);
    prop_assert_eq!(again.as_ref(), Ok(t), "canonical form {:?}", shown);
    prop_assert_eq!(again.unwrap().to_string(), shown);
    Ok(())
}

/// Strings made of the pieces targets are made of, so that the parser's
/// deeper paths get exercised, not only the "invalid character" one.
fn target_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("dns:"),
        Just("ipv4:"),
        Just("ipv6:"),
        Just("unix:"),
        Just("unix-abstract:"),
        Just("passthrough:"),
        Just("etcd:"),
        Just("DNS:"),
        Just("//"),
        Just("/"),
        Just(":"),
        Just("::"),
        Just("["),
        Just("]"),
        Just(","),
        Just("."),
        Just("-"),
        Just("_"),
        Just("0"),
        Just("1"),
        Just("443"),
        Just("65535"),
        Just("65536"),
        Just("127.0.0.1"),
        Just("::1"),
        Just("ffff"),
        Just("localhost"),
        Just("a"),
        Just("é"),
        Just("%"),
        Just(" "),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z_]([a-zA-Z0-9_-]{0,10}[a-zA-Z0-9_])?"
}

fn host_name() -> impl Strategy<Value = String> {
    (prop::collection::vec(label(), 1..5), any::<bool>()).prop_map(|(labels, dot)| {
        let mut n = labels.join(".");
        if dot {
            n.push('.');
        }
        n
    })
}

#[derive(Clone, Debug)]
enum GenHost {
    Name(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

fn gen_host() -> impl Strategy<Value = GenHost> {
    prop_oneof![
        host_name().prop_map(GenHost::Name),
        any::<u32>().prop_map(|n| GenHost::V4(Ipv4Addr::from(n))),
        any::<u128>().prop_map(|n| GenHost::V6(Ipv6Addr::from(n))),
    ]
}

impl GenHost {
    fn host(&self) -> Host {
        match self {
            GenHost::Name(n) => Host::Name(n.clone()),
            GenHost::V4(ip) => Host::Ip(IpAddr::V4(*ip)),
            GenHost::V6(ip) => Host::Ip(IpAddr::V6(*ip)),
        }
    }

    /// As written in a target, with an optional port.
    fn write(&self, port: Option<u16>) -> String {
        match (self, port) {
            (GenHost::V6(ip), Some(p)) => format!("[{ip}]:{p}"),
            (GenHost::V6(ip), None) => ip.to_string(),
            (h, Some(p)) => format!("{}:{p}", h.host()),
            (h, None) => h.host().to_string(),
        }
    }
}

fn port() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_strings_never_panic_and_round_trip(s in any::<String>()) {
        for schemes in [&[][..], EXTRA] {
            if let Ok(t) = Target::parse_with_schemes(&s, schemes) {
                assert_round_trip(&t, schemes)?;
            }
        }
    }

    #[test]
    fn target_like_strings_never_panic_and_round_trip(s in target_like()) {
        for schemes in [&[][..], EXTRA] {
            match Target::parse_with_schemes(&s, schemes) {
                Ok(t) => {
                    assert_round_trip(&t, schemes)?;
                    let _ = t.authority();
                }
                Err(e) => {
                    prop_assert_eq!(e.input(), s.as_str());
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }
    }

    #[test]
    fn dns_targets(
        host in gen_host(),
        port in prop::option::of(port()),
        server in prop::option::of((gen_host(), prop::option::of(port()))),
        bare in any::<bool>(),
    ) {
        let written = host.write(port);
        if let (true, GenHost::Name(n), Some(_)) = (bare, &host, port) {
            // `unix:80` is a unix target, not the host `unix`.
            let builtin = ["dns", "ipv4", "ipv6", "unix", "unix-abstract", "passthrough"];
            prop_assume!(!builtin.contains(&n.to_ascii_lowercase().as_str()));
        }
        let (input, dns_server) = match &server {
            // A bare host[:port] cannot name a DNS server.
            Some((server, server_port)) if !bare => (
                format!("dns://{}/{written}", server.write(*server_port)),
                Some(DnsServer { host: server.host(), port: server_port.unwrap_or(53) }),
            ),
            _ if bare => (written.clone(), None),
            _ => (format!("dns:///{written}"), None),
        };
        let expected = Target::Dns { dns_server, host: host.host(), port: port.unwrap_or(443) };
        let parsed = Target::parse(&input);
        prop_assert_eq!(parsed.as_ref(), Ok(&expected), "{}", input);
        assert_round_trip(&expected, &[])?;
    }

    #[test]
    fn address_lists(
        v4s in prop::collection::vec((any::<u32>(), prop::option::of(port())), 1..6),
        v6s in prop::collection::vec((any::<u128>(), prop::option::of(port())), 1..6),
    ) {
        let input = v4s
            .iter()
            .map(|&(ip, p)| match p {
                Some(p) => format!("{}:{p}", Ipv4Addr::from(ip)),
                None => Ipv4Addr::from(ip).to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
        let expected = Target::Ipv4(
            v4s.iter()
                .map(|&(ip, p)| SocketAddr::from((Ipv4Addr::from(ip), p.unwrap_or(443))))
                .collect(),
        );
        prop_assert_eq!(Target::parse(&format!("ipv4:{input}")), Ok(expected.clone()));
        assert_round_trip(&expected, &[])?;

        let input = v6s
            .iter()
            .map(|&(ip, p)| match p {
                Some(p) => format!("[{}]:{p}", Ipv6Addr::from(ip)),
                None => Ipv6Addr::from(ip).to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
        let expected = Target::Ipv6(
            v6s.iter()
                .map(|&(ip, p)| SocketAddr::from((Ipv6Addr::from(ip), p.unwrap_or(443))))
                .collect(),
        );
        prop_assert_eq!(Target::parse(&format!("ipv6:{input}")), Ok(expected.clone()));
        assert_round_trip(&expected, &[])?;
    }

    #[test]
    fn unix_and_passthrough_and_custom(
        segs in prop::collection::vec("[a-zA-Z0-9._-]{1,8}", 1..5),
        absolute in any::<bool>(),
        slashes in any::<bool>(),
        authority in prop::option::of("[a-z0-9.:@-]{1,12}"),
    ) {
        let rel = segs.join("/");
        let (input, path) = match (absolute, slashes) {
            (true, true) => (format!("unix:///{rel}"), format!("/{rel}")),
            (true, false) => (format!("unix:/{rel}"), format!("/{rel}")),
            (false, _) => (format!("unix:{rel}"), rel.clone()),
        };
        let expected = Target::Unix { path: path.into() };
        prop_assert_eq!(Target::parse(&input), Ok(expected.clone()));
        assert_round_trip(&expected, &[])?;

        let abs = Target::parse(&format!("unix-abstract:{rel}"));
        prop_assert_eq!(abs, Ok(Target::UnixAbstract { name: rel.clone() }));

        let auth = authority.as_deref().unwrap_or("");
        let expected = passthrough(authority.as_deref(), &rel);
        prop_assert_eq!(Target::parse(&format!("passthrough://{auth}/{rel}")), Ok(expected.clone()));
        assert_round_trip(&expected, &[])?;

        let expected = custom("etcd", authority.as_deref(), &rel);
        let input = format!("etcd://{auth}/{rel}");
        prop_assert_eq!(Target::parse_with_schemes(&input, EXTRA), Ok(expected.clone()));
        assert_round_trip(&expected, EXTRA)?;
        prop_assert!(Target::parse(&input).is_err());
    }
}
