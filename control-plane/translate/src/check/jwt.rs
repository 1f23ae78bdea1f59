//! JWT authentication: every provider a requirement names is configured, and every requirement
//! a rule names by `requirement_name` is in the map
//! (`source/extensions/filters/http/jwt_authn/verifier.cc`, `filter_config.cc`).

use meshd_proto::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtRequirement, jwt_requirement::RequiresType,
    requirement_rule::RequirementType,
};

use super::{Violation, join};

pub(super) fn check(config: &JwtAuthentication, path: &str, out: &mut Vec<Violation>) {
    for (i, rule) in config.rules.iter().enumerate() {
        let at = join(path, &format!("rules[{i}]"));
        match &rule.requirement_type {
            Some(RequirementType::Requires(r)) => {
                requirement(config, r, &join(&at, "requires"), out)
            }
            Some(RequirementType::RequirementName(name))
                if !config.requirement_map.contains_key(name) =>
            {
                out.push(Violation::new(
                    join(&at, "requirement_name"),
                    format!("Wrong requirement_name: {name}: it is not in requirement_map"),
                ));
            }
            Some(RequirementType::RequirementName(_)) | None => {}
        }
    }
    let mut names: Vec<&String> = config.requirement_map.keys().collect();
    names.sort();
    for name in names {
        if let Some(r) = config.requirement_map.get(name) {
            requirement(
                config,
                r,
                &join(path, &format!("requirement_map[{name:?}]")),
                out,
            );
        }
    }
}

fn requirement(
    config: &JwtAuthentication,
    r: &JwtRequirement,
    path: &str,
    out: &mut Vec<Violation>,
) {
    let provider = |name: &str, path: String, out: &mut Vec<Violation>| {
        if !config.providers.contains_key(name) {
            out.push(Violation::new(
                path,
                format!("Required provider ['{name}'] is not configured."),
            ));
        }
    };
    match &r.requires_type {
        Some(RequiresType::ProviderName(name)) => provider(name, join(path, "provider_name"), out),
        Some(RequiresType::ProviderAndAudiences(p)) => provider(
            &p.provider_name,
            join(path, "provider_and_audiences.provider_name"),
            out,
        ),
        Some(RequiresType::RequiresAny(list)) => {
            for (i, inner) in list.requirements.iter().enumerate() {
                requirement(
                    config,
                    inner,
                    &join(path, &format!("requires_any.requirements[{i}]")),
                    out,
                );
            }
        }
        Some(RequiresType::RequiresAll(list)) => {
            for (i, inner) in list.requirements.iter().enumerate() {
                requirement(
                    config,
                    inner,
                    &join(path, &format!("requires_all.requirements[{i}]")),
                    out,
                );
            }
        }
        _ => {}
    }
}
