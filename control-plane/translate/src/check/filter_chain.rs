//! How a listener picks a filter chain, from `source/common/listener_manager/
//! filter_chain_manager_impl.cc`: every combination of a chain's match lists (destination port,
//! destination range, server name, transport protocol, application protocol, direct source
//! range, source type, source range, source port; an empty list matching anything) is one leaf
//! of a lookup tree, and two chains may not share a leaf. Server names may only be wildcarded
//! as `*.suffix`, and ranges must be IP addresses.

use std::collections::HashMap;
use std::net::IpAddr;

use meshd_proto::pb::envoy::config::core::v3::CidrRange;
use meshd_proto::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch};

use super::{Violation, join};

/// A chain whose lists multiply past this many leaves is not expanded; no listener meshd
/// builds comes near it.
const MAX_LEAVES_PER_CHAIN: usize = 100_000;

/// One leaf of the lookup tree, each part in Envoy's normalised form.
type Leaf = (
    Option<u32>,
    Option<(IpAddr, u32)>,
    Option<String>,
    String,
    Option<String>,
    Option<(IpAddr, u32)>,
    i32,
    Option<(IpAddr, u32)>,
    Option<u32>,
);

pub(super) fn check(chains: &[FilterChain], out: &mut Vec<Violation>) {
    let mut owners: HashMap<Leaf, usize> = HashMap::new();
    for (i, chain) in chains.iter().enumerate() {
        let path = format!("filter_chains[{i}].filter_chain_match");
        let default = FilterChainMatch::default();
        let m = chain.filter_chain_match.as_ref().unwrap_or(&default);
        let problems = out.len();
        server_names(m, &path, out);
        let destination = ranges(&m.prefix_ranges, &join(&path, "prefix_ranges"), out);
        let direct = ranges(
            &m.direct_source_prefix_ranges,
            &join(&path, "direct_source_prefix_ranges"),
            out,
        );
        let source = ranges(
            &m.source_prefix_ranges,
            &join(&path, "source_prefix_ranges"),
            out,
        );
        if out.len() > problems {
            continue;
        }
        let names = any_of(m.server_names.iter().map(|n| n.to_ascii_lowercase()));
        let alpn = any_of(m.application_protocols.iter().cloned());
        let ports = any_of(m.source_ports.iter().copied());
        let count = [
            destination.len(),
            names.len(),
            alpn.len(),
            direct.len(),
            source.len(),
        ]
        .iter()
        .chain([&ports.len()])
        .product::<usize>();
        if count > MAX_LEAVES_PER_CHAIN {
            continue;
        }
        let mut clash: Option<usize> = None;
        for d in &destination {
            for n in &names {
                for a in &alpn {
                    for ds in &direct {
                        for s in &source {
                            for p in &ports {
                                let leaf: Leaf = (
                                    m.destination_port.map(|v| v.value),
                                    *d,
                                    n.clone(),
                                    m.transport_protocol.clone(),
                                    a.clone(),
                                    *ds,
                                    m.source_type,
                                    *s,
                                    *p,
                                );
                                if let Some(&other) = owners.get(&leaf) {
                                    clash.get_or_insert(other);
                                } else {
                                    owners.insert(leaf, i);
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some(other) = clash {
            out.push(Violation::new(
                path,
                format!(
                    "multiple filter chains with overlapping matching rules are defined: this \
                     one and filter_chains[{other}]"
                ),
            ));
        }
    }
}

/// An empty list matches anything: one `None` leaf part.
fn any_of<T>(items: impl Iterator<Item = T>) -> Vec<Option<T>> {
    let list: Vec<Option<T>> = items.map(Some).collect();
    if list.is_empty() { vec![None] } else { list }
}

fn server_names(m: &FilterChainMatch, path: &str, out: &mut Vec<Violation>) {
    for (i, name) in m.server_names.iter().enumerate() {
        if name.contains('*') && !name.starts_with("*.") {
            out.push(Violation::new(
                join(path, &format!("server_names[{i}]")),
                format!("partial wildcards are not supported in \"server_names\": {name}"),
            ));
        }
    }
}

/// Ranges as Envoy keys them: the address masked to its prefix length (a length past the
/// address's width is the whole address).
fn ranges(list: &[CidrRange], path: &str, out: &mut Vec<Violation>) -> Vec<Option<(IpAddr, u32)>> {
    let mut keys = Vec::new();
    for (i, range) in list.iter().enumerate() {
        let Ok(ip) = range.address_prefix.parse::<IpAddr>() else {
            out.push(Violation::new(
                join(path, &format!("[{i}].address_prefix")),
                format!("malformed IP address: {}", range.address_prefix),
            ));
            continue;
        };
        let len = range.prefix_len.map_or(0, |v| v.value);
        keys.push(Some(masked(ip, len)));
    }
    if keys.is_empty() {
        keys.push(None);
    }
    keys
}

fn masked(ip: IpAddr, len: u32) -> (IpAddr, u32) {
    match ip {
        IpAddr::V4(v4) => {
            let len = len.min(32);
            let bits = u32::from(v4) & u32::MAX.checked_shl(32 - len).unwrap_or(0);
            (IpAddr::V4(bits.into()), len)
        }
        IpAddr::V6(v6) => {
            let len = len.min(128);
            let bits = u128::from(v6) & u128::MAX.checked_shl(128 - len).unwrap_or(0);
            (IpAddr::V6(bits.into()), len)
        }
    }
}
