//! `meshd iptables`: sidecar traffic capture in the current network namespace.
//!
//! What Istio's `istio-init` container does, for stock Envoy: inbound TCP goes to the inbound
//! listener, outbound TCP from every uid but the proxy's goes to the outbound listener, loopback
//! stays untouched. The rules are built by a pure function ([`rules::restore_input`]) and applied
//! in one `iptables-restore --noflush` transaction, so running the command again replaces our
//! chains instead of stacking a second copy. IPv4 only (`iptables`, not `ip6tables`).

pub(crate) mod rules;

use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::Context as _;

use rules::{Capture, Ipv4Cidr, Jump, OutboundScope};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// uid the proxy runs as; its own connections are never captured.
    #[arg(long, env = "MESHD_PROXY_UID", default_value_t = 1337)]
    proxy_uid: u32,
    /// gid the proxy runs as (default: the proxy uid).
    #[arg(long, env = "MESHD_PROXY_GID")]
    proxy_gid: Option<u32>,
    /// Port of the proxy's inbound listener (`virtualInbound`).
    #[arg(long, env = "MESHD_INBOUND_PORT", default_value_t = 15006)]
    inbound_port: u16,
    /// Port of the proxy's outbound listener (`virtualOutbound`).
    #[arg(long, env = "MESHD_OUTBOUND_PORT", default_value_t = 15001)]
    outbound_port: u16,
    /// Comma-separated inbound ports that reach the pod directly.
    #[arg(
        long,
        env = "MESHD_EXCLUDE_INBOUND_PORTS",
        default_value = "15000,15020,15021,15090",
        value_parser = rules::parse_ports
    )]
    exclude_inbound_ports: ::std::vec::Vec<u16>,
    /// Comma-separated IPv4 ranges that outbound traffic reaches directly.
    #[arg(long, env = "MESHD_EXCLUDE_OUTBOUND_CIDRS", default_value = "", value_parser = rules::parse_list::<Ipv4Cidr>)]
    exclude_outbound_cidrs: ::std::vec::Vec<Ipv4Cidr>,
    /// Comma-separated IPv4 ranges whose outbound traffic is captured; `*` for all.
    #[arg(long, env = "MESHD_INCLUDE_OUTBOUND_CIDRS", default_value = "*", value_parser = rules::parse_scope)]
    include_outbound_cidrs: OutboundScope,
    /// Comma-separated outbound destination ports that are never captured.
    #[arg(long, env = "MESHD_EXCLUDE_OUTBOUND_PORTS", default_value = "", value_parser = rules::parse_ports)]
    exclude_outbound_ports: ::std::vec::Vec<u16>,
    /// Print the `iptables-restore` input for a fresh namespace instead of applying it.
    #[arg(long, env = "MESHD_DRY_RUN")]
    dry_run: bool,
}

impl Args {
    fn capture(&self) -> Capture {
        Capture {
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid.unwrap_or(self.proxy_uid),
            inbound_port: self.inbound_port,
            outbound_port: self.outbound_port,
            exclude_inbound_ports: self.exclude_inbound_ports.clone(),
            exclude_outbound_ports: self.exclude_outbound_ports.clone(),
            exclude_outbound_cidrs: self.exclude_outbound_cidrs.clone(),
            include_outbound_cidrs: self.include_outbound_cidrs.clone(),
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let capture = args.capture();
    if args.dry_run {
        print!("{}", rules::restore_input(&capture, &Jump::ALL));
        return Ok(());
    }
    let mut missing = Vec::new();
    for jump in Jump::ALL {
        if !jump_exists(jump)? {
            missing.push(jump);
        }
    }
    restore(&rules::restore_input(&capture, &missing))
}

/// Asks `iptables -C` whether the jump is installed; any refusal (rule or chain missing) means no.
fn jump_exists(jump: Jump) -> anyhow::Result<bool> {
    let output = Command::new("iptables")
        .args(["--wait", "-t", "nat", "-C"])
        .args(jump.rule())
        .stdin(Stdio::null())
        .output()
        .context("running `iptables` (is it installed and on PATH?)")?;
    Ok(output.status.success())
}

fn restore(input: &str) -> anyhow::Result<()> {
    let mut child = Command::new("iptables-restore")
        .args(["--noflush", "--wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running `iptables-restore` (is it installed and on PATH?)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .context("writing rules to iptables-restore")?;
    }
    let output = child
        .wait_with_output()
        .context("waiting for iptables-restore")?;
    if !output.status.success() {
        anyhow::bail!(
            "iptables-restore failed ({}): {}\ninput was:\n{input}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Capture, clap::Error> {
        let argv = std::iter::once("meshd-iptables").chain(argv.iter().copied());
        Cli::try_parse_from(argv).map(|cli| cli.args.capture())
    }

    #[test]
    fn defaults_are_istio_init_defaults() {
        let capture = parse(&[]).unwrap();
        assert_eq!(
            capture,
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
        );
    }

    #[test]
    fn proxy_gid_defaults_to_the_proxy_uid() {
        assert_eq!(parse(&["--proxy-uid", "1000"]).unwrap().proxy_gid, 1000);
        let capture = parse(&["--proxy-uid", "1000", "--proxy-gid", "2000"]).unwrap();
        assert_eq!((capture.proxy_uid, capture.proxy_gid), (1000, 2000));
    }

    #[test]
    fn list_flags_take_comma_separated_values_and_empty_means_none() {
        let capture = parse(&[
            "--exclude-inbound-ports",
            "",
            "--exclude-outbound-ports",
            "5432,6379",
            "--exclude-outbound-cidrs",
            "169.254.169.254/32,10.0.0.0/8",
            "--include-outbound-cidrs",
            "10.96.0.0/12",
        ])
        .unwrap();
        assert_eq!(capture.exclude_inbound_ports, Vec::<u16>::new());
        assert_eq!(capture.exclude_outbound_ports, vec![5432, 6379]);
        assert_eq!(
            capture.exclude_outbound_cidrs,
            vec![
                "169.254.169.254/32".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap()
            ]
        );
        assert_eq!(
            capture.include_outbound_cidrs,
            OutboundScope::Only(vec!["10.96.0.0/12".parse().unwrap()])
        );
    }

    #[test]
    fn malformed_flag_values_are_refused() {
        assert!(parse(&["--exclude-outbound-cidrs", "10.0.0.0/40"]).is_err());
        assert!(parse(&["--exclude-inbound-ports", "15000,x"]).is_err());
    }
}
