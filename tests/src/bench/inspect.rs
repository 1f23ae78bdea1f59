//! Decoding xDS resources the way a sidecar must before it can use (and ACK) them, keeping only
//! what decides its next requests: which clusters are EDS, which route configs listeners name.

use meshd_proto::pb::envoy::config::cluster::v3::Cluster;
use meshd_proto::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use meshd_proto::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use meshd_proto::pb::envoy::config::listener::v3::{FilterChain, Listener, filter};
use meshd_proto::pb::envoy::config::route::v3::RouteConfiguration;
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use meshd_proto::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use meshd_proto::pb::google::protobuf::Any;
use meshd_proto::{type_url, unpack};

/// The types a sidecar subscribes to, in push order (secrets only over TLS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    Cds,
    Eds,
    Lds,
    Rds,
    Sds,
}

impl Ty {
    pub const ALL: [Ty; 5] = [Ty::Cds, Ty::Eds, Ty::Lds, Ty::Rds, Ty::Sds];

    pub fn of(url: &str) -> Option<Ty> {
        Some(match url {
            type_url::CLUSTER => Ty::Cds,
            type_url::ENDPOINT => Ty::Eds,
            type_url::LISTENER => Ty::Lds,
            type_url::ROUTE => Ty::Rds,
            type_url::SECRET => Ty::Sds,
            _ => return None,
        })
    }

    pub fn url(self) -> &'static str {
        match self {
            Ty::Cds => type_url::CLUSTER,
            Ty::Eds => type_url::ENDPOINT,
            Ty::Lds => type_url::LISTENER,
            Ty::Rds => type_url::ROUTE,
            Ty::Sds => type_url::SECRET,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn short(self) -> &'static str {
        type_url::short(self.url())
    }
}

/// What a decoded resource tells the client.
#[derive(Debug, Default)]
pub struct Inspected {
    pub name: String,
    /// A cluster whose endpoints come over EDS.
    pub eds: bool,
    /// Route configurations a listener's HTTP connection managers fetch over RDS.
    pub routes: Vec<String>,
}

/// Decodes `any` fully as a `ty` resource (as Envoy would before accepting it).
pub fn inspect(ty: Ty, any: &Any) -> Result<Inspected, String> {
    let bad = || format!("cannot decode {} as {}", any.type_url, ty.short());
    match ty {
        Ty::Cds => {
            let cluster: Cluster = unpack(any).ok_or_else(bad)?;
            let eds = cluster.cluster_discovery_type
                == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            Ok(Inspected {
                name: cluster.name,
                eds,
                routes: Vec::new(),
            })
        }
        Ty::Eds => {
            let cla: ClusterLoadAssignment = unpack(any).ok_or_else(bad)?;
            Ok(Inspected {
                name: cla.cluster_name,
                ..Default::default()
            })
        }
        Ty::Lds => {
            let listener: Listener = unpack(any).ok_or_else(bad)?;
            let mut routes = Vec::new();
            for chain in listener
                .filter_chains
                .iter()
                .chain(listener.default_filter_chain.as_ref())
            {
                rds_names(chain, &mut routes)?;
            }
            Ok(Inspected {
                name: listener.name,
                routes,
                ..Default::default()
            })
        }
        Ty::Rds => {
            let routes: RouteConfiguration = unpack(any).ok_or_else(bad)?;
            Ok(Inspected {
                name: routes.name,
                ..Default::default()
            })
        }
        Ty::Sds => {
            let secret: Secret = unpack(any).ok_or_else(bad)?;
            Ok(Inspected {
                name: secret.name,
                ..Default::default()
            })
        }
    }
}

fn rds_names(chain: &FilterChain, out: &mut Vec<String>) -> Result<(), String> {
    let hcm_url = <HttpConnectionManager as prost::Name>::type_url();
    for f in &chain.filters {
        let Some(filter::ConfigType::TypedConfig(config)) = &f.config_type else {
            continue;
        };
        if config.type_url != hcm_url {
            continue;
        }
        let hcm: HttpConnectionManager = unpack(config)
            .ok_or_else(|| format!("filter {}: cannot decode HttpConnectionManager", f.name))?;
        if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
            out.push(rds.route_config_name);
        }
    }
    Ok(())
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use meshd_proto::pack;
    use meshd_proto::pb::envoy::config::listener::v3::Filter;
    use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds;

    use super::*;

    fn hcm_filter(route: RouteSpecifier) -> Filter {
        let hcm = HttpConnectionManager {
            route_specifier: Some(route),
            ..Default::default()
        };
        Filter {
            name: "envoy.filters.network.http_connection_manager".to_string(),
            config_type: Some(filter::ConfigType::TypedConfig(pack(&hcm))),
        }
    }

    #[test]
    fn listeners_name_the_route_configs_their_connection_managers_fetch() {
        let listener = Listener {
            name: "0.0.0.0_8080".to_string(),
            filter_chains: vec![FilterChain {
                filters: vec![
                    hcm_filter(RouteSpecifier::Rds(Rds {
                        route_config_name: "8080".to_string(),
                        ..Default::default()
                    })),
                    hcm_filter(RouteSpecifier::RouteConfig(RouteConfiguration::default())),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let found = inspect(Ty::Lds, &pack(&listener)).unwrap();
        assert_eq!(found.name, "0.0.0.0_8080");
        assert_eq!(found.routes, vec!["8080".to_string()]);
    }

    #[test]
    fn only_eds_clusters_are_marked_eds() {
        let eds = Cluster {
            name: "outbound|8080||a.b.svc.cluster.local".to_string(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            ..Default::default()
        };
        let static_cluster = Cluster {
            name: "inbound|8080||".to_string(),
            ..Default::default()
        };
        assert!(inspect(Ty::Cds, &pack(&eds)).unwrap().eds);
        assert!(!inspect(Ty::Cds, &pack(&static_cluster)).unwrap().eds);
    }

    #[test]
    fn a_resource_of_another_type_is_an_error() {
        let cluster = pack(&Cluster::default());
        assert!(inspect(Ty::Lds, &cluster).is_err());
    }

    #[test]
    fn contains_finds_needles() {
        assert!(contains(b"abc10.255.255.1xyz", b"10.255.255.1"));
        assert!(!contains(b"abc", b"abcd"));
        assert!(contains(b"abc", b""));
    }
}
