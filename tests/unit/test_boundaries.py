"""Services meet only through `common`, `contract` and `protos`: none imports another's package.

`pipelines` is workflow code the worker hosts and whose option models the router validates
models.yaml with; it imports only the shared packages, so either can load it without the other.
`cli` (the `tiller` command, which starts every service) and the demo engine stand outside.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.import_graph import edges
from tiller.contract.engines import KINDS
from tiller.worker.adapters import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
SHARED = {"common", "contract", "protos"}
# What each package may import besides itself.
ALLOWED: dict[str, set[str]] = {
    "common": {"protos"},
    "contract": {"common", "protos"},
    "gateway": SHARED,
    "quota": SHARED,
    "router": SHARED | {"pipelines"},
    "worker": SHARED | {"pipelines"},
    "pipelines": SHARED,
    "demo_engine": {"common"},
}


def test_no_service_imports_another_services_package() -> None:
    crossings = [
        f"{edge.where}: {edge.source} imports {edge.target}"
        for edge in edges()
        if edge.source in ALLOWED and edge.target not in ALLOWED[edge.source]
    ]
    assert not crossings, "imports across service boundaries:\n" + "\n".join(crossings)


def test_every_package_has_a_rule() -> None:
    packages = {p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists()}
    assert packages - {"cli"} == set(ALLOWED)


def test_the_router_loads_pipelines_without_the_workers_clients() -> None:
    """Compiling a models.yaml with pipelines loads their option models, not the worker's
    activities, engine clients or Redis."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tiller.router.config import parse\n"
        "from tiller.router.table import compile_models\n"
        "text = Path('docs/pipelines.yaml').read_text()\n"
        "compile_models(parse(text, 'docs/pipelines.yaml'), text.encode())\n"
        "loaded = [m for m in ('tiller.worker', 'tiller.gateway', 'tiller.quota', 'aiohttp',\n"
        "          'redis', 'tritonclient') if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ""


def test_every_engine_kind_has_an_adapter_and_every_adapter_a_kind() -> None:
    assert set(KINDS) == set(REGISTRY)
