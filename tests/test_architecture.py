"""The package layering holds: no import cycle, and no room imports a room above it.

The graph is built from the source with `ast`, so function-level imports count too: a cycle
hidden inside a function still ties two modules together (one cannot be understood, tested or
moved without the other), and Python only notices it at the call that happens to close the loop.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("analyzer", "collectors", "harness", "benchmarks")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def _is_type_checking_block(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` (annotations only: not an import at run time, so not a cycle)."""
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"))


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its body (relative imports resolved)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        tree = ast.parse(path.read_text(), str(path))
        typing_only = {id(n) for blk in ast.walk(tree) if _is_type_checking_block(blk)
                       for stmt in blk.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in typing_only:        # `if TYPE_CHECKING:` imports never run
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here[:len(here) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods]
                targets = subs if subs and len(subs) == len(node.names) else [mod, *subs]
            for t in targets:
                while t and t not in mods:     # `import a.b.c` of a non-module attribute: its module
                    t = t.rpartition(".")[0]
                if t and t != name:
                    graph[name].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


def test_graph_sees_function_level_imports():
    g = import_graph()
    # harness.regress imports the collector only inside functions: the graph must still see it
    assert "collectors.collect" in g["harness.regress"]
    assert "analyzer.bundle" in g["collectors.collect"]


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert _cycles(import_graph()) == []


# room -> rooms it must never import (the layers: analyzer < collectors < harness; inside the
# collector kernels/ < build/ < guest/ < collect, with build/cache.py shared by all rooms)
FORBIDDEN = {
    "analyzer": ("collectors", "harness", "benchmarks"),
    "collectors": ("harness", "benchmarks"),
    "collectors.kernels": ("collectors.guest", "collectors.collect", "collectors.commands"),
    "collectors.build": ("collectors.guest", "collectors.collect", "collectors.commands"),
    "collectors.guest": ("collectors.collect", "collectors.commands"),
    "harness": ("benchmarks",),
}


def _within(mod: str, room: str) -> bool:
    return mod == room or mod.startswith(room + ".")


def test_rooms_import_only_downwards():
    bad = []
    for mod, deps in import_graph().items():
        for room, forbidden in FORBIDDEN.items():
            if _within(mod, room):
                bad += [f"{mod} -> {d}" for d in deps if any(_within(d, f) for f in forbidden)]
        if _within(mod, "collectors.kernels"):   # kernels/ may use build/'s shared cache, nothing else
            bad += [f"{mod} -> {d}" for d in deps
                    if _within(d, "collectors.build") and d != "collectors.build.cache"]
    assert bad == []
