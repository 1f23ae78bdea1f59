//! The capture rules as data: a pure function from [`Capture`] to `iptables-restore` input.
//!
//! The rules mirror what Istio's `istio-iptables` (the `istio-init` container) installs in REDIRECT
//! mode, with Istio's chain names so that people and tools reading `iptables-save` find what they
//! know. IPv4 only: pods in meshes served by meshd are IPv4 (an IPv6 twin would be the same rules fed
//! to `ip6tables-restore` with `::1/128` and `::6/128`).

use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;
use std::str::FromStr;

pub const INBOUND_CHAIN: &str = "ISTIO_INBOUND";
pub const IN_REDIRECT_CHAIN: &str = "ISTIO_IN_REDIRECT";
pub const OUTPUT_CHAIN: &str = "ISTIO_OUTPUT";
pub const REDIRECT_CHAIN: &str = "ISTIO_REDIRECT";

/// Source address Envoy binds for inbound connections it hands to the app (Istio's
/// `InboundPassthroughCluster` and `inbound|PORT||` clusters); they must not be captured again.
const INBOUND_PASSTHROUGH_SOURCE: &str = "127.0.0.6/32";
const LOCALHOST: &str = "127.0.0.1/32";

/// What to capture and where to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    pub inbound_port: u16,
    pub outbound_port: u16,
    pub exclude_inbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    pub exclude_outbound_cidrs: Vec<Ipv4Cidr>,
    pub include_outbound_cidrs: OutboundScope,
}

/// Which outbound destinations are redirected to the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundScope {
    /// Everything not excluded (Istio's `*`).
    All,
    /// Only these ranges; an empty list captures no outbound traffic at all.
    Only(Vec<Ipv4Cidr>),
}

/// A jump from a built-in chain into one of ours. Appending one twice would capture twice, so
/// the caller asks iptables which ones are missing and passes only those to [`restore_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jump {
    /// `PREROUTING -p tcp -j ISTIO_INBOUND`
    Inbound,
    /// `OUTPUT -p tcp -j ISTIO_OUTPUT`
    Outbound,
}

impl Jump {
    pub const ALL: [Jump; 2] = [Jump::Inbound, Jump::Outbound];

    /// The rule specification after `-A`/`-C`, as separate arguments.
    pub fn rule(self) -> [&'static str; 5] {
        match self {
            Jump::Inbound => ["PREROUTING", "-p", "tcp", "-j", INBOUND_CHAIN],
            Jump::Outbound => ["OUTPUT", "-p", "tcp", "-j", OUTPUT_CHAIN],
        }
    }
}

/// The complete `iptables-restore --noflush` input. Declaring our chains (`:CHAIN - [0:0]`) creates
/// them or, when they exist, flushes them, so applying the same input twice leaves one copy of every
/// rule; the built-in chains are only appended to, with `jumps` being the ones not yet present.
pub fn restore_input(capture: &Capture, jumps: &[Jump]) -> String {
    let mut out = String::new();
    let mut line = |args: fmt::Arguments<'_>| {
        // Writing into a String cannot fail.
        let _ = out.write_fmt(args);
        out.push('\n');
    };
    let uid = capture.proxy_uid;
    let gid = capture.proxy_gid;

    line(format_args!("*nat"));
    for chain in [
        INBOUND_CHAIN,
        IN_REDIRECT_CHAIN,
        OUTPUT_CHAIN,
        REDIRECT_CHAIN,
    ] {
        line(format_args!(":{chain} - [0:0]"));
    }

    line(format_args!(
        "-A {IN_REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {}",
        capture.inbound_port
    ));
    line(format_args!(
        "-A {REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {}",
        capture.outbound_port
    ));

    // Inbound: every TCP port except the proxy's own (admin, health, stats) goes to the inbound
    // listener.
    for port in &capture.exclude_inbound_ports {
        line(format_args!(
            "-A {INBOUND_CHAIN} -p tcp -m tcp --dport {port} -j RETURN"
        ));
    }
    line(format_args!(
        "-A {INBOUND_CHAIN} -p tcp -j {IN_REDIRECT_CHAIN}"
    ));

    // Outbound, in istio-init's order:
    // - excluded ports leave directly, even Envoy's calls to its own pod;
    // - connections Envoy opens from 127.0.0.6 to the app are already inbound-processed;
    // - Envoy calling its own pod IP (over lo) is a call to this pod's service: send it through
    //   the inbound listener so inbound policy applies;
    // - an app talking to itself over lo stays untouched;
    // - anything else Envoy (uid or gid of the proxy) sends leaves as is, which is what keeps
    //   Envoy's own upstream connections from looping back into Envoy;
    // - localhost stays untouched; excluded ranges leave directly; the rest is redirected to
    //   the outbound listener.
    for port in &capture.exclude_outbound_ports {
        line(format_args!(
            "-A {OUTPUT_CHAIN} -p tcp -m tcp --dport {port} -j RETURN"
        ));
    }
    line(format_args!(
        "-A {OUTPUT_CHAIN} -s {INBOUND_PASSTHROUGH_SOURCE} -o lo -j RETURN"
    ));
    for (owner, id) in [("uid", uid), ("gid", gid)] {
        line(format_args!(
            "-A {OUTPUT_CHAIN} ! -d {LOCALHOST} -o lo -p tcp -m owner --{owner}-owner {id} -j {IN_REDIRECT_CHAIN}"
        ));
        line(format_args!(
            "-A {OUTPUT_CHAIN} -o lo -m owner ! --{owner}-owner {id} -j RETURN"
        ));
        line(format_args!(
            "-A {OUTPUT_CHAIN} -m owner --{owner}-owner {id} -j RETURN"
        ));
    }
    line(format_args!("-A {OUTPUT_CHAIN} -d {LOCALHOST} -j RETURN"));
    for cidr in &capture.exclude_outbound_cidrs {
        line(format_args!("-A {OUTPUT_CHAIN} -d {cidr} -j RETURN"));
    }
    match &capture.include_outbound_cidrs {
        OutboundScope::All => line(format_args!("-A {OUTPUT_CHAIN} -j {REDIRECT_CHAIN}")),
        OutboundScope::Only(cidrs) => {
            for cidr in cidrs {
                line(format_args!(
                    "-A {OUTPUT_CHAIN} -d {cidr} -j {REDIRECT_CHAIN}"
                ));
            }
        }
    }

    for jump in jumps {
        line(format_args!("-A {}", jump.rule().join(" ")));
    }
    line(format_args!("COMMIT"));
    out
}

/// An IPv4 range, printed the way `iptables-save` prints it (network address, explicit prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

/// A flag value that does not describe a capture.
#[derive(Debug, PartialEq, Eq)]
pub enum InvalidCapture {
    Cidr(String),
    Port(String),
}

impl fmt::Display for InvalidCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidCapture::Cidr(s) => {
                write!(f, "`{s}` is not an IPv4 CIDR (like 10.0.0.0/8) or address")
            }
            InvalidCapture::Port(s) => write!(f, "`{s}` is not a port (1-65535)"),
        }
    }
}

impl std::error::Error for InvalidCapture {}

impl FromStr for Ipv4Cidr {
    type Err = InvalidCapture;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidCapture::Cidr(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, prefix.parse::<u8>().map_err(|_| invalid())?),
            None => (s, 32),
        };
        if prefix > 32 {
            return Err(invalid());
        }
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        Ok(Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Parses a comma-separated list, ignoring blanks so that `--flag ''` means "none".
pub fn parse_list<T: FromStr>(s: &str) -> Result<Vec<T>, T::Err> {
    s.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::parse)
        .collect()
}

pub fn parse_ports(s: &str) -> Result<Vec<u16>, InvalidCapture> {
    s.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(InvalidCapture::Port(item.to_owned())),
        })
        .collect()
}

pub fn parse_scope(s: &str) -> Result<OutboundScope, InvalidCapture> {
    if s.trim() == "*" {
        Ok(OutboundScope::All)
    } else {
        parse_list(s).map(OutboundScope::Only)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_capture() -> Capture {
        Capture {
            proxy_uid: 1337,
            proxy_gid: 1337,
            inbound_port: 15006,
            outbound_port: 15001,
            exclude_inbound_ports: vec![15000, 15020, 15021, 15090],
            exclude_outbound_ports: vec![],
            exclude_outbound_cidrs: vec![],
            include_outbound_cidrs: OutboundScope::All,
        }
    }

    #[test]
    fn default_capture_matches_istio_init_rules() {
        let golden = "\
*nat
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_REDIRECT - [0:0]
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_INBOUND -p tcp -m tcp --dport 15000 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -p tcp -j ISTIO_OUTPUT
COMMIT
";
        assert_eq!(restore_input(&mk_capture(), &Jump::ALL), golden);
    }

    #[test]
    fn jumps_already_present_are_not_appended_again() {
        let input = restore_input(&mk_capture(), &[Jump::Outbound]);
        assert!(!input.contains("-A PREROUTING"), "{input}");
        assert!(
            input.contains("-A OUTPUT -p tcp -j ISTIO_OUTPUT\nCOMMIT\n"),
            "{input}"
        );
        let input = restore_input(&mk_capture(), &[]);
        assert!(!input.contains("-A PREROUTING") && !input.contains("-A OUTPUT "));
    }

    #[test]
    fn exclusions_return_before_the_catch_all_redirect() {
        let capture = Capture {
            proxy_uid: 1000,
            proxy_gid: 2000,
            inbound_port: 16006,
            outbound_port: 16001,
            exclude_inbound_ports: vec![22],
            exclude_outbound_ports: vec![5432, 6379],
            exclude_outbound_cidrs: vec![
                "169.254.169.254".parse().unwrap(),
                "10.1.2.3/16".parse().unwrap(),
            ],
            include_outbound_cidrs: OutboundScope::All,
        };
        let golden = "\
*nat
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_REDIRECT - [0:0]
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 16001
-A ISTIO_INBOUND -p tcp -m tcp --dport 22 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN
-A ISTIO_OUTPUT -p tcp -m tcp --dport 6379 -j RETURN
-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1000 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1000 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1000 -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --gid-owner 2000 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 2000 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 2000 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -d 169.254.169.254/32 -j RETURN
-A ISTIO_OUTPUT -d 10.1.0.0/16 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
";
        assert_eq!(restore_input(&capture, &[]), golden);
    }

    #[test]
    fn included_ranges_replace_the_catch_all_redirect() {
        let mut capture = mk_capture();
        capture.include_outbound_cidrs = parse_scope("10.96.0.0/12, 10.77.0.0/16").unwrap();
        let input = restore_input(&capture, &[]);
        assert!(input.contains(
            "-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT\n-A ISTIO_OUTPUT -d 10.77.0.0/16 -j ISTIO_REDIRECT\nCOMMIT\n"
        ), "{input}");
        assert!(
            !input.contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT"),
            "{input}"
        );

        capture.include_outbound_cidrs = parse_scope("").unwrap();
        let input = restore_input(&capture, &[]);
        assert!(!input.contains("-j ISTIO_REDIRECT"), "{input}");
    }

    #[test]
    fn cidrs_are_normalised_to_their_network_address() {
        let cidr: Ipv4Cidr = "192.168.7.9/24".parse().unwrap();
        assert_eq!(cidr.to_string(), "192.168.7.0/24");
        assert_eq!(
            "0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            "8.8.8.8".parse::<Ipv4Cidr>().unwrap().to_string(),
            "8.8.8.8/32"
        );
    }

    #[test]
    fn malformed_cidrs_and_ports_are_rejected() {
        for bad in ["10.0.0.0/33", "10.0.0/8", "fd00::/8", "10.0.0.0/", "*"] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
        assert_eq!(parse_ports("80,0"), Err(InvalidCapture::Port("0".into())));
        assert_eq!(
            parse_ports("80,http"),
            Err(InvalidCapture::Port("http".into()))
        );
        assert_eq!(parse_ports(" 80 , 443 ,"), Ok(vec![80, 443]));
        assert_eq!(parse_ports(""), Ok(vec![]));
    }
}
