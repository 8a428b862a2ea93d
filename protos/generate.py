"""Generate the Python gRPC code for every .proto under protos/ (the one copy all services use).

    python protos/generate.py          # regenerate in place
    python protos/generate.py --check  # exit 1 if the committed code differs from a fresh run

The generated modules import each other as `tiller.protos.<service>.v1`; protoc writes absolute
imports rooted at protos/, so they are rewritten to relative ones here (what protoletariat does).
"""

from __future__ import annotations

import argparse
import filecmp
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
ABSOLUTE_IMPORT = re.compile(r"^from [\w.]+ import (\w+_pb2)", re.MULTILINE)


def proto_files() -> list[Path]:
    return sorted(ROOT.rglob("*.proto"))


def generate(out: Path) -> None:
    from google.rpc import status_pb2  # googleapis-common-protos, via grpcio-status
    from grpc_tools import protoc  # a test/dev dependency, not needed at run time

    include = Path(protoc.__file__).parent / "_proto"
    # google/rpc/status.proto ships beside its generated module.
    google_protos = Path(status_pb2.__file__).parents[2]
    for proto in proto_files():
        rel = proto.relative_to(ROOT)
        args = [
            "protoc",
            f"-I{ROOT}",
            f"-I{include}",
            f"-I{google_protos}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(rel),
        ]
        if protoc.main(args) != 0:
            sys.exit(f"protoc failed for {rel}")
    for path in out.rglob("*_pb2_grpc.py"):
        path.write_text(ABSOLUTE_IMPORT.sub(r"from . import \1", path.read_text()))
    for directory in {p.parent for p in out.rglob("*_pb2.py")} | {out}:
        for package in [directory, *directory.relative_to(out).parents]:
            init = out / package if package != Path(".") else out
            (init / "__init__.py").touch()


def generated_files(base: Path) -> set[Path]:
    return {
        p.relative_to(base)
        for p in base.rglob("*")
        if p.name == "__init__.py" or p.name.endswith(GENERATED_SUFFIXES)
    }


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        expected, committed = generated_files(fresh), generated_files(ROOT)
        drift = sorted(str(p) for p in expected ^ committed)
        drift += sorted(
            str(p)
            for p in expected & committed
            if not filecmp.cmp(fresh / p, ROOT / p, shallow=False)
        )
    if drift:
        print("generated gRPC code is out of date; run: python protos/generate.py", file=sys.stderr)
        for path in drift:
            print(f"  differs: protos/{path}", file=sys.stderr)
        return 1
    print(f"generated gRPC code is up to date ({len(expected)} files)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    if parser.parse_args().check:
        return check()
    for path in generated_files(ROOT):
        (ROOT / path).unlink()
    generate(ROOT)
    print(f"generated {len(generated_files(ROOT))} files under protos/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
