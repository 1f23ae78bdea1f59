//! Request authentication and authorization on a workload's inbound chains, with stock Envoy
//! filters only: `envoy.filters.http.jwt_authn` for RequestAuthentication, then one
//! `envoy.filters.http.rbac` per AuthorizationPolicy action in Istio's order — CUSTOM, AUDIT,
//! DENY, ALLOW — before the router; TCP chains get `envoy.filters.network.rbac` the same way,
//! before `tcp_proxy`. A denied request gets Envoy's `403 RBAC: access denied`; a denied TCP
//! connection is closed.
//!
//! No ALLOW policy: everything not denied is allowed. ALLOW policies present: only what one of
//! their rules matches is allowed (a policy without rules matches nothing).
//!
//! Principals match the mesh's trust domain and each of MeshConfig's `trustDomainAliases`, as in
//! istiod. One deliberate difference: where the ALLOW policies can only allow requests with a
//! request principal, jwt_authn refuses a missing token with 401 rather than letting RBAC answer
//! 403 (`meshd_model::authz::token_required`).

mod encode;
mod jwt;
mod rbac;

use std::collections::BTreeMap;
use std::sync::Arc;

use meshd_model::authz::token_required::token_required;
use meshd_model::{AuthzAction, AuthzPolicyModel, Snapshot};
use meshd_proto::pb::envoy::config::listener::v3::{Filter, filter};
use meshd_proto::pb::envoy::config::rbac::v3::rbac::Action as RbacAction;
use meshd_proto::pb::envoy::config::rbac::v3::{Policy, Rbac};
use meshd_proto::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use meshd_proto::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use meshd_proto::pb::google::protobuf::Any;
use prost::{Message, Name};

use encode::{length_delimited, with_sorted_map};

pub const HTTP_RBAC_FILTER: &str = "envoy.filters.http.rbac";
pub const NETWORK_RBAC_FILTER: &str = "envoy.filters.network.rbac";
pub const JWT_AUTHN_FILTER: &str = rbac::JWT_FILTER;
/// Istio's stat prefix for network RBAC (`tcp.rbac.allowed`, ...).
const TCP_STAT_PREFIX: &str = "tcp.";

/// The authentication and authorization filters of one workload, for all its inbound chains.
#[derive(Clone, Debug, Default)]
pub struct InboundAuthz {
    http: Vec<HttpFilter>,
    network: Vec<Filter>,
}

impl InboundAuthz {
    /// For the workload with `labels` in `namespace`.
    pub fn for_workload(
        snapshot: &Snapshot,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> InboundAuthz {
        let policies = snapshot
            .authorization_policies
            .for_workload(namespace, labels);
        let jwt_rules = snapshot
            .request_authentications
            .for_workload(namespace, labels);
        let trust = rbac::TrustDomains {
            local: &snapshot.mesh.trust_domain,
            aliases: &snapshot.mesh.trust_domain_aliases,
        };
        let mut http = Vec::new();
        let required = token_required(&policies);
        if let Some(config) =
            jwt::jwt_authn(&jwt_rules, &snapshot.request_authentications, &required)
        {
            http.push(http_filter(JWT_AUTHN_FILTER, config));
        }
        let mut network = Vec::new();
        for stage in Stage::ORDER {
            if let Some(built) = stage.build(&policies, trust, false) {
                http.push(http_filter(HTTP_RBAC_FILTER, built.http()));
            }
            if let Some(built) = stage.build(&policies, trust, true) {
                network.push(Filter {
                    name: NETWORK_RBAC_FILTER.to_string(),
                    config_type: Some(filter::ConfigType::TypedConfig(built.network())),
                });
            }
        }
        InboundAuthz { http, network }
    }

    /// HTTP filters to put before the router.
    pub fn http_filters(&self) -> Vec<HttpFilter> {
        self.http.clone()
    }

    /// Network filters to put before `tcp_proxy`.
    pub fn network_filters(&self) -> Vec<Filter> {
        self.network.clone()
    }
}

fn http_filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// One RBAC filter per stage, in Istio's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// CUSTOM policies, which meshd cannot delegate: what they match is denied.
    Custom,
    Audit,
    Deny,
    Allow,
}

impl Stage {
    const ORDER: [Stage; 4] = [Stage::Custom, Stage::Audit, Stage::Deny, Stage::Allow];

    fn takes(self, action: AuthzAction) -> bool {
        matches!(
            (self, action),
            (Stage::Custom, AuthzAction::Custom)
                | (Stage::Audit, AuthzAction::Audit)
                | (Stage::Deny, AuthzAction::Deny)
                | (Stage::Allow, AuthzAction::Allow)
        )
    }

    fn action(self) -> RbacAction {
        match self {
            Stage::Custom | Stage::Deny => RbacAction::Deny,
            Stage::Audit => RbacAction::Log,
            Stage::Allow => RbacAction::Allow,
        }
    }

    /// Istio's prefix for dry-run (`istio.io/dry-run`) rule stats.
    fn shadow_stat_prefix(self) -> &'static str {
        match self {
            Stage::Custom | Stage::Deny => "istio_dry_run_deny_",
            Stage::Allow => "istio_dry_run_allow_",
            Stage::Audit => "",
        }
    }

    fn policy_name(self, policy: &AuthzPolicyModel, index: usize) -> String {
        let name = policy.rule_name(index);
        match self {
            Stage::Custom => format!("{name}-deny-due-to-bad-CUSTOM-action"),
            _ => name,
        }
    }

    /// The stage's RBAC policies, enforced and dry-run; `None` when no policy has this action.
    fn build(
        self,
        policies: &[Arc<AuthzPolicyModel>],
        trust: rbac::TrustDomains<'_>,
        tcp: bool,
    ) -> Option<Built> {
        let ctx = rbac::Context {
            trust,
            tcp,
            strict: self == Stage::Allow,
        };
        let mut built = Built {
            stage: self,
            enforced: None,
            dry_run: None,
        };
        let mut any = false;
        for policy in policies.iter().filter(|p| self.takes(p.action)) {
            any = true;
            let target = if policy.dry_run {
                built.dry_run.get_or_insert_with(BTreeMap::new)
            } else {
                built.enforced.get_or_insert_with(BTreeMap::new)
            };
            if policy.rules.is_empty() {
                target.insert(self.policy_name(policy, 0), rbac::never_policy());
            }
            for (i, rule) in policy.rules.iter().enumerate() {
                if let Some(p) = rbac::rule_policy(rule, &ctx) {
                    target.insert(self.policy_name(policy, i), p);
                }
            }
        }
        any.then_some(built)
    }
}

struct Built {
    stage: Stage,
    enforced: Option<BTreeMap<String, Policy>>,
    dry_run: Option<BTreeMap<String, Policy>>,
}

impl Built {
    fn rules(&self, policies: &BTreeMap<String, Policy>) -> Vec<u8> {
        let base = Rbac {
            action: self.stage.action() as i32,
            ..Default::default()
        };
        // policies is map field 2.
        with_sorted_map(&base, 2, policies)
    }

    /// `rules` (field 1) and `shadow_rules` (field 2) of either filter, appended to `base`.
    fn with_rules(&self, mut base: Vec<u8>) -> Vec<u8> {
        if let Some(p) = &self.enforced {
            length_delimited(1, &self.rules(p), &mut base);
        }
        if let Some(p) = &self.dry_run {
            length_delimited(2, &self.rules(p), &mut base);
        }
        base
    }

    fn shadow_prefix(&self) -> String {
        if self.dry_run.is_some() {
            self.stage.shadow_stat_prefix().to_string()
        } else {
            String::new()
        }
    }

    fn http(&self) -> Any {
        let base = HttpRbac {
            shadow_rules_stat_prefix: self.shadow_prefix(),
            ..Default::default()
        };
        Any {
            type_url: HttpRbac::type_url(),
            value: self.with_rules(base.encode_to_vec()),
        }
    }

    fn network(&self) -> Any {
        let base = NetworkRbac {
            stat_prefix: TCP_STAT_PREFIX.to_string(),
            shadow_rules_stat_prefix: self.shadow_prefix(),
            ..Default::default()
        };
        Any {
            type_url: NetworkRbac::type_url(),
            value: self.with_rules(base.encode_to_vec()),
        }
    }
}
