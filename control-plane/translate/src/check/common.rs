//! Rules Envoy applies to a message wherever it sits, found by walking the decoded resource,
//! `Any`s included: every duration must be a valid, non-negative one
//! (`source/common/protobuf/utility.cc`, `MessageUtil::validateDurationFields`), every regex must
//! compile with RE2 within the program-size limit (`source/common/common/regex.cc`), and TLS
//! contexts, JWT configs and ordered durations follow their own rules (`tls.rs`, `jwt.rs`,
//! `intervals.rs`).

use meshd_proto::pb::google::protobuf::Any;
use prost_reflect::{DynamicMessage, MapKey, ReflectMessage, Value};

use super::regex::{Verdict, judge};
use super::{Violation, intervals, join, jwt, tls};
use crate::names::RE2_MAX_PROGRAM_SIZE;

/// Protobuf's largest duration, 10,000 years.
const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

pub(super) fn check(resource: &Any) -> Vec<Violation> {
    let mut out = Vec::new();
    if let Some(message) = decode(&resource.type_url, &resource.value) {
        walk(&message, "", &mut out);
    }
    out
}

fn decode(type_url: &str, value: &[u8]) -> Option<DynamicMessage> {
    let name = type_url.rsplit_once('/')?.1;
    let descriptor = meshd_proto::json::pool().get_message_by_name(name)?;
    DynamicMessage::decode(descriptor, value).ok()
}

fn walk(message: &DynamicMessage, path: &str, out: &mut Vec<Violation>) {
    let descriptor = message.descriptor();
    match descriptor.full_name() {
        "google.protobuf.Any" => {
            let url = message.get_field_by_number(1);
            let value = message.get_field_by_number(2);
            let url = url.as_deref().and_then(Value::as_str).unwrap_or("");
            let value = value.as_deref().and_then(Value::as_bytes);
            if let Some(inner) = decode(url, value.map_or(&[][..], |b| &b[..])) {
                walk(&inner, path, out);
            }
            return;
        }
        "google.protobuf.Duration" => duration(message, path, out),
        "envoy.extensions.transport_sockets.tls.v3.TlsParameters" => {
            if let Ok(params) = message.transcode_to() {
                tls::parameters(&params, path, out);
            }
        }
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext" => {
            if let Ok(context) = message.transcode_to() {
                tls::downstream(&context, path, out);
            }
        }
        "envoy.config.cluster.v3.OutlierDetection" => {
            if let Ok(o) = message.transcode_to() {
                intervals::outlier_detection(&o, path, out);
            }
        }
        "envoy.config.route.v3.RetryPolicy.RetryBackOff" => {
            if let Ok(b) = message.transcode_to() {
                intervals::retry_back_off(&b, path, out);
            }
        }
        "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication" => {
            if let Ok(config) = message.transcode_to() {
                jwt::check(&config, path, out);
            }
        }
        // `source/common/config/utility.h`, `getAndCheckFactory`: 1.40 no longer finds a
        // transport socket by name alone.
        "envoy.config.core.v3.TransportSocket" if !message.has_field_by_name("typed_config") => {
            out.push(Violation::new(
                path,
                "transport socket has no typed_config: no implementation can be found for it",
            ));
        }
        "envoy.type.matcher.v3.RegexMatcher" => {
            if let Some(Value::String(regex)) = message.get_field_by_name("regex").as_deref() {
                check_regex(regex, &join(path, "regex"), out);
            }
        }
        _ => {}
    }
    for (field, value) in message.fields() {
        let at = join(path, field.name());
        match value {
            Value::Message(inner) => walk(inner, &at, out),
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Message(inner) = item {
                        walk(inner, &format!("{at}[{i}]"), out);
                    }
                }
            }
            Value::Map(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                for (key, item) in entries {
                    if let Value::Message(inner) = item {
                        let key = match key {
                            MapKey::String(s) => format!("{s:?}"),
                            other => format!("{other:?}"),
                        };
                        walk(inner, &format!("{at}[{key}]"), out);
                    }
                }
            }
            _ => {}
        }
    }
}

fn duration(message: &DynamicMessage, path: &str, out: &mut Vec<Violation>) {
    let seconds = match message.get_field_by_name("seconds").as_deref() {
        Some(Value::I64(s)) => *s,
        _ => 0,
    };
    let nanos = match message.get_field_by_name("nanos").as_deref() {
        Some(Value::I32(n)) => *n,
        _ => 0,
    };
    if seconds < 0 || nanos < 0 {
        out.push(Violation::new(
            path,
            "Invalid duration: Expected positive duration",
        ));
    } else if seconds > MAX_DURATION_SECONDS || nanos > 999_999_999 {
        out.push(Violation::new(
            path,
            "Duration out-of-range according to Protobuf internal representations",
        ));
    }
}

/// One regex against RE2's syntax and the program-size limit meshd's bootstrap sets. The size is
/// an upper bound of RE2's own count, so a regex near the limit may be refused that Envoy would
/// have taken; never the other way round.
pub(super) fn check_regex(regex: &str, path: &str, out: &mut Vec<Violation>) {
    match judge(regex) {
        Verdict::Invalid(reason) => out.push(Violation::new(
            path,
            format!("regex {regex:?} is not valid RE2: {reason}"),
        )),
        Verdict::Compiles { program_size } if program_size > u64::from(RE2_MAX_PROGRAM_SIZE) => out
            .push(Violation::new(
                path,
                format!(
                    "regex {regex:?} compiles to an RE2 program of up to {program_size} \
                     instructions, over the limit of {RE2_MAX_PROGRAM_SIZE}"
                ),
            )),
        Verdict::TooLarge => out.push(Violation::new(
            path,
            format!(
                "regex {regex:?} compiles to an RE2 program far over the limit of \
                 {RE2_MAX_PROGRAM_SIZE} instructions"
            ),
        )),
        Verdict::Compiles { .. } => {}
    }
}
