//! Regular expressions as istiod accepts them: RE2 syntax (what Envoy compiles), at most 1024
//! characters. Rust's `regex-syntax` parses a near-superset of RE2; the differences that matter
//! are refused here by walking its syntax tree: the `x`, `u` and `R` flags, repetition counts
//! above 1000 (alone or multiplied by nesting), and a repetition applied directly to another.
//! How large the compiled program is (Envoy's `re2.max_program_size`) is checked where Envoy
//! resources are checked, not here.

use regex_syntax::ast::{
    self, Ast, Flag, FlagsItemKind, GroupKind, RepetitionKind, RepetitionRange,
};

/// istiod refuses longer patterns (a cheap stand-in for RE2's program size, which is larger).
pub const MAX_LENGTH: usize = 1024;
/// RE2's largest repetition count, also for counts multiplied through nested repetitions.
const MAX_REPEAT: u64 = 1000;

/// Ok when RE2 (and so Envoy and istiod) accepts `pattern`.
pub fn re2(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("regex string match should not be empty".to_string());
    }
    if pattern.len() > MAX_LENGTH {
        return Err(format!(
            "regex is too large, max length allowed is {MAX_LENGTH}"
        ));
    }
    let invalid = |why: String| {
        format!(
            "invalid regex {pattern:?}: {why}; RE2 syntax is required (https://github.com/google/re2/wiki/Syntax)"
        )
    };
    let tree = ast::parse::Parser::new()
        .parse(pattern)
        .map_err(|e| invalid(e.kind().to_string()))?;
    check(&tree, 1).map_err(invalid)?;
    regex_syntax::hir::translate::Translator::new()
        .translate(pattern, &tree)
        .map_err(|e| invalid(e.kind().to_string()))?;
    Ok(())
}

fn flags(items: &[ast::FlagsItem]) -> Result<(), String> {
    for item in items {
        if let FlagsItemKind::Flag(flag) = &item.kind {
            let name = match flag {
                Flag::CaseInsensitive
                | Flag::MultiLine
                | Flag::DotMatchesNewLine
                | Flag::SwapGreed => {
                    continue;
                }
                Flag::Unicode => 'u',
                Flag::CRLF => 'R',
                Flag::IgnoreWhitespace => 'x',
            };
            return Err(format!(
                "flag {name:?} is not supported (RE2 knows i, m, s and U)"
            ));
        }
    }
    Ok(())
}

/// `repeat`: the product of the repetition counts enclosing this node.
fn check(node: &Ast, repeat: u64) -> Result<(), String> {
    match node {
        Ast::Flags(f) => flags(&f.flags.items),
        Ast::Group(g) => {
            if let GroupKind::NonCapturing(f) = &g.kind {
                flags(&f.items)?;
            }
            check(&g.ast, repeat)
        }
        Ast::Alternation(a) => a.asts.iter().try_for_each(|n| check(n, repeat)),
        Ast::Concat(c) => c.asts.iter().try_for_each(|n| check(n, repeat)),
        Ast::Repetition(r) => {
            if matches!(*r.ast, Ast::Repetition(_)) {
                return Err("invalid nested repetition operator".to_string());
            }
            let count = match &r.op.kind {
                RepetitionKind::Range(
                    RepetitionRange::Exactly(n) | RepetitionRange::AtLeast(n),
                ) => Some(u64::from(*n)),
                RepetitionKind::Range(RepetitionRange::Bounded(_, n)) => Some(u64::from(*n)),
                _ => None,
            };
            let repeat = match count {
                Some(n) if n > MAX_REPEAT => {
                    return Err(format!("invalid repeat count {n} (at most {MAX_REPEAT})"));
                }
                Some(n) => repeat.saturating_mul(n.max(1)),
                None => repeat,
            };
            if repeat > MAX_REPEAT {
                return Err(format!(
                    "nested repetitions repeat more than {MAX_REPEAT} times"
                ));
            }
            check(&r.ast, repeat)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re2_patterns_are_accepted() {
        for ok in [
            r"[a-z0-9-]{1,63}\.example\.com",
            r"^/api/v[0-9]+/.*$",
            r"(?i)bearer .+",
            r"(?P<id>[0-9]+)",
            r"a{1000}",
            r"(a*)*",
            r"\pL+",
        ] {
            assert_eq!(re2(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn what_re2_refuses_is_refused() {
        for bad in [
            "(?=x)",
            "(?<!x)y",
            r"(a)\1",
            "(?x)a b",
            "a{1001}",
            "(a{100}){11}",
            "a**",
            "(",
            "",
        ] {
            assert!(re2(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(re2(&"a".repeat(1025)).unwrap_err().contains("max length"));
    }
}
