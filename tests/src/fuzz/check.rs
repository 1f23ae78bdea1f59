//! The one place the campaign asks meshd's checker (`meshd_translate::check`, which the server's
//! guard screens every resource with) for its verdict, so the campaign judges exactly as the
//! server does.

use meshd_proto::pb::google::protobuf::Any;

/// The server sends `resource` only if this holds.
pub fn resource_passes(type_url: &str, resource: &Any) -> bool {
    meshd_translate::check::check_resource(type_url, resource).is_empty()
}

/// Names the server drops from one response of `type_url` holding `resources` together.
pub fn set_clashes(type_url: &str, resources: &[Any]) -> Vec<String> {
    meshd_translate::check::check_set(type_url, resources)
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}
