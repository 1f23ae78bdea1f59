//! String and bytes rules. Lengths in characters count Unicode scalar values, as
//! protoc-gen-validate does; `_bytes` lengths count UTF-8 bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::pb::validate::{BytesRules, KnownRegex, StringRules, bytes_rules, string_rules};

use super::rules::Rules;

pub(super) fn string(rules: &StringRules, value: &str, all: &Rules, out: &mut Vec<String>) {
    if rules.ignore_empty() && value.is_empty() {
        return;
    }
    if let Some(c) = &rules.r#const
        && value != c
    {
        out.push(format!("value must equal {c:?}"));
    }
    let chars = value.chars().count() as u64;
    if let Some(n) = rules.len
        && chars != n
    {
        out.push(format!("value length must be {n} characters"));
    }
    if let Some(n) = rules.min_len
        && chars < n
    {
        out.push(format!("value length must be at least {n} characters"));
    }
    if let Some(n) = rules.max_len
        && chars > n
    {
        out.push(format!("value length must be at most {n} characters"));
    }
    let bytes = value.len() as u64;
    if let Some(n) = rules.len_bytes
        && bytes != n
    {
        out.push(format!("value length must be {n} bytes"));
    }
    if let Some(n) = rules.min_bytes
        && bytes < n
    {
        out.push(format!("value length must be at least {n} bytes"));
    }
    if let Some(n) = rules.max_bytes
        && bytes > n
    {
        out.push(format!("value length must be at most {n} bytes"));
    }
    if let Some(p) = &rules.pattern
        && let Some(re) = all.pattern(p)
        && !re.is_match(value)
    {
        out.push(format!("value does not match regex pattern {p:?}"));
    }
    if let Some(p) = &rules.prefix
        && !value.starts_with(p.as_str())
    {
        out.push(format!("value does not have prefix {p:?}"));
    }
    if let Some(s) = &rules.suffix
        && !value.ends_with(s.as_str())
    {
        out.push(format!("value does not have suffix {s:?}"));
    }
    if let Some(c) = &rules.contains
        && !value.contains(c.as_str())
    {
        out.push(format!("value does not contain substring {c:?}"));
    }
    if let Some(c) = &rules.not_contains
        && value.contains(c.as_str())
    {
        out.push(format!("value contains substring {c:?}"));
    }
    if !rules.r#in.is_empty() && !rules.r#in.iter().any(|v| v == value) {
        out.push(format!("value must be in list {:?}", rules.r#in));
    }
    if rules.not_in.iter().any(|v| v == value) {
        out.push(format!("value must not be in list {:?}", rules.not_in));
    }
    if let Some(known) = &rules.well_known
        && let Some(problem) = well_known(known, rules.strict(), value)
    {
        out.push(problem);
    }
}

fn well_known(known: &string_rules::WellKnown, strict: bool, value: &str) -> Option<String> {
    use string_rules::WellKnown as W;
    let ok = match known {
        W::Email(true) => email(value),
        W::Hostname(true) => hostname(value),
        W::Ip(true) => value.parse::<IpAddr>().is_ok(),
        W::Ipv4(true) => value.parse::<Ipv4Addr>().is_ok(),
        W::Ipv6(true) => value.parse::<Ipv6Addr>().is_ok(),
        W::Uri(true) => uri(value),
        // Any string is a URI reference once percent-encoding is lenient; only controls are not.
        W::UriRef(true) => !value.chars().any(char::is_control),
        W::Address(true) => value.parse::<IpAddr>().is_ok() || hostname(value),
        W::Uuid(true) => uuid(value),
        W::WellKnownRegex(r) => {
            return header(KnownRegex::try_from(*r).ok()?, strict, value);
        }
        _ => true,
    };
    let what = match known {
        W::Email(_) => "an email address",
        W::Hostname(_) => "a hostname",
        W::Ip(_) => "an IP address",
        W::Ipv4(_) => "an IPv4 address",
        W::Ipv6(_) => "an IPv6 address",
        W::Uri(_) => "an absolute URI",
        W::UriRef(_) => "a URI reference",
        W::Address(_) => "an IP address or hostname",
        W::Uuid(_) => "a UUID",
        W::WellKnownRegex(_) => "",
    };
    (!ok).then(|| format!("value must be {what}"))
}

/// protoc-gen-validate's header expressions: strict names are RFC 7230 tokens (a leading `:` for
/// pseudo-headers allowed), strict values exclude control characters but tab; loose ones, either
/// kind, only exclude NUL, CR and LF.
fn header(kind: KnownRegex, strict: bool, value: &str) -> Option<String> {
    let loose_ok = || !value.contains(['\0', '\r', '\n']);
    let (ok, what) = match (kind, strict) {
        (KnownRegex::HttpHeaderName, true) => {
            let token = value.strip_prefix(':').unwrap_or(value);
            let ok = !token.is_empty()
                && token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+,-.^_|~`".contains(c));
            (ok, "a valid HTTP header name")
        }
        (KnownRegex::HttpHeaderValue, true) => (
            !value
                .chars()
                .any(|c| matches!(c, '\0'..='\u{8}' | '\n'..='\u{1f}' | '\u{7f}')),
            "a valid HTTP header value",
        ),
        (KnownRegex::HttpHeaderName, false) => (loose_ok(), "a valid HTTP header name"),
        (KnownRegex::HttpHeaderValue, false) => (loose_ok(), "a valid HTTP header value"),
        (KnownRegex::Unknown, _) => (true, ""),
    };
    (!ok).then(|| format!("value must be {what}"))
}

fn hostname(value: &str) -> bool {
    let name = value.strip_suffix('.').unwrap_or(value);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn email(value: &str) -> bool {
    // `Name <a@b>` is accepted by the Go implementation; the address inside is what counts.
    let address = match (value.find('<'), value.strip_suffix('>')) {
        (Some(open), Some(rest)) => &rest[open + 1..],
        _ => value,
    };
    match address.rsplit_once('@') {
        Some((local, host)) => !local.is_empty() && local.len() <= 64 && hostname(host),
        None => false,
    }
}

fn uri(value: &str) -> bool {
    match value.split_once(':') {
        Some((scheme, _)) => {
            let mut chars = scheme.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && !value.chars().any(char::is_control)
        }
        None => false,
    }
}

fn uuid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

pub(super) fn bytes(rules: &BytesRules, value: &[u8], all: &Rules, out: &mut Vec<String>) {
    if rules.ignore_empty() && value.is_empty() {
        return;
    }
    if let Some(c) = &rules.r#const
        && value != c.as_slice()
    {
        out.push(format!("value must equal {c:?}"));
    }
    let len = value.len() as u64;
    if let Some(n) = rules.len
        && len != n
    {
        out.push(format!("value length must be {n} bytes"));
    }
    if let Some(n) = rules.min_len
        && len < n
    {
        out.push(format!("value length must be at least {n} bytes"));
    }
    if let Some(n) = rules.max_len
        && len > n
    {
        out.push(format!("value length must be at most {n} bytes"));
    }
    if let Some(p) = &rules.pattern
        && let Some(re) = all.byte_pattern(p)
        && !re.is_match(value)
    {
        out.push(format!("value does not match regex pattern {p:?}"));
    }
    if let Some(p) = &rules.prefix
        && !value.starts_with(p)
    {
        out.push(format!("value does not have prefix {p:?}"));
    }
    if let Some(s) = &rules.suffix
        && !value.ends_with(s)
    {
        out.push(format!("value does not have suffix {s:?}"));
    }
    if let Some(c) = &rules.contains
        && !c.is_empty()
        && !value.windows(c.len()).any(|w| w == c.as_slice())
    {
        out.push(format!("value does not contain {c:?}"));
    }
    if !rules.r#in.is_empty() && !rules.r#in.iter().any(|v| v.as_slice() == value) {
        out.push("value must be in the listed values".to_string());
    }
    if rules.not_in.iter().any(|v| v.as_slice() == value) {
        out.push("value must not be in the listed values".to_string());
    }
    let ip = match &rules.well_known {
        Some(bytes_rules::WellKnown::Ip(true)) => Some((value.len() == 4 || value.len() == 16, "")),
        Some(bytes_rules::WellKnown::Ipv4(true)) => Some((value.len() == 4, "v4 ")),
        Some(bytes_rules::WellKnown::Ipv6(true)) => Some((value.len() == 16, "v6 ")),
        _ => None,
    };
    if let Some((false, version)) = ip {
        out.push(format!("value must be an IP{version} address"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_header_names_are_tokens_with_an_optional_leading_colon() {
        let name = |v: &str| header(KnownRegex::HttpHeaderName, true, v);
        assert_eq!(name("x-request-id"), None);
        assert_eq!(name(":authority"), None);
        assert!(name("").is_some());
        assert!(name("a b").is_some());
        assert!(name("a:b").is_some());
        // Loose names refuse only NUL, CR and LF.
        assert_eq!(header(KnownRegex::HttpHeaderName, false, "a b"), None);
        assert!(header(KnownRegex::HttpHeaderName, false, "a\nb").is_some());
    }

    #[test]
    fn strict_header_values_refuse_controls_but_tab() {
        let value = |v: &str| header(KnownRegex::HttpHeaderValue, true, v);
        assert_eq!(value("text/html; q=0.9\t"), None);
        assert!(value("a\u{1}b").is_some());
        assert!(value("a\u{7f}").is_some());
    }

    #[test]
    fn well_known_formats_follow_their_definitions() {
        assert!(hostname("shop.example.com."));
        assert!(!hostname("-shop.example"));
        assert!(!hostname("a..b"));
        assert!(uuid("123e4567-e89b-12d3-a456-426614174000"));
        assert!(!uuid("123e4567e89b12d3a456426614174000"));
        assert!(uri("spiffe://cluster.local/ns/a"));
        assert!(!uri("/relative"));
        assert!(email("Ops <ops@shop.example>"));
        assert!(!email("ops@"));
    }
}
