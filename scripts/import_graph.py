"""Import graph of a package: prints every import cycle (module-level and function-level
imports both count: a cycle hidden inside a function is still a cycle) and core modules that
import the CLI or the GUI layer; the last line is ``N cycles``.

    python scripts/import_graph.py src/napari_histovol
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package folder ``root``."""
    out = {}
    for p in root.rglob("*.py"):
        name = ".".join(p.relative_to(root.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def imported(mods: dict[str, Path], module: str) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its file."""
    pkg = next(iter(mods)).split(".")[0]
    is_pkg = mods[module].name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(mods[module].read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{a.name}" for a in node.names]
        for t in targets:
            while t not in mods and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in mods and t != module and t.split(".")[0] == pkg:
                found.add(t)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, result, counter = {}, {}, set(), [], [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    result.append(sorted(comp))
    return result


def main(root: str) -> int:
    mods = modules(Path(root))
    graph = {m: imported(mods, m) for m in mods}
    found = cycles(graph)
    for comp in found:
        print("cycle:", " <-> ".join(comp))
    for m, deps in sorted(graph.items()):
        if ".core" in m:
            for d in sorted(deps):
                if ".cli" in d or "._widgets" in d or d.endswith("._layers"):
                    print("core imports outside core:", m, "->", d)
    print(len(found), "cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "src/napari_histovol"))
