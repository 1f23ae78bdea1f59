//! Rules across one response: a name appears once per type (`source/common/upstream/
//! cds_api_helper.cc` and `source/common/listener_manager/lds_api.cc` refuse duplicates;
//! `source/extensions/clusters/eds/eds.cc` and `source/common/rds/rds_route_config_subscription.cc`
//! refuse a second resource for one subscription), and no two listeners share an address
//! (`source/common/listener_manager/listener_manager_impl.cc`, whether or not they bind).

use std::collections::HashMap;
use std::net::IpAddr;

use meshd_proto::pb::envoy::config::cluster::v3::Cluster;
use meshd_proto::pb::envoy::config::core::v3::{Address, address, socket_address};
use meshd_proto::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use meshd_proto::pb::envoy::config::listener::v3::Listener;
use meshd_proto::pb::envoy::config::route::v3::RouteConfiguration;
use meshd_proto::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use meshd_proto::pb::google::protobuf::Any;
use meshd_proto::type_url;

use super::Violation;

pub(super) fn check(type_url: &str, resources: &[Any]) -> Vec<(String, Violation)> {
    let mut out = Vec::new();
    let names: Vec<String> = resources.iter().map(|r| name(type_url, r)).collect();
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, n) in names.iter().enumerate() {
        if let Some(earlier) = first.insert(n.as_str(), i) {
            first.insert(n.as_str(), earlier);
            out.push((
                n.clone(),
                Violation::new(
                    "",
                    format!(
                        "duplicate {} {n} found (resources {earlier} and {i} of the response)",
                        type_url::short(type_url)
                    ),
                ),
            ));
        }
    }
    if type_url == type_url::LISTENER {
        listener_addresses(resources, &mut out);
    }
    out
}

fn name(type_url: &str, resource: &Any) -> String {
    match type_url {
        type_url::CLUSTER => meshd_proto::unpack::<Cluster>(resource).map(|c| c.name),
        type_url::ENDPOINT => {
            meshd_proto::unpack::<ClusterLoadAssignment>(resource).map(|c| c.cluster_name)
        }
        type_url::LISTENER => meshd_proto::unpack::<Listener>(resource).map(|l| l.name),
        type_url::ROUTE => meshd_proto::unpack::<RouteConfiguration>(resource).map(|r| r.name),
        type_url::SECRET => meshd_proto::unpack::<Secret>(resource).map(|s| s.name),
        _ => None,
    }
    .unwrap_or_default()
}

/// An address as Envoy compares them: the parsed IP (so `::` and `0::0` are one), the port and
/// the protocol.
type Key = (IpAddr, u32, i32);

fn key(address: Option<&Address>) -> Option<Key> {
    let Some(address::Address::SocketAddress(s)) = address?.address.as_ref() else {
        return None;
    };
    let ip = s.address.parse::<IpAddr>().ok()?;
    let port = match s.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => p,
        _ => return None,
    };
    // Port 0 asks the kernel for any free port: two of them never clash.
    (port != 0).then_some((ip, port, s.protocol))
}

/// The listener addresses of a set checked already, indexed once: per-proxy listeners sent with
/// it are then checked against it without decoding the set again.
#[derive(Debug, Default)]
pub struct AddressIndex(HashMap<Key, String>);

impl AddressIndex {
    pub fn of(listeners: &[Any]) -> Self {
        let mut owners = HashMap::new();
        claim(listeners, &HashMap::new(), &mut owners, &mut Vec::new());
        Self(owners)
    }

    /// Which of `added` (sent after the indexed set) take an address an indexed listener or an
    /// earlier one of them holds.
    pub fn clashes(&self, added: &[Any]) -> Vec<(String, Violation)> {
        let mut out = Vec::new();
        claim(added, &self.0, &mut HashMap::new(), &mut out);
        out
    }
}

fn listener_addresses(resources: &[Any], out: &mut Vec<(String, Violation)>) {
    claim(resources, &HashMap::new(), &mut HashMap::new(), out);
}

/// Gives each listener its addresses, in order; a listener asking for one another listener holds
/// (in `held`, or claimed earlier into `owners`) is reported.
fn claim(
    resources: &[Any],
    held: &HashMap<Key, String>,
    owners: &mut HashMap<Key, String>,
    out: &mut Vec<(String, Violation)>,
) {
    for resource in resources {
        let Some(listener) = meshd_proto::unpack::<Listener>(resource) else {
            continue;
        };
        let addresses = std::iter::once(listener.address.as_ref()).chain(
            listener
                .additional_addresses
                .iter()
                .map(|a| a.address.as_ref()),
        );
        for k in addresses.filter_map(key) {
            match held.get(&k).or_else(|| owners.get(&k)) {
                Some(owner) if *owner != listener.name => out.push((
                    listener.name.clone(),
                    Violation::new(
                        "address",
                        format!(
                            "listener '{}' has duplicate address '{}:{}' as existing listener \
                             '{owner}'",
                            listener.name, k.0, k.1
                        ),
                    ),
                )),
                Some(_) => {}
                None => {
                    owners.insert(k, listener.name.clone());
                }
            }
        }
    }
}
