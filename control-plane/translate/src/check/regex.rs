//! RE2 as Envoy 1.40 compiles it: which patterns it refuses, and an upper bound of a pattern's
//! program size to hold against `re2.max_program_size.error_level`.
//!
//! Envoy 1.40 compiles route regexes with RE2's Latin-1 encoding (its error messages show it:
//! `\x{263a}` is an invalid escape, `\p{Greek}` matches nothing and `\pL` is seven ranges): every
//! character is one byte, and a class is a set of byte ranges. The syntax is parsed with
//! `regex-syntax`, with RE2's extra refusals added (flags other than `imsU`, a repetition of a
//! repetition, counted repetitions nesting past 1000). The size follows RE2's compiler: one
//! instruction per byte or byte range, one per alternative, loop and empty-width assertion, two
//! per capture, counted repetitions written out; the calibration test holds it against the
//! sizes Envoy reports, and it is never below them.

use regex_syntax::ast::{self, Ast};
use regex_syntax::hir::Hir;

mod program;

/// RE2's largest repetition count, and its bound on nested counted repetitions.
const MAX_REPEAT: u32 = 1000;

/// What RE2 makes of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// RE2 refuses the pattern; the reason.
    Invalid(String),
    /// RE2 compiles it to at most this many instructions.
    Compiles { program_size: u64 },
    /// Its program would be larger than anything worth building to count it.
    TooLarge,
}

pub fn judge(pattern: &str) -> Verdict {
    if let Some(name) = unknown_ascii_class(pattern) {
        return Verdict::Invalid(format!("invalid character class range: [:{name}:]"));
    }
    let pattern = &as_latin1(pattern);
    let ast = match ast::parse::ParserBuilder::new().build().parse(pattern) {
        Ok(ast) => ast,
        Err(e) => return Verdict::Invalid(e.kind().to_string()),
    };
    if let Err(reason) = re2_refusals(&ast, MAX_REPEAT) {
        return Verdict::Invalid(reason);
    }
    // Translating the whole pattern finds what parsing alone does not (an unknown `\p{...}`).
    if let Err(reason) = latin1_hir(pattern, &ast) {
        return Verdict::Invalid(reason);
    }
    match program::program_size(pattern, &ast) {
        Some(program_size) => Verdict::Compiles { program_size },
        None => Verdict::TooLarge,
    }
}

/// The pattern as RE2 reads it in Latin-1 mode, spelled for `regex-syntax`'s byte mode: each
/// byte of a non-ASCII character is a character of its own (`\xHH`), `\C` is any byte, `\s` is
/// RE2's four spaces, a brace that opens no repetition is a brace, and `\Q...\E` is a quoted
/// literal.
fn as_latin1(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '\\' && chars.peek() == Some(&'E') {
                chars.next();
                quoted = false;
            } else if c.is_ascii_alphanumeric() {
                out.push(c);
            } else {
                push_bytes(&mut out, c);
            }
            continue;
        }
        match c {
            '\\' => match chars.next() {
                Some('C') => out.push_str("[\\x00-\\xFF]"),
                // RE2's `\s` leaves out the vertical tab that `regex-syntax`'s includes.
                Some('s') => out.push_str("[\\t\\n\\f\\r ]"),
                Some('S') => out.push_str("[^\\t\\n\\f\\r ]"),
                Some('Q') => quoted = true,
                Some(next) if next.is_ascii() => {
                    out.push('\\');
                    out.push(next);
                    // `\p{Greek}` and `\x{41}`: the braces belong to the escape.
                    if matches!(next, 'p' | 'P' | 'x') && chars.peek() == Some(&'{') {
                        for c in chars.by_ref() {
                            out.push(c);
                            if c == '}' {
                                break;
                            }
                        }
                    }
                }
                Some(next) => push_bytes(&mut out, next),
                None => out.push('\\'),
            },
            // RE2 reads a brace that opens no repetition as itself.
            '{' if !opens_repetition(chars.clone()) => out.push_str("\\{"),
            c if c.is_ascii() => out.push(c),
            c => push_bytes(&mut out, c),
        }
    }
    out
}

/// Whether the text after a `{` is a repetition's `n}`, `n,}` or `n,m}`.
fn opens_repetition(mut rest: impl Iterator<Item = char>) -> bool {
    let mut digits = 0;
    let mut comma = false;
    for c in rest.by_ref() {
        match c {
            '0'..='9' => digits += 1,
            ',' if digits > 0 && !comma => comma = true,
            '}' => return digits > 0,
            _ => return false,
        }
    }
    false
}

/// `c` as `\xHH` escapes of its UTF-8 bytes (ASCII punctuation escaped the same way, so a
/// quoted `.` stays a literal).
fn push_bytes(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    for b in c.encode_utf8(&mut buf).bytes() {
        out.push_str(&format!("\\x{b:02X}"));
    }
}

/// A `[:name:]` class RE2 does not know; `regex-syntax` would read it as a plain set.
fn unknown_ascii_class(pattern: &str) -> Option<&str> {
    const KNOWN: [&str; 14] = [
        "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
        "space", "upper", "word", "xdigit",
    ];
    let mut rest = pattern;
    while let Some(start) = rest.find("[:") {
        let after = &rest[start + 2..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphabetic() || c == '^'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        if after[name_len..].starts_with(":]") && !KNOWN.contains(&name.trim_start_matches('^')) {
            return Some(name);
        }
        rest = after;
    }
    None
}

/// The pattern as bytes. Unicode classes (`\pL`) cannot be written in byte mode; those patterns
/// are read in Unicode mode and their classes cut to Latin-1 by [`class_ranges`].
fn latin1_hir(pattern: &str, ast: &Ast) -> Result<Hir, String> {
    let bytes = regex_syntax::hir::translate::TranslatorBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .translate(pattern, ast);
    match bytes {
        Ok(hir) => Ok(hir),
        Err(_) => regex_syntax::hir::translate::TranslatorBuilder::new()
            .build()
            .translate(pattern, ast)
            .map_err(|e| e.kind().to_string()),
    }
}

/// What RE2 refuses and `regex-syntax` accepts. `budget` is what is left of RE2's bound on
/// nested counted repetitions (it divides 1000 by each count on the way in).
fn re2_refusals(ast: &Ast, budget: u32) -> Result<(), String> {
    let check_flags = |flags: &ast::Flags| -> Result<(), String> {
        for item in &flags.items {
            if let ast::FlagsItemKind::Flag(flag) = &item.kind {
                match flag {
                    ast::Flag::CaseInsensitive
                    | ast::Flag::MultiLine
                    | ast::Flag::DotMatchesNewLine
                    | ast::Flag::SwapGreed => {}
                    other => return Err(format!("RE2 has no flag {other:?}")),
                }
            }
        }
        Ok(())
    };
    match ast {
        Ast::Flags(set) => check_flags(&set.flags),
        Ast::Repetition(rep) => {
            if matches!(*rep.ast, Ast::Repetition(_)) {
                return Err("bad repetition operator: a repetition of a repetition".into());
            }
            let count = match &rep.op.kind {
                ast::RepetitionKind::Range(range) => match *range {
                    ast::RepetitionRange::Exactly(n) | ast::RepetitionRange::AtLeast(n) => n,
                    ast::RepetitionRange::Bounded(_, m) => m,
                },
                _ => 0,
            };
            if count > MAX_REPEAT {
                return Err(format!("invalid repetition size: more than {MAX_REPEAT}"));
            }
            let inner = budget.checked_div(count).unwrap_or(budget);
            if inner == 0 {
                return Err(format!(
                    "invalid repetition size: nested counts multiply past {MAX_REPEAT}"
                ));
            }
            re2_refusals(&rep.ast, inner)
        }
        Ast::Group(group) => {
            if let ast::GroupKind::NonCapturing(flags) = &group.kind {
                check_flags(flags)?;
            }
            re2_refusals(&group.ast, budget)
        }
        Ast::Literal(lit) => latin1_char(lit.c),
        Ast::Assertion(a) => match a.kind {
            ast::AssertionKind::StartLine
            | ast::AssertionKind::EndLine
            | ast::AssertionKind::StartText
            | ast::AssertionKind::EndText
            | ast::AssertionKind::WordBoundary
            | ast::AssertionKind::NotWordBoundary => Ok(()),
            _ => Err("invalid escape sequence: RE2 has no such word boundary".into()),
        },
        Ast::ClassBracketed(class) => class_refusals(&class.kind),
        Ast::Alternation(alt) => alt.asts.iter().try_for_each(|a| re2_refusals(a, budget)),
        Ast::Concat(cat) => cat.asts.iter().try_for_each(|a| re2_refusals(a, budget)),
        _ => Ok(()),
    }
}

/// Characters past Latin-1 (only `\x{...}` escapes can write them once [`as_latin1`] ran).
fn latin1_char(c: char) -> Result<(), String> {
    if u32::from(c) > 0xff {
        return Err(format!("invalid escape sequence: {c:?} is past Latin-1"));
    }
    Ok(())
}

fn class_refusals(set: &ast::ClassSet) -> Result<(), String> {
    match set {
        ast::ClassSet::Item(item) => class_item_refusals(item),
        ast::ClassSet::BinaryOp(op) => {
            class_refusals(&op.lhs)?;
            class_refusals(&op.rhs)
        }
    }
}

fn class_item_refusals(item: &ast::ClassSetItem) -> Result<(), String> {
    match item {
        ast::ClassSetItem::Literal(lit) => latin1_char(lit.c),
        ast::ClassSetItem::Range(range) => {
            latin1_char(range.start.c)?;
            latin1_char(range.end.c)
        }
        ast::ClassSetItem::Bracketed(inner) => class_refusals(&inner.kind),
        ast::ClassSetItem::Union(union) => union.items.iter().try_for_each(class_item_refusals),
        _ => Ok(()),
    }
}
