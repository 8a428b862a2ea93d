"""Which of Tiller's packages each package imports, read from the source (ast, nothing is run).

    ./dev shell tests/import_graph.py          # the graph, one line per package
    ./dev shell tests/import_graph.py --edges  # every import across packages, with its line

tests/unit/test_boundaries.py holds the rule this graph must follow: services meet only through
`common`, `contract` and `protos` (and the worker-side workflow library, `pipelines`).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

SERVICES = Path(__file__).resolve().parent.parent / "services"


@dataclass(frozen=True)
class Edge:
    source: str  # the importing package (a folder of services/)
    target: str  # the imported package
    where: str  # path:line of the import


def package_of(module: str) -> str | None:
    """`tiller.gateway.http_api` -> `gateway`; None outside Tiller."""
    parts = module.split(".")
    if parts[0] != "tiller":
        return None
    return parts[1] if len(parts) > 1 else ""


def edges(root: Path = SERVICES) -> list[Edge]:
    """Every import of another Tiller package, whether at the top of a module or inside a
    function or TYPE_CHECKING block (all of them tie the packages together)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        source = relative.parts[0] if len(relative.parts) > 1 else ""
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
                if node.module == "tiller":  # from tiller import pipelines
                    modules = [f"tiller.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                target = package_of(module)
                if target is not None and target not in (source, ""):
                    found.append(Edge(source, target, f"services/{relative}:{node.lineno}"))
    return found


def graph(found: list[Edge]) -> dict[str, dict[str, int]]:
    """package -> imported package -> number of import statements."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for edge in found:
        counts[edge.source][edge.target] += 1
    return counts


def main(argv: list[str]) -> None:
    found = edges()
    if "--edges" in argv:
        for edge in found:
            print(f"{edge.source:12} -> {edge.target:12} {edge.where}")
        return
    counts = graph(found)
    packages = sorted({p.name for p in SERVICES.iterdir() if (p / "__init__.py").exists()})
    for package in packages:
        targets = counts.get(package, {})
        listed = ", ".join(f"{t} ({n})" for t, n in sorted(targets.items())) or "-"
        print(f"{package:12} -> {listed}")


if __name__ == "__main__":
    main(sys.argv[1:])
