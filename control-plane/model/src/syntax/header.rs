//! HTTP header names and values as istiod accepts them in routes, CORS and JWT rules.

/// RFC 7230 token characters.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// A header name of token characters (`x-user`, `X-Forwarded-For`).
pub fn token_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".to_string());
    }
    if name.chars().all(is_tchar) {
        Ok(())
    } else {
        Err(format!("header name {name:?} is not a valid header name"))
    }
}

/// The stricter names istiod takes where a header is produced (JWT `outputClaimToHeaders`):
/// letters, digits, `-` and `_`.
pub fn strict_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".to_string());
    }
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(())
    } else {
        Err(format!("header name {name:?} is not a valid header name"))
    }
}

/// Pseudo-headers a route may match on.
const PSEUDO_HEADERS: [&str; 5] = [":method", ":scheme", ":authority", ":path", ":status"];

/// A header a route matches on: a pseudo-header, or a token name.
pub fn match_name(name: &str) -> Result<(), String> {
    if PSEUDO_HEADERS.contains(&name) {
        return Ok(());
    }
    token_name(name)
}

/// A header a route adds or sets: a `:`-prefixed name may only be `:authority` (and only on
/// requests, where it rewrites the authority, as `host` does); `host` is never touched on
/// responses or removed.
pub fn operation_name(name: &str, request_set: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".to_string());
    }
    let authority = name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host");
    if request_set && authority {
        return Ok(());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(format!("invalid header {name:?}: cannot set Host header"));
    }
    if name.starts_with(':') {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    if name.contains(['\r', '\n', '\0']) {
        return Err(format!("invalid header {name:?}: holds CR, LF or NUL"));
    }
    Ok(())
}

/// A header value Envoy will take: no control characters but tab, and `%` only doubled (`%%`)
/// or opening a `%VARIABLE%` / `%VARIABLE(args)%` that is closed.
pub fn value(value: &str) -> Result<(), String> {
    if value
        .chars()
        .any(|c| (c.is_ascii_control() && c != '\t') || c == '\u{7f}')
    {
        return Err(format!("header value {value:?} holds control characters"));
    }
    let mut rest = value;
    while let Some(at) = rest.find('%') {
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            rest = tail;
            continue;
        }
        rest = variable_end(after).ok_or_else(|| {
            format!(
                "header value {value:?}: a `%` must be doubled (`%%`) or open a closed \
                 `%VARIABLE%`"
            )
        })?;
    }
    Ok(())
}

/// After the `%` opening a variable: the text after its closing `%`, if it is closed. Arguments
/// in parentheses may hold quoted strings, in which `)` and `%` do not end anything.
fn variable_end(text: &str) -> Option<&str> {
    let mut chars = text.char_indices();
    let mut in_args = false;
    let mut in_string = false;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if in_string => {
                chars.next()?;
            }
            '"' if in_args => in_string = !in_string,
            '(' if !in_args => in_args = true,
            ')' if in_args && !in_string => in_args = false,
            '%' if !in_args => return Some(&text[i + 1..]),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_signs_are_doubled_or_open_a_variable() {
        for ok in [
            "foo",
            "100%%",
            "%HOSTNAME%",
            "prefix %HOSTNAME% suffix",
            "%REQ(x-user)%",
            "%START_TIME(%s)%",
            "",
        ] {
            assert_eq!(value(ok), Ok(()), "{ok}");
        }
        for bad in ["abc%123", "%START_TIME%%", "50%", "a\nb"] {
            assert!(value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn routes_may_only_rewrite_the_authority_among_reserved_headers() {
        assert!(operation_name(":authority", true).is_ok());
        assert!(operation_name("Host", true).is_ok());
        assert!(operation_name(":path", true).is_err());
        assert!(operation_name("host", false).is_err());
        assert!(operation_name("x-custom", false).is_ok());
    }
}
