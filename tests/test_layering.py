"""The house's floors: no import runs back up, and no import circle anywhere.

Every ``import`` and ``from ... import`` counts, also those inside functions (a lazy import is
still a dependency; it only hides from the interpreter until it bites). The floors, lowest
first; a module may import its own package and any package on a lower floor, nothing else:

    layerwatch.core            settings, topics, Kafka wiring, wire contracts, logs, servers
    ingest | storage           independent of each other
    scorer
    monitor
    layerwatch                 the application floor: CLI root, demo, report, Grafana
    bench
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS: tuple[tuple[str, ...], ...] = (
    ("layerwatch.core",),
    ("ingest", "storage"),
    ("scorer",),
    ("monitor",),
    ("layerwatch",),
    ("bench",),
)
PACKAGES = ("layerwatch", "ingest", "scorer", "monitor", "storage", "bench")


def module_files(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name → file, for every .py under the given top-level packages."""
    out = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative: resolve against the importing module's package
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    return [f"{base}.{a.name}" for a in node.names] + [base]


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module → the project modules it imports (the longest known prefix of each target)."""
    files = module_files(root, packages)
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = _targets(module, path, node)
            if isinstance(node, ast.ImportFrom):
                # `from a.b import c`: c is a module when a.b.c is one, else a name in a.b
                targets = [t for t in targets[:-1] if t in files] or targets[-1:]
            for target in targets:
                parts = target.split(".")
                while parts and ".".join(parts) not in files:
                    parts.pop()
                if parts and (found := ".".join(parts)) != module:
                    graph[module].add(found)
        graph.setdefault(module, set())
    return dict(graph)


def floor_of(module: str) -> tuple[int, str]:
    """(floor index, package) of a module: the most specific package that names it."""
    best = None
    for i, floor in enumerate(FLOORS):
        for pkg in floor:
            if (module == pkg or module.startswith(pkg + ".")) and (
                best is None or len(pkg) > len(best[1])
            ):
                best = (i, pkg)
    if best is None:
        raise KeyError(f"{module} is on no floor: add its package to FLOORS")
    return best


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import into a higher floor, or into a sibling package on the same floor."""
    bad = []
    for module, targets in sorted(graph.items()):
        here, pkg = floor_of(module)
        for target in sorted(targets):
            there, tpkg = floor_of(target)
            if there > here or (there == here and tpkg != pkg):
                bad.append(f"{module} ({pkg}) imports {target} ({tpkg})")
    return bad


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def test_no_import_runs_back_up(graph):
    assert upward_imports(graph) == []


def test_no_import_circles(graph):
    assert import_circles(graph) == []


def test_the_graph_sees_the_real_dependencies(graph):
    """Guards the checker itself: edges that exist must be found (lazy imports included)."""
    assert "layerwatch.core.settings" in graph["storage.db"]  # a lazy import in a function
    assert "scorer.methods" in graph["scorer.radar"]
    assert "ingest.messages" in graph["scorer.service"]


def _plant(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


PLANTED_BASE = {
    "layerwatch/__init__.py": "",
    "layerwatch/core/__init__.py": "",
    "layerwatch/core/settings.py": "X = 1\n",
    "layerwatch/cli.py": "from monitor import engine\n",
    "storage/__init__.py": "",
    "storage/db.py": "def url():\n    from layerwatch.core.settings import X\n    return X\n",
    "monitor/__init__.py": "",
    "monitor/engine.py": "from storage.db import url\n",
}


def test_a_planted_upward_import_is_caught(tmp_path):
    _plant(tmp_path, PLANTED_BASE)
    packages = ("layerwatch", "storage", "monitor")
    assert upward_imports(import_graph(tmp_path, packages)) == []
    # the ground floor reaching into the monitor, lazily and through a relative import
    _plant(
        tmp_path, {"layerwatch/core/settings.py": "def f():\n    from ...monitor import engine\n"}
    )
    assert upward_imports(import_graph(tmp_path, packages)) == [
        "layerwatch.core.settings (layerwatch.core) imports monitor.engine (monitor)"
    ]


def test_a_planted_sibling_import_and_circle_are_caught(tmp_path):
    _plant(
        tmp_path,
        {
            **PLANTED_BASE,
            "ingest/__init__.py": "",
            "ingest/sources.py": "import storage.db\n",
            "monitor/alarms.py": "from . import engine\n",
            "monitor/engine.py": "from monitor.alarms import x\n",
        },
    )
    graph = import_graph(tmp_path, ("layerwatch", "storage", "monitor", "ingest"))
    assert upward_imports(graph) == ["ingest.sources (ingest) imports storage.db (storage)"]
    assert import_circles(graph) == [["monitor.alarms", "monitor.engine"]]
