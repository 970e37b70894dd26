#!/usr/bin/env python3
"""The import graph of a crate's source files, and its circles.

Each file of `src/` is a node; an edge a -> b says that a names a path of the crate
(`crate::x::y`, `super::x`, `use crate::{x, y::z}`) that lives in file b. A circle is a set of
files that import each other (a strongly connected component of more than one file). Files
nested under a module (`fast/conv.rs` under `fast/mod.rs`) naming their parent module's items
count as edges too: a module and its children may not form a circle either.

Run: `python3 scripts/import_graph.py crates/facenet` (prints every circle; exit status 1 when
there is one). `--dot` prints the graph in Graphviz's format instead.
"""
import re
import sys
from pathlib import Path


def module_files(src: Path) -> dict:
    """Module path (tuple) -> file, for every .rs file under src."""
    files = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts == ["lib"] or parts == ["main"]:
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        files[tuple(parts)] = f
    return files


def strip(text: str) -> str:
    """Source without comments, string literals and `#[cfg(test)]` modules (tests may import
    anything of their crate)."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def paths(text: str):
    """Every crate-relative path named: `crate::a::b`, `super::a`, and each branch of
    `use crate::{a::b, c}` groups (one level of braces)."""
    for m in re.finditer(r"\b(crate|super)((?:::\w+)+)(?:::\{([^{}]*)\})?", text):
        root, rest, group = m.group(1), m.group(2), m.group(3)
        base = [p for p in rest.split("::") if p]
        if group is None:
            yield root, base
        else:
            for branch in group.split(","):
                branch = branch.strip().split(" as ")[0]
                yield root, base + [p for p in branch.split("::") if p and p != "self"]
    for m in re.finditer(r"\b(crate|super)::\{([^{}]*)\}", text):
        for branch in m.group(2).split(","):
            branch = branch.strip().split(" as ")[0]
            yield m.group(1), [p for p in branch.split("::") if p and p != "self"]


def graph(crate: Path) -> dict:
    src = crate / "src"
    files = module_files(src)
    mod_of = {f: m for m, f in files.items()}
    edges = {f: set() for f in files.values()}
    for f in files.values():
        me = mod_of[f]
        is_mod_file = f.name in ("mod.rs", "lib.rs", "main.rs")
        for root, parts in paths(strip(f.read_text())):
            if root == "crate":
                full = list(parts)
            else:
                # `super` is the parent of the module this file defines.
                full = list(me[:-1]) + list(parts)
            # The longest module prefix that is a file.
            for n in range(len(full), -1, -1):
                target = files.get(tuple(full[:n]))
                if target is not None:
                    break
            if target is not None and target != f:
                edges[f].add(target)
    return edges


def circles(edges: dict) -> list:
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main(argv):
    dot = "--dot" in argv
    crates = [Path(a) for a in argv if not a.startswith("--")] or [Path("crates/facenet")]
    status = 0
    for crate in crates:
        edges = graph(crate)
        src = crate / "src"
        name = lambda f: str(f.relative_to(src))
        if dot:
            print(f'digraph "{crate.name}" {{')
            for a in sorted(edges):
                for b in sorted(edges[a]):
                    print(f'  "{name(a)}" -> "{name(b)}";')
            print("}")
            continue
        found = circles(edges)
        for c in found:
            print(f"{crate}: {len(c)} files import each other: " + ", ".join(map(name, c)))
        if not found:
            print(f"{crate}: {len(edges)} files, {sum(map(len, edges.values()))} imports, no circle")
        status |= bool(found)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
