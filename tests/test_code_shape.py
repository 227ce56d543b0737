"""The package stays readable: short functions, modules of a size one can review, no unexplained noqa."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import labkit

PACKAGE = Path(labkit.__file__).parent
MAX_FUNCTION_LINES = 80  # counting the docstring: one screen
MAX_MODULE_LINES = 800


def _long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``file:line name (N lines)`` for each function in ``path`` longer than ``limit`` lines."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit
    ]


def _bare_noqa(path: Path) -> list[str]:
    """``noqa`` comments with no reason after them (``# noqa: E501 - why``)."""
    pattern = re.compile(r"#\s*noqa(?::\s*[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)?\s*$")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [f"{path.name}:{i}" for i, line in enumerate(lines, 1) if pattern.search(line)]


def test_no_function_in_labkit_is_longer_than_80_lines():
    offenders = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _long_functions(path)]
    assert offenders == [], "split these into short one-step functions:\n" + "\n".join(offenders)


def test_no_module_in_labkit_is_longer_than_800_lines():
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.rglob("*.py")}
    offenders = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert offenders == {}, f"split these modules by concept (limit {MAX_MODULE_LINES} lines): {offenders}"


def test_every_noqa_in_labkit_says_why():
    offenders = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _bare_noqa(path)]
    assert offenders == [], "give each noqa its reason (`# noqa: B008 - why`) or remove it:\n" + "\n".join(offenders)


def test_the_length_check_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(85))
    source = tmp_path / "long.py"
    source.write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n")
    assert _long_functions(source) == ["long.py:5 long (86 lines)"]


def test_the_noqa_check_wants_a_reason(tmp_path):
    source = tmp_path / "q.py"
    source.write_text("a = 1  # noqa: E501\nb = 2  # noqa: B008 - a default made once on purpose\nc = 3  # noqa\n")
    assert _bare_noqa(source) == ["q.py:1", "q.py:3"]
