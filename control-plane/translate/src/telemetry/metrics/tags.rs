//! Stat tags of the stats access logger: a tag is an access-log format, optionally rewritten
//! by a matcher on its value (an empty value becomes Istio's `unknown`, …).

use meshd_proto::pack;
use meshd_proto::pb::envoy::extensions::access_loggers::stats::v3::config::Tag;
use meshd_proto::pb::envoy::extensions::matching::actions::transform_stat::v3::TransformStat;
use meshd_proto::pb::envoy::extensions::matching::actions::transform_stat::v3::transform_stat::UpdateTag;
use meshd_proto::pb::envoy::extensions::matching::common_inputs::stats::v3::StatTagValueInput;
use meshd_proto::pb::xds::core::v3::TypedExtensionConfig;
use meshd_proto::pb::xds::r#type::matcher::v3::matcher::matcher_list::predicate::single_predicate;
use meshd_proto::pb::xds::r#type::matcher::v3::matcher::matcher_list::{
    FieldMatcher, Predicate, predicate,
};
use meshd_proto::pb::xds::r#type::matcher::v3::matcher::{
    MatcherList, MatcherType, OnMatch, on_match,
};
use meshd_proto::pb::xds::r#type::matcher::v3::{Matcher, StringMatcher, string_matcher};

pub(super) fn fixed(name: &str, value: &str) -> Tag {
    format_tag(name, value)
}

pub(super) fn format_tag(name: &str, format: &str) -> Tag {
    Tag {
        name: name.to_string(),
        value_format: format.to_string(),
        rules: None,
    }
}

/// A tag whose empty value (an operator with nothing to print) is Istio's `unknown`: written on
/// the scrape page (see the bootstrap's 15090 listener), not by a rule here, which would be
/// repeated in every tag of every stat of every listener.
pub(super) fn or_unknown(name: &str, format: &str) -> Tag {
    format_tag(name, format)
}

pub(super) fn empty_becomes(value: &str) -> FieldMatcher {
    field_matcher(string_matcher::MatchPattern::Exact(String::new()), value)
}

/// Rewrites a tag's value: the first matcher that matches sets it; `otherwise` sets it when none
/// does.
pub(super) fn value_rules(matchers: Vec<FieldMatcher>, otherwise: Option<&str>) -> Matcher {
    Matcher {
        matcher_type: Some(MatcherType::MatcherList(MatcherList { matchers })),
        on_no_match: otherwise.map(|v| Box::new(set_tag(v))),
    }
}

pub(super) fn field_matcher(pattern: string_matcher::MatchPattern, value: &str) -> FieldMatcher {
    FieldMatcher {
        predicate: Some(Predicate {
            match_type: Some(predicate::MatchType::SinglePredicate(
                predicate::SinglePredicate {
                    input: Some(TypedExtensionConfig {
                        name: "value".to_string(),
                        typed_config: Some(pack(&StatTagValueInput {})),
                    }),
                    matcher: Some(single_predicate::Matcher::ValueMatch(StringMatcher {
                        match_pattern: Some(pattern),
                        ..Default::default()
                    })),
                },
            )),
        }),
        on_match: Some(set_tag(value)),
    }
}

pub(super) fn set_tag(value: &str) -> OnMatch {
    OnMatch {
        on_match: Some(on_match::OnMatch::Action(TypedExtensionConfig {
            name: "set".to_string(),
            typed_config: Some(pack(&TransformStat {
                update_tag: Some(UpdateTag {
                    new_tag_value: value.to_string(),
                }),
                ..Default::default()
            })),
        })),
        ..Default::default()
    }
}
