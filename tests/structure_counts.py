"""Counts that say how the code is shaped, read from the source (ast, nothing is run).

    ./dev shell tests/structure_counts.py [--contract PATH ...]

- `except BaseException` handlers in services/;
- calls of `.abandon()` (a request given up by hand rather than by its owner);
- reads of an answer event's payload by string key (`event.data["text"]`, `.data.get("n")`,
  `"c" in event.data`);
- `Any` in the contract: the modules whose types cross service boundaries (by default
  services/contract/; name others with --contract);
- the 20 longest functions.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "services"


def _trees(paths: list[Path]) -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), str(p))) for p in paths]


def _is_data(node: ast.AST) -> bool:
    """`<something>.data`, but not pydantic's `info.data` (a validator's other fields)."""
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "data"
        and not (isinstance(node.value, ast.Name) and node.value.id == "info")
    )


def _is_text(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def base_exception_handlers(tree: ast.Module) -> int:
    return sum(
        1
        for node in ast.walk(tree)
        if isinstance(node, ast.ExceptHandler)
        and isinstance(node.type, ast.Name)
        and node.type.id == "BaseException"
    )


def abandon_calls(tree: ast.Module) -> int:
    return sum(
        1
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "abandon"
    )


def event_key_reads(tree: ast.Module) -> int:
    count = 0
    for node in ast.walk(tree):
        if (
            (isinstance(node, ast.Subscript) and _is_data(node.value) and _is_text(node.slice))
            or (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and _is_data(node.func.value)
                and node.args
                and _is_text(node.args[0])
            )
            or (
                isinstance(node, ast.Compare)
                and _is_text(node.left)
                and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops)
                and any(_is_data(c) for c in node.comparators)
            )
        ):
            count += 1
    return count


def any_uses(tree: ast.Module) -> int:
    return sum(1 for node in ast.walk(tree) if isinstance(node, ast.Name) and node.id == "Any")


def any_fields(tree: ast.Module) -> list[str]:
    """Fields of the contract's classes whose type holds `Any`: what a message carries untyped
    (the rest of its `Any`s are JSON coming in to be decoded, in `from_dict` and the like)."""
    found = []
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        for node in cls.body:
            if isinstance(node, ast.AnnAssign) and any_uses(ast.Module([node], [])):
                target = node.target.id if isinstance(node.target, ast.Name) else "?"
                found.append(f"{cls.name}.{target}")
    return found


def longest_functions(trees: list[tuple[Path, ast.Module]], top: int = 20) -> list[str]:
    found = []
    for path, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                found.append((lines, f"{lines:4} lines  {node.name}  ({where})"))
    found.sort(key=lambda pair: -pair[0])
    return [line for _, line in found[:top]]


def main(argv: list[str]) -> None:
    contract = [ROOT / p for p in argv[argv.index("--contract") + 1 :]] if argv else []
    if not contract:
        contract = sorted((SERVICES / "contract").rglob("*.py"))
    trees = _trees(sorted(SERVICES.rglob("*.py")))
    print(f"except BaseException handlers: {sum(base_exception_handlers(t) for _, t in trees)}")
    print(f"abandon() call sites:          {sum(abandon_calls(t) for _, t in trees)}")
    print(f"string-keyed event reads:      {sum(event_key_reads(t) for _, t in trees)}")
    contract_trees = _trees(contract)
    contract_any = sum(any_uses(t) for _, t in contract_trees)
    fields = [f for _, t in contract_trees for f in any_fields(t)]
    names = ", ".join(str(p.relative_to(ROOT.joinpath("services"))) for p in contract)
    print(f"Any in the contract:           {contract_any}  ({names})")
    print(f"  of them in fields:           {len(fields)}  ({', '.join(fields)})")
    print("20 longest functions:")
    for line in longest_functions(trees):
        print(f"  {line}")


if __name__ == "__main__":
    main(sys.argv[1:])
