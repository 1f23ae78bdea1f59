//! The size of the program RE2 compiles a pattern to, found by building that program's shape:
//! RE2's compiler (Latin-1 byte ranges, alternations, loops, captures, the `.*?` loop in front
//! of unanchored patterns) followed by its flattening, which drops alternations and copies what
//! several loops reach into each loop's list. Flattening is what `RE2::ProgramSize` counts.
//!
//! The program is built from the syntax tree, not from `regex-syntax`'s HIR, whose constructors
//! simplify in ways RE2 does not (they drop repetitions of empty-width assertions and read two
//! bytes that spell a UTF-8 character as one); the HIR is used only for single characters and
//! classes, translated under the flags in force there.
//!
//! RE2 also shrinks some patterns before compiling (factoring common prefixes out of
//! alternations, lifting a literal prefix out of `^literal...`); those only make its program
//! smaller, so leaving them out keeps this an upper bound.

use regex_syntax::ast::{self, Ast};
use regex_syntax::hir::translate::TranslatorBuilder;
use regex_syntax::hir::{Class, Hir, HirKind};

/// Past this many instructions the build stops: the pattern is far beyond any limit Envoy is
/// given, and building on would only cost memory.
const MAX_INSTRUCTIONS: usize = 1 << 20;

#[derive(Clone, Copy, Debug)]
enum Inst {
    Fail,
    Match,
    Nop(usize),
    Alt(usize, usize),
    /// A byte range, a capture or an empty-width assertion: consumes or records, then `out`.
    Step(usize),
    /// The byte range 0x00-0xFF, which RE2 treats specially at the end of a pattern.
    AnyByte(usize),
}

/// A hole to fill: instruction `id`'s first or second out.
#[derive(Clone, Copy, Debug)]
struct Hole {
    id: usize,
    second: bool,
}

/// A compiled fragment; `begin == 0` is the fragment that never matches.
#[derive(Clone, Debug, Default)]
struct Frag {
    begin: usize,
    end: Vec<Hole>,
    nullable: bool,
}

/// The flags that change what a leaf means or how a repetition prefers.
#[derive(Clone, Copy, Debug, Default)]
struct Flags {
    case_insensitive: bool,
    multi_line: bool,
    dot_matches_new_line: bool,
    swap_greed: bool,
}

impl Flags {
    fn apply(&mut self, items: &ast::Flags) {
        let mut on = true;
        for item in &items.items {
            match &item.kind {
                ast::FlagsItemKind::Negation => on = false,
                ast::FlagsItemKind::Flag(ast::Flag::CaseInsensitive) => self.case_insensitive = on,
                ast::FlagsItemKind::Flag(ast::Flag::MultiLine) => self.multi_line = on,
                ast::FlagsItemKind::Flag(ast::Flag::DotMatchesNewLine) => {
                    self.dot_matches_new_line = on
                }
                ast::FlagsItemKind::Flag(ast::Flag::SwapGreed) => self.swap_greed = on,
                ast::FlagsItemKind::Flag(_) => {}
            }
        }
    }
}

/// The flattened program size of `ast` (RE2's `ProgramSize`), or `None` when it would be
/// larger than [`MAX_INSTRUCTIONS`] before flattening. `pattern` is the text `ast` was parsed
/// from, in the byte spelling `regex-syntax` reads.
pub(super) fn program_size(pattern: &str, ast: &Ast) -> Option<u64> {
    let anchor_start = starts_anchored(ast, Flags::default());
    let mut c = Compiler {
        insts: vec![Inst::Fail],
        pattern,
        skip_start_anchor: anchor_start,
        fold: true,
    };
    let body = c.compile(ast, &mut Flags::default())?;
    let matched = c.alloc(Inst::Match)?;
    let all = c.cat(
        body,
        Frag {
            begin: matched,
            end: Vec::new(),
            nullable: false,
        },
    );
    let start = all.begin;
    let unanchored = if anchor_start {
        start
    } else {
        let byte = c.any_byte()?;
        let dot_star = c.star(byte, true)?;
        c.cat(dot_star, all).begin
    };
    if start == 0 && unanchored == 0 {
        return Some(1);
    }
    Some(flatten(&c.insts, start, unanchored))
}

/// RE2 runs a pattern that begins with `^` (outside multi-line mode) or `\A` anchored, without
/// the assertion and without the `.*?` loop in front.
fn starts_anchored(ast: &Ast, mut flags: Flags) -> bool {
    match ast {
        Ast::Assertion(a) => match a.kind {
            ast::AssertionKind::StartText => true,
            ast::AssertionKind::StartLine => !flags.multi_line,
            _ => false,
        },
        Ast::Concat(cat) => {
            for item in &cat.asts {
                match item {
                    Ast::Flags(set) => flags.apply(&set.flags),
                    other => return starts_anchored(other, flags),
                }
            }
            false
        }
        Ast::Group(group) => {
            if let ast::GroupKind::NonCapturing(f) = &group.kind {
                flags.apply(f);
            }
            starts_anchored(&group.ast, flags)
        }
        _ => false,
    }
}

/// A pattern for one character: a literal or class, maybe with flags or in a non-capturing
/// group.
fn one_character(ast: &Ast) -> bool {
    match ast {
        Ast::Literal(_)
        | Ast::Dot(_)
        | Ast::ClassUnicode(_)
        | Ast::ClassPerl(_)
        | Ast::ClassBracketed(_) => true,
        Ast::Concat(cat) => {
            let mut parts = cat.asts.iter().filter(|a| !matches!(a, Ast::Flags(_)));
            parts.next().is_some_and(one_character) && parts.next().is_none()
        }
        Ast::Group(group) => {
            matches!(group.kind, ast::GroupKind::NonCapturing(_)) && one_character(&group.ast)
        }
        _ => false,
    }
}

struct Compiler<'p> {
    insts: Vec<Inst>,
    pattern: &'p str,
    /// The leading anchor [`starts_anchored`] found, not yet skipped.
    skip_start_anchor: bool,
    /// Whether a class closed under ASCII case folding may count its letters once.
    fold: bool,
}

impl Compiler<'_> {
    fn alloc(&mut self, inst: Inst) -> Option<usize> {
        if self.insts.len() >= MAX_INSTRUCTIONS {
            return None;
        }
        self.insts.push(inst);
        Some(self.insts.len() - 1)
    }

    fn patch(&mut self, holes: &[Hole], to: usize) {
        for hole in holes {
            match (&mut self.insts[hole.id], hole.second) {
                (Inst::Alt(_, out1), true) => *out1 = to,
                (Inst::Alt(out, _), false)
                | (Inst::Nop(out), _)
                | (Inst::Step(out), _)
                | (Inst::AnyByte(out), _) => *out = to,
                _ => {}
            }
        }
    }

    /// One instruction that consumes a byte (or records, or asserts) and goes on.
    fn step(&mut self) -> Option<Frag> {
        let id = self.alloc(Inst::Step(0))?;
        Some(Frag {
            begin: id,
            end: vec![Hole { id, second: false }],
            nullable: false,
        })
    }

    fn any_byte(&mut self) -> Option<Frag> {
        let id = self.alloc(Inst::AnyByte(0))?;
        Some(Frag {
            begin: id,
            end: vec![Hole { id, second: false }],
            nullable: false,
        })
    }

    fn nop(&mut self) -> Option<Frag> {
        let id = self.alloc(Inst::Nop(0))?;
        Some(Frag {
            begin: id,
            end: vec![Hole { id, second: false }],
            nullable: true,
        })
    }

    fn cat(&mut self, a: Frag, b: Frag) -> Frag {
        if a.begin == 0 || b.begin == 0 {
            return Frag::default();
        }
        // A lone no-op in front is skipped (left unreachable, so flattening drops it).
        if let Inst::Nop(0) = self.insts[a.begin]
            && a.end.len() == 1
            && a.end[0].id == a.begin
        {
            self.patch(&a.end, b.begin);
            return b;
        }
        self.patch(&a.end, b.begin);
        Frag {
            begin: a.begin,
            end: b.end,
            nullable: a.nullable && b.nullable,
        }
    }

    fn alt(&mut self, a: Frag, b: Frag) -> Option<Frag> {
        if a.begin == 0 {
            return Some(b);
        }
        if b.begin == 0 {
            return Some(a);
        }
        let id = self.alloc(Inst::Alt(a.begin, b.begin))?;
        let mut end = a.end;
        end.extend(b.end);
        Some(Frag {
            begin: id,
            end,
            nullable: a.nullable || b.nullable,
        })
    }

    /// The loop instruction shared by `*`, `+` and `?`: preferring `a` unless non-greedy.
    fn loop_alt(&mut self, a: &Frag, nongreedy: bool) -> Option<(usize, Hole)> {
        let (inst, hole) = if nongreedy {
            (Inst::Alt(0, a.begin), false)
        } else {
            (Inst::Alt(a.begin, 0), true)
        };
        let id = self.alloc(inst)?;
        Some((id, Hole { id, second: hole }))
    }

    fn plus(&mut self, a: Frag, nongreedy: bool) -> Option<Frag> {
        let (id, hole) = self.loop_alt(&a, nongreedy)?;
        self.patch(&a.end, id);
        Some(Frag {
            begin: a.begin,
            end: vec![hole],
            nullable: a.nullable,
        })
    }

    fn star(&mut self, a: Frag, nongreedy: bool) -> Option<Frag> {
        // RE2 loops a nullable body as `(a+)?`, to keep match priorities right.
        if a.nullable {
            let plus = self.plus(a, nongreedy)?;
            return self.quest(plus, nongreedy);
        }
        let (id, hole) = self.loop_alt(&a, nongreedy)?;
        self.patch(&a.end, id);
        Some(Frag {
            begin: id,
            end: vec![hole],
            nullable: true,
        })
    }

    fn quest(&mut self, a: Frag, nongreedy: bool) -> Option<Frag> {
        if a.begin == 0 {
            return self.nop();
        }
        let (id, hole) = self.loop_alt(&a, nongreedy)?;
        let mut end = vec![hole];
        end.extend(a.end);
        Some(Frag {
            begin: id,
            end,
            nullable: true,
        })
    }

    fn compile(&mut self, ast: &Ast, flags: &mut Flags) -> Option<Frag> {
        match ast {
            Ast::Empty(_) => self.nop(),
            Ast::Flags(set) => {
                flags.apply(&set.flags);
                self.nop()
            }
            Ast::Literal(_)
            | Ast::Dot(_)
            | Ast::ClassUnicode(_)
            | Ast::ClassPerl(_)
            | Ast::ClassBracketed(_) => self.leaf(ast, *flags),
            Ast::Assertion(a) => {
                let anchor = matches!(a.kind, ast::AssertionKind::StartText)
                    || (matches!(a.kind, ast::AssertionKind::StartLine) && !flags.multi_line);
                if anchor && self.skip_start_anchor {
                    self.skip_start_anchor = false;
                    return self.nop();
                }
                let mut f = self.step()?;
                f.nullable = true;
                Some(f)
            }
            Ast::Repetition(rep) => {
                let (min, max) = match &rep.op.kind {
                    ast::RepetitionKind::ZeroOrOne => (0, Some(1)),
                    ast::RepetitionKind::ZeroOrMore => (0, None),
                    ast::RepetitionKind::OneOrMore => (1, None),
                    ast::RepetitionKind::Range(ast::RepetitionRange::Exactly(n)) => (*n, Some(*n)),
                    ast::RepetitionKind::Range(ast::RepetitionRange::AtLeast(n)) => (*n, None),
                    ast::RepetitionKind::Range(ast::RepetitionRange::Bounded(n, m)) => {
                        (*n, Some(*m))
                    }
                };
                let lazy = rep.greedy == flags.swap_greed;
                let scope = *flags;
                self.repetition(min, max, lazy, |c| c.compile(&rep.ast, &mut scope.clone()))
            }
            Ast::Group(group) => {
                let mut inner_flags = *flags;
                if let ast::GroupKind::NonCapturing(f) = &group.kind {
                    inner_flags.apply(f);
                }
                let inner = self.compile(&group.ast, &mut inner_flags)?;
                match group.kind {
                    ast::GroupKind::NonCapturing(_) => Some(inner),
                    _ => self.capture(inner),
                }
            }
            Ast::Alternation(alt) => {
                let mut frag: Option<Frag> = None;
                for sub in &alt.asts {
                    // RE2 merges neighbouring one-character alternatives into one class, which
                    // can lose the case-folding saving each had alone: count them without it.
                    self.fold = !one_character(sub);
                    let next = self.compile(sub, flags);
                    self.fold = true;
                    let next = next?;
                    frag = Some(match frag {
                        None => next,
                        Some(f) => self.alt(f, next)?,
                    });
                }
                Some(frag.unwrap_or_default())
            }
            Ast::Concat(cat) => {
                let mut frag: Option<Frag> = None;
                for sub in &cat.asts {
                    let next = self.compile(sub, flags)?;
                    frag = Some(match frag {
                        None => next,
                        Some(f) => self.cat(f, next),
                    });
                }
                frag.map_or_else(|| self.nop(), Some)
            }
        }
    }

    fn capture(&mut self, inner: Frag) -> Option<Frag> {
        if inner.begin == 0 {
            return Some(Frag::default());
        }
        let open = self.alloc(Inst::Step(inner.begin))?;
        let close = self.alloc(Inst::Step(0))?;
        self.patch(&inner.end, close);
        Some(Frag {
            begin: open,
            end: vec![Hole {
                id: close,
                second: false,
            }],
            nullable: inner.nullable,
        })
    }

    /// A character, `.` or a class, as `regex-syntax` reads it in byte mode under `flags`;
    /// Unicode classes (`\pL`), which byte mode refuses, in Unicode mode, cut to Latin-1.
    fn leaf(&mut self, ast: &Ast, flags: Flags) -> Option<Frag> {
        let translate = |unicode: bool| {
            TranslatorBuilder::new()
                .unicode(unicode)
                .utf8(false)
                .case_insensitive(flags.case_insensitive)
                .multi_line(flags.multi_line)
                .dot_matches_new_line(flags.dot_matches_new_line)
                .build()
                .translate(self.pattern, ast)
        };
        let hir = translate(false).or_else(|_| translate(true)).ok()?;
        self.hir_leaf(&hir)
    }

    fn hir_leaf(&mut self, hir: &Hir) -> Option<Frag> {
        match hir.kind() {
            HirKind::Literal(lit) => {
                let mut frag: Option<Frag> = None;
                for _ in lit.0.iter() {
                    let byte = self.step()?;
                    frag = Some(match frag {
                        None => byte,
                        Some(f) => self.cat(f, byte),
                    });
                }
                frag.map_or_else(|| self.nop(), Some)
            }
            HirKind::Class(class) => self.class(class),
            // A leaf translates to one character or class; anything else is counted as if
            // each of its parts were one (it cannot occur, but must not count as nothing).
            _ => {
                let mut frag = self.nop()?;
                for sub in hir.kind().subs() {
                    let next = self.hir_leaf(sub)?;
                    frag = self.cat(frag, next);
                }
                Some(frag)
            }
        }
    }

    /// RE2 writes counted repetitions out before compiling: `x{n,}` is n - 1 copies and `x+`,
    /// `x{n,m}` is n copies and m - n nested optional copies. `sub` compiles one copy.
    fn repetition(
        &mut self,
        min: u32,
        max: Option<u32>,
        lazy: bool,
        mut sub: impl FnMut(&mut Self) -> Option<Frag>,
    ) -> Option<Frag> {
        match (min, max) {
            (0, None) => {
                let body = sub(self)?;
                self.star(body, lazy)
            }
            (0, Some(0)) => self.nop(),
            (0, Some(1)) => {
                let body = sub(self)?;
                self.quest(body, lazy)
            }
            (min, None) => {
                let mut frag: Option<Frag> = None;
                for _ in 1..min {
                    let copy = sub(self)?;
                    frag = Some(match frag {
                        None => copy,
                        Some(f) => self.cat(f, copy),
                    });
                }
                let last = sub(self)?;
                let plus = self.plus(last, lazy)?;
                Some(match frag {
                    None => plus,
                    Some(f) => self.cat(f, plus),
                })
            }
            (min, Some(max)) => {
                let mut frag: Option<Frag> = None;
                for _ in 0..min {
                    let copy = sub(self)?;
                    frag = Some(match frag {
                        None => copy,
                        Some(f) => self.cat(f, copy),
                    });
                }
                // (x(x(x)?)?)? built from the inside out.
                let mut optional: Option<Frag> = None;
                for _ in min..max {
                    let copy = sub(self)?;
                    let inner = match optional {
                        None => copy,
                        Some(o) => self.cat(copy, o),
                    };
                    optional = Some(self.quest(inner, lazy)?);
                }
                Some(match (frag, optional) {
                    (Some(f), Some(o)) => self.cat(f, o),
                    (Some(f), None) => f,
                    (None, Some(o)) => o,
                    (None, None) => self.nop()?,
                })
            }
        }
    }

    /// A class as Latin-1 byte ranges joined by alternations. A class that treats `A`-`Z` as it
    /// treats `a`-`z` (what `(?i)` makes) drops the ranges inside `A`-`Z`: RE2 matches the
    /// lower-case ones case-insensitively instead.
    fn class(&mut self, class: &Class) -> Option<Frag> {
        let ranges = latin1_ranges(class);
        let contains = |b: u8| ranges.iter().any(|&(lo, hi)| lo <= b && b <= hi);
        let folds =
            self.fold && (b'a'..=b'z').all(|c| contains(c) == contains(c.to_ascii_uppercase()));
        let mut frag: Option<Frag> = None;
        for &(lo, hi) in &ranges {
            if folds && b'A' <= lo && hi <= b'Z' {
                continue;
            }
            let byte = if (lo, hi) == (0, u8::MAX) {
                self.any_byte()?
            } else {
                self.step()?
            };
            frag = Some(match frag {
                None => byte,
                Some(f) => self.alt(f, byte)?,
            });
        }
        Some(frag.unwrap_or_default())
    }
}

/// A class's ranges cut to Latin-1: RE2 in Latin-1 mode knows no character past 0xFF.
fn latin1_ranges(class: &Class) -> Vec<(u8, u8)> {
    match class {
        Class::Bytes(c) => c.ranges().iter().map(|r| (r.start(), r.end())).collect(),
        Class::Unicode(c) => c
            .ranges()
            .iter()
            .filter_map(|r| {
                let lo = u8::try_from(u32::from(r.start())).ok()?;
                let hi = u8::try_from(u32::from(r.end()).min(0xff)).ok()?;
                Some((lo, hi))
            })
            .collect(),
    }
}

/// RE2's flattening, counted: each "root" (the failure instruction, the two starts, whatever
/// follows a consuming instruction, and whatever is reached from more than one root) becomes a
/// list of the non-alternation instructions it reaches without crossing another root, plus one
/// link per other root it reaches.
fn flatten(insts: &[Inst], start: usize, unanchored: usize) -> u64 {
    let n = insts.len();
    let mut is_root = vec![false; n];
    let mut root_order: Vec<usize> = Vec::new();
    let mark = |id: usize, is_root: &mut Vec<bool>, order: &mut Vec<usize>| {
        if !is_root[id] {
            is_root[id] = true;
            order.push(id);
        }
    };
    mark(0, &mut is_root, &mut root_order);
    mark(unanchored, &mut is_root, &mut root_order);
    mark(start, &mut is_root, &mut root_order);
    // Successor roots, and the epsilon predecessors of every instruction.
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut seen = vec![false; n];
    let mut stack = vec![unanchored];
    while let Some(id) = stack.pop() {
        if seen[id] {
            continue;
        }
        seen[id] = true;
        match insts[id] {
            Inst::Alt(out, out1) => {
                preds[out].push(id);
                preds[out1].push(id);
                stack.push(out1);
                stack.push(out);
            }
            Inst::Nop(out) => {
                preds[out].push(id);
                stack.push(out);
            }
            Inst::Step(out) | Inst::AnyByte(out) => {
                mark(out, &mut is_root, &mut root_order);
                stack.push(out);
            }
            Inst::Match | Inst::Fail => {}
        }
    }
    // Dominator roots: an instruction one root reaches that something outside that root's
    // reach also leads to becomes a root of its own (RE2 visits roots by descending id).
    let mut successors: Vec<usize> = root_order.clone();
    successors.sort_unstable();
    for &root in successors.iter().rev() {
        if root == 0 || root == start || root == unanchored {
            continue;
        }
        let reach = epsilon_reach(insts, root, &is_root);
        for &id in &reach {
            if preds[id].iter().any(|p| !reach.contains(p)) {
                mark(id, &mut is_root, &mut root_order);
            }
        }
    }
    // A root's list: the instructions it reaches that consume, record, assert, match or fail,
    // and one link for each other root it reaches; alternations and no-ops are walked through.
    root_order
        .iter()
        .map(|&root| {
            epsilon_reach(insts, root, &is_root)
                .iter()
                .filter(|&&id| {
                    (id != root && is_root[id])
                        || !matches!(insts[id], Inst::Alt(..) | Inst::Nop(_))
                        || alt_match(insts, id)
                })
                .count() as u64
        })
        .sum()
}

/// RE2 keeps, as an instruction of its own, an alternation between looping over any byte and
/// matching (a pattern ending in `(?s).*`): it lets a match end there at once.
fn alt_match(insts: &[Inst], id: usize) -> bool {
    let Inst::Alt(out, out1) = insts[id] else {
        return false;
    };
    let skip_nops = |mut at: usize| {
        while let Inst::Nop(next) = insts[at] {
            at = next;
        }
        at
    };
    let loops = |at: usize| matches!(insts[at], Inst::AnyByte(back) if back == id);
    let matches = |at: usize| matches!(insts[skip_nops(at)], Inst::Match);
    (loops(out) && matches(out1)) || (loops(out1) && matches(out))
}

/// Everything reached from `root` through alternations and no-ops, stopping at other roots.
fn epsilon_reach(
    insts: &[Inst],
    root: usize,
    is_root: &[bool],
) -> std::collections::BTreeSet<usize> {
    let mut reach = std::collections::BTreeSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if !reach.insert(id) {
            continue;
        }
        if id != root && is_root[id] {
            continue;
        }
        match insts[id] {
            Inst::Alt(out, out1) => {
                stack.push(out1);
                stack.push(out);
            }
            Inst::Nop(out) => stack.push(out),
            _ => {}
        }
    }
    reach
}
