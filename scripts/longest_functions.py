"""List the functions of src/ longer than a limit (default 80 lines), longest first.

    python scripts/longest_functions.py [--limit 80] [paths ...]

A function's length runs from its ``def`` line to its last line (docstring and comments
included, nested functions counted within their parent and on their own). Exit status 1 when
any function is over the limit, so the script can gate a check.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def functions(path: Path) -> Iterator[tuple[str, int, int]]:
    """(qualified name, first line, length) of every function and method in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                yield name, child.lineno, (child.end_lineno or child.lineno) - child.lineno + 1
                yield from walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def long_functions(paths: list[Path], limit: int) -> list[tuple[int, str]]:
    """``(length, "file:line name")`` of the functions over ``limit`` lines, longest first."""
    out = []
    for root in paths:
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            rel = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
            for name, line, length in functions(path):
                if length > limit:
                    out.append((length, f"{rel}:{line} {name}"))
    return sorted(out, key=lambda t: (-t[0], t[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", type=Path, default=[ROOT / "src"])
    p.add_argument("--limit", type=int, default=80)
    args = p.parse_args(argv)
    found = long_functions(args.paths, args.limit)
    for length, where in found:
        print(f"{length:5d}  {where}")
    if not found:
        print(f"no function over {args.limit} lines")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
