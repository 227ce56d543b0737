"""The package's shape: no module reaches into another module's private names."""
from __future__ import annotations

import ast
from pathlib import Path

import labkit

PACKAGE = Path(labkit.__file__).parent


def _absolute(node: ast.ImportFrom, path: Path, root: Path) -> str | None:
    """The absolute module an import names (``from .protocol import x`` in labkit/grading/exercises -> its path)."""
    if not node.level:
        return node.module
    package = list(path.relative_to(root).with_suffix("").parts[:-1])
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _private_imports(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """``from labkit.public_module import _private`` statements in one file (private modules are fine)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = _absolute(node, path, root)
        if module and module.split(".")[0] == "labkit":
            if any(part.startswith("_") for part in module.split(".")):
                continue  # a private module (labkit._env, labkit.build._draw) is shared on purpose
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(root)}:{node.lineno} from {module} import {alias.name}")
    return found


def test_no_module_imports_another_modules_private_names():
    offenders = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _private_imports(path)]
    assert offenders == [], "move shared helpers into a private module (labkit/_*.py):\n" + "\n".join(offenders)


def test_the_private_import_check_finds_one(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from labkit.heads import _secret\nfrom labkit._env import setting\n"
                   "from labkit.build._draw import grid\n")
    assert _private_imports(bad, root=tmp_path) == ["bad.py:1 from labkit.heads import _secret"]
