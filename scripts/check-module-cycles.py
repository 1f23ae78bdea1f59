#!/usr/bin/env python3
"""Fails when modules of one crate import each other in a circle.

For every `src/` tree given (a crate), each file is a module (`foo.rs` and `foo/bar.rs` give
`foo` and `foo::bar`; `lib.rs`/`main.rs` is the root). Every path a file names through
`crate::`, `super::` or `self::` (in `use` trees, braces expanded, and inline in code) is
resolved to the module that defines it, following `pub use` re-exports. A module using its own
ancestor or descendant is not an edge (a parent owns its children); any other use is an edge
between the two siblings under their closest common ancestor. A strongly connected set of more
than one sibling is a cycle, printed with one edge of evidence each way.

Usage: check-module-cycles.py CRATE_SRC_DIR...   (exit 1 on any cycle)
       check-module-cycles.py --self-test        (the checker finds a planted cycle)
"""

import re
import sys
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
INLINE_PATH = re.compile(rf"\b(crate|super|self)((?:\s*::\s*{IDENT})+)")
USE_START = re.compile(r"\b(pub(?:\s*\([^)]*\))?\s+)?use\s+")
MOD_DECL = re.compile(rf"^\s*(?:pub(?:\s*\([^)]*\))?\s+)?mod\s+({IDENT})\s*;", re.M)
CFG_TEST_BEFORE = re.compile(r"#\[cfg\(test\)\]\s*$")


def strip_comments_and_strings(text):
    """Blanks out comments, string and char literals so paths inside them are not read."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            j = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4] + "    "):
            m = re.match(r"'(\\[^']*|[^\\'])'", text[i:])
            j = i + (len(m.group(0)) if m else 1)
            out.append(" " * (j - i))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def cfg_test_spans(text):
    """Character ranges of `#[cfg(test)] mod … { … }` blocks: test code may import freely."""
    spans = []
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub\s+)?mod\s+\w+\s*\{", text):
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        spans.append((m.start(), j))
    return spans


def expand_use_tree(tree):
    """`a::{b, c::{d, e as f}, self}` → [[a,b], [a,c,d], [a,c,e], [a]]."""
    tree = re.sub(r"\s+", "", tree)

    def parse(s, prefix):
        paths = []
        depth, start = 0, 0
        parts = []
        for i, ch in enumerate(s):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(s[start:i])
                start = i + 1
        parts.append(s[start:])
        for part in parts:
            if not part:
                continue
            if "{" in part:
                head, inner = part.split("{", 1)
                inner = inner[: inner.rfind("}")]
                head_segs = [x for x in head.split("::") if x]
                paths.extend(parse(inner, prefix + head_segs))
            else:
                part = re.sub(r"as\w+$", "", part) if "as" in part and re.search(r"\bas\b", part.replace("::", " ")) else part
                segs = [x for x in re.split(r"::", part) if x]
                segs = [re.sub(r"^(\w+)as\w+$", r"\1", x) for x in segs]
                if segs == ["self"]:
                    paths.append(prefix)
                elif segs == ["*"]:
                    paths.append(prefix + ["*"])
                else:
                    paths.append(prefix + segs)
        return paths

    return parse(tree, [])


class Crate:
    def __init__(self, src):
        self.src = Path(src)
        self.files = {}  # module path tuple -> (file, cleaned text)
        root = next((self.src / r for r in ("lib.rs", "main.rs") if (self.src / r).exists()), None)
        if root is None:
            raise SystemExit(f"{src}: no lib.rs or main.rs")
        self._load((), root)
        self.reexports = {}  # (module, name) -> target path tuple
        for mod, (_, text, _) in self.files.items():
            for m in USE_START.finditer(text):
                if not m.group(1):
                    continue
                end = text.find(";", m.end())
                for path in expand_use_tree(text[m.end():end]):
                    if path and path[-1] != "*":
                        resolved = self.absolute(mod, path)
                        if resolved is not None:
                            self.reexports[(mod, path[-1])] = resolved

    def _load(self, mod, file):
        raw = file.read_text()
        text = strip_comments_and_strings(raw)
        spans = cfg_test_spans(text)
        self.files[mod] = (file, text, spans)
        base = file.parent if file.name in ("lib.rs", "main.rs", "mod.rs") else file.with_suffix("")
        for m in MOD_DECL.finditer(text):
            if any(a <= m.start() < b for a, b in spans):
                continue
            # Test modules in files of their own (`#[cfg(test)] mod tests;`) may import freely.
            if CFG_TEST_BEFORE.search(text[: m.start()].rstrip()):
                continue
            name = m.group(1)
            for cand in (base / f"{name}.rs", base / name / "mod.rs"):
                if cand.exists():
                    self._load(mod + (name,), cand)
                    break

    def absolute(self, mod, path):
        """Path segments as written in module `mod` → absolute segments, or None if external."""
        head, rest = path[0], list(path[1:])
        if head == "crate":
            base = ()
        elif head == "self":
            base = mod
        elif head == "super":
            base = mod
            while head == "super":
                base = base[:-1]
                head, rest = (rest[0], rest[1:]) if rest else ("", [])
            rest = ([head] if head else []) + rest
        elif (mod + (head,)) in self.files:
            base, rest = mod, list(path)
        else:
            return None
        return tuple(base) + tuple(rest)

    def defining_module(self, path, seen=None):
        """The module an absolute path points into: longest module prefix, through re-exports."""
        seen = seen or set()
        for i in range(len(path), -1, -1):
            mod = tuple(path[:i])
            if mod in self.files:
                if i < len(path) and (mod, path[i]) in self.reexports and (mod, path[i]) not in seen:
                    seen.add((mod, path[i]))
                    target = self.reexports[(mod, path[i])] + tuple(path[i + 1:])
                    return self.defining_module(target, seen)
                return mod
        return ()

    def uses(self, mod):
        """(target module, evidence) for every crate-internal path module `mod` names."""
        file, text, spans = self.files[mod]
        out = []

        def in_test(pos):
            return any(a <= pos < b for a, b in spans)

        for m in USE_START.finditer(text):
            if in_test(m.start()):
                continue
            end = text.find(";", m.end())
            for path in expand_use_tree(text[m.end():end]):
                path = [p for p in path if p != "*"]
                if not path:
                    continue
                absolute = self.absolute(mod, path)
                if absolute is not None:
                    out.append((self.defining_module(absolute), "::".join(path), file, text.count("\n", 0, m.start()) + 1))
        for m in INLINE_PATH.finditer(text):
            if in_test(m.start()):
                continue
            segs = [m.group(1)] + [s for s in re.split(r"\s*::\s*", m.group(2)) if s]
            absolute = self.absolute(mod, segs)
            if absolute is not None:
                out.append((self.defining_module(absolute), "::".join(segs), file, text.count("\n", 0, m.start()) + 1))
        return out


def sibling_edge(a, b):
    """The two siblings under a and b's closest common ancestor, or None if one contains the other."""
    i = 0
    while i < len(a) and i < len(b) and a[i] == b[i]:
        i += 1
    if i == len(a) or i == len(b):
        return None
    return a[: i + 1], b[: i + 1]


def strongly_connected(nodes, edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def check(src):
    crate = Crate(src)
    edges, evidence = {}, {}
    for mod in crate.files:
        for target, written, file, line in crate.uses(mod):
            pair = sibling_edge(mod, target)
            if pair is None:
                continue
            a, b = pair
            edges.setdefault(a, set()).add(b)
            evidence.setdefault((a, b), f"{file}:{line} uses {written}")
    nodes = set(edges) | {b for bs in edges.values() for b in bs}
    problems = []
    for comp in strongly_connected(nodes, edges):
        if len(comp) < 2:
            continue
        names = sorted("::".join(c) for c in comp)
        lines = [f"{src}: import cycle between {', '.join(names)}"]
        members = set(comp)
        for a in sorted(members):
            for b in sorted(edges.get(a, ())):
                if b in members:
                    lines.append(f"    {'::'.join(a)} -> {'::'.join(b)}: {evidence[(a, b)]}")
        problems.append("\n".join(lines))
    return problems


def self_test():
    """Plants crates in a temporary directory: one with a cycle through a re-export and a
    `use` tree, one whose only back-edge is in test code. Only the first may fail."""
    import tempfile

    def crate(files):
        root = Path(tempfile.mkdtemp(prefix="cycles-"))
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return str(root)

    cyclic = crate({
        "lib.rs": "mod a;\nmod b;\npub use b::Thing;\n",
        "a.rs": "use crate::Thing;\npub struct Other;\n",
        "b.rs": "use crate::{a::{Other}};\npub struct Thing;\n",
    })
    clean = crate({
        "lib.rs": "mod a;\nmod b;\n",
        "a.rs": "pub struct Other;\n#[cfg(test)]\nmod tests;\n",
        "a/tests.rs": "use crate::b::Thing;\n",
        "b.rs": "use crate::a::Other; // crate::a too\npub struct Thing;\n"
                "#[cfg(test)]\nmod tests {\n    use crate::a::Other;\n}\n",
    })
    found = check(cyclic)
    assert found and "a, b" in found[0], found
    assert check(clean) == [], check(clean)
    print("check-module-cycles: self-test passed")
    return 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    problems = []
    for src in argv[1:]:
        problems.extend(check(src))
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
