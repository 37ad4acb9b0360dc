#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a cycle.

For every module, its child modules must form a DAG: child A depends on child B when any file
under A names a path under B (through `crate::`, `super::` or `self::`). A module's own items
(in its `mod.rs` or `lib.rs`) are its children's shared ground, so using them adds no edge.

    scripts/check_module_cycles.py crates/docket-rules [more crate directories]
"""

import re
import sys
from pathlib import Path

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")


def module_of(src: Path, file: Path):
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def braces(text, start):
    """The names in a `{…}` use group at `start`, one level deep, as relative paths."""
    depth, i = 0, start
    while i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            break
        i += 1
    inner = text[start + 1 : i]
    names, depth, current = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            names.append(current)
            current = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        current += ch
    names.append(current)
    return [re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", n).group(1) for n in names if re.match(r"\s*[A-Za-z_]", n)]


def references(text, here):
    text = strip(text)
    for match in PATH.finditer(text):
        root, rest = match.group(1), match.group(2)
        base = {"crate": (), "self": here, "super": here[:-1]}[root]
        if rest == "::{":
            for name in braces(text, match.end() - 1):
                yield base + (name,)
            continue
        names = [n for n in rest.split("::") if n]
        while names and names[0] == "super":
            base, names = base[:-1], names[1:]
        yield base + tuple(names)


def check(crate: Path):
    src = crate / "src"
    files = {module_of(src, f): f for f in src.rglob("*.rs")}
    modules = set(files)
    edges = {}
    for here, file in files.items():
        for path in references(file.read_text(), here):
            target = max((m for m in modules if path[: len(m)] == m), key=len, default=())
            common = 0
            while common < min(len(here), len(target)) and here[common] == target[common]:
                common += 1
            if common < len(here) and common < len(target):
                parent = here[:common]
                edges.setdefault(parent, {}).setdefault(here[common], set()).add(target[common])
    cycles = []
    for parent, graph in edges.items():
        state = {}

        def visit(node, trail):
            state[node] = "open"
            for nxt in sorted(graph.get(node, ())):
                if state.get(nxt) == "open":
                    cycles.append((parent, trail[trail.index(nxt):] + [nxt]))
                elif nxt not in state:
                    visit(nxt, trail + [nxt])
            state[node] = "done"

        for node in sorted(graph):
            if node not in state:
                visit(node, [node])
    for parent, cycle in cycles:
        where = "::".join(parent) or "crate"
        print(f"{crate}: modules of {where} import each other in a cycle: {' -> '.join(cycle)}")
    return not cycles


if __name__ == "__main__":
    ok = all([check(Path(arg)) for arg in sys.argv[1:]])
    sys.exit(0 if ok else 1)
