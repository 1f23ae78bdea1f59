//! Access loggers, from `source/extensions/access_loggers/file/config.cc` and
//! `source/extensions/access_loggers/filters/cel/config.cc`: Envoy parses a file logger's format
//! (text or JSON) and a CEL filter's expression when it builds the listener, and refuses the
//! whole listener if either does not parse.

use meshd_model::syntax::{cel, envoy_format};
use meshd_proto::pb::envoy::config::accesslog::v3::{
    AccessLog, AccessLogFilter, access_log, access_log_filter, extension_filter,
};
use meshd_proto::pb::envoy::config::core::v3::substitution_format_string::Format;
use meshd_proto::pb::envoy::extensions::access_loggers::file::v3::{
    FileAccessLog, file_access_log,
};
use meshd_proto::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use meshd_proto::pb::google::protobuf::{Value, value};

use super::{Violation, join};

pub(super) fn check(logs: &[AccessLog], path: &str, out: &mut Vec<Violation>) {
    for (i, log) in logs.iter().enumerate() {
        let at = join(path, &format!("[{i}]"));
        if let Some(access_log::ConfigType::TypedConfig(any)) = &log.config_type
            && let Some(file) = meshd_proto::unpack::<FileAccessLog>(any)
        {
            file_format(&file, &join(&at, "typed_config"), out);
        }
        if let Some(filter) = &log.filter {
            check_filter(filter, &join(&at, "filter"), out);
        }
    }
}

fn file_format(file: &FileAccessLog, path: &str, out: &mut Vec<Violation>) {
    let Some(file_access_log::AccessLogFormat::LogFormat(format)) = &file.access_log_format else {
        return;
    };
    let mut strings = Vec::new();
    match &format.format {
        Some(Format::TextFormatSource(source)) => {
            if let Some(
                meshd_proto::pb::envoy::config::core::v3::data_source::Specifier::InlineString(s),
            ) = &source.specifier
            {
                strings.push(s.clone());
            }
        }
        Some(Format::JsonFormat(fields)) => {
            fields
                .fields
                .values()
                .for_each(|v| collect(v, &mut strings));
        }
        // The deprecated inline `text_format` is never sent.
        _ => {}
    }
    for s in strings {
        if let Some(problem) = envoy_format::problem(&s) {
            out.push(Violation::new(join(path, "log_format"), problem));
        }
    }
}

fn collect(v: &Value, out: &mut Vec<String>) {
    match &v.kind {
        Some(value::Kind::StringValue(s)) => out.push(s.clone()),
        Some(value::Kind::StructValue(s)) => s.fields.values().for_each(|v| collect(v, out)),
        Some(value::Kind::ListValue(l)) => l.values.iter().for_each(|v| collect(v, out)),
        _ => {}
    }
}

fn check_filter(filter: &AccessLogFilter, path: &str, out: &mut Vec<Violation>) {
    match &filter.filter_specifier {
        Some(access_log_filter::FilterSpecifier::AndFilter(and)) => {
            for (i, f) in and.filters.iter().enumerate() {
                check_filter(f, &join(path, &format!("and_filter.filters[{i}]")), out);
            }
        }
        Some(access_log_filter::FilterSpecifier::OrFilter(or)) => {
            for (i, f) in or.filters.iter().enumerate() {
                check_filter(f, &join(path, &format!("or_filter.filters[{i}]")), out);
            }
        }
        Some(access_log_filter::FilterSpecifier::ExtensionFilter(ext)) => {
            if let Some(extension_filter::ConfigType::TypedConfig(any)) = &ext.config_type
                && let Some(cel_filter) = meshd_proto::unpack::<ExpressionFilter>(any)
                && let Err(e) = cel::parse(&cel_filter.expression)
            {
                out.push(Violation::new(
                    join(path, "extension_filter.typed_config.expression"),
                    format!("failed to create an expression: {e}"),
                ));
            }
        }
        _ => {}
    }
}
