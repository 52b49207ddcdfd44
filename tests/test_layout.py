"""The source layout's rules (docs/layout.md): no module of model/ or streamer/ over
400 lines, and the reader (streamer/reader/) imports nothing beyond the
standard library, numpy, redis and model.transform (numpy-only), so that
another service can install it alone (tests/test_reader_alone.py)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READER_MAY_IMPORT = {"numpy", "redis"}
READER_MAY_IMPORT_OURS = ("streamer.reader", "model.transform")


def test_no_source_module_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for top in ("model", "streamer")
        for p in sorted((ROOT / top).rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, long


def test_the_reader_imports_only_numpy_redis_and_itself() -> None:
    bad = []
    for path in sorted((ROOT / "streamer" / "reader").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if (
                    top in sys.stdlib_module_names
                    or top in READER_MAY_IMPORT
                    or name.startswith(READER_MAY_IMPORT_OURS)
                    or (name.startswith("model.") and _type_only(path, node))
                ):
                    continue
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert not bad, bad


def _type_only(path: Path, node: ast.AST) -> bool:
    """An import under ``if TYPE_CHECKING:`` (or a lazy one inside a function
    that only the service calls) does not run when a reader imports the module."""
    tree = ast.parse(path.read_text())
    for parent in ast.walk(tree):
        if isinstance(parent, ast.If | ast.FunctionDef) and any(
            child is node or _same(child, node) for child in ast.walk(parent)
        ):
            return True
    return False


def _same(a: ast.AST, b: ast.AST) -> bool:
    return type(a) is type(b) and getattr(a, "lineno", -1) == getattr(b, "lineno", -2)
