//! A deliberate fault, for tests of what happens when config Envoy rejects gets past meshd's
//! checks: the routes an object produced get a regex RE2 refuses. Never used unless asked for.

use meshd_model::ObjectKey;
use meshd_proto::pb::envoy::config::route::v3::{RouteConfiguration, route_match};
use meshd_proto::pb::envoy::r#type::matcher::v3::RegexMatcher;
use meshd_proto::pb::google::protobuf::Any;
use meshd_proto::unpack;

use crate::blame::object_of_config_path;

/// A look-ahead: valid for the checker's RE2 syntax test only if it is broken, which is the point.
const REFUSED_REGEX: &str = "(?=fault)";

/// `routes` with every route `object` produced matching on a regex Envoy refuses; `None` when
/// it holds none of them.
pub fn break_routes_of(routes: &Any, object: &ObjectKey) -> Option<RouteConfiguration> {
    let mut config: RouteConfiguration = unpack(routes)?;
    let mut broken = false;
    for route in config
        .virtual_hosts
        .iter_mut()
        .flat_map(|v| v.routes.iter_mut())
    {
        let from_object = route
            .metadata
            .as_ref()
            .and_then(|m| m.filter_metadata.get("istio"))
            .and_then(|s| s.fields.get("config"))
            .and_then(|v| match &v.kind {
                Some(meshd_proto::pb::google::protobuf::value::Kind::StringValue(path)) => {
                    object_of_config_path(path)
                }
                _ => None,
            })
            .is_some_and(|key| &key == object);
        if let (true, Some(m)) = (from_object, route.r#match.as_mut()) {
            m.path_specifier = Some(route_match::PathSpecifier::SafeRegex(RegexMatcher {
                regex: REFUSED_REGEX.to_string(),
                ..Default::default()
            }));
            broken = true;
        }
    }
    broken.then_some(config)
}
