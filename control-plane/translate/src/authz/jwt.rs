//! RequestAuthentication → `envoy.filters.http.jwt_authn`, the way istiod configures it: one
//! provider per JWT rule (`origins-<i>`), keys inline, payload kept in dynamic metadata under
//! `payload` for AuthorizationPolicy to match. A token that fails validation is refused with 401.
//! A request without a token passes (a policy with `requestPrincipals` is what requires one),
//! except — unlike istiod — on the paths where the workload's ALLOW policies can only allow a
//! request principal: there a missing token is refused with 401 as well (see
//! `meshd_model::authz::token_required`).

use std::collections::BTreeMap;

use meshd_model::JwtRuleModel;
use meshd_model::RequestAuthentications;
use meshd_model::authz::token_required::{PathPattern, TokenRequired};
use meshd_proto::pb::envoy::config::core::v3::{DataSource, data_source};
use meshd_proto::pb::envoy::config::route::v3::{RouteMatch, route_match};
use meshd_proto::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement,
    JwtRequirementAndList, JwtRequirementOrList, RequirementRule, jwt_provider, jwt_requirement,
    requirement_rule,
};
use meshd_proto::pb::google::protobuf::{Any, Empty};

use super::encode::with_sorted_map;
use super::rbac::JWT_PAYLOAD_KEY;

/// Keys for an issuer whose own keys are unknown (not fetched, or invalid): a well-formed RSA public
/// key whose private half was discarded when it was made, so every token from that issuer fails.
const UNUSABLE_JWKS: &str = r#"{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"meshd-keys-unavailable","e":"AQAB","n":"yBt3YjCYE1NUZ64h_76jsftDoZOWQhOymt3xU_Szim8j6XsLB07AstERJnz8eOHcTpiv40yHgcaL51SF9qrWAfvWs3g3_9zZWX-h_jxxa2afeCWLWUWxVugIoO6kdilUwHuHqfnb86g5bRqflm8cLoKcYoumARgoZLL-AWo2G3pdnZkyz65Q_fl3kvxM5Z8O3OH9n-y2GdzyYc3CUsdLcpNaw65i3dnDzu1VQajEHaAH_ZV-WKsvvKcT6VD1U8K5wlLstJ2PZiinuLQ0hUVQCU2Iv-lH-y35xtIPus_LiDcm1xn_2L4yXzHMV1eF7eVHhSJxE5CW4ZxnLAMKkoe6Jw"}]}"#;

/// The jwt_authn filter config for these rules, packed; `None` without rules. `required` says
/// where a missing token is refused.
pub fn jwt_authn(
    rules: &[&JwtRuleModel],
    keys: &RequestAuthentications,
    required: &TokenRequired,
) -> Option<Any> {
    if rules.is_empty() {
        return None;
    }
    let mut providers = BTreeMap::new();
    let mut each_valid_or_missing = Vec::new();
    let mut any_provider = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let name = format!("origins-{i}");
        providers.insert(name.clone(), provider(rule, keys));
        let by_name = || JwtRequirement {
            requires_type: Some(jwt_requirement::RequiresType::ProviderName(name.clone())),
        };
        each_valid_or_missing.push(JwtRequirement {
            requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
                JwtRequirementOrList {
                    requirements: vec![
                        by_name(),
                        JwtRequirement {
                            requires_type: Some(jwt_requirement::RequiresType::AllowMissing(
                                Empty {},
                            )),
                        },
                    ],
                },
            )),
        });
        any_provider.push(by_name());
    }
    // Some provider accepts the token: what a path that requires one gets.
    let valid_token = if any_provider.len() == 1 {
        any_provider[0].clone()
    } else {
        JwtRequirement {
            requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
                JwtRequirementOrList {
                    requirements: any_provider.clone(),
                },
            )),
        }
    };
    let optional = if each_valid_or_missing.len() == 1 {
        each_valid_or_missing.remove(0)
    } else {
        // Some provider accepts the token, or each provider finds a valid token or none. The first
        // part is for providers sharing a token location, where the second alone would refuse a
        // token that is valid for one of them.
        any_provider.push(JwtRequirement {
            requires_type: Some(jwt_requirement::RequiresType::RequiresAll(
                JwtRequirementAndList {
                    requirements: each_valid_or_missing,
                },
            )),
        });
        JwtRequirement {
            requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
                JwtRequirementOrList {
                    requirements: any_provider,
                },
            )),
        }
    };
    let rule = |path: route_match::PathSpecifier, requires: &JwtRequirement| RequirementRule {
        r#match: Some(RouteMatch {
            path_specifier: Some(path),
            ..Default::default()
        }),
        requirement_type: Some(requirement_rule::RequirementType::Requires(
            requires.clone(),
        )),
    };
    let everything = || route_match::PathSpecifier::Prefix("/".to_string());
    // jwt_authn uses the first rule that matches: token-requiring paths go first.
    let rules = match required {
        TokenRequired::Nowhere => vec![rule(everything(), &optional)],
        TokenRequired::Everywhere => vec![rule(everything(), &valid_token)],
        TokenRequired::Paths(paths) => paths
            .iter()
            .map(|p| {
                let path = match p {
                    PathPattern::Exact(p) => route_match::PathSpecifier::Path(p.clone()),
                    PathPattern::Prefix(p) => route_match::PathSpecifier::Prefix(p.clone()),
                };
                rule(path, &valid_token)
            })
            .chain(std::iter::once(rule(everything(), &optional)))
            .collect(),
    };
    let config = JwtAuthentication {
        rules,
        bypass_cors_preflight: true,
        ..Default::default()
    };
    Some(Any {
        type_url: <JwtAuthentication as prost::Name>::type_url(),
        // providers is map field 1.
        value: with_sorted_map(&config, 1, &providers),
    })
}

fn provider(rule: &JwtRuleModel, keys: &RequestAuthentications) -> JwtProvider {
    let jwks = keys.jwks(rule).unwrap_or(UNUSABLE_JWKS);
    JwtProvider {
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        forward: rule.forward_original_token,
        forward_payload_header: rule.output_payload_to_header.clone(),
        payload_in_metadata: JWT_PAYLOAD_KEY.to_string(),
        normalize_payload_in_metadata: Some(jwt_provider::NormalizePayload {
            space_delimited_claims: rule.space_delimited_claims.clone(),
        }),
        from_headers: rule
            .from_headers
            .iter()
            .map(|h| JwtHeader {
                name: h.name.clone(),
                value_prefix: h.prefix.clone(),
            })
            .collect(),
        from_params: rule.from_params.clone(),
        from_cookies: rule.from_cookies.clone(),
        claim_to_headers: rule
            .output_claim_to_headers
            .iter()
            .map(|c| JwtClaimToHeader {
                header_name: c.header.clone(),
                claim_name: c.claim.clone(),
                ..Default::default()
            })
            .collect(),
        jwks_source_specifier: Some(jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineString(jwks.to_string())),
            ..Default::default()
        })),
        ..Default::default()
    }
}
